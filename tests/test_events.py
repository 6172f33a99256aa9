"""The event tail behind long-poll wake-ups: idle while nobody listens, never misses an event
written after ``attach`` returns, on every store backend (cluster: several partitions)."""

from __future__ import annotations

import asyncio

from codeq.domain import NewTask, makes_ready
from codeq.engine import Engine
from codeq.events import Event, EventTail
from codeq.store.redis_store import RedisStore
from tests.conftest import eventually


async def test_idle_tail_reads_nothing_then_attach_sees_every_later_event(
    store: RedisStore, engine: Engine
) -> None:
    seen: list[Event] = []
    listening = {"n": 0}
    tail = EventTail(store, seen.append, wanted=lambda: listening["n"] > 0, block_ms=50)
    await tail.start()
    try:

        async def positioned() -> bool:
            return tail.ready

        await eventually(positioned)
        await engine.create("t", NewTask(command="IDLE", payload="1"))

        async def idle_for_a_while() -> bool:  # the tail went idle: it reads no more events
            return not any(tail._live)

        await eventually(idle_for_a_while)
        count_idle = len(seen)
        for i in range(5):
            await engine.create("t", NewTask(command="IDLE", payload=str(i)))
        await asyncio.wait_for(tail.attach(first=False), 5)  # nothing asked: no reposition
        assert len(seen) == count_idle  # idle: not one of those five events was read

        listening["n"] = 1
        await asyncio.wait_for(tail.attach(first=True), 5)
        created = [
            (await engine.create("t", NewTask(command="LIVE", payload=str(i)))).task.id
            for i in range(20)
        ]

        async def all_seen() -> bool:
            ready = {e["id"] for e in seen if makes_ready(e.get("type", ""), "depth" in e)}
            return ready >= set(created)

        await eventually(all_seen)
        assert not [e for e in seen[count_idle:] if e.get("command") == "IDLE"]
    finally:
        await tail.stop()


async def test_concurrent_first_listeners_all_wait_for_the_position(
    store: RedisStore, engine: Engine
) -> None:
    seen: list[Event] = []
    listening = {"n": 0}
    tail = EventTail(store, seen.append, wanted=lambda: listening["n"] > 0, block_ms=50)
    await tail.start()
    try:
        listening["n"] = 3
        await asyncio.wait_for(asyncio.gather(*(tail.attach(first=i == 0) for i in range(3))), 5)
        assert tail.ready
        t = (await engine.create("t", NewTask(command="C", payload="1"))).task

        async def seen_it() -> bool:
            return any(e.get("id") == t.id for e in seen)

        await eventually(seen_it)
    finally:
        await tail.stop()
