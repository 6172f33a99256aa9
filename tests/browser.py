"""The dashboard in a real browser (test support): the system Chromium driven by Playwright.

Chromium comes from the OS packages (``apt-get install chromium``; ``make test`` installs it
when absent) and is launched by path: Playwright never downloads a browser. Without one the
browser tests are skipped, and under ``CI=true`` they fail (as a missing KVRocks does).

The server under test is a real ``codeq serve`` with static tokens of two tenants:

* ``ADMIN``: producer of tenant ``acme`` with ``codeq:admin``;
* ``WORKER``: worker of ``acme`` (claim, nack, result; every command), not admin;
* ``OTHER``: producer and admin of tenant ``globex``.

``python -m tests.browser [DIR]`` writes the screenshots of docs/dashboard.md (default
``docs/dashboard``) from a fresh server with a few tasks, an endpoint and a dead letter.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.served import Served, serve
from tests.servers import wait_for

ADMIN = "ui-admin-token"
WORKER = "ui-worker-token"
OTHER = "ui-globex-token"
API = "/v1/codeq"
#: accepted when an endpoint is registered; nothing answers there, so deliveries keep retrying
RECEIVER = "https://receiver.invalid/hook"

CHROMIUM_MISSING = (
    "chromium is not installed (apt-get install chromium, or `make chromium`): "
    "the dashboard tests need the system browser"
)


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """The system Chromium (and Playwright to drive it); without them the test fails under
    ``CI=true`` and is skipped elsewhere."""
    binary = chromium_binary()
    problem = None if binary else CHROMIUM_MISSING
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[dev]')"
    if problem is not None or binary is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(problem or CHROMIUM_MISSING, pytrace=False)
        pytest.skip(problem or CHROMIUM_MISSING)
    return binary


def settings() -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "producerAuthProvider": "static",
        "producerAuthConfig": {
            "tokens": {
                ADMIN: {"sub": "ops", "tenantId": "acme", "scope": "codeq:admin"},
                OTHER: {"sub": "globex-ops", "tenantId": "globex", "scope": "codeq:admin"},
            }
        },
        "workerAuthProvider": "static",
        "workerAuthConfig": {
            "tokens": {
                WORKER: {
                    "sub": "render-1",
                    "tenantId": "acme",
                    "scope": "codeq:claim codeq:heartbeat codeq:nack codeq:result",
                    "eventTypes": ["*"],
                }
            }
        },
        "logFormat": "json",
        # the webhook tests' receivers listen on loopback (tests/receivers.py)
        "webhookAllowedCidrs": ["127.0.0.0/8"],
    }


@contextmanager
def dashboard_server() -> Iterator[Served]:
    """``codeq serve`` (gateway, deliverers, its own store) with the tokens above."""
    with tempfile.TemporaryDirectory(prefix="codeq-ui-") as tmp:
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump(settings()))
        with serve({}, args=["--config", str(config)]) as served:
            yield served


class Api:
    """The JSON API as the tests call it (what a producer or worker would do)."""

    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base + API, timeout=10)

    def call(self, token: str, method: str, path: str, body: Any = None) -> Any:
        r = self.client.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def create(self, command: str, payload: Any, **fields: Any) -> str:
        task = self.call(
            ADMIN, "POST", "/tasks", {"command": command, "payload": payload, **fields}
        )
        return str(task["id"])

    def dead_task(self, command: str, payload: Any) -> str:
        """A task of ``command`` that is in the dead-letter queue (one attempt, nacked)."""
        task_id = self.create(command, payload, maxAttempts=1)
        claimed = self.call(WORKER, "POST", "/tasks/claim", {"commands": [command]})
        assert claimed["id"] == task_id, claimed
        out = self.call(WORKER, "POST", f"/tasks/{task_id}/nack", {"reason": "upstream 503"})
        assert out["status"] == "dlq", out
        return task_id

    def endpoint_with_delivery(self, command: str) -> tuple[str, str]:
        """(endpoint id, delivery id): an endpoint for ``task.created``, and a task that
        made a delivery to it."""
        endpoint = self.call(
            ADMIN,
            "POST",
            "/webhooks/endpoints",
            {"url": RECEIVER, "eventTypes": ["task.created"], "description": "billing"},
        )
        found: list[str] = []
        created: list[float] = []

        def delivered() -> bool:
            # The deliverers read a tenant's endpoints at most once a second
            # (deliverers/endpoints.py): a task created just before they look again makes no
            # delivery, so create one more each second until one does.
            if not created or time.monotonic() - created[-1] > 1.1:
                self.create(command, {"invoice": len(created)})
                created.append(time.monotonic())
            page = self.call(ADMIN, "GET", f"/webhooks/endpoints/{endpoint['id']}/deliveries")
            found[:] = [d["id"] for d in page["deliveries"]]
            return bool(found)

        wait_for(delivered, timeout=15, message="the endpoint never got a delivery")
        return str(endpoint["id"]), found[0]

    def close(self) -> None:
        self.client.close()


@contextmanager
def chromium(binary: str) -> Iterator[Any]:
    """A headless system Chromium under Playwright (``--no-sandbox``: the tests run as root)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Any, base: str, token: str) -> None:
    page.goto(f"{base}/ui")
    page.locator("#token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_test_id("identity").wait_for()


def screenshots(browser: Any, base: str, out: Path, ids: dict[str, str]) -> list[Path]:
    """PNGs of the main pages, signed in as the admin of ``acme``; ``ids`` has ``task``,
    ``dead`` (a dead task's command), ``endpoint``."""
    out.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    page = context.new_page()
    sign_in(page, base, ADMIN)
    shots = [
        ("signed-in-overview", "#/", "queues"),
        ("tasks", "#/tasks", "task-list"),
        ("task", f"#/tasks/{ids['task']}", "payload"),
        ("dead-letters", f"#/dlq/{ids['dead']}", "dlq-tasks"),
        ("webhooks", "#/webhooks", "endpoints"),
        ("deliveries", "#/deliveries", "deliveries"),
    ]
    written = []
    for name, route, ready in shots:
        page.goto(f"{base}/ui{route}")
        page.get_by_test_id(ready).first.wait_for()
        path = out / f"{name}.png"
        page.screenshot(path=str(path), full_page=False)
        written.append(path)
    context.close()
    return written


def seed(api: Api) -> dict[str, str]:
    """A few tasks of three commands, one done, one dead, one endpoint with a delivery."""
    for i in range(3):
        api.create("RENDER_VIDEO", {"video": i}, priority=i)
    task = api.create("SEND_EMAIL", {"to": "ada@example.com"}, idempotencyKey="welcome-ada")
    api.dead_task("CHARGE_CARD", {"card": "…4242", "amount": 1999})
    endpoint, _ = api.endpoint_with_delivery("BILL")
    return {"task": task, "dead": "charge_card", "endpoint": endpoint}


def main(argv: list[str]) -> int:
    binary = chromium_binary()
    if binary is None:
        print(CHROMIUM_MISSING, file=sys.stderr)
        return 1
    out = Path(argv[0] if argv else "docs/dashboard")
    with dashboard_server() as served, chromium(binary) as browser:
        api = Api(served.base)
        try:
            for path in screenshots(browser, served.base, out, seed(api)):
                print(path)
        finally:
            api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
