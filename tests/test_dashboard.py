"""The dashboard at /ui, in a real browser (the system Chromium under Playwright) against a
real ``codeq serve``: sign-in, tasks created over the API appearing, a task's page, requeue
from the dead letters, replaying a delivery, a worker token seeing no admin action, another
tenant's ids answering the not-found page. Plus, without a browser: the shell, its assets and
the ``whoami`` route the page asks first.

The task list (and the overview's rates) read ``GET /v1/codeq/tasks``; a task's deliveries
``GET /v1/codeq/tasks/{id}/deliveries``; the webhooks pages an endpoint's statistics
``GET /v1/codeq/webhooks/endpoints/{id}/stats``, and *Send test event* posts to its ``/test``
route (a real receiver on loopback answers: the server may reach ``127.0.0.0/8``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.browser import (
    ADMIN,
    OTHER,
    WORKER,
    Api,
    chromium,
    dashboard_server,
    require_chromium,
    sign_in,
)
from tests.receivers import Receiver, Reply, receiver
from tests.served import Served

STATIC = resources.files("gateway.ui") / "static"


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with dashboard_server() as s:
        yield s


@pytest.fixture(scope="module")
def api(served: Served) -> Iterator[Api]:
    a = Api(served.base)
    yield a
    a.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium(require_chromium()) as b:
        yield b


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab of its own (its own sessionStorage): signed out."""
    context = browser.new_context()
    p = context.new_page()
    p.set_default_timeout(10_000)
    yield p
    context.close()


def command() -> str:
    """A command of the test's own, so the tests sharing one server never see each other's
    queues."""
    return "UI_" + uuid.uuid4().hex[:8].upper()


# --------------------------------------------------------------------------------------------
# Without a browser: the shell, the assets, whoami
# --------------------------------------------------------------------------------------------


def test_the_shell_is_served_with_a_policy_that_allows_only_this_origin(served: Served) -> None:
    r = httpx.get(f"{served.base}/ui")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    policy = r.headers["content-security-policy"]
    for rule in ("default-src 'none'", "script-src 'self'", "connect-src 'self'"):
        assert rule in policy
    assert "form-action 'none'" in policy  # no form can carry the token anywhere
    assert "frame-ancestors 'none'" in policy
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_every_asset_ships_in_the_package_and_nothing_is_fetched_from_elsewhere(
    served: Served,
) -> None:
    files = {f.name: f.read_text() for f in STATIC.iterdir() if f.is_file()}
    assert {"index.html", "app.js", "api.js", "dom.js", "app.css"} <= set(files)
    referenced = set(re.findall(r'/ui/static/([\w.-]+)"', files["index.html"]))
    for name, text in files.items():
        if name.endswith(".js"):
            referenced |= set(re.findall(r'from "\./([\w.-]+)"', text))
        # Nothing names another host: no CDN, no font, no analytics (an SVG's xmlns is a name).
        hosts = re.findall(r"https?://[^\s\"')]+", text)
        assert [h for h in hosts if not h.startswith("http://www.w3.org/")] == [], name
    assert referenced <= set(files), referenced - set(files)
    for name in sorted(referenced):
        r = httpx.get(f"{served.base}/ui/static/{name}")
        assert r.status_code == 200, name
        assert r.content == files[name].encode()
        assert r.headers["content-type"].count("charset") <= 1
    assert {n for n in files if n.endswith(".js")} <= referenced  # no module left unused


@pytest.mark.parametrize(
    "name", ["nope.js", "%2e%2e%2fassets.py", "..%2F__init__.py", "__init__.py"]
)
def test_anything_but_a_dashboard_file_is_not_found(served: Served, name: str) -> None:
    r = httpx.get(f"{served.base}/ui/static/{name}")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


