"""What keeps a transition's cost flat on KVRocks (issue 14), where a range read steps over
every entry deleted before it (RocksDB tombstones):

- queue depths are counters the scripts keep, not range counts. Every contract test checks the
  counters against the structures (tests/invariants.py); data written before the counters
  existed is counted once, exactly, by the sweeper;
- the claims' scans for due delayed tasks and expired leases start at a floor in qstats (no
  member scores below it; the writes keep it), and do not run while `now` is below it; the
  sweeper scans from the start, so an entry below the floor (written behind the scripts'
  back) is still found;
- a claim reads a queue's ready members from its head mark, no more of them than its counter
  says there are, and none when it says there are none: a range read that finds fewer than it
  asked for goes on past the queue's end, over every deleted entry of the queues after it.
  Claims trust the counters only where they are known to be exact (`!counted`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from codeq.domain import NewTask
from codeq.engine import Engine
from codeq.store.keys import queue_segment
from codeq.store.redis_store import RedisStore
from tests.conftest import eventually, make_store
from tests.invariants import check_all
from tests.test_kvrocks_store import monitoring

LUA = Path(__file__).resolve().parent.parent / "codeq" / "store" / "lua"


def test_only_the_one_time_recount_counts_by_range() -> None:
    counting = sorted(p.name for p in LUA.glob("*.lua") if "ZLEXCOUNT" in p.read_text())
    assert counting == ["sweep.lua"]


async def test_the_sweeper_counts_queues_written_before_the_counters(
    engine: Engine, store: RedisStore
) -> None:
    for i in range(5):
        await engine.create("acme", NewTask(command="render", payload=str(i)))
    await engine.create("acme", NewTask(command="mail", payload="1", max_attempts=1))
    claimed = await engine.claim("acme", "w", ["mail"])
    assert claimed is not None
    await engine.nack("acme", claimed.id, "w", lease_id=claimed.lease_id)  # its only attempt
    assert [(q.command, q.ready, q.dlq) for q in await engine.list_queues("acme")] == [
        ("mail", 0, 1),
        ("render", 5, 0),
    ]
    # what an older version left: no ready/dlq counters, no mark
    for p in range(store.keys.partitions):
        k = store.keys.partition(p)
        fields = [f.decode() for f in await store.client.hkeys(k.qstats)]
        gone = [f for f in fields if f.endswith(("!ready", "!dlq")) or f == "!counted"]
        if gone:
            await store.client.hdel(k.qstats, *gone)
    assert {(q.command, q.ready, q.dlq) for q in await engine.list_queues("acme")} == {
        ("mail", 0, 0),
        ("render", 0, 0),
    }
    for p in range(store.keys.partitions):
        assert await engine.sweep_partition(p, "upgrade") is not None
    assert [(q.command, q.ready, q.dlq) for q in await engine.list_queues("acme")] == [
        ("mail", 0, 1),
        ("render", 5, 0),
    ]
    # counted once: later changes move the counters, the next pass leaves them alone
    task = await engine.claim("acme", "w", ["render"])
    assert task is not None
    for p in range(store.keys.partitions):
        await engine.sweep_partition(p, "upgrade")
    [render] = [q for q in await engine.list_queues("acme") if q.command == "render"]
    assert (render.ready, render.in_progress) == (4, 1)


async def test_an_entry_below_the_floor_is_found_by_the_sweeper(
    engine: Engine, store: RedisStore
) -> None:
    created = await engine.create("acme", NewTask(command="later", payload="1", delay_seconds=3600))
    task_id = created.task.id
    p = store.keys.partition_of(task_id)
    k = store.keys.partition(p)
    assert await engine.claim("acme", "w", ["later"]) is None  # a claim's scan sets the floor
    floor = await store.client.hget(k.qstats, "!delayed_floor")
    assert floor is not None
    # written behind the scripts' back (a bug, a hand edit): due a minute ago, below a floor
    # that says nothing is due for a long time
    await store.client.zadd(k.delayed, {task_id: int(floor) - 3_660_000})
    await store.client.hset(k.qstats, "!delayed_floor", int(floor) + 10_000_000)
    assert await engine.claim("acme", "w", ["later"]) is None  # below the floor: not seen
    report = await engine.sweep_partition(p, "net")
    assert report is not None and report.promoted == 1
    claimed = await engine.claim("acme", "w", ["later"])
    assert claimed is not None and claimed.id == task_id


@pytest.mark.parametrize("kind", ["redis", "embedded", "kvrocks"])  # one partition: one order
async def test_a_claim_looks_from_the_head_mark_and_still_sees_a_new_first_task(
    kind: str, request: pytest.FixtureRequest
) -> None:
    store = make_store(request, kind)
    engine = Engine(store)
    try:
        await _claims_in_order(engine)
        assert not await check_all(store.client, store.keys)
    finally:
        await store.close()


async def _claims_in_order(engine: Engine) -> None:
    ids = [
        (await engine.create("acme", NewTask(command="q", payload=str(i)))).task.id
        for i in range(3)
    ]
    first = await engine.claim("acme", "w", ["q"])  # leaves a head mark behind the first
    assert first is not None and first.id == ids[0]
    urgent = (await engine.create("acme", NewTask(command="q", payload="!", priority=9))).task.id
    order = []
    for _ in range(3):
        task = await engine.claim("acme", "w", ["q"])
        assert task is not None
        order.append(task.id)
    assert order == [urgent, ids[1], ids[2]]  # priority first, then FIFO: nothing skipped
    assert await engine.claim("acme", "w", ["q"]) is None


async def test_a_sooner_lease_or_delay_lowers_the_floor_claims_look_from(
    engine: Engine, store: RedisStore
) -> None:
    # a long lease and a long delay set both floors an hour ahead...
    for i in range(2):
        await engine.create("acme", NewTask(command="job", payload=str(i)))
    await engine.create("acme", NewTask(command="job", payload="late", delay_seconds=3600))
    long = await engine.claim("acme", "w1", ["job"], lease_seconds=3600)
    assert long is not None
    # ...then a one-second lease and a one-second delay come in under them
    short = await engine.claim("acme", "w2", ["job"], lease_seconds=1)
    assert short is not None
    soon = await engine.create("acme", NewTask(command="job", payload="soon", delay_seconds=1))

    async def handed_out() -> set[str]:
        got = set()
        while (task := await engine.claim("acme", "w3", ["job"], lease_seconds=3600)) is not None:
            got.add(task.id)
        return got

    seen: set[str] = set()

    async def both_back() -> bool:
        seen.update(await handed_out())  # claims alone, no sweeper: they must look
        return {short.id, soon.task.id} <= seen

    assert await eventually(both_back, timeout=10)
    assert long.id not in seen


async def test_a_partition_is_counted_from_its_first_create_and_old_data_is_read_until_swept(
    engine: Engine, store: RedisStore
) -> None:
    ids = [(await engine.create("acme", NewTask(command="q", payload=str(i)))).task.id
           for i in range(4)]  # fmt: skip
    partitions = {store.keys.partition_of(i) for i in ids}
    for p in partitions:  # never had a ready member: exact from the first create on
        assert await store.client.hget(store.keys.partition(p).qstats, "!counted") == b"1"
    # what an older version left: ready members the counters do not know of, no mark
    field = queue_segment("acme", "q") + "!ready"
    for p in partitions:
        k = store.keys.partition(p)
        await store.client.hdel(k.qstats, "!counted")
        await store.client.hset(k.qstats, field, 0)
    # a later create does not mark it: this partition has had ready members before
    late = (await engine.create("acme", NewTask(command="q", payload="late"))).task.id
    for p in partitions:
        assert await store.client.hget(store.keys.partition(p).qstats, "!counted") is None
    # unmarked, the counters are not trusted: every task is still handed out...
    got = [await engine.claim("acme", "w", ["q"]) for _ in range(5)]
    assert {t.id for t in got if t is not None} == {*ids, late}
    assert await engine.claim("acme", "w", ["q"]) is None
    for p in partitions:  # the claims counted down from the wrong start
        assert int(await store.client.hget(store.keys.partition(p).qstats, field) or 0) < 0
    # ...and the sweeper's recount makes the counters exact and marks the partition
    for p in range(store.keys.partitions):
        assert await engine.sweep_partition(p, "upgrade") is not None
    for p in partitions:  # the counter went below zero with those claims: now exact again
        k = store.keys.partition(p)
        assert await store.client.hget(k.qstats, "!counted") == b"1"
        assert await store.client.hget(k.qstats, field) == b"0"


async def test_a_claim_that_names_a_queue_twice_hands_its_task_out_once(
    engine: Engine, store: RedisStore
) -> None:
    task = (await engine.create("acme", NewTask(command="q", payload="1"))).task
    q = queue_segment("acme", "q")

    async def claim(worker: str) -> object:
        return await store.claim(
            store.keys.partition_of(task.id),
            [q, q],  # the engine sends each queue once; the script must not depend on it
            worker_id=worker,
            lease_id=f"lease-{worker}",
            lease_ms=60_000,
            repair_limit=100,
            delays_ms=[1000],
            dlq_retention_ms=86_400_000,
        )

    got = await asyncio.gather(claim("w1"), claim("w2"))  # merged: one call, one group
    assert sorted(x is None for x in got) == [False, True]
    assert not await check_all(store.client, store.keys)  # the ready counter is not below 0


async def test_a_count_below_zero_is_not_trusted_and_takes_the_mark_away(
    engine: Engine, store: RedisStore
) -> None:
    task = (await engine.create("acme", NewTask(command="q", payload="1"))).task
    k = store.keys.partition(store.keys.partition_of(task.id))
    field = queue_segment("acme", "q") + "!ready"
    assert await store.client.hget(k.qstats, "!counted") == b"1"
    await store.client.hset(k.qstats, field, -1)  # drifted (a hand edit, a bug): wrong
    claimed = await engine.claim("acme", "w", ["q"])
    assert claimed is not None and claimed.id == task.id  # read all the same
    assert await store.client.hget(k.qstats, "!counted") is None  # the partition is not exact
    await engine.create("acme", NewTask(command="q", payload="2"))  # the count goes -2 → -1
    assert await engine.claim("acme", "w", ["q"]) is not None  # unmarked: read
    assert await engine.sweep_partition(store.keys.partition_of(task.id), "fix") is not None
    assert await store.client.hget(k.qstats, "!counted") == b"1"  # counted again, exactly
    assert await store.client.hget(k.qstats, field) == b"0"


async def test_a_claim_reads_no_more_of_a_queue_than_its_count_says_and_nothing_of_an_empty_one(
    redis_store: RedisStore,
) -> None:
    engine = Engine(redis_store)
    prefix = redis_store.keys.prefix
    for i in range(3):
        await engine.create("acme", NewTask(command="q", payload=str(i)))
    server = redis_store.client.connection_pool.connection_kwargs
    url = f"redis://{server['host']}:{server['port']}"

    def ours(monitor: Any, command: str) -> list[str]:  # this test's commands, scripts' too
        return [rest for _, name, rest in monitor.lines if name == command and prefix in rest]

    async with monitoring(url) as monitor:
        got = await asyncio.gather(*(engine.claim("acme", f"w{i}", ["q"]) for i in range(5)))
        assert sum(t is not None for t in got) == 3

        async def read() -> bool:  # the claims' read came through MONITOR
            return bool(ours(monitor, "ZRANGEBYLEX"))

        await eventually(read, timeout=10)
    limits = [int(r.split('"LIMIT" "0" "')[1].split('"')[0]) for r in ours(monitor, "ZRANGEBYLEX")]
    assert max(limits) <= 3, limits  # five claims, three tasks: never asked for five

    async with monitoring(url) as monitor:
        for _ in range(10):  # the queue the claims emptied, and one that never had a task
            assert await engine.claim("acme", "w", ["q"]) is None
            assert await engine.claim("acme", "w", ["idle", "q"]) is None

        async def all_seen() -> bool:  # the twenty script calls came through MONITOR
            return len(ours(monitor, "FCALL")) >= 20

        await eventually(all_seen, timeout=10)
    assert ours(monitor, "ZRANGEBYLEX") == []  # their counts said empty: nothing read
