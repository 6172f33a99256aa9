"""Listings after a history of work: what a page costs once many tasks have come and gone
(KVRocks keeps deleted index entries until compaction), next to another revision's script.

    python bench/listing_history.py [--store kvrocks|redis] [--rev a3f18b3] [--rounds 4]
        [--per-round 10000] [--pending 20] [--in-progress 0] [--old-delayed 0] [--samples 200]
        [--switch]

One throwaway server, one tenant, two commands. ``--old-delayed`` tasks delayed by an hour
first (they stay pending below everything after them), then ``--rounds`` rounds of
``--per-round`` tasks created in batches of 100 through ``Engine.create_many`` and claimed and
completed by 32 concurrent workers through the engine, then ``--pending`` more created and
``--in-progress`` of them claimed and held. Two stores share the data: one runs the working
tree's ``list_tasks`` script, the other ``--rev``'s (its library and ``scan.lua`` too; the
default is the revision before listings capped their reads by the queue counters). It checks
that both give the same first page, then times ``Engine.list_tasks`` (limit 50) for
IN_PROGRESS, PENDING, DEAD and every status, the two scripts alternating, ``--samples`` each,
and prints p50/p99 in ms (docs/performance.md §21).

``--switch``: the store is written as a release before W wrote it (nothing switches it: no
server starts on it), so delayed tasks are listed under P. Once the two scripts agree, it is
switched as the operator does (lib.lua ``ixw``) and the sweeper's walk moves the entries; the
page must stay the same. Then the working tree's script is timed on both layouts in turn, the
delayed tasks' entries put back under P (partition not switched) or under W before each
listing (docs/performance.md §25).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import STORES, local_store, percentile, script_at
from codeq.domain import ListStatus, NewTask, TaskFilter
from codeq.engine import Engine
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore

TENANT = "history"
FILTERS = {
    "IN_PROGRESS": TaskFilter(status=ListStatus.IN_PROGRESS),
    "PENDING": TaskFilter(status=ListStatus.PENDING),
    "DEAD": TaskFilter(status=ListStatus.DEAD),
    "every status": TaskFilter(),
}


async def _rounds(engine: Engine, args: argparse.Namespace) -> None:
    for r in range(args.rounds):
        started = time.perf_counter()
        for _ in range(0, args.per_round, 100):
            items = [NewTask(command=("a", "b")[j % 2], payload='{"n":1}') for j in range(100)]
            for out in await engine.create_many(TENANT, items):
                if isinstance(out, Exception):
                    raise out

        async def worker(w: int) -> None:
            while (task := await engine.claim(TENANT, f"w{w}", ["a", "b"])) is not None:
                await engine.complete(TENANT, task.id, f"w{w}", result="{}", lease_id=task.lease_id)

        await asyncio.gather(*(worker(w) for w in range(32)))
        took = time.perf_counter() - started
        print(f"round {r + 1}: {args.per_round} created, claimed, completed in {took:.0f} s")


async def _switch(engine: Engine, store: RedisStore) -> None:
    """The operator's switch (python -m codeq.store list-waiting-apart), then the sweeper's walk."""
    await store.list_waiting_apart()
    qstats = store.keys.partition(0).qstats
    while await store.client.hget(qstats, "!ixw") != b"1":
        await engine.sweep_partition(0, "bench")


class _Layout:
    """Where the delayed tasks' entries are: under P, as a release before W left them (the
    partition not switched), or under W (switched, the walk done). Set before each timed
    listing, so both are timed in turn on the same data."""

    def __init__(self, store: RedisStore, w_members: list[bytes]) -> None:
        self._store = store
        self._w = w_members
        self._p = [m.replace(b"!W!", b"!P!", 1) for m in w_members]
        self.under_w = True

    async def put(self, under_w: bool) -> None:
        if under_w == self.under_w:
            return
        k, client = self._store.keys.partition(0), self._store.client
        old, new = (self._p, self._w) if under_w else (self._w, self._p)
        if old:
            await client.zrem(k.by_status, *old)
            await client.zadd(k.by_status, dict.fromkeys(new, 0))
        if under_w:
            await client.hset(k.qstats, "!ixw", "1")
        else:
            await client.hdel(k.qstats, "!ixw")
        self.under_w = under_w


async def _time(
    engines: dict[str, tuple[Engine, bool]],
    layout: _Layout | None,
    samples: int,
    took: dict[tuple[str, str], list[float]],
) -> None:
    for i in range(samples):
        for name, flt in FILTERS.items():
            order = list(engines.items())
            for label, (e, under_w) in order if i % 2 == 0 else order[::-1]:
                if layout is not None:
                    await layout.put(under_w)
                started = time.perf_counter()
                await e.list_tasks(TENANT, flt, limit=50)
                took.setdefault((name, label), []).append(time.perf_counter() - started)


async def _run(args: argparse.Namespace) -> None:
    with local_store(None, args.store) as url:
        keys = KeySchema("lh" + uuid.uuid4().hex[:8])
        now = RedisStore.from_url(url, keys, pool_size=64)
        then = RedisStore.from_url(url, keys, pool_size=8)
        then._scripts = {**then._scripts, "list_tasks": script_at(args.rev, "list_tasks")}
        engines = {"working tree": Engine(now), args.rev: Engine(then)}
        engine = engines["working tree"]
        try:
            for _ in range(args.old_delayed):
                await engine.create(TENANT, NewTask(command="a", payload="{}", delay_seconds=3600))
            await _rounds(engine, args)
            for _ in range(args.pending):
                await engine.create(TENANT, NewTask(command="a", payload="{}"))
            for _ in range(args.in_progress):
                if await engine.claim(TENANT, "hold", ["a"], lease_seconds=3600) is None:
                    raise SystemExit("nothing to hold: --in-progress above --pending")
            first: dict[str, tuple[str, ...]] = {}
            for name, flt in FILTERS.items():  # the same page from both
                pages = [await e.list_tasks(TENANT, flt, limit=50) for e in engines.values()]
                if len({tuple(t.id for t in p.tasks) for p in pages}) != 1:
                    raise SystemExit(f"{name}: the two scripts list different pages")
                first[name] = tuple(t.id for t in pages[0].tasks)
            timed = {label: (e, False) for label, e in engines.items()}
            layout = None
            if args.switch:  # the store was written as a release before W wrote it
                await _switch(engine, now)
                for name, flt in FILTERS.items():
                    page = await engine.list_tasks(TENANT, flt, limit=50)
                    if tuple(t.id for t in page.tasks) != first[name]:
                        raise SystemExit(f"{name}: a different page after the switch")
                k = now.keys.partition(0)
                prefix = f"{TENANT}!W!".encode()
                w_members = await now.client.zrangebylex(
                    k.by_status, b"[" + prefix, b"(" + prefix[:-1] + b'"'
                )
                layout = _Layout(now, w_members)
                timed["switched"] = (engine, True)
            took: dict[tuple[str, str], list[float]] = {}
            await _time(timed, layout, args.samples, took)
        finally:
            await now.close()
            await then.close()
    print(
        f"\n{args.store}: {args.old_delayed} delayed an hour, {args.rounds} rounds of "
        f"{args.per_round} tasks created, claimed and completed, then {args.pending} pending "
        f"({args.in_progress} of them in progress); limit 50, {args.samples} samples; ms\n"
    )
    labels = [args.rev, "working tree"] + (["switched"] if args.switch else [])
    heads = [f"{args.rev} p50 / p99", "working tree p50 / p99"]
    if args.switch:
        heads = [h + " (delayed under P)" for h in heads] + ["working tree p50 / p99 (under W)"]
    print("| listing | " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * len(heads))
    for name in FILTERS:
        cells = []
        for label in labels:
            xs = sorted(took[(name, label)])
            cells.append(f"{percentile(xs, 50) * 1e3:.2f} / {percentile(xs, 99) * 1e3:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nreproduce: python bench/listing_history.py " + " ".join(sys.argv[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", choices=STORES, default="kvrocks")
    ap.add_argument("--rev", default="a3f18b3", help="the revision whose list_tasks to compare")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--per-round", type=int, default=10000)
    ap.add_argument("--pending", type=int, default=20)
    ap.add_argument("--in-progress", type=int, default=0)
    ap.add_argument("--old-delayed", type=int, default=0)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--switch", action="store_true", help="delayed under P, then switched to W")
    asyncio.run(_run(ap.parse_args()))


if __name__ == "__main__":
    main()
