"""The sweeper loop, on the embedded store and real Redis (via the `engine` fixture)."""

from __future__ import annotations

import asyncio

from codeq.domain import Location, NewTask
from codeq.engine import Engine
from codeq.sweeper import Sweeper
from tests.conftest import eventually


async def test_sweeper_promotes_delayed_tasks_without_claims(engine: Engine) -> None:
    t = (await engine.create("t", NewTask(command="C", payload="1", delay_seconds=0.1))).task
    sweeper = Sweeper(engine, interval_ms=20)
    running = asyncio.create_task(sweeper.run())

    async def promoted() -> bool:
        return (await engine.get_task("t", t.id)).last_known_location is Location.PENDING_LIST

    try:
        await eventually(promoted, timeout=5)
    finally:
        sweeper.stop()
        await asyncio.wait_for(running, timeout=5)
    assert (await engine.queue_stats("t", "C")).ready == 1


async def test_two_sweepers_share_partitions_without_double_work(engine: Engine) -> None:
    a, b = Sweeper(engine, token="a"), Sweeper(engine, token="b")
    first = await a.run_once()
    second = await b.run_once()
    assert first.skipped_partitions == 0
    assert second.skipped_partitions == engine.keys.partitions
