"""The HTTP API over the real Litestar app (in-process ASGI), on real Redis and the embedded
store: every route's success and error cases from spec 02."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeq.settings import Settings
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store

PRODUCER = "producer-token"
WORKER = "worker-token"
WORKER_B = "worker-b-token"
NO_SCOPE = "worker-no-scope"
ONLY_RENDER = "worker-only-render"
OTHER_TENANT = "producer-other-tenant"
ADMIN = "admin-token"
SUPER = "super-admin-token"

ALL_SCOPES = "codeq:claim codeq:heartbeat codeq:abandon codeq:nack codeq:result codeq:subscribe"


def static(tokens: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"tokens": tokens}


def make_settings(tmp: Path, prefix: str, **extra: Any) -> Settings:
    producer = {
        PRODUCER: {"sub": "prod-1", "tenantId": "acme"},
        OTHER_TENANT: {"sub": "prod-2", "tenantId": "globex"},
        ADMIN: {"sub": "ops", "tenantId": "acme", "role": "ADMIN"},
        SUPER: {"sub": "root", "tenantId": "acme", "scope": "codeq:admin:all"},
    }
    worker = {
        WORKER: {"sub": "w1", "tenantId": "acme", "scope": ALL_SCOPES, "eventTypes": ["*"]},
        WORKER_B: {"sub": "w2", "tenantId": "acme", "scope": ALL_SCOPES, "eventTypes": ["*"]},
        NO_SCOPE: {
            "sub": "w3",
            "tenantId": "acme",
            "scope": "codeq:heartbeat",
            "eventTypes": ["*"],
        },
        ONLY_RENDER: {
            "sub": "w4",
            "tenantId": "acme",
            "scope": ALL_SCOPES,
            "eventTypes": ["RENDER"],
        },
    }
    data: dict[str, Any] = {
        "keyPrefix": prefix,
        "producerAuthProvider": "static",
        "producerAuthConfig": static(producer),
        "workerAuthProvider": "static",
        "workerAuthConfig": static(worker),
        "localArtifactsDir": str(tmp / "artifacts"),
        "maxBodyBytes": 64 * 1024,
        "maxPayloadBytes": 32 * 1024,
        "backoffBaseSeconds": 0.05,
        # the receivers of these tests are on loopback: allowed explicitly, as in spec 02
        "webhookAllowedCidrs": ["127.0.0.0/8"],
    }
    data.update(extra)
    return Settings.from_mapping(data)


@pytest.fixture(params=["redis-http", "redis", "embedded", "kvrocks-http"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    """The app on each store; ``-http``: over loopback HTTP through the gateway's own protocol,
    where the hot task routes are served without ASGI (gateway.direct), else straight into
    the ASGI app (every route through Litestar)."""
    kind, _, http = request.param.partition("-")
    prefix = "api" + uuid.uuid4().hex[:10]
    store = make_store(request, kind, prefix)
    app = create_app(make_settings(tmp_path, prefix), store=store, close_store=True)
    async with serve_in_process(app, http=bool(http)) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create(c: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body = {"command": "RENDER", "payload": {"n": 1}, **body}
    r = await c.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))
    assert r.status_code == 202, r.text
    out: dict[str, Any] = r.json()
    return out


async def claim(c: httpx.AsyncClient, token: str = WORKER, **body: Any) -> httpx.Response:
    body = {"commands": ["RENDER"], **body}
    return await c.post("/v1/codeq/tasks/claim", json=body, headers=auth(token))


def error_of(r: httpx.Response, status: int, code: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"]
    return str(body["error"])


# -- create -----------------------------------------------------------------------------


async def test_create_returns_202_with_the_task(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/codeq/tasks",
        json={
            "command": "RENDER",
            "payload": {"b": 2, "a": [1, 2.5]},
            "priority": 3,
            "webhook": "http://127.0.0.1:9/cb",
        },
        headers={**auth(PRODUCER), "X-Request-Id": "req-123"},
    )
    assert r.status_code == 202
    assert r.headers["x-request-id"] == "req-123"
    t = r.json()
    assert t["status"] == "PENDING" and t["lastKnownLocation"] == "PENDING_LIST"
    assert t["payload"] == '{"b":2,"a":[1,2.5]}'  # a JSON string, compact (wire compatibility)
    assert t["tenantId"] == "acme" and t["priority"] == 3 and t["maxAttempts"] == 5
    assert t["createdAt"].endswith("Z") and len(t["createdAt"]) == 24
    got = await client.get(f"/v1/codeq/tasks/{t['id']}", headers=auth(PRODUCER))
    assert got.status_code == 200 and got.json()["id"] == t["id"]


async def test_request_ids_are_generated_when_absent_or_insane(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz", headers={"X-Request-Id": "bad id\twith spaces"})
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    rid = r.headers["x-request-id"]
    assert len(rid) == 32 and int(rid, 16) >= 0


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nope", 404), ("DELETE", "/healthz", 405), ("GET", "/v1/codeq/nope", 404)],
)
async def test_answers_of_the_router_carry_a_request_id_too(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    r = await client.request(method, path, headers={"X-Request-Id": "req-unmatched"})
    assert r.status_code == status
    assert r.headers["x-request-id"] == "req-unmatched"
    assert r.json()["code"] in ("not_found", "method_not_allowed")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payload": 1}, "command"),
        ({"command": "RENDER"}, "payload"),
        ({"command": "RENDER", "payload": None}, "payload"),
        ({"command": "bad command", "payload": 1}, "command"),
        ({"command": "RENDER", "payload": 1, "priority": "high"}, "priority"),
        ({"command": "RENDER", "payload": 1, "maxAttempts": 0}, "maxAttempts"),
        ({"command": "RENDER", "payload": 1, "webhook": "ftp://x"}, "webhook"),
        ({"command": "RENDER", "payload": 1, "delaySeconds": -5}, "delaySeconds"),
        ({"command": "RENDER", "payload": 1, "runAt": "tomorrow"}, "runAt"),
        ({"command": "RENDER", "payload": 1, "idempotencyKey": "k" * 300}, "idempotencyKey"),
    ],
)
async def test_bad_create_bodies_are_400_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    r = await client.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))
    message = error_of(r, 400, "invalid_request")
    assert field in message
    stats = await client.get("/v1/codeq/admin/queues", headers=auth(ADMIN))
    assert stats.json() == {"queues": []}  # nothing was written


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/codeq/tasks",
        content=b'{"command": "X", ',
        headers={**auth(PRODUCER), "Content-Type": "application/json"},
    )
    error_of(r, 400, "invalid_request")


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/codeq/tasks",
        json={"command": "RENDER", "payload": "x" * 70_000},
        headers=auth(PRODUCER),
    )
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"
    r = await client.post(
        "/v1/codeq/tasks",
        json={"command": "RENDER", "payload": "x" * 40_000},
        headers=auth(PRODUCER),
    )
    assert r.status_code == 413  # under the body limit, over maxPayloadBytes


async def test_idempotent_repeat_and_conflict(client: httpx.AsyncClient) -> None:
    first = await create(client, idempotencyKey="order-1")
    r = await client.post(
        "/v1/codeq/tasks",
        json={"command": "RENDER", "payload": {"n": 1}, "idempotencyKey": "order-1"},
        headers=auth(PRODUCER),
    )
    assert r.status_code == 202 and r.headers["idempotent-replay"] == "true"
    assert r.json()["id"] == first["id"]
    r = await client.post(
        "/v1/codeq/tasks",
        json={"command": "RENDER", "payload": {"n": 2}, "idempotencyKey": "order-1"},
        headers=auth(PRODUCER),
    )
    error_of(r, 409, "idempotency_conflict")


async def test_batch_items_stand_alone(client: httpx.AsyncClient) -> None:
    tasks = [{"command": "RENDER", "payload": i} for i in range(5)]
    tasks[1] = {"command": "RENDER"}
    tasks[3] = {"command": "no good", "payload": 1}
    r = await client.post("/v1/codeq/tasks/batch", json={"tasks": tasks}, headers=auth(PRODUCER))
    assert r.status_code == 202
    out = r.json()
    assert len(out["tasks"]) == 3
    assert [e["index"] for e in out["errors"]] == [1, 3]
    assert all(e["code"] == "invalid_request" for e in out["errors"])
    too_many = [{"command": "RENDER", "payload": 1}] * 1001
    r = await client.post("/v1/codeq/tasks/batch", json={"tasks": too_many}, headers=auth(PRODUCER))
    assert r.status_code in (400, 413)


# -- auth -------------------------------------------------------------------------------


async def test_credentials_are_required(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/codeq/tasks", json={"command": "X", "payload": 1})
    error_of(r, 401, "unauthorized")
    r = await client.post(
        "/v1/codeq/tasks", json={"command": "X", "payload": 1}, headers=auth("nope")
    )
    error_of(r, 401, "unauthorized")
    r = await claim(client, token=PRODUCER)  # a producer token is not a worker token
    error_of(r, 401, "unauthorized")


async def test_worker_without_scope_or_command_is_403(client: httpx.AsyncClient) -> None:
    error_of(await claim(client, token=NO_SCOPE), 403, "forbidden")
    error_of(await claim(client, token=ONLY_RENDER, commands=["OTHER"]), 403, "forbidden")
    assert (await claim(client, token=ONLY_RENDER)).status_code == 204
    assert (
        await client.post("/v1/codeq/tasks/claim", json={}, headers=auth(ONLY_RENDER))
    ).status_code == 204  # default: token's


async def test_foreign_tenant_ids_are_404(client: httpx.AsyncClient) -> None:
    t = await create(client)
    for path in (f"/v1/codeq/tasks/{t['id']}", f"/v1/codeq/tasks/{t['id']}/result"):
        error_of(await client.get(path, headers=auth(OTHER_TENANT)), 404, "not_found")
    error_of(
        await client.get("/v1/codeq/tasks/not-a-uuid", headers=auth(PRODUCER)), 404, "not_found"
    )


# -- the worker side ----------------------------------------------------------------------


async def test_full_round_trip(client: httpx.AsyncClient) -> None:
    t = await create(client, webhook="http://127.0.0.1:9/cb")
    r = await claim(client, leaseSeconds=60)
    assert r.status_code == 200
    task = r.json()
    assert task["id"] == t["id"] and task["leaseId"] and task["attempts"] == 1
    assert task["status"] == "IN_PROGRESS" and task["workerId"] == "w1"
    lease = task["leaseId"]
    r = await client.post(
        f"/v1/codeq/tasks/{t['id']}/heartbeat",
        json={"extendSeconds": 120, "leaseId": lease},
        headers=auth(WORKER),
    )
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["leaseUntil"]
    r = await client.post(
        f"/v1/codeq/tasks/{t['id']}/result",
        json={"status": "COMPLETED", "result": {"url": "s3://x"}, "leaseId": lease},
        headers=auth(WORKER),
    )
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["status"] == "COMPLETED" and res["result"] == {"url": "s3://x"}
    assert res["taskId"] == t["id"] and res["completedAt"].endswith("Z")
    r = await client.post(
        f"/v1/codeq/tasks/{t['id']}/result",
        json={"status": "COMPLETED", "result": {}},
        headers=auth(WORKER),
    )
    error_of(r, 409, "not_in_progress")
    got = await client.get(f"/v1/codeq/tasks/{t['id']}", headers=auth(WORKER))
    assert got.json()["status"] == "COMPLETED"
    both = await client.get(f"/v1/codeq/tasks/{t['id']}/result", headers=auth(PRODUCER))
    assert both.status_code == 200
    assert both.json()["task"]["id"] == t["id"] and both.json()["result"]["result"] == {
        "url": "s3://x"
    }


async def test_result_is_404_until_there_is_one(client: httpx.AsyncClient) -> None:
    t = await create(client)
    error_of(
        await client.get(f"/v1/codeq/tasks/{t['id']}/result", headers=auth(PRODUCER)),
        404,
        "not_found",
    )


async def test_lease_holder_rules(client: httpx.AsyncClient) -> None:
    t = await create(client)
    task = (await claim(client)).json()
    base = f"/v1/codeq/tasks/{t['id']}"
    for action, body in (
        ("heartbeat", {}),
        ("abandon", {}),
        ("nack", {}),
        ("result", {"status": "FAILED", "error": "x"}),
    ):
        r = await client.post(f"{base}/{action}", json=body, headers=auth(WORKER_B))
        error_of(r, 403, "not_owner")
        r = await client.post(
            f"{base}/{action}", json={**body, "leaseId": "0" * 32}, headers=auth(WORKER)
        )
        error_of(r, 409, "lease_mismatch")
    unknown = "01890000-0000-7000-8000-000000000000"
    error_of(
        await client.post(f"/v1/codeq/tasks/{unknown}/heartbeat", json={}, headers=auth(WORKER)),
        404,
        "not_found",
    )
    r = await client.post(
        f"{base}/abandon", json={"leaseId": task["leaseId"]}, headers=auth(WORKER)
    )
    assert r.status_code == 200 and r.json() == {"status": "requeued"}
    error_of(
        await client.post(f"{base}/heartbeat", json={}, headers=auth(WORKER)),
        409,
        "not_in_progress",
    )


async def test_nack_then_dead_letter_then_requeue(client: httpx.AsyncClient) -> None:
    t = await create(client, maxAttempts=1)
    await claim(client)
    r = await client.post(
        f"/v1/codeq/tasks/{t['id']}/nack", json={"reason": "boom"}, headers=auth(WORKER)
    )
    assert r.status_code == 200 and r.json() == {"status": "dlq", "delaySeconds": 0}
    dlq = await client.get("/v1/codeq/admin/queues/RENDER/dlq", headers=auth(ADMIN))
    assert dlq.status_code == 200
    assert [x["id"] for x in dlq.json()["tasks"]] == [t["id"]]
    assert dlq.json()["tasks"][0]["error"] == "boom"
    stats = await client.get("/v1/codeq/admin/queues/RENDER", headers=auth(ADMIN))
    assert stats.json() == {
        "command": "render",
        "ready": 0,
        "delayed": 0,
        "inProgress": 0,
        "dlq": 1,
        "totals": {"created": 1, "completed": 0, "failed": 0, "dead": 1, "cancelled": 0},
    }
    r = await client.post(
        "/v1/codeq/admin/queues/RENDER/dlq/requeue", json={"all": True}, headers=auth(ADMIN)
    )
    assert r.json() == {"requeued": 1, "ids": [t["id"]]}
    again = (await claim(client)).json()
    assert (again["id"], again["attempts"]) == (t["id"], 1)  # requeue reset the attempts
    r = await client.post(f"/v1/codeq/tasks/{t['id']}/abandon", json={}, headers=auth(WORKER))
    assert r.status_code == 200
    t2 = await create(client, command="OTHER", maxAttempts=3)
    await claim(client, commands=["OTHER"])
    r = await client.post(
        f"/v1/codeq/tasks/{t2['id']}/nack", json={"delaySeconds": 30}, headers=auth(WORKER)
    )
    assert r.json() == {"status": "requeued", "delaySeconds": 30.0}


async def test_result_validation_and_artifacts(client: httpx.AsyncClient, tmp_path: Path) -> None:
    t = await create(client)
    await claim(client)
    base = f"/v1/codeq/tasks/{t['id']}/result"
    assert "result" in error_of(
        await client.post(base, json={"status": "COMPLETED"}, headers=auth(WORKER)),
        400,
        "invalid_request",
    )
    assert "error" in error_of(
        await client.post(base, json={"status": "FAILED"}, headers=auth(WORKER)),
        400,
        "invalid_request",
    )
    assert "status" in error_of(
        await client.post(base, json={"status": "DONE"}, headers=auth(WORKER)),
        400,
        "invalid_request",
    )
    error_of(
        await client.post(
            base,
            json={"status": "COMPLETED", "result": {}, "artifacts": [{"name": "a.txt"}]},
            headers=auth(WORKER),
        ),
        400,
        "invalid_request",
    )
    content = base64.b64encode(b"hello").decode()
    r = await client.post(
        base,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [
                {"name": "../../etc/passwd", "contentBase64": content},
                {"name": "link", "url": "https://example.invalid/x"},
            ],
        },
        headers=auth(WORKER),
    )
    assert r.status_code == 200, r.text
    stored, linked = r.json()["artifacts"]
    assert stored["name"] == "passwd" and stored["size"] == 5
    path = Path(stored["url"].removeprefix("file://"))
    assert path.read_bytes() == b"hello"  # noqa: ASYNC240 - a test reading 5 bytes
    assert (tmp_path / "artifacts") in path.parents  # no traversal out of the artifacts dir
    assert linked == {"name": "link", "url": "https://example.invalid/x"}
    # A refused second submit (403 not the owner, 409 already finished) with an artifact of
    # the same name leaves the accepted result's file untouched.
    other = base64.b64encode(b"evil").decode()
    for token, status in ((WORKER_B, 403), (WORKER, 409)):
        r = await client.post(
            base,
            json={
                "status": "COMPLETED",
                "result": {},
                "artifacts": [{"name": "passwd", "contentBase64": other}],
            },
            headers=auth(token),
        )
        assert r.status_code == status, r.text
        assert path.read_bytes() == b"hello"  # noqa: ASYNC240 - a test reading 5 bytes
    assert [p.name for p in path.parent.iterdir()] == ["passwd"]


async def test_claim_validation(client: httpx.AsyncClient) -> None:
    assert "waitSeconds" in error_of(await claim(client, waitSeconds=31), 400, "invalid_request")
    assert "leaseSeconds" in error_of(await claim(client, leaseSeconds=0), 400, "invalid_request")
    assert "commands" in error_of(
        await client.post("/v1/codeq/tasks/claim", json={}, headers=auth(WORKER)),
        400,
        "invalid_request",
    )  # a "*" token must say which commands


async def test_empty_long_poll_returns_204_after_the_wait(client: httpx.AsyncClient) -> None:
    import time

    started = time.monotonic()
    r = await claim(client, waitSeconds=1)
    elapsed = time.monotonic() - started
    assert r.status_code == 204 and r.content == b""
    assert 0.9 <= elapsed < 3


async def test_long_poll_wakes_on_create(client: ApiClient) -> None:
    import asyncio
    import time

    async def waiting() -> bool:
        return client.gw.waker.waiting() == 1

    polling = asyncio.create_task(claim(client, waitSeconds=10))
    await eventually(waiting)
    await create(client)
    created_at = time.monotonic()
    r = await polling
    woke_after = time.monotonic() - created_at
    assert r.status_code == 200
    assert woke_after < 0.5  # woken by the event, not by the 1 s fallback re-check


# -- admin ------------------------------------------------------------------------------


async def test_admin_routes_need_admin(client: httpx.AsyncClient) -> None:
    for path in (
        "/v1/codeq/admin/queues",
        "/v1/codeq/admin/queues/RENDER",
        "/v1/codeq/admin/queues/RENDER/dlq",
    ):
        error_of(await client.get(path, headers=auth(PRODUCER)), 403, "forbidden")
    error_of(
        await client.post("/v1/codeq/admin/tasks/cleanup", json={}, headers=auth(PRODUCER)),
        403,
        "forbidden",
    )
    error_of(
        await client.get("/v1/codeq/admin/queues", headers={"X-Role": "ADMIN", **auth(PRODUCER)}),
        403,
        "forbidden",
    )  # no header grants admin


async def test_queue_listing_is_tenant_scoped_unless_super_admin(
    client: httpx.AsyncClient,
) -> None:
    await create(client)
    await client.post(
        "/v1/codeq/tasks", json={"command": "OTHER", "payload": 1}, headers=auth(OTHER_TENANT)
    )
    mine = (await client.get("/v1/codeq/admin/queues", headers=auth(ADMIN))).json()
    created_one = {"created": 1, "completed": 0, "failed": 0, "dead": 0, "cancelled": 0}
    assert mine == {
        "queues": [
            {
                "command": "render",
                "ready": 1,
                "delayed": 0,
                "inProgress": 0,
                "dlq": 0,
                "totals": created_one,
            }
        ]
    }
    everyone = (await client.get("/v1/codeq/admin/queues", headers=auth(SUPER))).json()
    assert {(q["tenantId"], q["command"]) for q in everyone["queues"]} == {
        ("acme", "render"),
        ("globex", "other"),
    }


async def test_cleanup_answers_what_it_did(client: httpx.AsyncClient) -> None:
    t = await create(client)
    task = (await claim(client)).json()
    await client.post(
        f"/v1/codeq/tasks/{task['id']}/result",
        json={"status": "COMPLETED", "result": {}},
        headers=auth(WORKER),
    )
    r = await client.post(
        "/v1/codeq/admin/tasks/cleanup",
        json={"before": "2999-01-01T00:00:00Z", "limit": 10},
        headers=auth(ADMIN),
    )
    assert r.status_code == 200
    assert r.json() == {
        "deleted": 1,
        "before": "2999-01-01T00:00:00.000Z",
        "limit": 10,
        "cursor": None,
    }
    error_of(
        await client.get(f"/v1/codeq/tasks/{t['id']}", headers=auth(PRODUCER)), 404, "not_found"
    )
    for limit in (0, -5, 100_001):
        r = await client.post(
            "/v1/codeq/admin/tasks/cleanup", json={"limit": limit}, headers=auth(ADMIN)
        )
        assert "limit" in error_of(r, 400, "invalid_request")
    r = await client.post(
        "/v1/codeq/admin/tasks/cleanup", json={"cursor": "not-ours"}, headers=auth(ADMIN)
    )
    assert "cursor" in error_of(r, 400, "invalid_request")


async def test_cleanup_goes_on_from_its_cursor(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await create(client)
        task = (await claim(client)).json()
        await client.post(
            f"/v1/codeq/tasks/{task['id']}/result",
            json={"status": "COMPLETED", "result": {}},
            headers=auth(WORKER),
        )
    body: dict[str, object] = {"before": "2999-01-01T00:00:00Z", "limit": 1}
    deleted, calls = 0, 0
    while True:
        calls += 1
        assert calls <= 10
        r = await client.post("/v1/codeq/admin/tasks/cleanup", json=body, headers=auth(ADMIN))
        assert r.status_code == 200, r.text
        deleted += r.json()["deleted"]
        if r.json()["cursor"] is None:
            break
        body["cursor"] = r.json()["cursor"]
    assert deleted == 3 and calls >= 3


# -- operations -------------------------------------------------------------------------


async def test_health_ready_metrics_and_schema(client: httpx.AsyncClient) -> None:
    assert (await client.get("/readyz")).json() == {"status": "ready"}
    await create(client)
    text = (await client.get("/metrics")).text
    assert 'codeq_task_created_total{command="render"} 1.0' in text
    schema = (await client.get("/schema/openapi.json")).json()
    paths = schema["paths"]
    for path in (
        "/v1/codeq/tasks",
        "/v1/codeq/tasks/batch",
        "/v1/codeq/tasks/claim",
        "/v1/codeq/tasks/{task_id}/heartbeat",
        "/v1/codeq/tasks/{task_id}/abandon",
        "/v1/codeq/tasks/{task_id}/nack",
        "/v1/codeq/tasks/{task_id}/result",
        "/v1/codeq/tasks/{task_id}",
        "/v1/codeq/admin/queues",
        "/v1/codeq/admin/tasks/cleanup",
    ):
        assert path in paths, path
    claim_op = paths["/v1/codeq/tasks/claim"]["post"]
    assert {"200", "204", "400", "401", "403", "503"} <= set(claim_op["responses"])
    assert "ErrorOut" in str(claim_op["responses"]["403"])


async def test_unknown_route_is_a_json_404(client: httpx.AsyncClient) -> None:
    error_of(await client.get("/v1/codeq/nothing-here"), 404, "not_found")


async def test_start_up_collects_the_young_generation_less_often_and_never_more(
    tmp_path: Path,
) -> None:
    """A request's objects die by reference count: the app's start-up raises the young
    generation's threshold (its collections only walked the requests in flight), and keeps
    a higher one the embedding process chose, or 0 (automatic collection off)."""
    import gc

    from gateway.app import YOUNG_GC_THRESHOLD

    saved = gc.get_threshold()
    try:
        for before, after in [(700, YOUNG_GC_THRESHOLD), (YOUNG_GC_THRESHOLD * 2, None), (0, None)]:
            gc.set_threshold(before, 7, 9)
            prefix = "gc" + uuid.uuid4().hex[:10]
            store = RedisStore.embedded(KeySchema(prefix))
            app = create_app(make_settings(tmp_path, prefix), store=store, close_store=True)
            async with serve_in_process(app) as c:
                assert (await c.get("/readyz")).status_code == 200
                assert gc.get_threshold() == (before if after is None else after, 7, 9)
    finally:
        gc.set_threshold(*saved)
