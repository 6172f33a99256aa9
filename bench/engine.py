"""Engine throughput: full lifecycles (create → claim → complete) through the Python engine.

    python bench/engine.py [--store redis|kvrocks] [--redis-url URL] [--protocol 2|3]
                           [--duration 5] [--concurrency 1,10,50]

Each process runs N concurrent loops of create → claim → complete against one queue; the
table gives lifecycles per second over all processes and p50/p99 per operation (ms). The
embedded store lives inside one process, so it is measured with one process only.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
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

OPS = ("create", "claim", "complete")


async def run_loops(
    url: str | None, prefix: str, concurrency: int, duration: float, protocol: int
) -> dict[str, Any]:
    keys = KeySchema(prefix)
    store = (
        RedisStore.embedded(keys)
        if url is None
        else RedisStore.from_url(url, keys, pool_size=max(concurrency, 4), protocol=protocol)
    )
    engine = Engine(store)
    await store.load_scripts()
    lat: dict[str, list[float]] = {op: [] for op in OPS}
    done = 0
    empty_claims = 0
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + duration

    async def one() -> None:
        nonlocal done, empty_claims
        clock = time.perf_counter
        while loop.time() < stop_at:
            t0 = clock()
            await engine.create("bench", NewTask(command="LIFECYCLE", payload='{"n":1}'))
            t1 = clock()
            task = await engine.claim("bench", "w", ["LIFECYCLE"])
            t2 = clock()
            lat["create"].append(t1 - t0)
            lat["claim"].append(t2 - t1)
            if task is None:
                empty_claims += 1
                continue
            await engine.complete("bench", task.id, "w", result="{}", lease_id=task.lease_id)
            lat["complete"].append(clock() - t2)
            done += 1

    started = loop.time()
    await asyncio.gather(*(one() for _ in range(concurrency)))
    elapsed = loop.time() - started
    await store.close()
    return {"done": done, "elapsed": elapsed, "lat": lat, "empty": empty_claims}


def _child(
    url: str | None, prefix: str, concurrency: int, duration: float, protocol: int, q: Any
) -> None:
    q.put(asyncio.run(run_loops(url, prefix, concurrency, duration, protocol)))


def run(
    url: str | None, processes: int, concurrency: int, duration: float, protocol: int
) -> dict[str, Any]:
    prefix = "bench" + uuid.uuid4().hex[:8]
    if processes == 1:
        results = [asyncio.run(run_loops(url, prefix, concurrency, duration, protocol))]
    else:
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        procs = [
            ctx.Process(target=_child, args=(url, prefix, concurrency, duration, protocol, q))
            for _ in range(processes)
        ]
        for p in procs:
            p.start()
        results = [q.get(timeout=duration * 10 + 60) for _ in procs]
        for p in procs:
            p.join()
    lat = {op: sorted(x for r in results for x in r["lat"][op]) for op in OPS}
    done = sum(r["done"] for r in results)
    elapsed = max(r["elapsed"] for r in results)
    return {"rate": done / elapsed, "lat": lat, "empty": sum(r["empty"] for r in results)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="Redis/KVRocks URL; default: start a local server")
    parser.add_argument(
        "--store",
        choices=STORES,
        default="redis",
        help="the server to start (with --redis-url: the label of the given one)",
    )
    parser.add_argument(
        "--protocol", type=int, choices=(2, 3), default=2, help="RESP version of the client"
    )
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--backends", default="server,embedded", help="server and/or embedded")
    parser.add_argument("--processes", default="1,2")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    procs = [int(x) for x in args.processes.split(",")]
    with local_store(args.redis_url, args.store) as url:
        cmd = " ".join(["python bench/engine.py", *sys.argv[1:]])
        print(f"# {cmd}")
        print(
            f"{'store':<11}{'resp':>5}{'procs':>6}{'conc':>6}{'lifecycles/s':>14}"
            + "".join(f"{op + ' p50':>14}{op + ' p99':>14}" for op in OPS)
            + f"{'empty':>7}"
        )
        for backend in args.backends.split(","):
            for n_proc in procs:
                if backend == "embedded" and n_proc > 1:
                    continue
                for c in levels:
                    server = backend != "embedded"
                    r = run(url if server else None, n_proc, c, args.duration, args.protocol)
                    cells = "".join(
                        f"{percentile(r['lat'][op], 50) * 1000:>14.2f}"
                        f"{percentile(r['lat'][op], 99) * 1000:>14.2f}"
                        for op in OPS
                    )
                    name = args.store if server else "embedded"
                    resp = args.protocol if server else "-"
                    print(
                        f"{name:<11}{resp:>5}{n_proc:>6}{c:>6}{r['rate']:>14.0f}{cells}{r['empty']:>7}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
