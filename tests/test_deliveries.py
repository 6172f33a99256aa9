"""Result callbacks end to end: engine → event stream → consumer group → signed HTTP request to
a real receiver on loopback, with durable retries (spec 03), on Redis and the embedded store."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.settings import Settings
from codeq.store.deliveries import DeliveryStore
from codeq.store.redis_store import RedisStore
from deliverers import records
from deliverers.runner import Deliverer
from tests.conftest import eventually, make_store
from tests.receivers import Receiver, Reply, receiver

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes


def settings(**extra: Any) -> Settings:
    data: dict[str, Any] = {
        "webhookHmacSecret": SECRET,
        "webhookAllowedCidrs": ["127.0.0.0/8"],
        "webhookRetrySchedule": [0.2, 0.2, 0.2, 0.2],
        "webhookTimeoutSeconds": 2,
    }
    data.update(extra)
    return Settings.from_mapping(data)


@pytest.fixture(params=["redis", "embedded", "kvrocks"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    s = make_store(request, request.param)
    yield s
    await s.close()


async def finish(engine: Engine, webhook: str, *, status: str = "COMPLETED") -> str:
    t = (await engine.create("acme", NewTask(command="render", payload="1", webhook=webhook))).task
    claimed = await engine.claim("acme", "w1", ["render"])
    assert claimed is not None and claimed.id == t.id
    if status == "COMPLETED":
        await engine.complete("acme", t.id, "w1", result='{"pages":3}', lease_id=claimed.lease_id)
    else:
        await engine.fail("acme", t.id, "w1", error="boom", lease_id=claimed.lease_id)
    return t.id


async def wait_count(r: Receiver, n: int, timeout: float = 10) -> None:  # noqa: ASYNC109
    async def enough() -> bool:
        return r.count() >= n

    await eventually(enough, timeout=timeout)


async def delivery_record(store: RedisStore, delivery_id: str) -> records.Delivery:
    raw = await DeliveryStore(store).get(0, delivery_id)
    assert raw is not None
    return records.decode(raw)


async def attempt_log(store: RedisStore, delivery_id: str, n: int) -> list[records.AttemptLog]:
    """The delivery's attempt log once it holds ``n`` attempts. Gaps between attempts are read
    from their times (the wall clock the store schedules retries on), not from a receiver's
    monotonic clock: this machine's wall clock has been seen to step by seconds against it."""

    async def logged() -> bool:
        return len((await delivery_record(store, delivery_id)).log) >= n

    await eventually(logged)
    return (await delivery_record(store, delivery_id)).log


