"""``Retry-After`` may lengthen a wait, never shorten it below the retry schedule (issue 15,
item 8): a receiver answering ``Retry-After: 0`` (or 1) used to make the service spend every
retry in seconds."""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator

import pytest

from codeq.engine import Engine, EngineConfig
from codeq.store.redis_store import RedisStore
from deliverers import records
from deliverers.runner import Deliverer
from tests.conftest import SERVERS, make_store
from tests.receivers import Reply, receiver
from tests.test_deliveries import attempt_log, finish, settings, wait_count

SCHEDULE = [5.0, 30.0, 120.0, 600.0]


@pytest.fixture(params=SERVERS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    s = make_store(request, request.param)
    yield s
    await s.close()


def delivery(attempts: int) -> records.Delivery:
    return records.Delivery(
        id="msg_x", kind="callback", tenant="t", url="http://x", body="{}",
        event_type="task.completed", created_at=0, schedule=SCHEDULE, attempts=attempts,
    )  # fmt: skip


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("retry_after", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("attempts", [0, 1, 2, 3])
def test_a_short_retry_after_never_shortens_the_schedule(
    status: int, retry_after: float, attempts: int
) -> None:
    rng = random.Random(attempts * 1000 + status)
    for _ in range(50):
        outcome, delay_ms = records.next_step(
            delivery(attempts), status, False, retry_after, rng=rng
        )
        assert outcome == "retry"
        assert delay_ms >= SCHEDULE[attempts] * 0.8 * 1000  # the step, less its jitter at most


def test_a_long_retry_after_lengthens_the_wait_up_to_the_next_two_steps() -> None:
    assert records.next_step(delivery(0), 503, False, 20.0) == ("retry", 20_000)
    assert records.next_step(delivery(0), 429, False, 10_000.0) == ("retry", 30_000)
    assert records.next_step(delivery(1), 429, False, 10_000.0) == ("retry", 120_000)
    # only 429 and 503 say when to come back
    _, delay = records.next_step(delivery(0), 500, False, 20.0)
    assert delay <= 6_000


async def test_retry_after_zero_waits_the_schedule(store: RedisStore) -> None:
    """End to end: the receiver says 503 with ``Retry-After: 0``; the second attempt still
    comes a schedule step (1 s, ±20 %) later."""
    s = settings(webhookRetrySchedule=[1.0, 1.0])
    engine = Engine(store, EngineConfig.from_settings(s))
    d = Deliverer(store, s, block_ms=100, scan_interval=0.05)
    await d.start()
    try:
        with receiver() as r:
            r.script = [Reply(503, {"Retry-After": "0"}), Reply(429, {"Retry-After": "1"})]
            await finish(engine, r.url)
            await wait_count(r, 3)
            log = await attempt_log(store, r.received[0].headers["webhook-id"], 3)
            gaps = [b.at - a.at for a, b in itertools.pairwise(log)]
            assert all(gap >= 750 for gap in gaps), gaps
    finally:
        await d.stop()
