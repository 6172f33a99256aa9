"""The Python SDK and the worker runtime against a live ``codeq serve`` (a subprocess)."""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from codeq.client import (
    AsyncCodeQClient,
    CodeQClient,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    error_of,
)
from codeq.worker import Job, NonRetryable, Worker
from tests.served import TOKEN, Served, polls_waiting, serve
from tests.servers import RedisServer


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve({"SWEEP_INTERVAL_MS": "100"}) as s:
        yield s


@pytest.fixture
def cq(served: Served) -> Iterator[CodeQClient]:
    with CodeQClient(served.base, token=TOKEN) as client:
        yield client


def unique(name: str) -> str:
    return f"{name}_{time.monotonic_ns()}"


# -- the sync client ------------------------------------------------------------------------


def test_sync_round_trip_remembers_the_lease(cq: CodeQClient) -> None:
    command = unique("SDK")
    created = cq.create_task(command, {"n": 1}, priority=3, max_attempts=2)
    assert created.status == "PENDING" and created.priority == 3 and created.max_attempts == 2

    claimed = cq.claim([command], lease_seconds=30)
    assert claimed is not None and claimed.id == created.id and claimed.lease_id
    assert cq.lease_id(created.id) == claimed.lease_id
    assert cq.heartbeat(created.id, extend_seconds=60).ok is True

    done = cq.complete(created.id, {"ok": True})
    assert done.status == "COMPLETED" and done.result == {"ok": True}
    assert cq.lease_id(created.id) is None  # forgotten once the task is answered
    assert cq.get_task(created.id).status == "COMPLETED"
    assert cq.get_result(created.id).result.result == {"ok": True}
    assert cq.claim([command]) is None  # 204 → None


def test_sync_client_errors_are_typed(cq: CodeQClient, served: Served) -> None:
    command = unique("ERR")
    with pytest.raises(NotFound) as missing:
        cq.get_task("01a22495-0ba1-7560-8616-05d8418c13df")
    assert missing.value.status == 404 and missing.value.code == "not_found"

    with pytest.raises(InvalidRequest) as bad:
        cq.create_task("bad command", {})
    assert "command" in bad.value.message

    task = cq.create_task(command, {})
    assert cq.claim([command]) is not None
    cq.fail(task.id, "broken")
    with pytest.raises(Conflict) as again:
        cq.fail(task.id, "broken again")
    assert again.value.code == "not_in_progress"

    with CodeQClient(served.base, token="wrong") as stranger, pytest.raises(Unauthorized):
        stranger.get_task(task.id)


def test_a_stale_lease_id_is_fenced_off(cq: CodeQClient) -> None:
    command = unique("FENCE")
    task = cq.create_task(command, {})
    first = cq.claim([command])
    assert first is not None
    cq.abandon(task.id)
    second = cq.claim([command])
    assert second is not None and second.lease_id != first.lease_id
    with pytest.raises(Conflict) as stale:
        cq.complete(task.id, {}, lease_id=first.lease_id)
    assert stale.value.code == "lease_mismatch"
    assert cq.complete(task.id, {"by": "second"}).status == "COMPLETED"


def test_batch_create_and_admin_calls(cq: CodeQClient) -> None:
    command = unique("BATCH")
    answer = cq.create_tasks(
        [{"command": command, "payload": {"i": i}} for i in range(5)]
        + [{"command": "bad command", "payload": {}}]
    )
    assert len(answer.tasks) == 5 and [e.index for e in answer.errors] == [5]
    stats = cq.queue_stats(command)
    assert stats.ready == 5
    assert command.lower() in {q.command for q in cq.queues().queues}


# -- retries and outages ---------------------------------------------------------------------


@respx.mock(base_url="http://codeq.test/v1/codeq")
def test_rate_limited_surfaces_retry_after_and_is_retried(respx_mock: respx.MockRouter) -> None:
    limited = httpx.Response(
        429,
        headers={"Retry-After": "0"},
        json={"error": "rate limit exceeded", "code": "rate_limited"},
    )
    created = {
        "id": "t1",
        "command": "C",
        "status": "PENDING",
        "lastKnownLocation": "PENDING_LIST",
        "tenantId": "default",
        "priority": 0,
        "attempts": 0,
        "maxAttempts": 5,
        "createdAt": "2026-11-28T00:00:00.000Z",
        "updatedAt": "2026-11-28T00:00:00.000Z",
    }
    route = respx_mock.post("/tasks").mock(side_effect=[limited, httpx.Response(202, json=created)])
    with CodeQClient("http://codeq.test", token="t", retries=2) as cq:
        assert cq.create_task("C", {}).id == "t1"  # a 429 is retried for any call
    assert route.call_count == 2

    respx_mock.post("/tasks").mock(
        return_value=httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "x"})
    )
    with (
        CodeQClient("http://codeq.test", token="t", retries=0) as cq,
        pytest.raises(RateLimited) as exc,
    ):
        cq.create_task("C", {})
    assert exc.value.retry_after == 7.0


