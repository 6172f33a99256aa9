"""What a script pays around its commands: ``EVALSHA`` of tiny scripts on a throwaway server.

Each row is one script run ``--calls`` times from one client: nothing, ten ``HGET``s of a
missing field, ten ``HINCRBY``s, ten ``XADD``s shaped like a ``task.ready`` event, and the task
library (``codeq/store/lua/lib.lua``, prepended to every task script) with nothing after it.
From ``INFO commandstats`` it prints the script's server time per call, the time of the
commands it ran, and what is left per ``redis.call`` beyond its command: the crossing from Lua
into the server and back, which a transition pays once per command it makes.

    python bench/scriptcost.py --store redis
    python bench/scriptcost.py --store kvrocks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench._common import STORES, local_store
from codeq.store.scripts import load_scripts

_EVENT = (
    "'XADD', KEYS[2], '*', 'type', 'task.ready', 'id', 'a1b2c3d4e5f6a7b8c9d0e1f2', "
    "'tenant', 'bench', 'command', 'DEPTH', 'at', '1765000000000', 'depth', '5', 'wasEmpty', '0'"
)


def scripts() -> list[tuple[str, int, str]]:
    """(name, redis.calls per run, source)."""
    lib = load_scripts()["get"].source.split("-- ==== get.lua ====")[0]
    return [
        ("nothing", 0, "return 1"),
        ("10 HGET (read)", 10, "for i = 1, 10 do redis.call('HGET', KEYS[1], 'f') end return 1"),
        (
            "10 HINCRBY (write)",
            10,
            "for i = 1, 10 do redis.call('HINCRBY', KEYS[1], 'f', '1') end return 1",
        ),
        ("10 XADD (an event)", 10, f"for i = 1, 10 do redis.call({_EVENT}) end return 1"),
        ("the task library", 0, lib + "\nreturn 1"),
    ]


def stats(client: redis.Redis) -> dict[str, float]:
    info: dict[str, Any] = client.info("commandstats")
    return {k.removeprefix("cmdstat_"): float(v["usec"]) for k, v in info.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=STORES, default="redis")
    parser.add_argument("--redis-url", help="an existing server")
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    rows = []
    with local_store(args.redis_url, args.store) as url:
        client = redis.Redis.from_url(url, protocol=2)
        keys = ("{scriptcost}:h", "{scriptcost}:s")
        bare = 0.0
        for name, calls, source in scripts():
            sha = client.script_load(source)
            before = stats(client)
            for _ in range(args.calls):
                client.evalsha(sha, len(keys), *keys)
            after = stats(client)
            delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
            script = delta.get("evalsha", 0.0) / args.calls
            inner = (
                sum(v for k, v in delta.items() if k not in ("evalsha", "exec", "multi", "info"))
                / args.calls
            )
            if name == "nothing":
                bare = script
            per_call = f"{(script - bare - inner) / calls:.2f}" if calls else "—"
            rows.append((name, script, inner, per_call))
        client.delete(*keys)
    print(f"\n{args.store}, {args.calls} calls of each script, µs per call of the script\n")
    print("| script | script (server) | its commands | per redis.call beyond its command |")
    print("|---|---:|---:|---:|")
    for name, script, inner, per_call in rows:
        print(f"| {name} | {script:.1f} | {inner:.1f} | {per_call} |")
    flags = f"--store {args.store} --calls {args.calls}"
    print(f"\nreproduce: python bench/scriptcost.py {flags}")


if __name__ == "__main__":
    main()
