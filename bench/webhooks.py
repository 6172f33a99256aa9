"""Webhook delivery: deliveries/s of one ``codeq deliver`` process to a fast local receiver, and
completion → callback latency at low load, with and without a slow receiver on another host.

    python bench/webhooks.py                 # 5,000 callbacks, 200 latency samples
    python bench/webhooks.py --tasks 20000 --samples 500
    python bench/webhooks.py --store kvrocks  # on KVRocks
    python bench/webhooks.py --burst 2000 --receiver-delay 0.2   # spurious timeouts

``--burst N``: N callbacks to one receiver that takes ``--receiver-delay`` seconds per request,
all due at once, one deliverer with the default settings (``webhookTimeoutSeconds`` 10,
``deliveryPerHostConcurrency`` 16: at 200 ms that is 80 requests/s, so the burst takes ~25 s and
most of it waits for a connection slot far longer than the timeout). It prints the attempts that
timed out, and how many of those the receiver had received and answered within the timeout
(spurious timeouts: the wait for a slot counted as if it were the receiver's slowness), and
the duplicates the receiver saw.

The deliverer runs as its own process on a local redis-server; the receivers (aiohttp) and the
task completions run in this process. Throughput: N tasks with a ``webhook`` are completed while
no deliverer runs, then the deliverer starts and the time until the receiver has N callbacks is
measured (the backlog case). Latency: with the deliverer running, one task at a time is
completed and the time until its callback arrives is measured. "slow host" repeats the latency
run while a second receiver on 127.0.0.2 takes 2 s per request and is kept busy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

# bench/ holds http.py: keep the folder off the front of sys.path (it would shadow the
# standard library's http package); it goes last, for _common.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

from _common import STORES, free_port, local_store, percentile, stop  # noqa: E402
from aiohttp import web  # noqa: E402

from codeq.domain import NewTask  # noqa: E402
from codeq.engine import Engine, EngineConfig  # noqa: E402
from codeq.settings import Settings  # noqa: E402
from codeq.store.keys import KeySchema  # noqa: E402
from codeq.store.redis_store import RedisStore  # noqa: E402


class Receiver:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.count = 0
        self.arrived: dict[str, float] = {}
        # (webhook-id, attempt) -> seconds from receiving it to answering it
        self.answered: dict[tuple[str, int], float] = {}
        self.changed = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        got = time.perf_counter()
        body = await request.json()
        self.arrived[body.get("taskId", "")] = got
        self.count += 1
        self.changed.set()
        if self.delay:
            await asyncio.sleep(self.delay)  # the receiver's own slowness
        attempt = (request.headers.get("webhook-id", ""),
                   int(request.headers.get("X-CodeQ-Delivery-Attempt", "0")))  # fmt: skip
        self.answered[attempt] = time.perf_counter() - got
        return web.Response(text="ok")

    async def start(self, host: str) -> tuple[str, web.AppRunner]:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, host, port).start()
        return f"http://{host}:{port}/hook", runner

    async def until(self, n: int, timeout: float) -> None:  # noqa: ASYNC109
        deadline = time.perf_counter() + timeout
        while self.count < n:
            self.changed.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                raise SystemExit(f"only {self.count}/{n} callbacks arrived")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=left)


def start_deliverer(redis_url: str, prefix: str, config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": redis_url, "KEY_PREFIX": prefix, "LOG_LEVEL": "warning"}
    return subprocess.Popen(
        [sys.executable, "-m", "codeq.cli", "deliver", "--config", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


async def complete(engine: Engine, url: str, command: str) -> str:
    await engine.create("bench", NewTask(command=command, payload="1", webhook=url))
    c = await engine.claim("bench", "w", [command])
    assert c is not None
    await engine.complete("bench", c.id, "w", result='{"ok":true}', lease_id=c.lease_id)
    return c.id


async def latency(engine: Engine, fast: Receiver, url: str, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        sent = time.perf_counter()
        task_id = await complete(engine, url, "lat")
        await fast.until(fast.count + 1, 10)
        out.append(fast.arrived[task_id] - sent)
    return out


async def main_async(args: argparse.Namespace) -> None:
    prefix = "wb" + uuid.uuid4().hex[:6]
    fast, slow = Receiver(), Receiver(delay=2.0)
    fast_url, fast_runner = await fast.start("127.0.0.1")
    slow_url, slow_runner = await slow.start("127.0.0.2")
    rows: list[str] = []
    with local_store(args.redis_url, args.store) as redis_url, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "codeq.yaml"
        config.write_text(
            "webhookHmacSecret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
            "webhookAllowedCidrs: ['127.0.0.0/8']\n"
        )
        store = RedisStore.from_url(redis_url, KeySchema(prefix))
        loopback = Settings.from_mapping({"webhookAllowedCidrs": ["127.0.0.0/8"]})
        engine = Engine(store, EngineConfig.from_settings(loopback))
        # backlog: N completions, then one deliverer drains them
        sem = asyncio.Semaphore(50)

        async def one() -> None:
            async with sem:
                await complete(engine, fast_url, "thr")

        await asyncio.gather(*(one() for _ in range(args.tasks)))
        proc = start_deliverer(redis_url, prefix, config)
        started = time.perf_counter()
        await fast.until(1, 60)
        first = time.perf_counter()
        await fast.until(args.tasks, 600)
        done = time.perf_counter()
        steady = (args.tasks - 1) / (done - first)
        rows.append(
            f"| backlog of {args.tasks:,} callbacks | {steady:,.0f}/s | first → last callback; "
            f"{done - started:.2f} s from process start |"
        )

        # low-load latency
        lat = sorted(await latency(engine, fast, fast_url, args.samples))
        rows.append(
            f"| completion → callback, idle | p50 {lat_ms(lat, 50)} ms | p99 {lat_ms(lat, 99)} ms |"
        )
        # a slow host kept busy must not delay the fast one
        busy = [asyncio.create_task(complete(engine, slow_url, "slow")) for _ in range(40)]
        await asyncio.gather(*busy)
        await slow.until(10, 30)
        lat = sorted(await latency(engine, fast, fast_url, args.samples))
        rows.append(
            f"| completion → callback, slow host busy | p50 {lat_ms(lat, 50)} ms | "
            f"p99 {lat_ms(lat, 99)} ms |"
        )
        stop(proc)
        await store.close()
    await fast_runner.cleanup()
    await slow_runner.cleanup()
    print("| measure | result | detail |\n|---|---|---|")
    print("\n".join(rows))
    print(f"\nreproduce: python bench/webhooks.py {' '.join(sys.argv[1:])}".rstrip())


async def burst_async(args: argparse.Namespace) -> None:
    """N callbacks due at once to one slow receiver: spurious timeouts and duplicates."""
    prefix = "wburst" + uuid.uuid4().hex[:6]
    slow = Receiver(delay=args.receiver_delay)
    url, runner = await slow.start("127.0.0.1")
    timeout = 10.0  # webhookTimeoutSeconds, the default
    with local_store(args.redis_url, args.store) as redis_url, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "codeq.yaml"
        config.write_text(
            "webhookHmacSecret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
            "webhookAllowedCidrs: ['127.0.0.0/8']\n"
            f"webhookTimeoutSeconds: {timeout}\n"
        )
        store = RedisStore.from_url(redis_url, KeySchema(prefix))
        settings = Settings.from_mapping({"webhookAllowedCidrs": ["127.0.0.0/8"]})
        engine = Engine(store, EngineConfig.from_settings(settings))
        sem = asyncio.Semaphore(50)

        async def one() -> None:
            async with sem:
                await complete(engine, url, "burst")

        await asyncio.gather(*(one() for _ in range(args.burst)))
        proc = start_deliverer(redis_url, prefix, config)
        started = time.perf_counter()
        records_key = store.keys.delivery(0).records
        try:
            await slow.until(args.burst, 1200)
            delivered = time.perf_counter() - started
            deadline = time.perf_counter() + 600
            while True:  # every delivery recorded as succeeded (the retries included)
                recs = [json.loads(v) for v in (await store.client.hgetall(records_key)).values()]
                if len(recs) == args.burst and all(r.get("status") == "succeeded" for r in recs):
                    break
                if time.perf_counter() > deadline:
                    raise SystemExit("the deliveries did not all succeed in 10 minutes")
                await asyncio.sleep(0.5)  # polling the store for the end of the run
        finally:
            stop(proc)
            await store.close()
    await runner.cleanup()
    timeouts = spurious = attempts = 0
    for rec in recs:
        for n, entry in enumerate(rec.get("log") or [], start=1):
            attempts += 1
            if entry.get("error") == "timeout":
                timeouts += 1
                answer = slow.answered.get((rec["id"], n))
                if answer is not None and answer < timeout:
                    spurious += 1
    duplicates = slow.count - args.burst
    print("| measure | result |\n|---|---|")
    print(
        f"| callbacks (one receiver, {args.receiver_delay * 1000:.0f} ms each) | {args.burst:,} |"
    )
    print(f"| all received | {delivered:.1f} s ({args.burst / delivered:,.0f}/s) |")
    print(f"| attempts recorded | {attempts:,} |")
    print(f"| timeouts (webhookTimeoutSeconds {timeout:g}) | {timeouts:,} |")
    print(f"| spurious timeouts (answered within the timeout) | {spurious:,} |")
    print(f"| duplicates received | {duplicates:,} |")
    print(f"\nreproduce: python bench/webhooks.py {' '.join(sys.argv[1:])}".rstrip())


def lat_ms(values: list[float], p: float) -> str:
    return f"{percentile(values, p) * 1000:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--redis-url")
    ap.add_argument("--store", choices=STORES, default="redis", help="the server to start")
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--burst", type=int, default=0, help="N callbacks at once to one receiver")
    ap.add_argument("--receiver-delay", type=float, default=0.2, help="seconds (--burst)")
    args = ap.parse_args()
    asyncio.run(burst_async(args) if args.burst else main_async(args))


if __name__ == "__main__":
    main()