@respx.mock(base_url="http://codeq.test/v1/codeq")
def test_a_503_is_retried_only_where_safe(respx_mock: respx.MockRouter) -> None:
    down = httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "store", "code": "x"})
    result = respx_mock.post("/tasks/t1/result").mock(return_value=down)
    read = respx_mock.get("/tasks/t1").mock(return_value=down)
    with CodeQClient("http://codeq.test", token="t", retries=2) as cq:
        with pytest.raises(Unavailable):
            cq.complete("t1", {})
        with pytest.raises(Unavailable) as exc:
            cq.get_task("t1")
    assert result.call_count == 1  # a result may have been stored: never sent twice
    assert read.call_count == 3  # a read is repeated
    assert exc.value.retry_after == 0.0


def test_store_outage_surfaces_as_unavailable_with_retry_after() -> None:
    with (
        RedisServer.start() as redis_server,
        serve({"REDIS_ADDR": f"127.0.0.1:{redis_server.port}"}) as s,
        CodeQClient(s.base, token=TOKEN, retries=0) as cq,
    ):
        task = cq.create_task(unique("OUT"), {})
        redis_server.stop()
        with pytest.raises(Unavailable) as exc:
            cq.get_task(task.id)
        assert exc.value.retry_after >= 1


# -- the async client -----------------------------------------------------------------------


async def test_async_client_round_trip(served: Served) -> None:
    command = unique("ASYNC")
    async with AsyncCodeQClient(served.base, token=TOKEN) as cq:
        batch = await cq.create_tasks([{"command": command, "payload": i} for i in range(3)])
        assert len(batch.tasks) == 3
        seen = []
        for _ in range(3):
            task = await cq.claim([command])
            assert task is not None
            seen.append(task.id)
            await cq.heartbeat(task)
            await cq.complete(task, {"i": task.payload})
        assert sorted(seen) == sorted(t.id for t in batch.tasks)
        assert (await cq.get_result(seen[0])).result.status == "COMPLETED"
        assert await cq.claim([command], wait_seconds=0.2) is None
        with pytest.raises(NotFound):
            await cq.nack(seen[0] + "x")


async def test_async_claim_long_poll_wakes_on_create(served: Served) -> None:
    command = unique("WAKE")
    async with AsyncCodeQClient(served.base, token=TOKEN) as cq:
        waiting = asyncio.create_task(cq.claim([command], wait_seconds=10))
        # The poll is waiting on the server (its /metrics says so) before the task exists.
        await asyncio.to_thread(polls_waiting, served.base, 1)
        started = time.monotonic()
        created = await cq.create_task(command, {})
        claimed = await asyncio.wait_for(waiting, timeout=10)
        assert claimed is not None and claimed.id == created.id
        assert time.monotonic() - started < 5


# -- the worker runtime ---------------------------------------------------------------------


async def test_worker_completes_500_tasks_once_each_with_concurrency_20(served: Served) -> None:
    command = unique("MANY")
    async with AsyncCodeQClient(served.base, token=TOKEN) as producer:
        ids: list[str] = []
        for start in range(0, 500, 250):
            batch = await producer.create_tasks(
                [{"command": command, "payload": {"i": i}} for i in range(start, start + 250)]
            )
            ids.extend(t.id for t in batch.tasks)
    calls: collections.Counter[str] = collections.Counter()
    active = 0
    most = 0

    async with AsyncCodeQClient(served.base, token=TOKEN) as client:
        worker = Worker(client, concurrency=20, lease_seconds=30, wait_seconds=1, max_tasks=500)

        @worker.handler(command)
        async def handle(job: Job) -> dict[str, Any]:
            nonlocal active, most
            calls[job.id] += 1
            active += 1
            most = max(most, active)
            await asyncio.sleep(0.01)
            active -= 1
            return {"i": job.payload["i"]}

        stats = await asyncio.wait_for(worker.run(), timeout=120)
        assert stats.completed == 500 and stats.nacked == 0 and stats.lost == 0
        assert set(calls) == set(ids) and set(calls.values()) == {1}
        assert 1 < most <= 20
        queue = await client.queue_stats(command)
        assert (queue.ready, queue.in_progress, queue.dlq) == (0, 0, 0)
        sample = await client.get_result(ids[123])
        assert sample.task.status == "COMPLETED" and sample.result.result == {"i": 123}


