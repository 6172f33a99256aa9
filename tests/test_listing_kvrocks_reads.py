"""What keeps a task listing's reads short on KVRocks (issue 14, docs/performance.md §21): a
range read there that finds fewer entries than it asked for walks on over every deleted entry
of the index (the P and R ranges of ``by_status`` fill with them as tasks are claimed and
finished) to the next live member, under the server's script lock. So ``list_tasks.lua`` never
asks the P, W, R, D or X range of a tenant for more entries than the queue counters say can be
there, and does not read one they say is empty; and wherever those counters are not known to
be exact, or the range holds an entry they do not count, the range is read as before, so no
task is ever left out of a listing."""

from __future__ import annotations

import re
from typing import Any

import pytest

from codeq.domain import ListStatus, NewTask, Task, TaskFilter
from codeq.engine import Engine
from codeq.store.keys import queue_segment
from codeq.store.redis_store import RedisStore
from tests.conftest import eventually, make_store
from tests.invariants import check_all
from tests.test_kvrocks_store import monitoring
from tests.test_listing import all_pages

ACME, GLOBEX = "acme", "globex"
_RANGE = re.compile(r'^ "[^"]*" "\((?P<tenant>[^!"]*)!(?P<code>[A-Z]).*"LIMIT" "0" "(?P<n>\d+)"$')


async def _tasks(engine: Engine, tenant: str, status: ListStatus | None) -> list[str]:
    return [t.id for t in await all_pages(engine, tenant, TaskFilter(status=status), 50)]


async def _pending_and_running(engine: Engine, pending: int, running: int) -> list[Task]:
    for i in range(pending + running):
        await engine.create(ACME, NewTask(command=("a", "b")[i % 2], payload=str(i)))
    held = [await engine.claim(ACME, "w", ["a", "b"], lease_seconds=3600) for _ in range(running)]
    return [t for t in held if t is not None]


async def test_a_listing_never_asks_a_range_for_more_than_its_counters_allow(
    redis_store: RedisStore,
) -> None:
    engine = Engine(redis_store)
    # a task that waits an hour, older than everything after it: listed from W, not from the
    # bottom of P below every task claimed since (docs/performance.md §25)
    await engine.create(ACME, NewTask(command="a", payload="w", delay_seconds=3600))
    # two rounds of work behind the ranges: what fills them with deleted entries on KVRocks
    for r in range(2):
        for i in range(20):
            await engine.create(ACME, NewTask(command=("a", "b")[i % 2], payload=f"{r}.{i}"))
        while (task := await engine.claim(ACME, "w", ["a", "b"])) is not None:
            await engine.complete(ACME, task.id, "w", result="{}", lease_id=task.lease_id)
    running = await _pending_and_running(engine, pending=4, running=2)
    newest = (await engine.list_tasks(ACME, TaskFilter(status=ListStatus.PENDING))).tasks[0]
    await engine.cancel(ACME, newest.id)  # acme: 3 pending, 2 running, 1 cancelled, none dead
    for i in range(10):  # another tenant's tasks in the same partition are not acme's
        await engine.create(GLOBEX, NewTask(command="a", payload=str(i)))
    for p in range(redis_store.keys.partitions):  # the sweeper's pass marks the partition
        assert await engine.sweep_partition(p, "t") is not None
    prefix = redis_store.keys.prefix
    server = redis_store.client.connection_pool.connection_kwargs
    url = f"redis://{server['host']}:{server['port']}"

    async def reads_while(statuses: list[ListStatus | None]) -> tuple[list[int], list[Any]]:
        """How many tasks each listing found, and (status code, LIMIT) of every range read
        of acme's by_status in the listings' scripts."""
        async with monitoring(url) as monitor:
            found = [len(await _tasks(engine, ACME, status)) for status in statuses]
            await redis_store.client.get(f"{prefix}:done")  # after every read, in MONITOR order

            async def through() -> bool:
                return any(name == "GET" and f"{prefix}:done" in rest
                           for _, name, rest in monitor.lines)  # fmt: skip

            await eventually(through, timeout=10)
        got = []
        for _, name, rest in monitor.lines:
            if name == "ZREVRANGEBYLEX" and prefix in rest and (m := _RANGE.match(rest)):
                assert m["tenant"] == ACME, rest
                got.append((m["code"], int(m["n"])))
        return found, got

    found, got = await reads_while(
        [ListStatus.IN_PROGRESS, ListStatus.PENDING, ListStatus.CANCELLED, ListStatus.DEAD, None]
    )
    assert found == [2, 4, 1, 0, 47]
    allowed = {"P": 3, "W": 1, "R": 2, "X": 1}  # asked for 51 each (a page of 50 and one more)
    assert [(c, n) for c, n in got if c in allowed and n > allowed[c]] == [], got
    assert {c for c, _ in got} == {"P", "W", "R", "X", "C", "F"}  # D: nothing dead, not read
    assert ("C", 51) in got and ("F", 51) in got  # no counters: read as before

    for task in running:  # R is left with deleted entries only
        await engine.complete(ACME, task.id, "w", result="{}", lease_id=task.lease_id)
    found, got = await reads_while([ListStatus.IN_PROGRESS, None])
    assert found == [0, 47]
    assert [c for c, _ in got if c in "RD"] == [], got  # nothing in progress: R is not read


