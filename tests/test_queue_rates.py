"""A queue's outcome totals and rates over the last minutes (issue 17, the overview page): the
transitions count (lib.lua ``tally``), the sweeper snapshots the totals once a minute into the
rates ring (sweep.lua), the stats read both (stats.lua) — on every backend, and over HTTP."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from codeq.domain import NewTask, OutcomeCounts
from codeq.engine import Engine
from codeq.store.gauges import rate_windows
from codeq.store.keys import queue_segment
from codeq.store.redis_store import RedisStore
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import make_store
from tests.test_api import ADMIN, PRODUCER, WORKER, auth, make_settings

ACME = "acme"


async def _one_of_each(engine: Engine, command: str) -> None:
    """Three created: one completed, one failed by its worker, one cancelled; then one
    created and dead-lettered (one attempt, nacked)."""
    made = [(await engine.create(ACME, NewTask(command=command, payload="{}"))).task for _ in "abc"]
    await engine.cancel(ACME, made[2].id)
    a = await engine.claim(ACME, "w", [command])
    b = await engine.claim(ACME, "w", [command])
    assert a is not None and b is not None
    await engine.complete(ACME, a.id, "w", result="{}")
    await engine.fail(ACME, b.id, "w", error="no")
    d = (await engine.create(ACME, NewTask(command=command, payload="{}", max_attempts=1))).task
    got = await engine.claim(ACME, "w", [command])
    assert got is not None and got.id == d.id
    assert (await engine.nack(ACME, d.id, "w")).status == "dlq"


async def test_the_transitions_count_every_outcome(engine: Engine) -> None:
    await _one_of_each(engine, "render")
    await engine.create("globex", NewTask(command="render", payload="{}"))
    stats = await engine.queue_stats(ACME, "render")
    assert stats.totals == OutcomeCounts(created=4, completed=1, failed=1, dead=1, cancelled=1)
    assert (await engine.queue_stats("globex", "render")).totals == OutcomeCounts(created=1)
    # a batch counts each task once, per queue
    await engine.create_many(
        ACME, [NewTask(command=c, payload="{}") for c in ("render", "render", "mail")]
    )
    assert (await engine.queue_stats(ACME, "render")).totals.created == 6
    assert (await engine.queue_stats(ACME, "mail")).totals.created == 1


async def test_the_sweeper_snapshot_opens_a_window_that_runs_until_now(
    engine: Engine, store: RedisStore
) -> None:
    # the queue exists in every partition (a queue counts in a partition from the first
    # snapshot after its first task there)
    q = queue_segment(ACME, "rate")
    for _ in range(500):
        registered = [
            await store.client.hexists(store.keys.partition(p).queues, q)
            for p in range(store.keys.partitions)
        ]
        if all(registered):
            break
        first = (await engine.create(ACME, NewTask(command="rate", payload="{}"))).task
        await engine.cancel(ACME, first.id)
    assert (await engine.queue_stats(ACME, "rate")).windows == ()  # no snapshot yet
    for p in range(store.keys.partitions):
        assert await engine.sweep_partition(p, "sweeper") is not None
    await _one_of_each(engine, "rate")
    windows = (await engine.queue_stats(ACME, "rate")).windows
    assert len(windows) == 1
    running = windows[0]
    assert running.counts == OutcomeCounts(created=4, completed=1, failed=1, dead=1, cancelled=1)
    assert running.start_ms <= running.end_ms


async def test_windows_between_two_snapshots(engine: Engine, store: RedisStore) -> None:
    """A snapshot of a minute ago (written into the ring as sweep.lua writes it) and the
    sweeper's own: the window between them holds what happened in that time."""
    await _one_of_each(engine, "win")
    q = queue_segment(ACME, "win")
    for _ in range(500):
        if all(
            [
                await store.client.hexists(store.keys.partition(p).queues, q)
                for p in range(store.keys.partitions)
            ]
        ):
            break
        await engine.create(ACME, NewTask(command="win", payload="{}"))
    before = (await engine.queue_stats(ACME, "win")).totals
    minute = int(time.time() // 60)
    earlier_ms = (minute - 1) * 60_000 + 5_000
    for part in range(store.keys.partitions):
        # a minute ago the queue had nothing (a queue spans the partitions: each has a ring)
        await store.client.hset(
            store.keys.partition(part).rates, f"{q}!{(minute - 1) % 16}", f"{earlier_ms},0,0,0,0,0"
        )
        assert await engine.sweep_partition(part, "sweeper") is not None
    stats = await engine.queue_stats(ACME, "win")
    assert [w.start_ms for w in stats.windows][:1] == [earlier_ms]
    closed = stats.windows[0]
    assert closed.counts == before
    assert stats.windows[-1].counts == OutcomeCounts()


def test_rate_windows_from_snapshots() -> None:
    now = 10_000_000
    totals = OutcomeCounts(created=10, completed=7)
    snaps = [
        f"{now - 120_000},2,1,0,0,0",
        "",
        f"{now - 60_000},5,4,0,0,0",
        "garbage",
        f"{now - 60_000 * 30},1,0,0,0,0",  # older than the ring's 16 minutes: a stale slot
    ]
    windows = rate_windows(totals, snaps, now)
    assert [(w.start_ms, w.end_ms) for w in windows] == [
        (now - 120_000, now - 60_000),
        (now - 60_000, now),
    ]
    assert windows[0].counts == OutcomeCounts(created=3, completed=3)
    assert windows[1].counts == OutcomeCounts(created=5, completed=3)
    assert rate_windows(totals, ["", ""], now) == ()
    # a queue the partition's last snapshot did not name had nothing then: it counts from zero
    late = rate_windows(totals, ["", ""], now, last_snapshot_ms=now - 30_000)
    assert [(w.start_ms, w.end_ms, w.counts) for w in late] == [(now - 30_000, now, totals)]
    named = rate_windows(totals, [f"{now - 30_000},5,4,0,0,0"], now, last_snapshot_ms=now - 30_000)
    assert [w.counts for w in named] == [OutcomeCounts(created=5, completed=3)]


# -- HTTP ---------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "kvrocks"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "qr" + uuid.uuid4().hex[:10]
    app = create_app(
        make_settings(tmp_path, prefix), store=make_store(request, request.param, prefix),
        close_store=True,
    )  # fmt: skip
    async with serve_in_process(app) as c:
        yield c


async def test_http_queue_stats_carry_totals(client: httpx.AsyncClient) -> None:
    for _ in range(2):
        r = await client.post(
            "/v1/codeq/tasks", json={"command": "tally", "payload": {}}, headers=auth(PRODUCER)
        )
        assert r.status_code == 202
    claimed = await client.post(
        "/v1/codeq/tasks/claim", json={"commands": ["tally"]}, headers=auth(WORKER)
    )
    task_id = claimed.json()["id"]
    done = await client.post(
        f"/v1/codeq/tasks/{task_id}/result",
        json={"status": "COMPLETED", "result": {}},
        headers=auth(WORKER),
    )
    assert done.status_code == 200, done.text
    r = await client.get("/v1/codeq/admin/queues/tally", headers=auth(ADMIN))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["totals"] == {
        "created": 2,
        "completed": 1,
        "failed": 0,
        "dead": 0,
        "cancelled": 0,
    }
    assert body["ready"] == 1
