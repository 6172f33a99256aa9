"""Listing tasks: does a page cost more when the tenant has more tasks? (issue 17 item 1)

    python bench/listing.py [--store redis|kvrocks] [--tasks 1000,100000,1000000] [--samples 200]

One tenant is filled to each size in turn (batches of 100 through the engine; half the tasks
under command A, half under B; every tenth one claimed, so two statuses exist), then the same
page requests are timed one at a time, ``--samples`` each, through ``Engine.list_tasks`` — one
script call per partition, from the indexes the transition scripts keep:

  newest        the first page (limit 50), no filter
  status        status=IN_PROGRESS (its own index; a tenth of the tasks)
  command       command=A (its own index; half the tasks)
  cursor 20     the 20th page of `newest`, reached by following cursors (the last hop is timed)
  status+cmd    status=IN_PROGRESS and command=B: no index of its own, so the page scans the
                status index and keeps the matches (at most 2,000 entries per partition per
                page; a combination that matches nothing costs that bound every page)

The table gives p50/p99 in ms per size and the ratio of each p50 to the smallest size's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import STORES, local_store, percentile
from codeq.domain import ListStatus, NewTask, TaskFilter
from codeq.engine import Engine
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore

BATCH = 100
TENANT = "listing"


async def fill(engine: Engine, start: int, stop: int) -> None:
    sem = asyncio.Semaphore(8)

    async def batch(first: int, size: int) -> None:
        async with sem:
            items = [
                NewTask(command="A" if (first + i) % 2 else "B", payload='{"n":1}')
                for i in range(size)
            ]
            for outcome in await engine.create_many(TENANT, items):
                if isinstance(outcome, Exception):
                    raise outcome

    await asyncio.gather(*(batch(i, min(BATCH, stop - i)) for i in range(start, stop, BATCH)))
    # every tenth task in progress, half of them of each command
    for i in range((stop - start) // 10):
        await engine.claim(TENANT, "bench-worker", ["A" if i % 2 else "B"], lease_seconds=3600)


async def timed(samples: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return sorted(out)


async def measure(engine: Engine, samples: int) -> dict[str, list[float]]:
    async def page(flt: TaskFilter, cursor: str | None = None) -> Any:
        return await engine.list_tasks(TENANT, flt, limit=50, cursor=cursor)

    cursor: str | None = None
    for _ in range(19):
        got = await page(TaskFilter(), cursor)
        cursor = got.next_cursor
    deep = cursor
    both = TaskFilter(status=ListStatus("IN_PROGRESS"), command="B")
    return {
        "newest": await timed(samples, lambda: page(TaskFilter())),
        "status": await timed(samples, lambda: page(TaskFilter(status=ListStatus("IN_PROGRESS")))),
        "command": await timed(samples, lambda: page(TaskFilter(command="A"))),
        "cursor 20": await timed(samples, lambda: page(TaskFilter(), deep)),
        "status+cmd": await timed(samples, lambda: page(both)),
    }


async def run(url: str, sizes: list[int], samples: int) -> list[tuple[int, dict[str, list[float]]]]:
    store = RedisStore.from_url(url, KeySchema("list" + uuid.uuid4().hex[:8]), pool_size=16)
    engine = Engine(store)
    rows = []
    try:
        await store.load_scripts()
        have = 0
        for n in sizes:
            t0 = time.perf_counter()
            await fill(engine, have, n)
            print(f"filled {n:,} tasks (+{n - have:,} in {time.perf_counter() - t0:.0f} s)",
                  flush=True)  # fmt: skip
            have = n
            rows.append((n, await measure(engine, samples)))
    finally:
        await store.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", choices=STORES, default="redis")
    ap.add_argument("--redis-url", help="use this Redis/KVRocks instead of starting one")
    ap.add_argument("--tasks", default="1000,100000,1000000")
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.tasks.split(","))
    with local_store(args.redis_url, args.store) as url:
        rows = asyncio.run(run(url, sizes, args.samples))
    names = list(rows[0][1])
    print(f"\nstore: {args.store}; one page = limit 50, {args.samples} samples, ms")
    print("| tasks | " + " | ".join(f"{n} p50 | p99 | ×" for n in names) + " |")
    print("|---:|" + "---:|---:|---:|" * len(names))
    base = {n: percentile(rows[0][1][n], 50) for n in names}
    for size, res in rows:
        cells = []
        for n in names:
            p50, p99 = percentile(res[n], 50), percentile(res[n], 99)
            cells.append(f"{p50 * 1000:.2f} | {p99 * 1000:.2f} | {p50 / base[n]:.2f}")
        print(f"| {size:,} | " + " | ".join(cells) + " |")
    print("\nreproduce: " + " ".join(["python", "bench/listing.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