def test_whoami_tells_each_token_what_it_may_do(served: Served) -> None:
    def whoami(token: str) -> httpx.Response:
        return httpx.get(
            f"{served.base}/v1/codeq/whoami", headers={"Authorization": f"Bearer {token}"}
        )

    admin = whoami(ADMIN).json()
    assert admin == {
        "subject": "ops",
        "tenantId": "acme",
        "producer": True,
        "worker": False,
        "admin": True,
        "superAdmin": False,
        "scopes": ["codeq:admin"],
        "eventTypes": [],
    }
    worker = whoami(WORKER).json()
    assert (worker["tenantId"], worker["producer"], worker["worker"], worker["admin"]) == (
        "acme",
        False,
        True,
        False,
    )
    assert worker["eventTypes"] == ["*"]
    assert whoami(OTHER).json()["tenantId"] == "globex"
    refused = whoami("not-a-token")
    assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"


# --------------------------------------------------------------------------------------------
# In the browser
# --------------------------------------------------------------------------------------------


def test_sign_in_keeps_the_token_in_the_tab_only(page: Any, served: Served) -> None:
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.goto(f"{served.base}/ui")
    page.locator("#token").fill("wrong-token")
    page.get_by_role("button", name="Sign in").click()
    assert "Sign-in refused" in page.get_by_role("alert").inner_text()

    sign_in(page, served.base, ADMIN)
    assert "ops · tenant acme" in page.get_by_test_id("identity").inner_text()
    assert page.evaluate("sessionStorage.getItem('codeq.token')") == ADMIN
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    assert urls and not [u for u in urls if ADMIN in u or "wrong-token" in u]

    page.get_by_role("button", name="Sign out").click()
    page.locator("#token").wait_for()
    assert page.evaluate("sessionStorage.getItem('codeq.token')") is None


def test_tasks_created_over_the_api_appear_and_open(page: Any, served: Served, api: Api) -> None:
    cmd = command()
    first = api.create(cmd, {"frame": 1})
    second = api.create(cmd, {"frame": 2}, idempotencyKey=f"key-{cmd}")
    sign_in(page, served.base, ADMIN)
    page.goto(f"{served.base}/ui#/tasks?command={cmd}")
    listing = page.get_by_test_id("task-list")
    listing.get_by_text(second).wait_for()
    assert first in listing.inner_text()

    api.create(cmd, {"frame": 3})  # one more: the list shows it after the next load
    page.get_by_role("button", name="Apply").click()
    page.get_by_test_id("task-list").locator("tbody tr").nth(2).wait_for()

    page.get_by_role("link", name=first).click()
    assert '"frame": 1' in page.get_by_test_id("payload").inner_text()
    assert "created" in page.get_by_test_id("timeline").inner_text()

    page.goto(f"{served.base}/ui#/tasks")
    page.get_by_placeholder("task id or idempotency key").fill(f"key-{cmd}")
    page.get_by_role("button", name="Apply").click()
    page.get_by_test_id("task-list").get_by_text(second).wait_for()
    assert first not in page.get_by_test_id("task-list").inner_text()

    page.get_by_placeholder("task id or idempotency key").fill(first)  # an id opens the task
    page.get_by_role("button", name="Apply").click()
    page.get_by_test_id("payload").wait_for()
    assert page.url.endswith(f"#/tasks/{first}")


def test_the_overview_shows_each_queue_and_refreshes_live(
    page: Any, served: Served, api: Api
) -> None:
    cmd = command()
    api.create(cmd, {"n": 1})
    sign_in(page, served.base, ADMIN)
    row = page.get_by_test_id("queues").locator("tr", has_text=cmd.lower())
    row.wait_for()
    assert row.locator("td").nth(1).inner_text() == "1"  # ready
    api.create(cmd, {"n": 2})
    api.create(cmd, {"n": 3})
    page.wait_for_function(
        "(c) => [...document.querySelectorAll('[data-testid=queues] tr')]"
        ".some(r => r.cells[0].innerText === c && r.cells[1].innerText === '3')",
        arg=cmd.lower(),
    )


def test_a_pending_task_is_cancelled_from_its_page_and_its_history_says_so(
    page: Any, served: Served, api: Api
) -> None:
    cmd = command()
    task = api.create(cmd, {"n": 1})
    sign_in(page, served.base, ADMIN)
    page.goto(f"{served.base}/ui#/tasks/{task}")
    assert "task.created" in page.get_by_test_id("timeline").inner_text()
    page.get_by_role("button", name="Cancel task").click()
    page.get_by_text("Cancelled: the task is CANCELLED and will not run.").wait_for()
    assert api.call(ADMIN, "GET", f"/tasks/{task}")["status"] == "CANCELLED"
    page.get_by_test_id("timeline").get_by_text("task.cancelled").wait_for()  # drawn again
    assert page.get_by_role("button", name="Cancel task").count() == 0  # only while pending