async def test_a_handler_slower_than_the_lease_keeps_it_through_heartbeats(
    served: Served,
) -> None:
    command = unique("SLOW")
    async with AsyncCodeQClient(served.base, token=TOKEN) as client:
        task = await client.create_task(command, {})
        worker = Worker(client, lease_seconds=1, wait_seconds=1, max_tasks=1)

        @worker.handler(command)
        async def slow(job: Job) -> dict[str, Any]:
            await asyncio.sleep(3.5)  # the work itself: 3.5 leases long
            return {"slow": True}

        stats = await asyncio.wait_for(worker.run(), timeout=30)
        after = await client.get_task(task.id)
    assert stats.completed == 1 and stats.lost == 0
    # Never swept back: one claim, completed by the first holder.
    assert after.status == "COMPLETED" and after.attempts == 1


async def test_failures_nack_with_the_exception_and_non_retryable_fails(served: Served) -> None:
    flaky, fatal, sync_cmd = unique("FLAKY"), unique("FATAL"), unique("SYNC")
    async with AsyncCodeQClient(served.base, token=TOKEN) as client:
        retried = await client.create_task(flaky, {}, max_attempts=1)
        failed = await client.create_task(fatal, {})
        threaded = await client.create_task(sync_cmd, {"x": 2})
        worker = Worker(client, concurrency=3, wait_seconds=1, max_tasks=3)

        @worker.handler(flaky)
        async def boom(job: Job) -> None:
            raise RuntimeError("disk full")

        @worker.handler(fatal)
        async def refuse(job: Job) -> None:
            raise NonRetryable("bad input")

        def in_a_thread(job: Job) -> int:  # a plain def runs in a thread
            assert threading.current_thread() is not threading.main_thread()
            return int(job.payload["x"]) * 21

        worker.add_handler(sync_cmd, in_a_thread)
        stats = await asyncio.wait_for(worker.run(), timeout=30)
        dead = await client.get_task(retried.id)
        final = await client.get_result(failed.id)
        value = await client.get_result(threaded.id)
    assert (stats.nacked, stats.failed, stats.completed) == (1, 1, 1)
    assert dead.status == "FAILED" and dead.error == "RuntimeError: disk full"  # max 1 → DLQ
    assert final.result.status == "FAILED" and final.result.error == "NonRetryable: bad input"
    assert value.result.result == {"value": 42}


async def test_stop_finishes_running_tasks_or_abandons_them(served: Served) -> None:
    command = unique("STOP")
    async with AsyncCodeQClient(served.base, token=TOKEN) as client:
        finished = await client.create_task(command, {"n": 1})
        started = asyncio.Event()
        release = asyncio.Event()
        worker = Worker(client, wait_seconds=1)

        @worker.handler(command)
        async def handle(job: Job) -> dict[str, Any]:
            started.set()
            await release.wait()
            return {"done": job.payload["n"]}

        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), timeout=10)
        worker.stop(grace=10)  # stop claiming; the running task may finish
        release.set()
        stats = await asyncio.wait_for(running, timeout=10)
        assert stats.completed == 1
        assert (await client.get_task(finished.id)).status == "COMPLETED"

        abandoned = await client.create_task(command, {"n": 2})
        started.clear()
        release.clear()
        worker = Worker(client, wait_seconds=1)
        worker.add_handler(command, handle)
        running = asyncio.create_task(worker.run())
        await asyncio.wait_for(started.wait(), timeout=10)
        worker.stop(abandon=True)
        stats = await asyncio.wait_for(running, timeout=10)
        after = await client.get_task(abandoned.id)
    assert stats.abandoned == 1 and stats.completed == 0
    assert after.status == "PENDING" and after.attempts == 1


def test_worker_refuses_bad_options() -> None:
    client = AsyncCodeQClient("http://127.0.0.1:1", token="t")
    for options in ({"concurrency": 0}, {"lease_seconds": 0}, {"wait_seconds": 31}):
        with pytest.raises(ValueError, match=next(iter(options))):
            Worker(client, **options)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, InvalidRequest),
        (401, Unauthorized),
        (403, Forbidden),
        (404, NotFound),
        (409, Conflict),
        (429, RateLimited),
        (503, Unavailable),
    ],
)
def test_every_error_status_has_its_type(status: int, kind: type[Exception]) -> None:
    err = error_of(httpx.Response(status, json={"error": "message", "code": "some_code"}))
    assert type(err) is kind and err.message == "message" and err.code == "some_code"
    assert err.status == status


def test_rate_limited_from_a_live_server_carries_retry_after() -> None:
    env = {
        "RATE_LIMIT_PRODUCER_REQUESTS_PER_MINUTE": "6",
        "RATE_LIMIT_PRODUCER_BURST_SIZE": "2",
    }
    with serve(env) as s, CodeQClient(s.base, token=TOKEN, retries=0) as cq:
        command = unique("LIMITED")
        cq.create_task(command, {})
        cq.create_task(command, {})
        with pytest.raises(RateLimited) as exc:
            cq.create_task(command, {})
    assert exc.value.status == 429 and exc.value.code == "rate_limited"
    assert 1 <= exc.value.retry_after <= 10  # one token per 10 s
