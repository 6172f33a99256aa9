"""One script of two revisions side by side: what the server spends on it per item.

    python bench/script_ab.py --rev HEAD~1 [--script create] [--store redis|kvrocks]
                              [--calls 3000] [--items 12] [--rounds 2]

Two throwaway servers of the same kind, one running the working tree's scripts and one running
``--rev``'s version of ``--script`` (with that revision's ``lib.lua``, as the store builds it),
both driven through the engine from one process, calls alternating (each round starts with the
other one), so a slow minute of this machine weighs on both alike. ``create``: batches of
``--items`` creates over three commands (``Engine.create_many``, one script call each). It
prints, per variant, the server's script time per item (``INFO commandstats``: ``fcall``,
and KVRocks' ``exec``, the transaction each call runs in), the client's wall time per item, and
each command's time per call inside the scripts. The servers' own clocks, not the client's,
decide: the client's time carries the engine's Python on both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import STORES, local_store, script_at
from bench.commandstats import commandstats
from codeq.domain import NewTask
from codeq.engine import Engine
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore


async def _run(args: argparse.Namespace) -> None:
    if args.script != "create":
        raise SystemExit("only --script create is driven so far")
    old = script_at(args.rev, args.script)
    batch = [NewTask(command=f"AB{i % 3}", payload='{"n":1}') for i in range(args.items)]
    with local_store(None, args.store) as new_url, local_store(None, args.store) as old_url:
        stores = {
            "working tree": RedisStore.from_url(new_url, KeySchema("ab" + uuid.uuid4().hex[:6])),
            args.rev: RedisStore.from_url(old_url, KeySchema("ab" + uuid.uuid4().hex[:6])),
        }
        stores[args.rev]._scripts = {**stores[args.rev]._scripts, args.script: old}
        engines = {name: Engine(store) for name, store in stores.items()}
        for engine in engines.values():  # warm: scripts loaded, structures not empty
            for _ in range(50):
                await engine.create_many("bench", batch)
        before = {name: await commandstats(store) for name, store in stores.items()}
        wall: dict[str, list[float]] = {name: [] for name in stores}
        names = list(stores)
        for r in range(args.rounds):
            order = names if r % 2 == 0 else names[::-1]
            for i in range(args.calls // args.rounds):
                for name in order if i % 2 == 0 else order[::-1]:
                    started = time.perf_counter()
                    await engines[name].create_many("bench", batch)
                    wall[name].append(time.perf_counter() - started)
        print(f"\n{args.store}, {args.script}: {args.calls} calls of {args.items} a variant\n")
        print("| variant | script µs per item | transaction µs per item | client µs per item "
              "| commands inside, µs per call |")  # fmt: skip
        print("|---|---:|---:|---:|---|")
        for name, store in stores.items():
            after = await commandstats(store)
            diff = {
                k: (c - before[name].get(k, (0, 0.0))[0], u - before[name].get(k, (0, 0.0))[1])
                for k, (c, u) in after.items()
            }
            calls, usec = diff["fcall"]
            exec_usec = diff.get("exec", (0, 0.0))[1]
            items = calls * args.items
            inside = ", ".join(
                f"{k} {u / c:.1f}"
                for k, (c, u) in sorted(diff.items())
                if c >= calls and k not in ("fcall", "exec", "multi", "info", "time")
            )
            tx = f"{exec_usec / items:.1f}" if exec_usec else "—"  # KVRocks: MULTI/EXEC
            client = statistics.median(wall[name]) * 1e6 / args.items
            print(f"| {name} | {usec / items:.1f} | {tx} | {client:.1f} | {inside} |")
        for store in stores.values():
            await store.close()
    print("\nreproduce: python bench/script_ab.py " + " ".join(sys.argv[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", required=True, help="the revision to compare the working tree with")
    ap.add_argument("--script", default="create")
    ap.add_argument("--store", choices=STORES, default="redis")
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--items", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    asyncio.run(_run(ap.parse_args()))


if __name__ == "__main__":
    main()
