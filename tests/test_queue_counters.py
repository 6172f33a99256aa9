"""Queue depths are counters the scripts keep, not range counts (issue 14: a ZLEXCOUNT walks
its range, so on KVRocks a create cost more the deeper its queue). Every contract test already
checks the counters against the structures (tests/invariants.py); these cover the way in: data
written before the counters existed is counted once, exactly, by the sweeper."""

from __future__ import annotations

from pathlib import Path

from codeq.domain import NewTask
from codeq.engine import Engine
from codeq.store.redis_store import RedisStore

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