def test_the_overview_counts_what_completed_and_failed(page: Any, served: Served, api: Api) -> None:
    cmd = command()
    for n in range(3):
        api.create(cmd, {"n": n})
    for outcome in ("COMPLETED", "COMPLETED", "FAILED"):
        claimed = api.call(WORKER, "POST", "/tasks/claim", {"commands": [cmd]})
        body: dict[str, Any] = {"status": outcome}
        extra: dict[str, Any] = {"result": {}} if outcome == "COMPLETED" else {"error": "no"}
        body.update(extra)
        api.call(WORKER, "POST", f"/tasks/{claimed['id']}/result", body)
    stats = api.call(ADMIN, "GET", f"/admin/queues/{cmd}")
    assert stats["totals"]["completed"] == 2 and stats["totals"]["failed"] == 1
    sign_in(page, served.base, ADMIN)
    row = page.get_by_test_id("queues").locator("tr", has_text=cmd.lower())
    row.wait_for()
    headers = page.get_by_test_id("queues").locator("th").all_inner_texts()
    completed = row.locator("td").nth(headers.index("completed /min"))
    failed = row.locator("td").nth(headers.index("failed or dead /min"))
    # the sweeper's snapshot opened the window these fall in: a rate, not a dash
    page.wait_for_function(
        "(el) => /[0-9]+\\/min/.test(el.innerText)", arg=completed.element_handle()
    )
    assert re.search(r"[0-9]+/min", failed.inner_text())


def test_an_admin_requeues_a_dead_task_from_its_page(page: Any, served: Served, api: Api) -> None:
    cmd = command()
    dead = api.dead_task(cmd, {"order": 7})
    sign_in(page, served.base, ADMIN)
    page.goto(f"{served.base}/ui#/tasks/{dead}")
    assert "upstream 503" in page.locator("dl.fields").inner_text()
    page.get_by_role("button", name="Requeue from dead letters").click()
    page.get_by_text("Requeued: the task is ready again.").wait_for()
    task = api.call(ADMIN, "GET", f"/tasks/{dead}")
    assert (task["status"], task["lastKnownLocation"], task["attempts"]) == (
        "PENDING",
        "PENDING_LIST",
        0,
    )


def test_an_admin_requeues_many_from_the_dead_letters(page: Any, served: Served, api: Api) -> None:
    cmd = command()
    dead = [api.dead_task(cmd, {"n": i}) for i in range(3)]
    sign_in(page, served.base, ADMIN)
    page.get_by_role("link", name="Dead letters").click()
    page.get_by_test_id("dlq-queues").get_by_role("link", name=cmd.lower()).click()
    rows = page.get_by_test_id("dlq-tasks")
    for task_id in dead[:2]:
        rows.get_by_label(f"select {task_id}").check()
    page.get_by_role("button", name="Requeue selected").click()
    page.get_by_text("Requeued 2 task(s).").wait_for()
    left = api.call(ADMIN, "GET", f"/admin/queues/{cmd}/dlq")["tasks"]
    assert [t["id"] for t in left] == dead[2:]


