"""Redis' instructions per operation, counted by callgrind: the working tree's scripts and
another revision's, compared without this machine's noise.

    python bench/instructions.py [--rev REV] [--items 12] [--per-round 1200] [--warm 1200]
                                 [--ops create,get,claim,result] [--keep DIR]

Each variant gets its own ``redis-server`` (the OS package) run under ``valgrind
--tool=callgrind``, driven through the engine from this process as ``bench/script_ab.py`` drives
it (the same operations, ``--items`` at a time, merged into one script call; a revision runs as
that revision's store ran its scripts). ``--warm`` tasks are made, read, claimed and finished
first, so every structure has the encoding a busy partition has (Redis keeps a hash of up to
512 fields and values of at most 64 bytes as one list that every write and read of a field
scans, the payloads hash of small payloads among them: a bench that measures a partition
younger than that measures the list). Then, per operation, callgrind's counters are zeroed,
the operation runs on
``--per-round`` tasks, and the counters are dumped: the server's instructions (all of them:
reading the request, the script, the commands, the reply) divided by the operations.
``--keep DIR`` leaves the dumps for ``callgrind_annotate`` in ``DIR/working-tree/cg.out.N`` and
``DIR/<rev>/cg.out.N``, N counting the operations counted, in order.

Instruction counts are not time, but the same code read within ~2 % from run to run here (the
ids, the clock's digits and the server's hash seeds differ; the server's timer work during a
round is counted too, so a loaded machine adds a little), where a timed comparison here moves
by 20-40 % (§19). Differences of a few per cent need two or three runs each. A change
that removes instructions from a script makes it faster on any machine unless it trades them
for cache misses; the time it saves is measured by ``bench/script_ab.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from bench._common import free_port, stop
from bench.script_ab import OPS, _old_store, _one, _Round
from codeq.engine import Engine
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore


class _Counted:
    """A ``redis-server`` under callgrind on a free loopback port; its dumps in ``dumps``."""

    def __init__(self, dumps: Path) -> None:
        self.dumps_dir = dumps
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={dumps}/cg.out",
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    stop(self.proc)
                    raise SystemExit("redis-server under valgrind did not start") from None
                time.sleep(0.2)  # a process starting: nothing to wait on but its port
        client.close()
        self.dumps = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _control(self, flag: str) -> None:
        subprocess.run(
            ["callgrind_control", flag, str(self.proc.pid)], check=True, capture_output=True
        )

    def zero(self) -> None:
        self._control("--zero")

    def dump(self) -> int:
        """Dump the counters; the instructions counted since the last zero."""
        self._control("--dump")
        self.dumps += 1
        for line in (self.dumps_dir / f"cg.out.{self.dumps}").read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
        raise SystemExit(f"callgrind wrote no totals to cg.out.{self.dumps}")

    def close(self) -> None:
        stop(self.proc)


async def _run(args: argparse.Namespace) -> None:
    ops = [op for op in args.ops.split(",") if op]
    if unknown := set(ops) - set(OPS):
        raise SystemExit(f"unknown operation(s) {sorted(unknown)}: expected {', '.join(OPS)}")
    variants = ["working tree"] + ([args.rev] if args.rev else [])
    results: dict[str, dict[str, float]] = {}
    for name in variants:
        with tempfile.TemporaryDirectory(prefix="codeq-cg-") as tmp:
            dumps = Path(tmp)
            if args.keep:  # a directory of its own for each variant's dumps
                dumps = Path(args.keep) / ("working-tree" if name == "working tree" else name)
                dumps.mkdir(parents=True, exist_ok=True)
            server = _Counted(dumps)
            store: RedisStore | None = None
            try:
                if name == "working tree":
                    keys = KeySchema("cg" + uuid.uuid4().hex[:6])
                    store = RedisStore.from_url(server.url, keys, coalesce=False)
                else:
                    store = _old_store(server.url, name)
                engine, work = Engine(store), _Round()
                for op in OPS:  # warm: every structure at a busy partition's encoding
                    await _one(engine, op, args.items, args.warm, work)
                results[name] = {}
                for op in OPS:
                    if op in ops:
                        server.zero()
                    made = await _one(engine, op, args.items, args.per_round, work)
                    if op in ops:
                        results[name][op] = server.dump() / made
            finally:
                if store is not None:
                    await store.close()
                server.close()
    print(
        f"\nredis-server instructions per operation (callgrind), {args.items} operation(s) a "
        f"call, {args.per_round} each after {args.warm} warm\n"
    )
    head = " | ".join(variants)
    print(f"| operation | {head} |" + (" change |" if args.rev else ""))
    print("|---|" + "---:|" * (len(variants) + (1 if args.rev else 0)))
    for op in ops:
        row = " | ".join(f"{results[v][op]:,.0f}" for v in variants)
        change = ""
        if args.rev:
            now, before = results["working tree"][op], results[args.rev][op]
            change = f" {100 * (now - before) / before:+.1f} % |"
        print(f"| {op} | {row} |{change}")
    print("\nreproduce: python bench/instructions.py " + " ".join(sys.argv[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", help="a revision to compare the working tree with")
    ap.add_argument("--items", type=int, default=12, help="operations at a time (one call)")
    ap.add_argument("--per-round", type=int, default=1200, help="operations counted, each")
    ap.add_argument("--warm", type=int, default=1200, help="tasks through every op first")
    ap.add_argument("--ops", default=",".join(OPS), help="which operations to count")
    ap.add_argument(
        "--keep",
        help="write callgrind's dumps under this directory (a directory per variant, a dump per "
        "operation: cg.out.1, ...) for callgrind_annotate",
    )
    args = ap.parse_args()
    if args.items < 1 or args.per_round < args.items:
        raise SystemExit("--per-round must be at least --items, and --items at least 1")
    for tool in ("valgrind", "callgrind_control", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found (Debian: valgrind, redis-server)")
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
