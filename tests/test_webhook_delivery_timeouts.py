"""``webhookTimeoutSeconds`` covers the HTTP exchange only (issue 15, item 7): a burst to one
slow host waits for a connection slot without that wait counting against the timeout, and the
wait is bounded on its own (how long, how many): an attempt that gets no slot in time sends
nothing and is put off without counting as an attempt. Receivers are real HTTP servers on
loopback."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.store.redis_store import RedisStore
from deliverers import records
from deliverers.http1 import HostBusy, HTTP1Pool, Target, header_block
from deliverers.runner import Deliverer
from deliverers.sender import TargetPolicy, WebhookSender
from tests.conftest import SERVERS, eventually, make_store
from tests.receivers import Reply, receiver
from tests.test_deliveries import delivery_record, settings

LOOPBACK = TargetPolicy(["127.0.0.0/8"])


@pytest.fixture(params=SERVERS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    s = make_store(request, request.param)
    yield s
    await s.close()


async def test_a_burst_to_one_slow_host_gets_no_spurious_timeouts() -> None:
    """12 requests, 2 at a time, to a host that takes 0.3 s each: the last waits ~1.5 s for a
    slot, three times the 0.5 s timeout. Each exchange takes 0.3 s, so none times out (before
    the fix the timeout counted the wait, and 9 of 12 timed out, answered or not)."""
    with receiver() as r:
        r.default = Reply(200, delay=0.3)
        sender = WebhookSender(LOOPBACK, timeout=0.5, per_host_concurrency=2)
        try:
            results = await asyncio.gather(*(sender.send(r.url, b"{}", {}) for _ in range(12)))
        finally:
            await sender.aclose()
        assert [x.error for x in results] == [None] * 12
        assert all(x.ok for x in results)
        # the per-host bound held: never more than 2 at once (pairs ~0.3 s apart)
        starts = sorted(x.at for x in r.received)
        assert len(starts) == 12 and starts[-1] - starts[0] >= 1.3


async def test_the_wait_for_a_slot_is_bounded_on_its_own() -> None:
    """One slot, a host that takes 1 s: a request that waits past ``queue_seconds`` or finds
    the queue full is HostBusy and never reaches the host."""
    with receiver() as r:
        r.default = Reply(200, delay=1.0)
        pool = HTTP1Pool(per_host=1, queue_seconds=0.2, queue_limit=1)
        target, head = Target.parse(r.url), header_block({})

        async def loopback(host: str, port: int) -> list[str]:
            return ["127.0.0.1"]

        async def post() -> object:
            return await pool.post(target, head, b"{}", connect=loopback, time_limit=5)

        try:
            first = asyncio.create_task(post())

            async def in_flight() -> bool:
                return r.count() == 1

            await eventually(in_flight)
            started = time.monotonic()
            waiting = asyncio.create_task(post())  # waits 0.2 s for the slot, then gives up

            async def queued() -> bool:
                return pool._origins[target.origin].slots.waiting == 1

            await eventually(queued, interval=0.001)
            with pytest.raises(HostBusy, match="queue"):  # the queue (1) is full already
                await post()
            with pytest.raises(HostBusy, match="in time"):
                await waiting
            assert 0.15 <= time.monotonic() - started < 0.9
            await first
            assert r.count() == 1  # the two that got no slot sent nothing
        finally:
            await pool.aclose()


async def test_attempts_without_a_slot_are_put_off_not_counted(store: RedisStore) -> None:
    """Eight callbacks to a host that takes 0.4 s, one slot and a 0.3 s queue: most attempts
    find no slot in time. They are put off and come back, never counted: every webhook arrives
    once, as attempt 1, and every delivery is recorded with one attempt."""
    s = settings(webhookTimeoutSeconds=2)
    engine = Engine(store, EngineConfig.from_settings(s))
    sender = WebhookSender(LOOPBACK, timeout=2, per_host_concurrency=1, queue_seconds=0.3)
    d = Deliverer(store, s, sender=sender, block_ms=100, scan_interval=0.05)
    with receiver() as r:
        r.default = Reply(200, delay=0.4)
        ids = []
        for n in range(8):
            t = await engine.create("acme", NewTask(command="c", payload=str(n), webhook=r.url))
            c = await engine.claim("acme", "w", ["c"])
            assert c is not None
            await engine.complete("acme", c.id, "w", result="{}", lease_id=c.lease_id)
            ids.append(t.task.id)
        await d.start()
        try:

            async def all_arrived() -> bool:
                return r.count() >= 8

            await eventually(all_arrived, timeout=20)
            got = [(json.loads(x.body)["taskId"], x.headers) for x in r.received]
            assert sorted(task for task, _ in got) == sorted(ids)  # each once
            assert {h["x-codeq-delivery-attempt"] for _, h in got} == {"1"}

            async def all_recorded() -> list[records.Delivery] | None:
                recs = [await delivery_record(store, h["webhook-id"]) for _, h in got]
                return recs if all(x.status == "succeeded" for x in recs) else None

            recs = await eventually(all_recorded, timeout=10)
            assert [(x.attempts, x.started, len(x.log)) for x in recs] == [(1, 1, 1)] * 8
            assert r.count() == 8
        finally:
            await d.stop()
            await sender.aclose()
