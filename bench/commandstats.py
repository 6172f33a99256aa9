"""What each transition costs inside the store, per operation, at a given queue depth.

For each ``--pending`` depth: a fresh key prefix filled with that many ready tasks (topped up
before each phase that consumes tasks), then four phases at ``--concurrency`` coroutines
through the engine (so concurrent creates merge as they do in the gateway): ``--ops`` creates,
``--ops`` claims (held), their results, and ``--ops`` claim+result pairs interleaved (claims
scanning while results delete leases). Per operation it prints the script calls, the commands
the scripts ran (``INFO commandstats``), the time the server says the scripts took
(``fcall`` usec), and the server process' CPU time (from /proc, when the server runs here):
the number that decides throughput on a shared box.

    python bench/commandstats.py --store kvrocks --pending 1000 100000
    python bench/commandstats.py --store redis --pending 1000 100000

``--growth N``: creates only, ``N`` phases of ``--ops`` each on one store that keeps them, so
each phase starts where the last ended: what a create costs the server as its tables grow
(per phase the script's time, the time of the commands it runs, and what is left for the Lua
around them). ``--pending`` and ``--by-command`` do not apply to it.

    python bench/commandstats.py --store redis --growth 8 --ops 30000 --concurrency 48
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import STORES, local_store
from codeq.domain import NewTask, Task
from codeq.engine import Engine
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore

TENANT = "bench"
COMMAND = "DEPTH"


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


async def server_pid(store: RedisStore) -> int | None:
    """The server's process id when it runs on this machine (its INFO names it)."""
    info: dict[str, Any] = await store.client.info("server")
    pid = info.get("process_id")
    local = pid is not None and os.path.exists(f"/proc/{pid}/stat")  # noqa: ASYNC240 - /proc
    return int(pid) if local else None


async def commandstats(store: RedisStore) -> dict[str, tuple[int, float]]:
    info: dict[str, Any] = await store.client.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): (int(v["calls"]), float(v["usec"])) for k, v in info.items()
    }


class Phase:
    def __init__(self, store: RedisStore, pid: int | None) -> None:
        self.store, self.pid = store, pid

    async def __aenter__(self) -> Phase:
        self.before = await commandstats(self.store)
        self.cpu = cpu_seconds(self.pid)
        self.t0 = time.perf_counter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = cpu_seconds(self.pid) - self.cpu
        after = await commandstats(self.store)
        self.delta = {
            k: (v[0] - self.before.get(k, (0, 0.0))[0], v[1] - self.before.get(k, (0, 0.0))[1])
            for k, v in after.items()
        }

    def by_command(self, label: str, pending: int, ops: int) -> list[str]:
        """The commands of the phase, most time first: calls and server µs per operation
        (``fcall`` counts what its commands took too; ``exec`` what its script took)."""
        rows = sorted(
            ((usec, name, calls) for name, (calls, usec) in self.delta.items() if calls > 0),
            reverse=True,
        )
        return [
            f"| {pending:,} | {label} | {name} | {calls / ops:.2f} | {usec / ops:.1f} |"
            for usec, name, calls in rows
            if name != "info"
        ]

    def row(self, label: str, pending: int, ops: int) -> str:
        scripts = self.delta.get("fcall", (0, 0.0))
        inner = sum(
            c for k, (c, _) in self.delta.items() if k not in ("fcall", "multi", "exec", "info")
        )
        return (
            f"| {pending:,} | {label} | {scripts[0] / ops:.2f} | {inner / ops:.1f} | "
            f"{scripts[1] / ops:.0f} | {self.cpu / ops * 1e6:.0f} | {ops / self.wall:,.0f} |"
        )


@contextlib.asynccontextmanager
async def _opened(url: str, local: bool) -> AsyncIterator[tuple[RedisStore, Engine, int | None]]:
    """A store on ``url`` under a key prefix of its own, its engine, and the server's process id
    when it runs here (``local``)."""
    store = RedisStore.from_url(url, KeySchema("cs" + uuid.uuid4().hex[:8]), pool_size=64)
    try:
        await store.load_scripts()
        yield store, Engine(store), (await server_pid(store) if local else None)
    finally:
        await store.close()