def test_a_delivery_is_replayed_from_the_deliveries_page(
    page: Any, served: Served, api: Api
) -> None:
    endpoint, delivery = api.endpoint_with_delivery(command())
    sign_in(page, served.base, ADMIN)
    page.get_by_role("link", name="Webhooks").click()
    row = page.get_by_test_id("endpoints").locator("tr", has_text="billing").first
    row.wait_for()
    page.goto(f"{served.base}/ui#/deliveries?endpoint={endpoint}")
    line = page.get_by_test_id("deliveries").locator("tr", has_text=delivery)
    line.get_by_role("button", name="Retry now").click()
    page.get_by_text(f"Replayed {delivery}").wait_for()

    page.goto(f"{served.base}/ui#/deliveries/{delivery}")
    card = page.get_by_test_id("delivery")
    assert "task.created" in card.inner_text() and "POST" in card.inner_text()

    # the tenant's listing filters in the store: the endpoint's task.created deliveries hold it,
    # its task.completed ones do not
    page.goto(f"{served.base}/ui#/deliveries?endpoint={endpoint}&eventType=task.created")
    page.get_by_test_id("deliveries").locator("tr", has_text=delivery).wait_for()
    page.goto(f"{served.base}/ui#/deliveries?endpoint={endpoint}&eventType=task.completed")
    page.get_by_text("No delivery matches these filters.").wait_for()
    assert delivery not in page.get_by_test_id("deliveries").inner_text()


def loopback_endpoint(api: Api, r: Receiver, name: str) -> dict[str, Any]:
    """An endpoint of ``acme`` sending to ``r``; its command filter matches no task, so only
    test sends reach it."""
    body = {"url": r.url, "eventTypes": ["task.completed"], "commands": [command()]}
    created: dict[str, Any] = api.call(
        ADMIN, "POST", "/webhooks/endpoints", {**body, "description": name}
    )
    return created


def stats_cells(s: dict[str, Any], window: str, rate: str) -> list[str]:
    """A window's row of the endpoint page's statistics as the API's numbers read, with the
    success rate (a fraction there) written as ``rate``."""
    w = s["lastHour" if window == "last hour" else "lastDay"]
    ms = [f"{v:g}" if v is not None else "—" for v in (w["p50Ms"], w["p90Ms"], w["p99Ms"])]
    return [window, str(w["attempts"]), str(w["succeeded"]), str(w["failed"]), rate, *ms]


def test_the_webhooks_pages_show_an_endpoints_attempt_statistics(
    page: Any, served: Served, api: Api
) -> None:
    name = "stats-" + uuid.uuid4().hex[:8]
    with receiver() as r:
        r.script = [Reply(200), Reply(200, delay=0.05), Reply(410)]  # 410: final, no retry
        ep = loopback_endpoint(api, r, name)
        sent = [api.call(ADMIN, "POST", f"/webhooks/endpoints/{ep['id']}/test") for _ in range(3)]
    assert [d["status"] for d in sent] == ["succeeded", "succeeded", "gone"]
    stats = api.call(ADMIN, "GET", f"/webhooks/endpoints/{ep['id']}/stats")
    hour = stats["lastHour"]
    assert (hour["attempts"], hour["succeeded"], hour["failed"], hour["successRate"]) == (
        3,
        2,
        1,
        0.6667,
    )
    assert hour == stats["lastDay"]  # every attempt was just now: both windows hold them
    assert 0 < hour["p50Ms"] <= hour["p99Ms"]

    sign_in(page, served.base, ADMIN)
    page.get_by_role("link", name="Webhooks").click()
    listing = page.get_by_test_id("endpoints")
    row = listing.locator("tr", has_text=name)
    row.wait_for()
    headers = listing.locator("th").all_inner_texts()
    cells = row.locator("td").all_inner_texts()
    assert cells[headers.index("attempts 1 h")] == "3"
    assert cells[headers.index("success 1 h")] == "66.7%"
    assert cells[headers.index("p50 / p99 ms 1 h")] == f"{hour['p50Ms']:g} / {hour['p99Ms']:g}"
    assert "failure rate" not in headers
    recent = row.get_by_role("link", name="3 deliveries")  # the recent-deliveries link
    assert recent.get_attribute("href") == f"#/deliveries?endpoint={ep['id']}"

    row.get_by_role("link", name=name).click()
    card = page.get_by_test_id("endpoint-stats")
    card.wait_for()
    for window in ("last hour", "last day"):
        line = card.locator("tr", has_text=window).locator("td").all_inner_texts()
        assert line == stats_cells(stats, window, "66.7%")


