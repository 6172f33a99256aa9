"""Cancelling a pending task and a task's own history (issue 17): the engine on every backend
(the store fixture checks the queue structures and indexes after each test), the callback a
cancelled task's webhook gets, and the HTTP routes ``POST /v1/codeq/tasks/{id}/cancel`` and
``GET /v1/codeq/tasks/{id}/history``."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from codeq.domain import ListStatus, Location, NewTask, TaskFilter, TaskStatus
from codeq.engine import Engine, EngineConfig
from codeq.errors import Conflict, InvalidRequest, NotFound
from codeq.store.redis_store import RedisStore
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store
from tests.test_api import OTHER_TENANT, PRODUCER, WORKER, auth, make_settings

ACME = "acme"


async def test_a_ready_task_is_cancelled_and_never_claimed(engine: Engine) -> None:
    t = (await engine.create(ACME, NewTask(command="render", payload="{}"))).task
    other = (await engine.create(ACME, NewTask(command="render", payload="{}"))).task
    done = await engine.cancel(ACME, t.id, reason="not needed")
    assert done.status is TaskStatus.CANCELLED
    assert done.last_known_location is Location.NONE
    assert done.error == "not needed" and done.completed_at_ms is not None
    got = await engine.claim(ACME, "w", ["render"])
    assert got is not None and got.id == other.id
    assert await engine.claim(ACME, "w", ["render"]) is None
    stats = await engine.queue_stats(ACME, "render")
    assert (stats.ready, stats.in_progress) == (0, 1)
    listed = await engine.list_tasks(ACME, TaskFilter(status=ListStatus.CANCELLED))
    assert [x.id for x in listed.tasks] == [t.id]


async def test_a_delayed_task_is_cancelled_and_never_promoted(engine: Engine) -> None:
    t = (await engine.create(ACME, NewTask(command="later", payload="{}", delay_seconds=0.05))).task
    await engine.cancel(ACME, t.id)
    await asyncio.sleep(0.06)  # the delay has to pass for the question to mean anything
    assert await engine.claim(ACME, "w", ["later"]) is None
    assert (await engine.get_task(ACME, t.id)).status is TaskStatus.CANCELLED
    assert (await engine.queue_stats(ACME, "later")).delayed == 0


async def test_cancel_is_idempotent_and_refused_once_a_worker_holds_the_task(
    engine: Engine,
) -> None:
    t = (await engine.create(ACME, NewTask(command="c", payload="{}"))).task
    first = await engine.cancel(ACME, t.id, reason="r")
    again = await engine.cancel(ACME, t.id, reason="other")
    assert again.status is TaskStatus.CANCELLED and again.error == first.error == "r"
    held = (await engine.create(ACME, NewTask(command="c", payload="{}"))).task
    assert (await engine.claim(ACME, "w", ["c"])) is not None
    with pytest.raises(Conflict) as refused:
        await engine.cancel(ACME, held.id)
    assert refused.value.code == "not_cancellable"
    assert "IN_PROGRESS" in str(refused.value)
    await engine.complete(ACME, held.id, "w", result="{}")
    with pytest.raises(Conflict):
        await engine.cancel(ACME, held.id)
    assert (await engine.get_task(ACME, held.id)).status is TaskStatus.COMPLETED


async def test_cancel_reaches_only_its_tenant_and_checks_its_reason(engine: Engine) -> None:
    t = (await engine.create(ACME, NewTask(command="c", payload="{}"))).task
    with pytest.raises(NotFound):
        await engine.cancel("globex", t.id)
    with pytest.raises(NotFound):
        await engine.cancel(ACME, str(uuid.uuid4()))
    with pytest.raises(InvalidRequest) as bad:
        await engine.cancel(ACME, t.id, reason="x" * 5000)
    assert bad.value.field == "reason"
    assert (await engine.get_task(ACME, t.id)).status is TaskStatus.PENDING


async def test_cancelled_tasks_are_purged_after_their_retention(store: RedisStore) -> None:
    engine = Engine(store, EngineConfig(task_retention_seconds=1))
    t = (await engine.create(ACME, NewTask(command="c", payload="{}"))).task
    await engine.cancel(ACME, t.id)
    out = await engine.cleanup(tenant=ACME, before_ms=t.created_at_ms + 60_000, limit=100)
    assert out.deleted == 1
    with pytest.raises(NotFound):
        await engine.get_task(ACME, t.id)


async def test_the_history_tells_every_step_of_a_task(engine: Engine) -> None:
    t = (await engine.create(ACME, NewTask(command="h", payload="{}", max_attempts=3))).task
    assert (await engine.claim(ACME, "w1", ["h"])) is not None
    await engine.nack(ACME, t.id, worker_id="w1", reason="flaky", delay_seconds=0)
    assert (await engine.claim(ACME, "w2", ["h"])) is not None
    await engine.fail(ACME, t.id, "w2", error="gave up")
    events = await engine.task_history(ACME, t.id)
    assert [e.type for e in events] == [
        "task.created",
        "task.claimed",
        "task.nacked",
        "task.claimed",
        "task.failed",
    ]
    assert [e.worker_id for e in events if e.type == "task.claimed"] == ["w1", "w2"]
    assert [e.attempt for e in events if e.type == "task.claimed"] == [1, 2]
    nacked = events[2]
    assert nacked.reason == "flaky" and nacked.delay_ms == 0
    assert all(a.at_ms <= b.at_ms for a, b in itertools.pairwise(events))
    with pytest.raises(NotFound):
        await engine.task_history("globex", t.id)


async def test_the_history_is_bounded_and_keeps_the_creation(engine: Engine) -> None:
    t = (await engine.create(ACME, NewTask(command="b", payload="{}", max_attempts=100))).task
    for i in range(40):
        assert (await engine.claim(ACME, f"w{i}", ["b"])) is not None
        await engine.nack(ACME, t.id, worker_id=f"w{i}", reason="x" * 500, delay_seconds=0)
    events = await engine.task_history(ACME, t.id)
    assert len(events) == 32
    assert events[0].type == "task.created"
    assert events[-1].type == "task.nacked" and events[-2].worker_id == "w39"
    assert all(len(e.reason or "") <= 200 for e in events)


async def test_a_delayed_task_says_when_it_became_ready(engine: Engine) -> None:
    t = (await engine.create(ACME, NewTask(command="d", payload="{}", delay_seconds=0.02))).task
    got = await eventually(lambda: engine.claim(ACME, "w", ["d"]))
    assert got.id == t.id
    kinds = [e.type for e in await engine.task_history(ACME, t.id)]
    assert kinds == ["task.created", "task.ready", "task.claimed"]
    created = (await engine.task_history(ACME, t.id))[0]
    assert created.run_at_ms == t.run_at_ms


# -- HTTP ---------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "kvrocks"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "cx" + uuid.uuid4().hex[:10]
    app = create_app(
        make_settings(tmp_path, prefix), store=make_store(request, request.param, prefix),
        close_store=True,
    )  # fmt: skip
    async with serve_in_process(app) as c:
        yield c


async def _create(c: httpx.AsyncClient, **body: object) -> str:
    r = await c.post(
        "/v1/codeq/tasks",
        json={"command": "render", "payload": {"n": 1}, **body},
        headers=auth(PRODUCER),
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def test_http_cancel_and_history(client: httpx.AsyncClient) -> None:
    task_id = await _create(client)
    r = await client.post(
        f"/v1/codeq/tasks/{task_id}/cancel", json={"reason": "typo"}, headers=auth(PRODUCER)
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "CANCELLED" and r.json()["error"] == "typo"
    again = await client.post(f"/v1/codeq/tasks/{task_id}/cancel", headers=auth(PRODUCER))
    assert again.status_code == 200 and again.json()["status"] == "CANCELLED"
    h = await client.get(f"/v1/codeq/tasks/{task_id}/history", headers=auth(WORKER))
    assert h.status_code == 200, h.text
    events = h.json()["events"]
    assert [e["type"] for e in events] == ["task.created", "task.cancelled"]
    assert events[1]["reason"] == "typo" and events[1]["at"].endswith("Z")


async def test_http_cancel_refusals(client: httpx.AsyncClient) -> None:
    task_id = await _create(client)
    for path, token, body, status, code in [
        (f"/v1/codeq/tasks/{task_id}/cancel", OTHER_TENANT, None, 404, "not_found"),
        (f"/v1/codeq/tasks/{task_id}/cancel", WORKER, None, 401, None),  # not a producer
        (f"/v1/codeq/tasks/{task_id}/cancel", PRODUCER, {"reason": "x" * 5000}, 400, None),
        (f"/v1/codeq/tasks/{uuid.uuid4()}/cancel", PRODUCER, None, 404, "not_found"),
        ("/v1/codeq/tasks/not-an-id/cancel", PRODUCER, None, 404, "not_found"),
        (f"/v1/codeq/tasks/{task_id}/history", OTHER_TENANT, None, 404, "not_found"),
    ]:
        kw = {} if body is None else {"json": body}
        r = await client.request(
            "POST" if path.endswith("cancel") else "GET", path, headers=auth(token), **kw
        )
        assert r.status_code == status, (path, token, r.text)
        assert "error" in r.json()
        if code:
            assert r.json()["code"] == code
    assert r.status_code == 404
    got = await client.get(f"/v1/codeq/tasks/{task_id}", headers=auth(PRODUCER))
    assert got.json()["status"] == "PENDING"
    claimed = await client.post(
        "/v1/codeq/tasks/claim", json={"commands": ["render"]}, headers=auth(WORKER)
    )
    assert claimed.status_code == 200
    held = await client.post(f"/v1/codeq/tasks/{task_id}/cancel", headers=auth(PRODUCER))
    assert held.status_code == 409 and held.json()["code"] == "not_cancellable"