async def test_a_listing_reads_as_before_where_the_counters_are_not_known_exact(
    engine: Engine, store: RedisStore
) -> None:
    await _pending_and_running(engine, pending=4, running=2)
    pending = await _tasks(engine, ACME, ListStatus.PENDING)
    running = await _tasks(engine, ACME, ListStatus.IN_PROGRESS)
    assert (len(pending), len(running)) == (4, 2)
    fields = [queue_segment(ACME, c) + f for c in ("a", "b") for f in ("!ready", "!leased")]
    partitions = [store.keys.partition(p) for p in range(store.keys.partitions)]
    marks = ["!counted", "!uncertain"]
    saved = [await store.client.hmget(k.qstats, [*fields, *marks]) for k in partitions]

    async def counters(
        ready: int, leased: int, *, counted: bool = True, uncertain: bool = False
    ) -> None:
        for k in partitions:
            await store.client.hset(k.qstats, mapping={f: ready if f.endswith("!ready") else leased
                                                       for f in fields})  # fmt: skip
            for mark, on in (("!counted", counted), ("!uncertain", uncertain)):
                if on:
                    await store.client.hset(k.qstats, mark, "1")
                else:
                    await store.client.hdel(k.qstats, mark)

    async def lists_every_task() -> None:
        assert await _tasks(engine, ACME, ListStatus.PENDING) == pending
        assert await _tasks(engine, ACME, ListStatus.IN_PROGRESS) == running
        everything = await _tasks(engine, ACME, None)
        assert sorted(everything) == sorted(pending + running)

    try:
        await counters(100, 100)  # too high: read further than needed, nothing missed
        await lists_every_task()
        await counters(0, 0, counted=False)  # unmarked (data from before the counters)
        await lists_every_task()
        await counters(5, -3)  # a count below zero: not exact, whatever the mark says
        await lists_every_task()
        await counters(0, 0, uncertain=True)  # a quarantine counted the wrong queue down
        await lists_every_task()
    finally:
        for k, values in zip(partitions, saved, strict=True):
            was = dict(zip([*fields, *marks], values, strict=True))
            if kept := {f: v for f, v in was.items() if v is not None}:
                await store.client.hset(k.qstats, mapping=kept)
            if gone := [f for f, v in was.items() if v is None]:
                await store.client.hdel(k.qstats, *gone)


@pytest.mark.parametrize("kind", ["redis", "embedded", "kvrocks"])  # one partition: one order
async def test_an_entry_the_counters_do_not_count_never_hides_a_task(
    kind: str, request: pytest.FixtureRequest
) -> None:
    store = make_store(request, kind)
    try:
        await _a_leftover_entry_newer_than_the_pending_tasks(Engine(store), store)
        assert not await check_all(store.client, store.keys)
    finally:
        await store.close()


async def _a_leftover_entry_newer_than_the_pending_tasks(engine: Engine, store: RedisStore) -> None:
    older = [
        (await engine.create(ACME, NewTask(command="a", payload=str(i)))).task for i in range(3)
    ]
    # the newest, claimed first (priority), has a record nobody can read: the claim dead-letters
    # it under a new entry and leaves its old P entry behind, newer than every pending task
    last_ms = max(t.created_at_ms for t in older)

    async def a_later_millisecond() -> bool:  # so the next task's position sorts after theirs
        sec, usec = await store.client.time()
        return bool(sec * 1000 + usec // 1000 > last_ms)

    await eventually(a_later_millisecond, interval=0.001)
    bad = (await engine.create(ACME, NewTask(command="a", payload="x", priority=9))).task
    k = store.keys.partition(store.keys.partition_of(bad.id))
    await store.client.hset(k.tasks, bad.id, b"{not json")
    claimed = await engine.claim(ACME, "w", ["a"])
    assert claimed is not None and claimed.id != bad.id
    pending = sorted(t.id for t in older if t.id != claimed.id)
    assert len(pending) == 2
    # the counters say two pending, and the first two entries of the range are the leftover and
    # one task: read up to the count only, the other task would be missing
    for limit in (1, 2, 50):
        listed = await all_pages(engine, ACME, TaskFilter(status=ListStatus.PENDING), limit)
        assert sorted(t.id for t in listed) == pending, limit
    listed = await all_pages(engine, ACME, TaskFilter(), 50)
    assert set(pending) | {claimed.id, bad.id} == {t.id for t in listed}