def test_send_test_event_sends_a_signed_webhook_and_shows_its_answer(
    page: Any, served: Served, api: Api
) -> None:
    with receiver() as r:
        ep = loopback_endpoint(api, r, "test-send-" + uuid.uuid4().hex[:8])
        sign_in(page, served.base, ADMIN)
        page.goto(f"{served.base}/ui#/webhooks/{ep['id']}")
        card = page.get_by_test_id("endpoint-stats")
        card.wait_for()
        untried = card.locator("tr", has_text="last hour").locator("td").all_inner_texts()
        assert untried == ["last hour", "0", "0", "0", "—", "—", "—", "—"]

        page.get_by_role("button", name="Send test event").click()
        shown = page.get_by_test_id("action-result").get_by_role("status")
        shown.get_by_text("succeeded · HTTP 200").wait_for()
        assert r.count() == 1
        got = r.received[0]
        Webhook(ep["secret"]).verify(got.body, got.headers)  # signed with the endpoint's secret
        assert json.loads(got.body)["type"] == "webhook.test"
        delivery = api.call(ADMIN, "GET", f"/deliveries/{got.headers['webhook-id']}")
        (attempt,) = delivery["attemptLog"]
        assert shown.inner_text() == (
            f"Test event {delivery['id']}: succeeded · HTTP 200 · {attempt['latencyMs']:g} ms"
        )
        # the attempt counts in the statistics, drawn afresh
        card.locator("tr", has_text="last hour").get_by_text("100%").wait_for()
        stats = api.call(ADMIN, "GET", f"/webhooks/endpoints/{ep['id']}/stats")
        line = card.locator("tr", has_text="last hour").locator("td").all_inner_texts()
        assert line == stats_cells(stats, "last hour", "100%")

        r.script = [Reply(410)]  # a failing answer shows as an error
        page.get_by_role("button", name="Send test event").click()
        alert = page.get_by_test_id("action-result").get_by_role("alert")
        alert.get_by_text("gone · HTTP 410").wait_for()
        assert r.count() == 2


def test_a_worker_token_sees_no_admin_action(page: Any, served: Served, api: Api) -> None:
    cmd = command()
    dead = api.dead_task(cmd, {"n": 1})
    sign_in(page, served.base, WORKER)
    menu = page.locator("#nav").inner_text()
    assert "Tasks" in menu
    assert "Dead letters" not in menu and "Webhooks" not in menu
    page.goto(f"{served.base}/ui#/tasks/{dead}")
    page.get_by_test_id("payload").wait_for()
    assert page.locator("[data-admin]").count() == 0
    assert page.get_by_role("button", name="Requeue from dead letters").count() == 0
    pending = api.create(cmd, {"n": 2})
    page.goto(f"{served.base}/ui#/tasks/{pending}")
    page.get_by_test_id("payload").wait_for()
    assert page.get_by_role("button", name="Cancel task").count() == 0  # not a producer
    page.goto(f"{served.base}/ui#/dlq/{cmd}")
    page.get_by_text("Dead letters need an admin token.").wait_for()
    assert page.locator("[data-admin]").count() == 0
    page.goto(f"{served.base}/ui#/")
    page.get_by_text("Queue depths need an admin token").wait_for()
    assert page.evaluate("sessionStorage.getItem('codeq.token')") == WORKER  # still signed in


def test_another_tenants_ids_give_the_not_found_page(page: Any, served: Served, api: Api) -> None:
    task = api.create(command(), {"secret": "acme only"})
    endpoint, delivery = api.endpoint_with_delivery(command())
    sign_in(page, served.base, OTHER)
    for route in (f"tasks/{task}", f"deliveries/{delivery}", f"webhooks/{endpoint}", "nowhere"):
        page.goto(f"{served.base}/ui#/{route}")
        page.get_by_test_id("not-found").wait_for()
        assert "acme only" not in page.content()


def test_screenshots_of_the_main_pages(tmp_path: Path) -> None:
    """``python -m tests.browser DIR``, as docs/dashboard.md makes its pictures."""
    require_chromium()
    done = subprocess.run(
        [sys.executable, "-m", "tests.browser", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    written = [Path(line) for line in done.stdout.split()]
    assert [p.name for p in written] == [
        "signed-in-overview.png",
        "tasks.png",
        "task.png",
        "dead-letters.png",
        "webhooks.png",
        "deliveries.png",
    ]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in written)
