"""The attempt number is persisted before an attempt is sent (issue 15, item 9): a deliverer
that dies mid-attempt leaves it behind, so the redelivery says it is attempt 2, not attempt 1
again. On Redis and KVRocks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from codeq.engine import Engine, EngineConfig
from codeq.store.deliveries import DeliveryStore
from codeq.store.redis_store import RedisStore
from deliverers import records
from deliverers.runner import Deliverer
from deliverers.sender import TargetPolicy, WebhookSender
from tests.conftest import SERVERS, eventually, make_store
from tests.receivers import Reply, receiver
from tests.test_deliveries import delivery_record, finish, settings, wait_count


@pytest.fixture(params=SERVERS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    s = make_store(request, request.param)
    yield s
    await s.close()


async def test_the_scripts_count_an_attempt_before_it_is_made(store: RedisStore) -> None:
    ds = DeliveryStore(store)
    rec = records.Delivery(
        id="msg_n", kind="callback", tenant="t", url="http://127.0.0.1:9/x", body="{}",
        event_type="task.completed", created_at=0, schedule=[1, 1, 1], started=1,
    )  # fmt: skip
    assert await ds.enqueue(0, "callbacks", [], 0, [(rec.id, records.encode(rec))]) == [rec.id]
    # attempt 1 never recorded (its deliverer died); the lease (0 ms) is over
    (raw,) = await ds.claim_due(0, lease_ms=60_000, limit=10)
    leased = records.decode(raw)
    assert (leased.started, leased.attempts, leased.attempt_no) == (2, 0, 2)
    assert (await delivery_record(store, rec.id)).started == 2  # in the store, not only the reply
    # put off (rate limit, no slot): the attempt is taken back, not counted
    assert await ds.defer(0, rec.id, delay_ms=0)
    assert (await delivery_record(store, rec.id)).started == 1
    (raw,) = await ds.claim_due(0, lease_ms=60_000, limit=10)
    assert records.decode(raw).attempt_no == 2
    attempt = json.dumps({"at": 1, "latencyMs": 1.0, "statusCode": 500}).encode()
    # the outcome of attempt 2 counts the lost attempt 1 too
    assert await ds.outcome(0, rec.id, "retry", delay_ms=0, attempt=attempt, kept=5) == (
        "retrying",
        2,
    )
    (raw,) = await ds.claim_due(0, lease_ms=60_000, limit=10)
    assert records.decode(raw).attempt_no == 3


async def test_a_redelivery_after_a_crash_says_which_attempt_it_is(store: RedisStore) -> None:
    """Deliverer A sends attempt 1 and dies before its answer (its tasks are cancelled, so
    nothing is recorded: what a kill does); B attempts it again when A's lease ends, and says
    attempt 2."""
    s = settings(webhookTimeoutSeconds=0.5)
    engine = Engine(store, EngineConfig.from_settings(s))
    policy = TargetPolicy(["127.0.0.0/8"])
    # a short queue bound: the lease is timeout + queue bound + 5 s
    a_sender = WebhookSender(policy, timeout=0.5, queue_seconds=0.1)
    a = Deliverer(store, s, sender=a_sender, consumer="a", block_ms=100, scan_interval=0.05)
    await a.start()
    with receiver() as r:
        r.script = [Reply(200, delay=3.0)]  # attempt 1 hangs: A is gone before it answers
        await finish(engine, r.url)
        await wait_count(r, 1)
        delivery_id = r.received[0].headers["webhook-id"]
        await a.stop(grace=0)  # cuts attempt 1 off: its outcome is never recorded
        await a_sender.aclose()
        rec = await delivery_record(store, delivery_id)
        assert (rec.started, rec.attempts, rec.log) == (1, 0, [])
        b_sender = WebhookSender(policy, timeout=0.5, queue_seconds=0.1)
        b = Deliverer(store, s, sender=b_sender, consumer="b", block_ms=100, scan_interval=0.05)
        await b.start()
        try:
            await wait_count(r, 2, timeout=15)
            assert [x.headers["webhook-id"] for x in r.received] == [delivery_id] * 2
            assert [x.headers["x-codeq-delivery-attempt"] for x in r.received] == ["1", "2"]

            async def succeeded() -> records.Delivery | None:
                rec = await delivery_record(store, delivery_id)
                return rec if rec.status == "succeeded" else None

            rec = await eventually(succeeded)
            assert (rec.attempts, rec.started, len(rec.log)) == (2, 2, 1)
        finally:
            await b.stop()
            await b_sender.aclose()