async def test_completed_task_gets_one_signed_callback(store: RedisStore) -> None:
    s = settings()
    engine = Engine(store, EngineConfig.from_settings(s))
    d = Deliverer(store, s, block_ms=100, scan_interval=0.05)
    await d.start()
    try:
        with receiver() as r:
            task_id = await finish(engine, r.url)
            await wait_count(r, 1)
            got = r.received[0]
            body = json.loads(got.body)
            assert body["taskId"] == task_id and body["status"] == "COMPLETED"
            assert body["result"] == {"pages": 3} and body["eventType"] == "render"
            # Standard Webhooks, verified by the reference library
            Webhook(SECRET).verify(got.body, got.headers)
            # the original's headers: hex HMAC of "timestamp.body" with the same key bytes
            key = base64.b64decode(SECRET.removeprefix("whsec_"))
            ts = got.headers["x-codeq-timestamp"]
            expected = hmac.new(key, ts.encode() + b"." + got.body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(got.headers["x-codeq-signature"], expected)
            assert got.headers["x-codeq-event"] == "task.completed"
            # exactly one: nothing else arrives once the delivery is recorded as succeeded
            rec = await delivery_record(store, got.headers["webhook-id"])

            async def recorded() -> bool:
                nonlocal rec
                rec = await delivery_record(store, got.headers["webhook-id"])
                return rec.status == "succeeded"

            await eventually(recorded)
            assert rec.attempts == 1 and r.count() == 1
    finally:
        await d.stop()


async def test_failures_retry_with_the_same_id_until_success(store: RedisStore) -> None:
    s = settings()
    engine = Engine(store, EngineConfig.from_settings(s))
    d = Deliverer(store, s, block_ms=100, scan_interval=0.05)
    await d.start()
    try:
        with receiver() as r:
            r.script = [Reply(500), Reply(500), Reply(500)]
            await finish(engine, r.url, status="FAILED")
            await wait_count(r, 4)
            ids = {x.headers["webhook-id"] for x in r.received}
            assert len(ids) == 1
            assert [x.headers["x-codeq-delivery-attempt"] for x in r.received] == [
                "1", "2", "3", "4"
            ]  # fmt: skip
            (delivery_id,) = ids

            async def succeeded() -> bool:
                return (await delivery_record(store, delivery_id)).status == "succeeded"

            await eventually(succeeded)
            rec = await delivery_record(store, delivery_id)
            assert rec.attempts == 4
            assert [a.status_code for a in rec.log] == [500, 500, 500, 200]
            assert json.loads(r.received[0].body)["error"] == "boom"
    finally:
        await d.stop()


async def test_retry_after_is_honoured(store: RedisStore) -> None:
    s = settings(webhookRetrySchedule=[0.1, 5, 5])
    engine = Engine(store, EngineConfig.from_settings(s))
    d = Deliverer(store, s, block_ms=100, scan_interval=0.05)
    await d.start()
    try:
        with receiver() as r:
            r.script = [Reply(503, {"Retry-After": "2"})]
            await finish(engine, r.url)
            await wait_count(r, 2)
            log = await attempt_log(store, r.received[0].headers["webhook-id"], 2)
            gap = log[1].at - log[0].at
            assert 1900 <= gap < 4500, gap
    finally:
        await d.stop()


async def test_exhausted_delivery_goes_to_the_dlq_and_replays(store: RedisStore) -> None:
    s = settings(webhookRetrySchedule=[0.05, 0.05])
    engine = Engine(store, EngineConfig.from_settings(s))
    d = Deliverer(store, s, block_ms=100, scan_interval=0.05)
    ds = DeliveryStore(store)
    await d.start()
    try:
        with receiver() as r:
            r.default = Reply(502)
            await finish(engine, r.url)
            await wait_count(r, 3)

            async def dead() -> bool:
                return (await ds.depth(0))[1] == 1

            await eventually(dead)
            (raw,) = await ds.dead_page(0, limit=10)
            rec = records.decode(raw)
            assert rec.status == "dead" and rec.attempts == 3
            r.default = Reply(200)
            assert await ds.replay(0, tenant="acme") == [rec.id]
            await wait_count(r, 4)

            async def succeeded() -> bool:
                return (await delivery_record(store, rec.id)).status == "succeeded"

            await eventually(succeeded)
            assert (await ds.depth(0)) == (0, 0)
    finally:
        await d.stop()


async def test_a_second_deliverer_finishes_what_a_stopped_one_scheduled(
    store: RedisStore,
) -> None:
    """Deliverer A is stopped with deliveries scheduled for later; B (another consumer) sends
    them: the schedule is in the store, not in A's memory."""
    s = settings(webhookRetrySchedule=[1.0, 1.0])
    engine = Engine(store, EngineConfig.from_settings(s))
    a = Deliverer(store, s, consumer="a", block_ms=100, scan_interval=0.05)
    await a.start()
    with receiver() as r:
        r.script = [Reply(500)] * 5
        for _ in range(5):
            await finish(engine, r.url)
        await wait_count(r, 5)
        await a.stop()
        b = Deliverer(store, s, consumer="b", block_ms=100, scan_interval=0.05)
        await b.start()
        try:

            async def all_done() -> bool:
                ids = {x.headers["webhook-id"] for x in r.received}
                if len(ids) != 5:
                    return False
                recs = [await delivery_record(store, i) for i in ids]
                return all(x.status == "succeeded" for x in recs)

            await eventually(all_done, timeout=15)
        finally:
            await b.stop()


async def test_events_without_a_webhook_are_acknowledged_without_a_delivery(
    store: RedisStore,
) -> None:
    s = settings()
    engine = Engine(store, EngineConfig.from_settings(s))
    d = Deliverer(store, s, block_ms=100, scan_interval=0.05)
    ds = DeliveryStore(store)
    await d.start()
    try:
        for _ in range(3):
            t = (await engine.create("acme", NewTask(command="plain", payload="1"))).task
            c = await engine.claim("acme", "w", ["plain"])
            assert c is not None
            await engine.complete("acme", t.id, "w", result="{}", lease_id=c.lease_id)

        async def acked() -> bool:
            return (
                await ds.pending_of(0, "callbacks", d.consumer) == []
                and (await ds.consumers(0, "callbacks")) != []
            )

        await eventually(acked)
        assert await ds.depth(0) == (0, 0)
        assert await store.client.hlen(store.keys.delivery(0).records) == 0
    finally:
        await d.stop()


def test_next_step_rules() -> None:
    d = records.Delivery(
        id="msg_x", kind="callback", tenant="t", url="http://x", body="{}",
        event_type="task.completed", created_at=0, schedule=[5, 30, 120],
    )  # fmt: skip
    assert records.next_step(d, 200, True, None)[0] == "succeeded"
    assert records.next_step(d, 410, False, None)[0] == "gone"
    outcome, delay = records.next_step(d, 500, False, None)
    assert outcome == "retry" and 4000 <= delay <= 6000
    assert records.next_step(d, 503, False, 20.0) == ("retry", 20_000)  # lengthens the wait
    outcome, delay = records.next_step(d, 503, False, 2.0)  # never shortens it below the step
    assert outcome == "retry" and delay >= 4000
    assert records.next_step(d, 429, False, 10_000.0) == ("retry", 30_000)  # clamped
    d.attempts = 2
    assert records.next_step(d, 404, False, None)[0] == "dead"  # permanent 4xx after 3
    assert records.next_step(d, 429, False, None)[0] == "retry"
    d.attempts = 3
    assert records.next_step(d, 500, False, None)[0] == "dead"


async def test_entries_repeat_without_duplicating_deliveries(store: RedisStore) -> None:
    ds = DeliveryStore(store)
    await ds.ensure_group(0, "callbacks")
    rec = records.Delivery(
        id="msg_same", kind="callback", tenant="t", url="http://127.0.0.1:9/x", body="{}",
        event_type="task.completed", created_at=0, schedule=[1],
    )  # fmt: skip
    first = await ds.enqueue(0, "callbacks", ["0-1"], 1000, [(rec.id, records.encode(rec))])
    again = await ds.enqueue(0, "callbacks", ["0-1"], 1000, [(rec.id, records.encode(rec))])
    assert (first, again) == (["msg_same"], [])


async def test_outcomes_of_several_attempts_are_recorded_in_one_call(store: RedisStore) -> None:
    ds = DeliveryStore(store)
    made = [
        records.Delivery(
            id=f"msg_{n}",
            kind="callback",
            tenant="t",
            url="http://127.0.0.1:9/x",
            body="{}",
            event_type="task.completed",
            created_at=0,
            schedule=[1],
        )
        for n in ("ok", "again", "dead")
    ]
    await ds.enqueue(0, "callbacks", [], 1000, [(d.id, records.encode(d)) for d in made])
    attempt = json.dumps({"at": 1, "latencyMs": 1.0, "statusCode": 500}).encode()
    replies = await ds.outcomes(
        0,
        [
            ("msg_ok", "succeeded", 0, attempt),
            ("msg_again", "retry", 60_000, attempt),
            ("msg_gone_meanwhile", "succeeded", 0, attempt),
            ("msg_dead", "dead", 0, attempt),
        ],
        kept=5,
    )
    assert replies == [("succeeded", 1), ("retrying", 1), ("MISSING", 0), ("dead", 1)]
    assert (await delivery_record(store, "msg_again")).attempts == 1
    assert await ds.depth(0) == (1, 1)  # msg_again scheduled, msg_dead in the DLQ
    assert await ds.outcome(0, "msg_again", "succeeded", delay_ms=0, attempt=attempt, kept=5) == (
        "succeeded",
        2,
    )
    assert await ds.depth(0) == (0, 1)
