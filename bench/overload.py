"""Overload: what one gateway process does at twice the create rate it can sustain (issue 19).

    python bench/overload.py [--store redis|kvrocks] [--duration 8] [--connections 1000]
                             [--factor 2] [--bound 128]

1. ``codeq gateway`` (one uvicorn process) on a throwaway store; ``wrk`` at 50 connections
   measures the creates/s it sustains (R).
2. ``wrk`` with ``--connections`` connections, each pausing ``connections / (factor × R)``
   seconds between its requests, offers about ``factor × R`` creates/s: once with the
   gateway's in-flight bound (``maxInFlightRequests`` = ``--bound``), once with the bound out
   of reach (100,000), the way the gateway behaved before it had one.

wrk (Debian's package, C, one thread) is closed-loop per connection: while answers are fast
the offered rate is the target; when they slow down, each connection's next request waits for
its answer, so the "offered" column is what was sent, not the target. Latency is over every
answer (accepted and shed alike: wrk reports one distribution); "timeouts" are requests with
no answer within 10 s. Every answer other than 202 must be a 503 with ``Retry-After``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from bench._common import STORES, local_store  # noqa: E402
from bench.http import TOKEN, gateway, run_wrk  # noqa: E402
from codeq.settings import Settings  # noqa: E402

DEFAULT_BOUND = Settings().max_in_flight_requests

PACED = """
wrk.method = "POST"
wrk.body = '{"command":"BENCH","payload":{"n":1}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CODEQ_BENCH_TOKEN")
local pause = tonumber(os.getenv("PACE_MS"))
counts = {}  -- a global: done() reads it from each thread's state
local threads = {}
setup = function(thread) table.insert(threads, thread) end
init = function(args) math.randomseed(os.time() + math.floor(os.clock() * 1e6)) end
delay = function() return math.floor(-math.log(1 - math.random()) * pause) end
response = function(status, headers, body)
  local key = tostring(status)
  if status == 503 and headers["retry-after"] == nil then key = "503-without-retry-after" end
  counts[key] = (counts[key] or 0) + 1
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %f %f %f %f %d %d\\n", summary.requests,
    summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, e.timeout, e.connect + e.read + e.write))
  for _, thread in ipairs(threads) do  -- each thread counted in its own Lua state
    for k, v in pairs(thread:get("counts")) do io.write(string.format("STATUS %s %d\\n", k, v)) end
  end
end
"""


def paced(base: str, connections: int, rate: float, duration: float) -> dict[str, float | str]:
    pace_ms = 1000 * connections / rate
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(PACED)
        script.flush()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "10s",
             "-s", script.name, f"{base}/v1/codeq/tasks"],
            capture_output=True, text=True, check=True, timeout=duration + 60,
            env={"CODEQ_BENCH_TOKEN": TOKEN, "PACE_MS": f"{pace_ms:.3f}", "PATH": "/usr/bin:/bin"},
        ).stdout  # fmt: skip
    lines = out.splitlines()
    n, secs, p50, p99, worst, timeouts, socket_errors = (
        float(x) for x in next(ln for ln in lines if ln.startswith("RESULT")).split()[1:]
    )
    statuses = dict(ln.split()[1:] for ln in lines if ln.startswith("STATUS"))
    accepted = int(statuses.pop("202", 0))
    shed = int(statuses.pop("503", 0))
    other = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())) or "0"
    return {"offered": n / secs, "accepted": accepted / secs, "shed": shed / secs, "other": other,
            "p50": p50, "p99": p99, "max": worst, "timeouts": timeouts,
            "socket": socket_errors}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", choices=STORES, default="redis")
    ap.add_argument("--redis-url", help="use this Redis/KVRocks instead of starting one")
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--factor", type=float, default=2.0, help="offered rate ÷ sustained rate")
    ap.add_argument(
        "--bound", type=int, default=DEFAULT_BOUND, help="maxInFlightRequests (the default's)"
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this bench needs wrk: apt-get install wrk")
    rows = []
    with local_store(args.redis_url, args.store) as url:
        with gateway(
            url, "uvicorn", 1, False, extra_env={"MAX_IN_FLIGHT_REQUESTS": str(args.bound)}
        ) as (base, _):
            _, sustained, _, _, p99, bad = run_wrk(base, 50, args.duration)
            print(
                f"sustained: {sustained:,.0f} creates/s at 50 connections "
                f"(p99 {p99:.1f} ms, {bad} errors)",
                flush=True,
            )
            target = args.factor * sustained
            rows.append((f"{args.bound:,}", paced(base, args.connections, target, args.duration)))
        with gateway(url, "uvicorn", 1, False, extra_env={"MAX_IN_FLIGHT_REQUESTS": "100000"}) as (
            base,
            _,
        ):
            rows.append(("100,000 (none)", paced(base, args.connections, target, args.duration)))
    print(
        f"\noffered target {target:,.0f}/s ({args.factor:g} × sustained), {args.connections} "
        f"connections, {args.duration:g} s, store {args.store}\n"
    )
    print(
        "| maxInFlightRequests | offered/s | 202/s | 503/s | other answers | p50 ms | p99 ms "
        "| max ms | timeouts | socket errors |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for bound, r in rows:
        print(
            f"| {bound} | {r['offered']:,.0f} | {r['accepted']:,.0f} | {r['shed']:,.0f} "
            f"| {r['other']} | {r['p50']:.1f} | {r['p99']:.1f} | {r['max']:.0f} "
            f"| {r['timeouts']:.0f} | {r['socket']:.0f} |"
        )
    print("\nreproduce: " + " ".join(["python bench/overload.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
