"""How long hostile request bodies hold the gateway's event loop (issue 15: "no request can stall
the event loop for more than a few ms").

A real ``codeq gateway`` on a throwaway Redis, with ``maxPayloadBytes`` raised to the default
``maxBodyBytes`` (1 MiB: the worst a deployment can allow); for each body shape (each about
1 MiB), one client posts it as a task payload ``--rounds`` times, one at a time, while
a prober asks ``/healthz`` back to back. The time a hostile request takes is the time the loop
was busy with it (one process, one loop); the prober's worst wait says whether anyone else had
to wait for it.

    python bench/hostile_bodies.py
    python bench/hostile_bodies.py --rounds 20 --store kvrocks
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

# not bench/ first on the path: its http.py would shadow the standard library's
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import aiohttp  # noqa: E402

from bench._common import STORES, local_store  # noqa: E402
from bench.http import TOKEN, gateway  # noqa: E402

MB = 1 << 20


def _fill(item: bytes, room: int) -> bytes:
    """``[item,item,...]`` as long as fits in ``room`` bytes."""
    n = (room - 2) // (len(item) + 1)
    return b"[" + b",".join([item] * n) + b"]"


def shapes() -> dict[str, bytes]:
    room = MB - 64  # the body around the payload
    mountain = b"[" * 60 + b"]" * 60
    return {
        "ints": _fill(b"1", room),
        "small objects": _fill(b'{"a":1}', room),
        "empty arrays": _fill(b"[]", room),
        "big floats": _fill(b"1.5e300", room),
        "escaped string": b'"' + b"\\u0041" * ((room - 2) // 6) + b'"',
        "60-deep mountains": _fill(mountain, room),
        "24-deep mountains": _fill(b"[" * 24 + b"]" * 24, room),
        "too deep (65)": b"[" * 65 + b"]" * 65,
    }


def body(payload: bytes) -> bytes:
    return b'{"command":"HOSTILE","payload":' + payload + b"}"


async def measure(base: str, raw: bytes, rounds: int) -> tuple[list[float], float, set[int]]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    done = asyncio.Event()
    worst = 0.0

    async with aiohttp.ClientSession() as s:

        async def probe() -> None:
            nonlocal worst
            while not done.is_set():
                t0 = time.perf_counter()
                async with s.get(f"{base}/healthz") as r:
                    await r.read()
                worst = max(worst, time.perf_counter() - t0)

        prober = asyncio.create_task(probe())
        took: list[float] = []
        statuses: set[int] = set()
        for _ in range(rounds):
            t0 = time.perf_counter()
            async with s.post(f"{base}/v1/codeq/tasks", data=raw, headers=headers) as r:
                await r.read()
                statuses.add(r.status)
            took.append(time.perf_counter() - t0)
        done.set()
        await prober
    return took, worst, statuses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--store", choices=STORES, default="redis")
    ap.add_argument("--redis-url", default=None)
    args = ap.parse_args()
    # payloads up to the whole body: the worst a deployment can allow
    os.environ["MAX_PAYLOAD_BYTES"] = str(MB)
    rows = []
    with (
        local_store(args.redis_url, args.store) as url,
        gateway(url, "uvicorn", 1, False) as (base, _),
    ):
        for name, payload in shapes().items():
            raw = body(payload)
            took, worst, statuses = asyncio.run(measure(base, raw, args.rounds))
            rows.append((name, len(raw), statistics.median(took), max(took), worst, statuses))
    print(f"hostile bodies, one gateway process on {args.store}, {args.rounds} rounds each:")
    print(
        "| body (payload shape) | bytes | request p50 ms | request max ms "
        "| /healthz worst ms | status |"
    )
    print("|---|---:|---:|---:|---:|---|")
    for name, size, p50, top, worst, statuses in rows:
        codes = ",".join(str(c) for c in sorted(statuses))
        cells = f"{p50 * 1e3:.1f} | {top * 1e3:.1f} | {worst * 1e3:.1f}"
        print(f"| {name} | {size:,} | {cells} | {codes} |")
    print()
    print(f"reproduce: python bench/hostile_bodies.py --rounds {args.rounds} --store {args.store}")


if __name__ == "__main__":
    main()
