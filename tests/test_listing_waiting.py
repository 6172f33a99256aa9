"""PENDING is listed from two ranges of ``by_status``: P, the ready tasks, and W, the tasks
waiting in the delayed set (a delay, a retry's backoff). A task that waits long then no longer
sits in P below the deleted entries of every task claimed since it was created, which a range
read on KVRocks steps over one by one (docs/performance.md §25). Every transition in and out
of the delayed set moves the task's entry in the same script; data written before W existed
(delayed tasks under P) is listed as it was until the sweeper moves it, once per partition."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from codeq.domain import ListStatus, NewTask, TaskFilter
from codeq.engine import Engine, EngineConfig
from codeq.store.redis_store import RedisStore
from tests.conftest import eventually
from tests.invariants import check_all
from tests.test_listing import all_pages

ACME = "acme"
HOUR = 3600.0


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def _codes(store: RedisStore) -> dict[str, str]:
    """task id -> the listing status code of its ``by_status`` member(s), joined."""
    codes: dict[str, str] = {}
    for p in range(store.keys.partitions):
        for member in await store.client.zrange(store.keys.partition(p).by_status, 0, -1):
            _, code, _, task_id = _s(member).split("!")
            codes[task_id] = codes.get(task_id, "") + code
    return codes


async def _listed(engine: Engine, status: ListStatus | None) -> list[str]:
    return [t.id for t in await all_pages(engine, ACME, TaskFilter(status=status), 2)]


async def _whole(store: RedisStore) -> None:
    problems = await check_all(store.client, store.keys)
    assert not problems, problems


async def test_a_waiting_task_moves_between_w_and_p_with_its_transitions(
    engine: Engine, store: RedisStore
) -> None:
    ready = (await engine.create(ACME, NewTask(command="a", payload="r"))).task
    task = (await engine.create(ACME, NewTask(command="a", payload="1", delay_seconds=0.05))).task
    assert (await _codes(store))[task.id] == "W"
    assert sorted(await _listed(engine, ListStatus.PENDING)) == sorted([ready.id, task.id])
    held = await engine.claim(ACME, "w", ["a"])
    assert held is not None and held.id == ready.id

    # due: a claim makes it ready (W -> P) and takes it (P -> R) in one call
    claimed = await eventually(lambda: engine.claim(ACME, "w", ["a"]))
    assert claimed.id == task.id
    assert (await _codes(store))[task.id] == "R"
    await _whole(store)

    await engine.nack(ACME, task.id, "w", lease_id=claimed.lease_id, delay_seconds=HOUR)
    assert (await _codes(store))[task.id] == "W"  # a retry's backoff waits under W
    assert await _listed(engine, ListStatus.PENDING) == [task.id]
    assert task.id in await _listed(engine, None)
    await _whole(store)

    await engine.cancel(ACME, task.id)
    assert (await _codes(store))[task.id] == "X"
    assert await _listed(engine, ListStatus.PENDING) == []
    await _whole(store)


async def _as_before_w(store: RedisStore, task_ids: list[str]) -> None:
    """Give these delayed tasks the entry an older release wrote (P) and take the partitions'
    mark away: data from before W."""
    for p in range(store.keys.partitions):
        k = store.keys.partition(p)
        for member in await store.client.zrange(k.by_status, 0, -1):
            tenant, code, position = _s(member).split("!", 2)
            if code == "W" and position.split("!")[1] in task_ids:
                await store.client.zrem(k.by_status, member)
                await store.client.zadd(k.by_status, {f"{tenant}!P!{position}": 0})
        await store.client.hdel(k.qstats, "!ixw", "!ixw_at")


async def _marked(store: RedisStore) -> bool:
    marks = [
        await store.client.hget(store.keys.partition(p).qstats, "!ixw")
        for p in range(store.keys.partitions)
    ]
    return all(m is not None and _s(m) == "1" for m in marks)


async def test_delayed_tasks_written_before_w_are_listed_until_the_sweeper_moves_them(
    engine: Engine, store: RedisStore
) -> None:
    # the older ones wait: under P (as before W) they lie below the ready ones, past where a cap
    # of the ready count alone would end the range
    waiting = [
        (await engine.create(ACME, NewTask(command="a", payload=str(i), delay_seconds=HOUR))).task
        for i in range(3)
    ]
    due = (await engine.create(ACME, NewTask(command="b", payload="d", delay_seconds=0.05))).task
    ready = [
        (await engine.create(ACME, NewTask(command="a", payload=f"r{i}"))).task for i in range(2)
    ]
    old = [t.id for t in waiting] + [due.id]
    await _as_before_w(store, old)
    assert {(await _codes(store))[i] for i in old} == {"P"}
    pending = sorted([*old, *(t.id for t in ready)])
    assert sorted(await _listed(engine, ListStatus.PENDING)) == pending
    assert sorted(await _listed(engine, None)) == pending
    await _whole(store)

    # leaving the delayed set takes the older entry with it: made ready, and cancelled
    claimed = await eventually(lambda: engine.claim(ACME, "w", ["b"]))
    assert claimed.id == due.id and (await _codes(store))[due.id] == "R"
    await engine.cancel(ACME, waiting[0].id)
    assert (await _codes(store))[waiting[0].id] == "X"
    await _whole(store)

    # the sweeper moves the rest under W, and marks each partition once a walk finds none
    async def swept() -> bool:
        for p in range(store.keys.partitions):
            while (report := await engine.sweep_partition(p, "t")) is not None and report.more:
                pass
        return await _marked(store)

    await eventually(swept)
    assert {(await _codes(store))[t.id] for t in waiting[1:]} == {"W"}
    still = sorted([waiting[1].id, waiting[2].id, *(t.id for t in ready)])
    assert sorted(await _listed(engine, ListStatus.PENDING)) == still
    await _whole(store)


async def test_the_sweeper_moves_a_large_set_in_bounded_steps(
    store: RedisStore, config: EngineConfig
) -> None:
    """More delayed tasks than one step looks at, many of one score: every one is moved."""
    engine = Engine(store, dataclasses.replace(config, requeue_inspect_limit=7))
    run_at = int(time.time() * 1000) + 86_400_000  # a day ahead: one score for most of them
    items = [
        NewTask(command="a", payload=str(i), run_at_ms=run_at if i % 3 else run_at + i)
        for i in range(40)
    ]
    created = []
    for out in await engine.create_many(ACME, items):
        assert not isinstance(out, Exception)
        created.append(out.task.id)
    await _as_before_w(store, created)
    steps = 0
    while not await _marked(store):
        for p in range(store.keys.partitions):
            await engine.sweep_partition(p, "t")
        steps += 1
        assert steps < 100, "the sweeper's walk does not end"
    assert steps > 40 // 7 // store.keys.partitions  # it took bounded steps
    assert set((await _codes(store)).values()) == {"W"}
    assert sorted(await _listed(engine, ListStatus.PENDING)) == sorted(created)
    await _whole(store)
