"""``POST /v1/codeq/webhooks/endpoints/{id}/test``: a signed ``webhook.test`` message sent now
through the deliverers' own attempt (target checks, custom headers, signatures), recorded as a
delivery and answered with its record; a failed one is retried like any delivery. And the
``codeq webhook endpoints`` commands, end to end against a live ``codeq serve``."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store
from tests.receivers import Reply, receiver
from tests.served import TOKEN, Served, serve
from tests.servers import RedisServer, free_port
from tests.test_api import OTHER_TENANT, PRODUCER, auth, make_settings

BASE = "/v1/codeq/webhooks/endpoints"


@pytest.fixture(params=["redis", "embedded", "kvrocks"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "ts" + uuid.uuid4().hex[:10]
    store = make_store(request, request.param, prefix)
    settings = make_settings(
        tmp_path,
        prefix,
        webhookAllowedCidrs=["127.0.0.0/8"],
        webhookHmacSecret="global-secret",
        webhookRetrySchedule=[0.1, 0.1, 0.1],
    )
    app = create_app(settings, store=store, close_store=True, run_deliverers=True)
    async with serve_in_process(app) as c:
        yield c


async def endpoint(api: ApiClient, url: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, "eventTypes": ["task.completed"], **fields}
    r = await api.post(BASE, json=body, headers=auth(PRODUCER))
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def test_a_test_send_is_signed_sent_now_and_answered_with_its_record(
    api: ApiClient,
) -> None:
    with receiver() as r:
        ep = await endpoint(api, r.url, headers={"Authorization": "Bearer abc", "X-Team": "t1"})
        answer = await api.post(f"{BASE}/{ep['id']}/test", headers=auth(PRODUCER))
        assert answer.status_code == 200, answer.text
        d = answer.json()
        # The record: status, the response code, the latency and the first bytes of the answer.
        assert d["status"] == "succeeded" and d["attempts"] == 1
        assert d["eventType"] == "webhook.test" and d["endpointId"] == ep["id"]
        (attempt,) = d["attemptLog"]
        assert attempt["statusCode"] == 200 and attempt["response"] == "ok"
        assert attempt["latencyMs"] > 0

        assert r.count() == 1  # sent before the answer, not later
        got = r.received[0]
        assert json.loads(got.body)["type"] == "webhook.test"
        assert json.loads(got.body)["data"]["endpointId"] == ep["id"]
        assert got.headers["webhook-id"] == d["id"]
        assert got.headers["x-codeq-event"] == "webhook.test"
        assert got.headers["authorization"] == "Bearer abc" and got.headers["x-team"] == "t1"
        Webhook(ep["secret"]).verify(got.body, got.headers)  # the reference library

    # A delivery like any other: found by id and among the endpoint's deliveries.
    same = (await api.get(f"/v1/codeq/deliveries/{d['id']}", headers=auth(PRODUCER))).json()
    assert same["status"] == "succeeded" and same["attemptLog"] == d["attemptLog"]
    listed = (await api.get(f"{BASE}/{ep['id']}/deliveries", headers=auth(PRODUCER))).json()
    assert [x["id"] for x in listed["deliveries"]] == [d["id"]]


async def test_a_failed_test_send_is_retried_by_the_deliverers(api: ApiClient) -> None:
    with receiver() as r:
        r.script = [Reply(503)]  # then 200
        ep = await endpoint(api, r.url)
        d = (await api.post(f"{BASE}/{ep['id']}/test", headers=auth(PRODUCER))).json()
        assert d["status"] == "retrying" and d["nextAttemptAt"].endswith("Z")
        assert [a["statusCode"] for a in d["attemptLog"]] == [503]

        async def delivered() -> bool:
            got = await api.get(f"/v1/codeq/deliveries/{d['id']}", headers=auth(PRODUCER))
            return bool(got.json()["status"] == "succeeded")

        await eventually(delivered, timeout=10)
        assert r.count() == 2
        first, second = r.received
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == d["id"]
        assert second.headers["x-codeq-delivery-attempt"] == "2"
        assert first.body == second.body


async def test_a_test_send_obeys_the_target_rules(tmp_path: Path, redis_server: Any) -> None:
    # "localhost" passes at create (::1 is allowed) but resolves to 127.0.0.1 too, which is
    # not: the attempt is refused as every delivery's would be, and nothing is sent.
    prefix = "tr" + uuid.uuid4().hex[:10]
    from codeq.store.keys import KeySchema
    from codeq.store.redis_store import RedisStore

    store = RedisStore.from_url(redis_server.url, KeySchema(prefix))
    settings = make_settings(tmp_path, prefix, webhookAllowedCidrs=["::1/128"])
    app = create_app(settings, store=store, close_store=True)
    with receiver() as r:
        async with serve_in_process(app) as api:
            port = r.url.split(":")[2].split("/")[0]
            ep = await endpoint(api, f"http://localhost:{port}/hook")
            d = (await api.post(f"{BASE}/{ep['id']}/test", headers=auth(PRODUCER))).json()
        assert d["status"] == "dead"
        assert d["attemptLog"][0]["error"].startswith("refused: localhost resolves to a loopback")
        assert r.count() == 0


async def test_a_disabled_endpoint_can_be_tested_and_stays_disabled(api: ApiClient) -> None:
    with receiver() as r:
        ep = await endpoint(api, r.url)
        await api.patch(f"{BASE}/{ep['id']}", json={"enabled": False}, headers=auth(PRODUCER))
        d = (await api.post(f"{BASE}/{ep['id']}/test", headers=auth(PRODUCER))).json()
        assert d["status"] == "succeeded" and r.count() == 1
        shown = (await api.get(f"{BASE}/{ep['id']}", headers=auth(PRODUCER))).json()
        assert shown["enabled"] is False


async def test_another_tenants_endpoint_cannot_be_tested(api: ApiClient) -> None:
    with receiver() as r:
        ep = await endpoint(api, r.url)
        other = await api.post(f"{BASE}/{ep['id']}/test", headers=auth(OTHER_TENANT))
        assert other.status_code == 404 and other.json()["code"] == "not_found"
        missing = await api.post(f"{BASE}/ep_missing/test", headers=auth(PRODUCER))
        assert missing.status_code == 404
        assert r.count() == 0
        listed = (await api.get(f"{BASE}/{ep['id']}/deliveries", headers=auth(PRODUCER))).json()
        assert listed == {"deliveries": []}


# -- the CLI, end to end ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(redis_server: RedisServer) -> Iterator[Served]:
    env = {
        "REDIS_ADDR": f"127.0.0.1:{redis_server.port}",
        "KEY_PREFIX": f"epcli{free_port()}",
        "WEBHOOK_RETRY_SCHEDULE": "0.2,0.2",
    }
    with serve(env) as s:
        yield s


def codeq(
    served: Served, *args: str, code: int = 0, stdin: str = "", **environ: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CODEQ_BASE_URL": served.base, "CODEQ_TOKEN": TOKEN}
    env.pop("CODEQ_PROFILE", None)
    env.pop("CODEQ_ENDPOINT_SECRET", None)  # only what the test gives
    env.update(environ)
    done = subprocess.run(
        [sys.executable, "-m", "codeq.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=60,
    )
    assert done.returncode == code, f"codeq {' '.join(args)} → {done.returncode}\n{done.stderr}"
    return done


def codeq_json(served: Served, *args: str, code: int = 0, stdin: str = "", **environ: str) -> Any:
    return json.loads(codeq(served, "--json", *args, code=code, stdin=stdin, **environ).stdout)


def test_the_endpoint_commands(served: Served) -> None:
    secret = "whsec_" + "Y2xpLWNob3Nlbi1zZWNyZXQtb2YtMzItYnl0ZXMhIQ=="
    with receiver() as r:
        ep = codeq_json(
            served,
            "webhook",
            "endpoints",
            "create",
            r.url,
            "-e",
            "task.completed",
            "--header",
            "X-Team: blue",
            "--rate-limit",
            "20",
            "--secret",
            secret,
            "--description",
            "billing",
            "--metadata",
            "owner=ops",
            "--channel",
            "billing",
        )
        assert ep["secret"] == secret and ep["headers"] == {"X-Team": "blue"}
        assert ep["rateLimit"] == 20 and ep["metadata"] == {"owner": "ops"}
        assert ep["channels"] == ["billing"] and ep["signatureScheme"] == "hmac-sha256"
        listed = codeq_json(served, "webhook", "endpoints", "list", "--channel", "billing")
        assert [e["id"] for e in listed["endpoints"]] == [ep["id"]]
        assert codeq_json(served, "webhook", "endpoints", "list", "--channel", "x") == {
            "endpoints": []
        }
        assert "X-Team" in codeq(served, "webhook", "endpoints", "get", ep["id"]).stdout

        changed = codeq_json(
            served,
            "webhook",
            "endpoints",
            "update",
            ep["id"],
            "--rate-limit",
            "0",
            "--clear-headers",
            "--description",
            "billing v2",
        )
        assert "rateLimit" not in changed and "headers" not in changed
        assert changed["description"] == "billing v2"

        tested = codeq_json(served, "webhook", "endpoints", "test", ep["id"])
        assert tested["status"] == "succeeded" and tested["attemptLog"][0]["statusCode"] == 200
        assert (
            "succeeded: HTTP 200" in codeq(served, "webhook", "endpoints", "test", ep["id"]).stdout
        )
        Webhook(secret).verify(r.received[0].body, r.received[0].headers)

        assert codeq(served, "webhook", "endpoints", "secret", ep["id"]).stdout.strip() == secret
        rotated = codeq_json(served, "webhook", "endpoints", "rotate-secret", ep["id"])
        assert rotated["secret"] != secret and rotated["previousSecretExpiresAt"].endswith("Z")
        shown = codeq_json(served, "webhook", "endpoints", "secret", ep["id"])
        assert shown == {"signatureScheme": "hmac-sha256", "secret": rotated["secret"]}

        r.default = Reply(500)
        failed = codeq(served, "--json", "webhook", "endpoints", "test", ep["id"], code=1)
        assert json.loads(failed.stdout)["status"] == "retrying"

        bad = codeq(served, "webhook", "endpoints", "create", r.url, "--secret", "nope", code=1)
        assert "secret: must start with whsec_" in bad.stderr
        codeq(served, "webhook", "endpoints", "update", ep["id"], code=2)  # nothing to change
        codeq(served, "webhook", "endpoints", "delete", ep["id"])
        gone = codeq(served, "webhook", "endpoints", "get", ep["id"], code=1)
        assert "not found" in gone.stderr


def test_an_endpoint_secret_stays_off_the_command_line(served: Served) -> None:
    """``--secret -`` reads the secret from stdin and ``CODEQ_ENDPOINT_SECRET`` gives it
    from the environment (neither is in ``ps`` or the shell's history); ``--secret VALUE``
    still works."""
    piped = "whsec_" + base64.b64encode(b"piped in, never in argv!").decode()
    from_env = "whsec_" + base64.b64encode(b"from the environment, too").decode()
    rotated = "whsec_" + base64.b64encode(b"rotated in through stdin!").decode()
    with receiver() as r:
        ep = codeq_json(
            served, "webhook", "endpoints", "create", r.url, "--secret", "-", stdin=piped + "\n"
        )
        assert ep["secret"] == piped
        shown = codeq_json(served, "webhook", "endpoints", "secret", ep["id"])
        assert shown["secret"] == piped

        done = codeq_json(
            served,
            "webhook",
            "endpoints",
            "rotate-secret",
            ep["id"],
            CODEQ_ENDPOINT_SECRET=from_env,
        )
        assert done["secret"] == from_env
        done = codeq_json(
            served, "webhook", "endpoints", "rotate-secret", ep["id"], "--secret", "-",
            stdin=rotated,
        )  # fmt: skip
        assert done["secret"] == rotated
        assert codeq_json(served, "webhook", "endpoints", "secret", ep["id"])["secret"] == rotated

        other = codeq_json(
            served, "webhook", "endpoints", "create", r.url, CODEQ_ENDPOINT_SECRET=from_env
        )
        assert other["secret"] == from_env
        empty = codeq(served, "webhook", "endpoints", "create", r.url, "--secret", "-", code=2)
        assert "no secret on stdin" in empty.stderr
        for made in (ep, other):
            codeq(served, "webhook", "endpoints", "delete", made["id"])