def _creates(engine: Engine, ops: int, conc: int) -> Callable[[int], Awaitable[None]]:
    """One of ``conc`` coroutines that make ``ops`` creates between them."""

    async def create(k: int) -> None:
        for _ in range(ops // conc):
            await engine.create(TENANT, NewTask(command=COMMAND, payload='{"n":1}'))

    return create


async def one_depth(
    url: str, local: bool, pending: int, ops: int, conc: int, detail: list[str]
) -> list[str]:
    rows: list[str] = []
    async with _opened(url, local) as (store, engine, pid):

        async def spread(work: Any) -> None:
            await asyncio.gather(*(work(k) for k in range(conc)))

        create = _creates(engine, ops, conc)

        held: list[Task] = []

        async def claim(k: int) -> None:
            for _ in range(ops // conc):
                task = await engine.claim(TENANT, f"w{k}", [COMMAND])
                assert task is not None
                held.append(task)

        async def result(k: int) -> None:
            for task in held[k::conc]:
                await engine.complete(
                    TENANT, task.id, task.worker_id or "", result="{}", lease_id=task.lease_id
                )

        async def pair(k: int) -> None:
            for _ in range(ops // conc):
                task = await engine.claim(TENANT, f"p{k}", [COMMAND])
                assert task is not None
                await engine.complete(TENANT, task.id, f"p{k}", result="{}", lease_id=task.lease_id)

        async def top_up(count: int) -> None:  # not measured: what a consuming phase takes
            for i in range(0, count, 100):
                batch = [NewTask(command=COMMAND, payload="{}") for _ in range(min(100, count - i))]
                await engine.create_many(TENANT, batch)

        await top_up(pending)
        n = ops // conc * conc
        for label, work, consumes in (
            ("create", create, False),
            ("claim", claim, True),
            ("result", result, False),
            ("claim + result", pair, True),
        ):
            if consumes:
                await top_up(n)  # the depth stays between `pending` and `pending + ops`
            async with Phase(store, pid) as phase:
                await spread(work)
            rows.append(phase.row(label, pending, n))
            detail += phase.by_command(label, pending, n)
    return rows


async def growth(url: str, local: bool, phases: int, ops: int, conc: int) -> list[str]:
    """``phases`` create phases of ``ops`` on one growing store: a row each."""
    rows: list[str] = []
    async with _opened(url, local) as (store, engine, pid):
        create = _creates(engine, ops, conc)
        n = ops // conc * conc
        for phase_no in range(1, phases + 1):
            async with Phase(store, pid) as phase:
                await asyncio.gather(*(create(k) for k in range(conc)))
            us = {k: v[1] / n for k, v in phase.delta.items()}
            script = us.get("fcall", 0.0)
            parts = [us.get(k, 0.0) for k in ("zadd", "hset", "xadd")]
            # the commands the scripts ran (KVRocks' transaction around a call is not one)
            inside = sum(v for k, v in us.items() if k not in ("fcall", "info", "multi", "exec"))
            rows.append(
                f"| {phase_no * n:,} | {phase.delta.get('fcall', (0, 0.0))[0] / n:.3f} | "
                f"{script:.1f} | {parts[0]:.2f} | {parts[1]:.2f} | {parts[2]:.2f} | "
                f"{script - inside:.1f} | "
                f"{phase.cpu / n * 1e6:.0f} |"
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", choices=STORES, default="kvrocks")
    ap.add_argument("--redis-url", default=None, help="an existing server (CPU not measured)")
    ap.add_argument("--pending", type=int, nargs="+", default=[1000, 100000])
    ap.add_argument("--ops", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument(
        "--by-command", action="store_true", help="also each command's calls and µs per operation"
    )
    ap.add_argument(
        "--growth", type=int, default=0, metavar="N", help="N create phases on one growing store"
    )
    args = ap.parse_args()
    if args.ops < args.concurrency:
        ap.error("--ops must be at least --concurrency (each coroutine makes ops // concurrency)")
    detail: list[str] = []
    if args.growth:
        with local_store(args.redis_url, args.store) as url:
            print(
                f"{args.store}, creates from {args.concurrency} coroutines through the engine, "
                f"{args.growth} phases of {args.ops:,} on one store, server µs per create:"
            )
            print("| tasks stored after | script calls | script | zadd | hset | xadd | "
                  "the rest (Lua) | server CPU |")  # fmt: skip
            print("|---:|---:|---:|---:|---:|---:|---:|---:|")
            asyncio.run(growth(url, not args.redis_url, args.growth, args.ops, args.concurrency))
        print(f"\nreproduce: python bench/commandstats.py --store {args.store} --growth "
              f"{args.growth} --ops {args.ops} --concurrency {args.concurrency}")  # fmt: skip
        return
    with local_store(args.redis_url, args.store) as url:
        print(f"{args.store}, {args.concurrency} coroutines through the engine, per operation:")
        print("| pending | operation | script calls | commands inside | script µs (server) | "
              "server CPU µs | ops/s |")  # fmt: skip
        print("|---:|---|---:|---:|---:|---:|---:|")
        for pending in args.pending:
            for row in asyncio.run(
                one_depth(url, not args.redis_url, pending, args.ops, args.concurrency, detail)
            ):
                print(row, flush=True)
        if args.by_command:
            print("\n| pending | operation | command | calls per op | server µs per op |")
            print("|---:|---|---|---:|---:|")
            print("\n".join(detail))
    pend = " ".join(str(p) for p in args.pending)
    print(f"\nreproduce: python bench/commandstats.py --store {args.store} --pending {pend} "
          f"--ops {args.ops} --concurrency {args.concurrency}"
          + (" --by-command" if args.by_command else ""))  # fmt: skip


if __name__ == "__main__":
    main()
