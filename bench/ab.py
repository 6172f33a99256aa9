"""Two or more versions of the gateway side by side, loaded in turn: a small step measured on a
machine whose speed drifts.

    python bench/ab.py HEAD~1 .                        # the last commit against the work tree
    python bench/ab.py . DIRECT_ROUTES=false --store kvrocks --workers 2 --rounds 10
    python bench/ab.py 632ea88 HEAD . --duration 3

On this box (a shared VM) the same gateway measured a minute apart moves by 20–40 %: a change
of 5 % cannot be seen by running the before and the after one after the other. Here every
variant runs at once, each its own ``codeq gateway`` on its own store server of the same kind,
idle until its turn; wrk (``bench/http.py``'s wrk-create) loads them one after the other for
``--duration`` seconds, ``--rounds`` times (after one round to warm up), each round starting
with the next variant (no variant always goes first). Per variant: the
median creates/s and CPU per create of the gateway's processes and of its store's, each with
the median of its per-round ratios to the first variant (the drift cancels, mostly, in a ratio
of neighbouring runs) and the range of the middle half of those ratios, and in how many rounds
it served more creates than the first. Run a variant against itself (``. . .``) to see what
the machine's noise is at the time: here, the same code read medians from 0.95 to 1.02 with
middle halves as wide as 0.90–1.00, and two runs of the same pair disagreed by ~10 %. A step
under ~10 % is for perf or py-spy shares (or ``timeit``), not for this bench.

A variant is ``.`` (this work tree), a git revision (checked out in a temporary worktree; its
code runs with this checkout's virtualenv), or ``NAME=VALUE`` (this work tree with one more
environment variable for the gateway, e.g. a setting).

``--scenario raw-lifecycle`` loads each variant with ``bench/http.py``'s raw lifecycles
(create, claim, result per client, each client its own queue) instead of wrk's creates; the
CPU figures are then per lifecycle.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from bench._common import STORES, cpu_seconds, local_store, process_tree, store_pid  # noqa: E402
from bench.http import gateway, run_load, run_wrk  # noqa: E402

ROOT = _HERE.parent


@contextlib.contextmanager
def _checkout(rev: str, where: Path) -> Iterator[Path]:
    """``rev`` checked out (detached) in a worktree at ``where``; removed afterwards."""
    added = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(where), rev],
        capture_output=True, text=True,
    )  # fmt: skip
    if added.returncode:
        raise SystemExit(f"cannot check out {rev!r}: {added.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(where)],
            check=False, capture_output=True,
        )  # fmt: skip


@contextlib.contextmanager
def _variant(
    spec: str, store: str, workers: int, where: Path
) -> Iterator[tuple[str, int, int | None]]:
    """The variant running: (base URL, gateway pid, store pid)."""
    with contextlib.ExitStack() as stack:
        source: Path | None = None
        env: dict[str, str] = {}
        if "=" in spec:
            name, _, value = spec.partition("=")
            env[name] = value
        elif spec != ".":
            source = stack.enter_context(_checkout(spec, where))
        url = stack.enter_context(local_store(None, store))
        base, pid = stack.enter_context(
            gateway(url, "uvicorn", workers, False, extra_env=env, source=source)
        )
        yield base, pid, store_pid(url)


#: what one unit of each scenario is
UNITS = {"wrk-create": "creates", "raw-lifecycle": "lifecycles"}


def _load(scenario: str, base: str, concurrency: int, duration: float) -> tuple[int, int]:
    """One turn of load on a variant: (units done, errors)."""
    if scenario == "wrk-create":
        n, _, _, _, _, bad = run_wrk(base, concurrency, duration)
        return n, bad
    res = run_load(base, scenario, concurrency, duration, 1)
    return int(res["done"]), sum(res["errors"].values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("variants", nargs="+", help=". | a git revision | NAME=VALUE")
    ap.add_argument("--store", choices=STORES, default="redis")
    ap.add_argument("--workers", type=int, default=1, help="gateway processes per variant")
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per turn")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--scenario", choices=["wrk-create", "raw-lifecycle"], default="wrk-create")
    args = ap.parse_args()
    if len(args.variants) < 2:
        raise SystemExit("name at least two variants")
    runs: list[list[tuple[float, float, float]]] = [[] for _ in args.variants]
    with tempfile.TemporaryDirectory(prefix="codeq-ab-") as tmp, contextlib.ExitStack() as stack:
        running = [
            stack.enter_context(_variant(v, args.store, args.workers, Path(tmp) / f"v{i}"))
            for i, v in enumerate(args.variants)
        ]
        k = len(running)
        for round_ in range(args.rounds + 1):  # the first round warms every variant up
            for i in [(round_ + j) % k for j in range(k)]:  # each round starts with the next
                base, pid, spid = running[i]
                pids = process_tree(pid)
                gw0, st0 = cpu_seconds(pids), cpu_seconds([spid] if spid else [])
                n, bad = _load(args.scenario, base, args.concurrency, args.duration)
                rate = n / args.duration
                if bad:
                    raise SystemExit(f"{args.variants[i]}: {bad} errors")
                if round_:
                    gw = (cpu_seconds(pids) - gw0) / n * 1e6
                    st = (cpu_seconds([spid] if spid else []) - st0) / n * 1e6
                    runs[i].append((rate, gw, st))
    print(
        f"\n{args.store}, {args.workers} gateway process(es) a variant, c={args.concurrency}, "
        f"{args.rounds} rounds of {args.duration:g} s, medians:"
    )
    print(
        f"| variant | {UNITS[args.scenario]}/s | ratio to the first | rounds won | gateway µs "
        "| ratio | store µs | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for spec, rows in zip(args.variants, runs, strict=True):

        def ratio(k: int, rows: list[tuple[float, float, float]] = rows) -> str:
            if rows is runs[0]:
                return "—"
            ratios = [r[k] / f[k] for r, f in zip(rows, runs[0], strict=True)]
            if len(ratios) < 4:
                return f"{statistics.median(ratios):.3f}"
            low, _, high = statistics.quantiles(ratios, n=4)  # the middle half of the rounds
            return f"{statistics.median(ratios):.3f} ({low:.2f}–{high:.2f})"

        won = sum(r[0] > f[0] for r, f in zip(rows, runs[0], strict=True))
        print(
            f"| {spec} | {statistics.median(r[0] for r in rows):,.0f} | {ratio(0)} "
            f"| {'—' if rows is runs[0] else f'{won}/{len(rows)}'} "
            f"| {statistics.median(r[1] for r in rows):.1f} | {ratio(1)} "
            f"| {statistics.median(r[2] for r in rows):.1f} | {ratio(2)} |"
        )
    print("reproduce: python bench/ab.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
