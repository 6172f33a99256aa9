"""Do gateway processes scale? ``--workers 2`` against one, each process held to the same CPU
share (issue 19 item 3).

    python bench/workers.py [--store redis|kvrocks] [--share 0.35] [--duration 8] [--rounds 3]

On a machine with fewer cores than the processes need (this one has two, shared by the
gateway processes, the store and the load generator), the question "does a second process add
a whole process' worth of throughput?" is asked by giving every gateway process the same CPU
share (``--share`` of one core, a cgroup v1 ``cpu.cfs_quota_us`` per process, as a container's
CPU limit does) so the store and ``wrk`` always have room: with one process throughput is set
by its share, and with two it doubles exactly when the processes do not wait on each other
(they share only the store). Needs root and a writable ``/sys/fs/cgroup/cpu``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from bench._common import STORES, cpu_seconds, local_store, process_tree  # noqa: E402
from bench.http import gateway, run_wrk  # noqa: E402

CGROUP = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000


@contextlib.contextmanager
def held_to(pids: list[int], share: float) -> Iterator[None]:
    """Each of ``pids`` in a cgroup of its own, limited to ``share`` of one core."""
    if not (CGROUP / "cgroup.procs").exists():
        raise SystemExit(f"{CGROUP} not found: this bench needs cgroup v1's cpu controller")
    groups = []
    try:
        for pid in pids:
            group = CGROUP / f"codeq-bench-{pid}"
            group.mkdir(exist_ok=True)
            groups.append(group)
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(int(share * PERIOD_US)))
            (group / "cgroup.procs").write_text(str(pid))
        yield
    finally:
        for group in groups:
            with contextlib.suppress(OSError):
                for pid in (group / "cgroup.procs").read_text().split():
                    (CGROUP / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                group.rmdir()


def serving(root: int, workers: int) -> list[int]:
    """The processes that serve requests: the one process, or the supervisor's spawned
    workers (not multiprocessing's resource tracker)."""
    if workers == 1:
        return [root]
    deadline = time.monotonic() + 20
    while True:
        found = [p for p in process_tree(root) if b"spawn_main" in _cmdline(p)]
        if len(found) >= workers:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"found {len(found)} of {workers} worker processes")
        time.sleep(0.1)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", choices=STORES, default="redis")
    ap.add_argument("--redis-url", help="use this Redis/KVRocks instead of starting one")
    ap.add_argument("--share", type=float, default=0.35, help="of one core, per process")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=50)
    args = ap.parse_args()
    rates: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    with local_store(args.redis_url, args.store) as url:
        for _ in range(args.rounds):
            for workers in (1, 2):
                with gateway(url, "uvicorn", workers, False) as (base, pid):
                    pids = serving(pid, workers)
                    with held_to(pids, args.share):
                        run_wrk(base, args.concurrency, 2)  # warm, and let the limit settle
                        before = cpu_seconds(pids)
                        n, rate, _, _, p99, bad = run_wrk(base, args.concurrency, args.duration)
                        used = cpu_seconds(pids) - before
                    if bad:
                        raise SystemExit(f"{bad} errors with {workers} worker(s)")
                    rates[workers].append(rate)
                    cpu[workers].append(used * 1e6 / max(1, n))
                    print(
                        f"workers {workers}: {rate:,.0f} creates/s (p99 {p99:.1f} ms), "
                        f"{cpu[workers][-1]:.0f} µs of gateway CPU per create",
                        flush=True,
                    )
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(
        f"\neach gateway process held to {args.share:g} of a core; wrk, "
        f"{args.concurrency} connections, {args.duration:g} s, medians of {args.rounds} rounds\n"
    )
    print("| gateway processes | creates/s | gateway CPU µs per create | × one process |")
    print("|---:|---:|---:|---:|")
    for workers, rate in ((1, one), (2, two)):
        print(
            f"| {workers} | {rate:,.0f} | {statistics.median(cpu[workers]):.0f} "
            f"| {rate / one:.2f} |"
        )
    print("\nreproduce: " + " ".join(["python bench/workers.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
