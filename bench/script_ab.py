"""The store's scripts of two revisions side by side: what the server spends per operation.

    python bench/script_ab.py --rev HEAD~1 [--store redis|kvrocks]
                              [--items 12] [--rounds 6] [--per-round 240]

Two throwaway servers of the same kind, one running the working tree's scripts and one running
``--rev``'s, both driven through the engine from one process, variants alternating round by
round (each round starts with the other one), so a slow minute of this machine weighs on both
alike. Each round makes ``--per-round`` tasks with creates ``--items`` at a time (concurrent:
the store merges them into one call), reads each back (``get``: one call each, ``--items`` at a
time), then claims them and reports their results, ``--items`` at a time. ``--items 1`` is one
operation a call, where a call's fixed cost shows most.

A revision whose scripts are functions runs ``--rev``'s version of every script (its library
files too), put together by this checkout's ``build_script``, and called as that revision's
store called them (on KVRocks its reads inside ``MULTI``/``EXEC`` before §24, bare after). A
revision from before functions (§23) runs as that revision's store ran its scripts:
``EVALSHA`` of the library and the script (on KVRocks inside ``MULTI``/``EXEC``).
Both stores call the server directly (no coalescer: the engine still merges concurrent
operations into one call).

It prints, per variant and operation, the server's script time per operation (``INFO
commandstats``: ``fcall`` or ``evalsha``), KVRocks' transaction (``exec``) per
operation, and script calls per operation. The servers' own clocks decide.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis import exceptions as rexc

from bench._common import (
    STORES,
    evalsha_text_at,
    functions_at,
    local_store,
    reads_bare_at,
    script_at,
)
from bench.commandstats import commandstats
from codeq.domain import NewTask, Task
from codeq.engine import Engine
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from codeq.store.scripts import SCRIPT_NAMES, Script

OPS = ("create", "get", "claim", "result")


class _PairedCreates(RedisStore):
    """An older revision's store: a create script that answered a created task with ``{'OK',
    tail}`` (before ``bench/instructions.py``) is read as this checkout reads its creates, the
    tail alone (a newer one's reply passes unchanged)."""

    async def _create_call(self, at: tuple[int, int], items: list[Any]) -> list[Any]:
        reply = await super()._create_call(at, items)
        return [e[1] if isinstance(e, list) and e[0] == b"OK" else e for e in reply]


class EvalshaStore(_PairedCreates):
    """The store as a revision from before functions called its scripts: ``EVALSHA`` of
    ``texts[name]`` (``SCRIPT LOAD`` on ``NOSCRIPT``), inside ``MULTI``/``EXEC`` on KVRocks."""

    texts: dict[str, tuple[str, str]]  # name -> (text, its SHA-1)

    async def _eval(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        text, sha = self.texts[script.name]

        async def call() -> Any:
            if not await self.on_kvrocks():
                return await self.client.evalsha(sha, len(keys), *keys, *args)
            pipe = self.client.pipeline(transaction=True)
            pipe.evalsha(sha, len(keys), *keys, *args)
            (reply,) = await pipe.execute()
            return reply

        try:
            return await call()
        except rexc.NoScriptError:
            await self.client.script_load(text)
            return await call()


def _with_sha(text: str) -> tuple[str, str]:
    return text, hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _old_store(url: str, rev: str) -> RedisStore:
    keys = KeySchema("ab" + uuid.uuid4().hex[:6])
    if functions_at(rev):
        store = _PairedCreates.from_url(url, keys, coalesce=False)
        scripts = {name: script_at(rev, name) for name in SCRIPT_NAMES}
        if not reads_bare_at(rev):  # its reads went in MULTI/EXEC on KVRocks, as its writes
            scripts = {name: replace(s, read_only=False) for name, s in scripts.items()}
        store._scripts = scripts
        return store
    old = EvalshaStore.from_url(url, keys, coalesce=False)
    old.texts = {name: _with_sha(evalsha_text_at(rev, name)) for name in SCRIPT_NAMES}
    return old


async def _run(args: argparse.Namespace) -> None:
    with local_store(None, args.store) as new_url, local_store(None, args.store) as old_url:
        stores = {
            "working tree": RedisStore.from_url(
                new_url, KeySchema("ab" + uuid.uuid4().hex[:6]), coalesce=False
            ),
            args.rev: _old_store(old_url, args.rev),
        }
        engines = {name: Engine(store) for name, store in stores.items()}
        work = {name: _Round() for name in stores}
        for name, engine in engines.items():  # warm: scripts loaded, structures not empty
            for op in OPS:
                await _one(engine, op, args.items, args.per_round, work[name])
        # per variant and operation: script calls, script µs, exec µs, operations
        totals = {name: {op: [0, 0.0, 0.0, 0] for op in OPS} for name in stores}
        names = list(stores)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                store, engine = stores[name], engines[name]
                for op in OPS:
                    before = await commandstats(store)
                    made = await _one(engine, op, args.items, args.per_round, work[name])
                    after = await commandstats(store)
                    diff = {
                        k: (c - before.get(k, (0, 0.0))[0], u - before.get(k, (0, 0.0))[1])
                        for k, (c, u) in after.items()
                    }
                    ran = [diff.get(k, (0, 0.0)) for k in ("fcall", "evalsha")]
                    calls, usec = sum(c for c, _ in ran), sum(u for _, u in ran)
                    row = totals[name][op]
                    row[0] += calls
                    row[1] += usec
                    row[2] += diff.get("exec", (0, 0.0))[1]
                    row[3] += made
        print(
            f"\n{args.store}: {args.rounds} rounds of {args.per_round} tasks, "
            f"{args.items} operation(s) at a time, µs per operation\n"
        )
        print("| variant | operation | script calls | script (server) | transaction (KVRocks) |")
        print("|---|---|---:|---:|---:|")
        for name in stores:
            for op in OPS:
                calls, usec, exec_usec, made = totals[name][op]
                tx = f"{exec_usec / made:.1f}" if exec_usec else "—"
                print(f"| {name} | {op} | {calls / made:.2f} | {usec / made:.1f} | {tx} |")
        for store in stores.values():
            await store.close()
    print("\nreproduce: python bench/script_ab.py " + " ".join(sys.argv[1:]))


@dataclass
class _Round:
    """What one variant's round has made so far: the tasks created, those claimed."""

    made: list[str] = field(default_factory=list)
    held: list[Task] = field(default_factory=list)


async def _one(engine: Engine, op: str, items: int, per_round: int, work: _Round) -> int:
    """Operation ``op`` on ``per_round`` tasks, ``items`` at a time; how many it made. Gets read
    the round's new tasks, claims take them, results finish what the claims took."""
    if op in ("get", "result"):
        done = len(work.made) if op == "get" else len(work.held)
        for i in range(0, done, items):
            if op == "get":
                await asyncio.gather(
                    *(engine.get_task("bench", tid) for tid in work.made[i : i + items])
                )
            else:
                await asyncio.gather(
                    *(
                        engine.complete(
                            "bench", t.id, t.worker_id or "", result='{"ok":1}', lease_id=t.lease_id
                        )
                        for t in work.held[i : i + items]
                    )
                )
        (work.made if op == "get" else work.held).clear()
        return done
    for _ in range(per_round // items):
        if op == "create":
            new = NewTask(command="ab", payload='{"n":1}')
            out = await asyncio.gather(*(engine.create("bench", new) for _ in range(items)))
            work.made += [o.task.id for o in out]
        else:
            got = await asyncio.gather(
                *(engine.claim("bench", f"w{i}", ["ab"]) for i in range(items))
            )
            work.held += [task for task in got if task is not None]
    return per_round // items * items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", required=True, help="the revision to compare the working tree with")
    ap.add_argument("--store", choices=STORES, default="redis")
    ap.add_argument("--items", type=int, default=12, help="operations at a time (one call)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=240)
    asyncio.run(_run(ap.parse_args()))


if __name__ == "__main__":
    main()
