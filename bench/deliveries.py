"""Finding deliveries: does a page, or a count, cost more when there are more deliveries?
(issue 18 item 4)

    python bench/deliveries.py [--store redis|kvrocks] [--deliveries 1000,100000,1000000]
                               [--samples 200]

One tenant is filled to each size in turn straight through the store's scripts: ``dlv_enqueue``
writes 500 deliveries a call and ``dlv_outcome`` records their outcomes 500 a call, 8 calls in
flight (pipelined by the store's coalescer). The deliveries go to 10 endpoints, are of 3 event
types, one in 10 is about a task (10 deliveries per task); 90 % succeed, 5 % are dead, 3 %
retrying and 2 % pending. Then the same requests are timed one at a time, ``--samples`` each,
through the code the routes run (``DeliveryLister.page``: one ``dlv_search`` call per partition;
``counts``: one HMGET per partition):

  newest        the first page (limit 50), no filter: the five status ranges merged
  dead          status=dead (its own range)
  endpoint      endpointId=one of the 10 (its five status ranges merged)
  endpoint+dead endpointId and status=dead (one range)
  event type    eventType=task.failed (its own range)
  type+dead     eventType and status=dead: no range of its own, so the page reads the dead
                range and checks the type on the records (at most 2,000 entries per partition
                and page)
  task          taskId=one task (its 10 deliveries, from the task's index)
  cursor 20     the 20th page of `newest`, reached by following cursors (the last hop timed)
  count         the tenant's counts by status (counters, not range counts)
  count ep      one endpoint's counts by status

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

# bench/ holds http.py: keep the folder off sys.path (it would shadow the standard library's
# http package, which the gateway's routes import); the checkout goes first, for bench._common.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from bench._common import STORES, local_store, percentile  # noqa: E402
from codeq.ids import new_task_id  # noqa: E402
from codeq.store.keys import KeySchema  # noqa: E402
from codeq.store.redis_store import RedisStore  # noqa: E402
from deliverers import records  # noqa: E402
from gateway.routes.deliveries import DeliveryFilter, DeliveryLister  # noqa: E402

BATCH = 500
IN_FLIGHT = 8
TENANT = "deliveries"
ENDPOINTS = [f"ep_bench{i}" for i in range(10)]
TYPES = ["task.completed", "task.failed", "task.ready"]
T0 = 1_700_000_000_000
ATTEMPT = b'{"at":1,"latencyMs":12.5,"statusCode":200,"response":"ok"}'
FAILED = b'{"at":1,"latencyMs":30.0,"statusCode":500,"response":"no"}'


def _outcome(n: int) -> tuple[str, bytes] | None:
    """What became of delivery n: 90 % succeeded, 5 % dead, 3 % retrying, 2 % pending."""
    r = n % 100
    if r < 90:
        return "succeeded", ATTEMPT
    if r < 95:
        return "dead", FAILED
    if r < 98:
        return "retry", FAILED
    return None


class Filler:
    def __init__(self, store: RedisStore) -> None:
        self.store = store
        self.task = new_task_id()

    def delivery(self, n: int) -> records.Delivery:
        if n % 100 == 0:  # a new task every 100 deliveries, 10 deliveries each
            self.task = new_task_id()
        p = n % self.store.keys.partitions
        return records.Delivery(
            id=f"msg_{p}_{n:026x}",
            kind="endpoint",
            tenant=TENANT,
            url="http://127.0.0.1:9/hook",
            body='{"type":"task.completed","data":{"id":"%d","result":{"pages":3}}}' % n,  # noqa: UP031
            event_type=TYPES[n % 3],
            created_at=T0 + n,
            schedule=[5.0, 30.0, 120.0],
            task_id=self.task if n % 10 == 0 else None,
            endpoint_id=ENDPOINTS[n % 10],
        )

    async def fill(self, start: int, stop: int) -> None:
        sem = asyncio.Semaphore(IN_FLIGHT)
        parts = self.store.keys.partitions

        async def batch(first: int, last: int) -> None:
            async with sem:
                by_p: dict[int, list[records.Delivery]] = {}
                for n in range(first, last):
                    by_p.setdefault(n % parts, []).append(self.delivery(n))
                for p, made in by_p.items():
                    pairs = [(d.id, records.encode(d)) for d in made]
                    await self.store.deliveries.enqueue(p, "bench", [], 0, pairs)
                    items = []
                    for d in made:
                        what = _outcome(int(d.id.rsplit("_", 1)[1], 16))
                        if what is not None:
                            outcome, attempt = what
                            items.append((d.id, outcome, 3_600_000, attempt))
                    if items:
                        await self.store.deliveries.outcomes(p, items, 20)

        # each batch is made whole before its first await: a task's 10 deliveries (n, n + 10,
        # ... n + 90, n a multiple of 100) are in one batch and get one task id
        await asyncio.gather(*(batch(i, min(i + BATCH, stop)) for i in range(start, stop, BATCH)))


async def timed(samples: int, call: Callable[[], Awaitable[Any]]) -> list[float]:
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await call()
        out.append(time.perf_counter() - t0)
    return sorted(out)


async def measure(store: RedisStore, task: str, samples: int) -> dict[str, list[float]]:
    lister = DeliveryLister(store.deliveries, store.keys.partitions, cursor_key=b"bench")
    ds, parts = store.deliveries, range(store.keys.partitions)

    async def page(flt: DeliveryFilter, cursor: str | None = None) -> Any:
        return await lister.page(TENANT, flt, limit=50, cursor=cursor)

    async def counts(endpoint: str | None = None) -> Any:
        return await asyncio.gather(*(ds.counts(p, TENANT, endpoint_id=endpoint) for p in parts))

    cursor: str | None = None
    for _ in range(19):
        _, cursor = await page(DeliveryFilter(), cursor)
    deep = cursor
    dead = records.DeliveryStatus.DEAD
    flts = {
        "newest": DeliveryFilter(),
        "dead": DeliveryFilter(status=dead),
        "endpoint": DeliveryFilter(endpoint_id=ENDPOINTS[3]),
        "endpoint+dead": DeliveryFilter(endpoint_id=ENDPOINTS[3], status=dead),
        "event type": DeliveryFilter(event_type="task.failed"),
        "type+dead": DeliveryFilter(event_type="task.failed", status=dead),
        "task": DeliveryFilter(task_id=task),
    }
    out = {name: await timed(samples, lambda f=f: page(f)) for name, f in flts.items()}
    out["cursor 20"] = await timed(samples, lambda: page(DeliveryFilter(), deep))
    out["count"] = await timed(samples, counts)
    out["count ep"] = await timed(samples, lambda: counts(ENDPOINTS[3]))
    return out


async def run(url: str, sizes: list[int], samples: int) -> list[tuple[int, dict[str, list[float]]]]:
    store = RedisStore.from_url(url, KeySchema("dlvb" + uuid.uuid4().hex[:8]), pool_size=16)
    filler = Filler(store)
    rows = []
    try:
        await store.load_scripts()
        have = 0
        for n in sizes:
            t0 = time.perf_counter()
            await filler.fill(have, n)
            print(f"filled {n:,} deliveries (+{n - have:,} in {time.perf_counter() - t0:.0f} s)",
                  flush=True)  # fmt: skip
            have = n
            rows.append((n, await measure(store, filler.task, samples)))
    finally:
        await store.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", choices=STORES, default="redis")
    ap.add_argument("--redis-url", help="use this Redis/KVRocks instead of starting one")
    ap.add_argument("--deliveries", default="1000,100000,1000000")
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()
    sizes = sorted(int(x) for x in args.deliveries.split(","))
    with local_store(args.redis_url, args.store) as url:
        rows = asyncio.run(run(url, sizes, args.samples))
    names = list(rows[0][1])
    print(f"\nstore: {args.store}; one page = limit 50, {args.samples} samples, ms")
    for group in (names[:5], names[5:]):
        print("| deliveries | " + " | ".join(f"{n} p50 | p99 | ×" for n in group) + " |")
        print("|---:|" + "---:|---:|---:|" * len(group))
        base = {n: percentile(rows[0][1][n], 50) for n in group}
        for size, res in rows:
            cells = []
            for n in group:
                p50, p99 = percentile(res[n], 50), percentile(res[n], 99)
                cells.append(f"{p50 * 1000:.2f} | {p99 * 1000:.2f} | {p50 / base[n]:.2f}")
            print(f"| {size:,} | " + " | ".join(cells) + " |")
        print()
    print("reproduce: " + " ".join(["python", "bench/deliveries.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
