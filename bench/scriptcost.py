"""What a script pays around its commands: ``FCALL`` of tiny functions on a throwaway server.

Each row is one function run ``--calls`` times from one client, each a library of its own as
the store builds them (``codeq.store.scripts.compose``): nothing, ten ``HGET``s of a missing
field, ten ``HINCRBY``s, ten ``XADD``s shaped like a ``task.ready`` event, and the task library
(``codeq/store/lua/lib.lua``) with nothing after its ``begin(KEYS)``. The last row is that
library run as the store ran it before §23: ``EVALSHA`` of its text, which runs its whole top
level on every call. From ``INFO commandstats`` it prints the call's server time, the time of
the commands it ran, and what is left per ``redis.call`` beyond its command: the crossing from
Lua into the server and back, which a transition pays once per command it makes.

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
from codeq.store.scripts import Script, compose, read_lua

_EVENT = (
    "'XADD', KEYS[2], '*', 'type', 'task.ready', 'id', 'a1b2c3d4e5f6a7b8c9d0e1f2', "
    "'tenant', 'bench', 'command', 'DEPTH', 'at', '1765000000000', 'depth', '5', 'wasEmpty', '0'"
)


def scripts() -> list[tuple[str, int, Script | str]]:
    """(name, redis.calls per run, a function, or the text EVALSHA runs)."""
    lib = read_lua("lib")
    return [
        ("nothing", 0, compose("nothing", "return 1")),
        (
            "10 HGET (read)",
            10,
            compose("hget", "for i = 1, 10 do redis.call('HGET', KEYS[1], 'f') end return 1"),
        ),
        (
            "10 HINCRBY (write)",
            10,
            compose(
                "incr", "for i = 1, 10 do redis.call('HINCRBY', KEYS[1], 'f', '1') end return 1"
            ),
        ),
        (
            "10 XADD (an event)",
            10,
            compose("xadd", f"for i = 1, 10 do redis.call({_EVENT}) end return 1"),
        ),
        ("the task library", 0, compose("lib", "return 1", before=[lib], begin=True)),
        (
            "the task library by EVALSHA (before §23)",
            0,
            lib.replace("\nlocal K = {}\n", _KEYS) + "\nreturn 1",
        ),
    ]


# what lib.lua's K was before §23: its fields taken from KEYS as the text ran
_KEYS = "\nlocal K = {tasks = KEYS[1], events = KEYS[2]}\n"


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
        for name, calls, script_or_text in scripts():
            if isinstance(script_or_text, Script):
                client.function_load(script_or_text.source, replace=True)
                command: tuple[str, ...] = ("FCALL", script_or_text.function)
            else:
                command = ("EVALSHA", client.script_load(script_or_text))
            before = stats(client)
            for _ in range(args.calls):
                client.execute_command(*command, len(keys), *keys)
            after = stats(client)
            delta = {k: v - before.get(k, 0.0) for k, v in after.items()}
            ran = command[0].lower()
            script = delta.get(ran, 0.0) / args.calls
            inner = (
                sum(v for k, v in delta.items() if k not in (ran, "exec", "multi", "info"))
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
