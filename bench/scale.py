"""Scale: does a create or a claim cost more when the queue is deep? (spec 06 item 6)

    python bench/scale.py [--store redis|kvrocks] [--pending 1000,100000,1000000]
                          [--leased 100,1000,10000] [--samples 300]

For each depth the queue of one command is filled to N pending tasks (batches of 100 through
the engine), then ``--samples`` creates and ``--samples`` claims (each completed at once, so
the depth stays N) are timed one at a time, with each of ``--leased`` other tasks of the queue
held under a lease in turn (the queue is topped up to N after each). The table gives p50/p99
in ms, the ratio of each p50 to the first row's, and Redis' memory per pending task
(``used_memory`` after the fill; KVRocks keeps its data on disk, where compaction decides the
size, so it gets no such column).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import STORES, local_store, percentile
from codeq.domain import NewTask
from codeq.engine import Engine
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore

BATCH = 100
TENANT = "scale"


async def fill(engine: Engine, command: str, n: int) -> None:
    sem = asyncio.Semaphore(4)

    async def batch(size: int) -> None:
        async with sem:
            items = [NewTask(command=command, payload='{"n":1}') for _ in range(size)]
            for outcome in await engine.create_many(TENANT, items):
                if isinstance(outcome, Exception):
                    raise outcome

    await asyncio.gather(*(batch(min(BATCH, n - i)) for i in range(0, n, BATCH)))


async def memory_bytes(store: RedisStore) -> int | None:
    info: dict[str, Any] = await store.client.info("memory")
    return int(info["used_memory"]) if "used_memory" in info else None


async def one_depth(
    url: str, pending: int, leased: list[int], samples: int
) -> list[dict[str, Any]]:
    """Fill one queue to ``pending``, then for each count in ``leased`` (ascending) hold that
    many tasks under a lease (claimed, never completed), top the queue up to ``pending`` again
    and time ``samples`` creates and claims."""
    store = RedisStore.from_url(url, KeySchema("scale" + uuid.uuid4().hex[:8]), pool_size=16)
    engine = Engine(store)
    command = "DEEP"
    rows: list[dict[str, Any]] = []
    try:
        await store.load_scripts()
        before = await memory_bytes(store)
        await fill(engine, command, pending)
        filled = await memory_bytes(store)
        held = 0
        for target in leased:
            await fill(engine, command, target - held)  # the ones about to be held
            while held < target:  # held, never completed: the leased set has `target` members
                assert await engine.claim(TENANT, "holder", [command]) is not None
                held += 1
            [stats] = await engine.list_queues(TENANT)
            await fill(engine, command, pending - stats.ready)
            create: list[float] = []
            claim: list[float] = []
            for i in range(samples):
                t0 = time.perf_counter()
                await engine.create(TENANT, NewTask(command=command, payload=str(i)))
                t1 = time.perf_counter()
                task = await engine.claim(TENANT, "w", [command])
                t2 = time.perf_counter()
                assert task is not None
                await engine.complete(TENANT, task.id, "w", result="{}", lease_id=task.lease_id)
                create.append(t1 - t0)
                claim.append(t2 - t1)
            [stats] = await engine.list_queues(TENANT)
            assert stats.ready == pending and stats.in_progress == target, stats
            per_task = None if before is None or filled is None else (filled - before) / pending
            rows.append(
                {"leased": target, "create": sorted(create), "claim": sorted(claim),
                 "bytes_per_task": per_task}
            )  # fmt: skip
    finally:
        await store.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--redis-url", help="Redis/KVRocks URL; default: start a local server")
    ap.add_argument("--store", choices=STORES, default="redis", help="the server to start")
    ap.add_argument("--pending", default="1000,10000,100000")
    ap.add_argument("--leased", default="100", help="tasks held under a lease, e.g. 100,1000,10000")
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args()
    depths = [int(x) for x in args.pending.split(",")]
    leased = sorted(int(x) for x in args.leased.split(","))
    print("# " + " ".join(["python bench/scale.py", *sys.argv[1:]]))
    print(
        f"| store | pending | leased | create p50 | create p99 | claim p50 | claim p99 "
        f"| create p50 ×{depths[0]:,} | claim p50 ×{depths[0]:,} | bytes/task |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base: dict[str, float] = {}
    with local_store(args.redis_url, args.store) as url:
        for n in depths:
            for r in asyncio.run(one_depth(url, n, leased, args.samples)):
                per_task = "—" if r["bytes_per_task"] is None else f"{r['bytes_per_task']:,.0f}"
                p50 = {op: percentile(r[op], 50) for op in ("create", "claim")}
                base = base or p50
                print(
                    f"| {args.store} | {n:,} | {r['leased']:,} "
                    f"| {p50['create'] * 1000:.2f} | {percentile(r['create'], 99) * 1000:.2f} "
                    f"| {p50['claim'] * 1000:.2f} | {percentile(r['claim'], 99) * 1000:.2f} "
                    f"| {p50['create'] / base['create']:.2f} "
                    f"| {p50['claim'] / base['claim']:.2f} | {per_task} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
