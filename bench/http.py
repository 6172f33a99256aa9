"""HTTP load on a real gateway process: create, claim + result, full lifecycle, long-poll wake-up.

The gateway runs as its own process (``codeq gateway``) on a real redis-server, or on KVRocks
with ``--store kvrocks`` (``KVROCKS_BIN``, ``../shared/bin/kvrocks`` or PATH); the load
generator runs in separate processes (``--procs``) with keep-alive connections (aiohttp, the
``bench`` extra), each process driving its share of the concurrency. Per operation it prints
req/s, p50/p95/p99 latency and the errors (any status other than the expected one), and per
unit of work (a create, a claim + result pair, a lifecycle) the CPU time the gateway's
processes and the store's process spent, read from /proc around the cell. ``--rounds 3``
runs every cell three times and ends with the medians.

    python bench/http.py                              # uvicorn, 1 worker, c = 10 50 100 200
    python bench/http.py --server granian --workers 2 --concurrency 50 --duration 10
    python bench/http.py --store kvrocks --concurrency 50  # the same on KVRocks
    python bench/http.py --default --concurrency 50    # `codeq serve` as a new user starts it
    python bench/http.py --concurrency 50 --rounds 3 --scenarios wrk-create claim lifecycle
    python bench/http.py --concurrency 50 --rounds 3 --direct both  # with, without gateway.direct

Scenarios, each at every concurrency level:
  create     POST /tasks, one command
  claim      POST /tasks/claim then POST /tasks/{id}/result (a "pair"), queue pre-filled
  lifecycle  create → claim → result by one client, each client its own command
  wake       one long poll waiting (waitSeconds 10, parked for 20 ms); the time from sending
             a create for its command to the poll's answer (sequential, --wake-samples times)
  raw-lifecycle
             lifecycle's requests from plain asyncio connections sending ready-made bytes: a
             load generator that costs the shared cores a fraction of aiohttp (opt-in)
  wrk-create POST /tasks from wrk (Debian's `wrk`, C, one thread): a load generator that
             costs the shared cores little, for the creates/s a gateway can take (opt-in)
  empty-claim
             POST /tasks/claim of an empty queue (answered 204), for raw-lifecycle's
             commands: after raw-lifecycle rounds, claims of queues with a long history of
             claimed tasks behind them (opt-in)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# This file is named http.py: keep its folder off the front of sys.path, or it would shadow
# the standard library's http package; the folder goes last, for _common.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

import aiohttp  # noqa: E402
from _common import (  # noqa: E402
    STORES,
    cpu_seconds,
    free_port,
    local_store,
    percentile,
    process_tree,
    stop,
    store_pid,
)

# Set once in the parent; the spawned load processes inherit it through the environment.
TOKEN = os.environ.setdefault("CODEQ_BENCH_TOKEN", "bench-" + uuid.uuid4().hex)
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
ROOT = Path(__file__).resolve().parent.parent


# -- the server -------------------------------------------------------------------------


@contextmanager
def gateway(
    redis_url: str | None,
    server: str,
    workers: int,
    access_log: bool,
    data_dir: str = "",
    extra_env: dict[str, str] | None = None,
    source: Path | None = None,
) -> Iterator[tuple[str, int]]:
    """``codeq gateway`` on ``redis_url``; with none, ``codeq serve`` as a new user starts it:
    nothing configured, so it runs its own private store in ``data_dir`` (and its deliverers
    and sweeper). ``source``: a checkout whose code it runs instead of this one's (bench/ab.py).
    Yields its base URL and process id."""
    port = free_port()
    env = {
        **os.environ,
        "CODEQ_DEV_TOKEN": TOKEN,
        "KEY_PREFIX": "bench" + uuid.uuid4().hex[:6],
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info" if access_log else "warning",
        **(extra_env or {}),
    }
    for name in ("REDIS_URL", "REDIS_ADDR", "PERSISTENCE_PROVIDER"):
        env.pop(name, None)
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    else:
        env["DATA_DIR"] = data_dir
    cmd = [
        sys.executable, "-m", "codeq.cli", "gateway" if redis_url else "serve",
        "--port", str(port), "--server", server, "--workers", str(workers),
    ]  # fmt: skip
    if source is not None:  # `python -m` puts the working directory first on sys.path
        env["PYTHONPATH"] = str(source)
    proc = subprocess.Popen(
        cmd, env=env, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"gateway exited with {proc.returncode}")
            try:
                import urllib.request

                with urllib.request.urlopen(f"{base}/readyz", timeout=1) as r:  # noqa: S310
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("gateway did not become ready")
            time.sleep(0.05)
        yield base, proc.pid
    finally:
        stop(proc)


# -- one load-generator process ---------------------------------------------------------


def _task(command: str) -> bytes:
    return json.dumps({"command": command, "payload": {"n": 1}}).encode()


async def _post(s: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    async with s.post(url, data=body, headers=HEADERS) as r:
        data = await r.read()
        return r.status, data, time.perf_counter() - started


async def _drive(base: str, scenario: str, conc: int, duration: float, tag: str) -> dict[str, Any]:
    lat: dict[str, list[float]] = {"create": [], "claim": [], "result": [], "pair": [],
                                   "lifecycle": []}  # fmt: skip
    errors: dict[str, int] = {}
    done = {"n": 0}
    connector = aiohttp.TCPConnector(limit=conc, force_close=False)
    async with aiohttp.ClientSession(base, connector=connector) as s:
        stop_at = time.perf_counter() + duration

        def err(op: str, status: int) -> None:
            key = f"{op}:{status}"
            errors[key] = errors.get(key, 0) + 1

        async def creator() -> None:
            body = _task("BENCH")
            while time.perf_counter() < stop_at:
                status, _, took = await _post(s, "/v1/codeq/tasks", body)
                if status == 202:
                    lat["create"].append(took)
                    done["n"] += 1
                else:
                    err("create", status)

        result_body = b'{"status":"COMPLETED","result":{"ok":true},"leaseId":"%s"}'

        async def claim_and_finish(claim: bytes) -> float | None:
            """Claim, then complete what was claimed; the pair's latency, None on an error."""
            status, data, t1 = await _post(s, "/v1/codeq/tasks/claim", claim)
            if status != 200:
                err("claim", status)
                return None
            task = json.loads(data)
            status, _, t2 = await _post(
                s, f"/v1/codeq/tasks/{task['id']}/result", result_body % task["leaseId"].encode()
            )
            if status != 200:
                err("result", status)
                return None
            lat["claim"].append(t1)
            lat["result"].append(t2)
            return t1 + t2

        async def pairer() -> None:
            claim = json.dumps({"commands": ["BENCH"]}).encode()
            while time.perf_counter() < stop_at:
                pair = await claim_and_finish(claim)
                if pair is not None:
                    lat["pair"].append(pair)
                    done["n"] += 1

        async def lifecycler(i: int) -> None:
            command = f"LC-{tag}-{i}"
            body = _task(command)
            claim = json.dumps({"commands": [command]}).encode()
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                status, _, took = await _post(s, "/v1/codeq/tasks", body)
                if status != 202:
                    err("create", status)
                    continue
                lat["create"].append(took)
                if await claim_and_finish(claim) is not None:
                    lat["lifecycle"].append(time.perf_counter() - started)
                    done["n"] += 1

        if scenario == "create":
            workers = [creator() for _ in range(conc)]
        elif scenario == "claim":
            workers = [pairer() for _ in range(conc)]
        else:
            workers = [lifecycler(i) for i in range(conc)]
        await asyncio.gather(*workers)
    return {"lat": lat, "errors": errors, "done": done["n"]}


class _Raw(asyncio.Protocol):
    """One keep-alive connection of the raw lifecycle driver: writes a request made of
    ready bytes and reads the answer by its Content-Length (the gateway always sends one),
    with none of an HTTP client library's per-request work."""

    def __init__(self) -> None:
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        at = self.buf.find(b"\r\ncontent-length: ", 0, end)
        length = int(self.buf[at + 18 : self.buf.find(b"\r\n", at + 18)]) if at >= 0 else 0
        if len(self.buf) < end + 4 + length:
            return
        status, body = int(self.buf[9:12]), self.buf[end + 4 : end + 4 + length]
        self.buf = self.buf[end + 4 + length :]
        self.waiter.set_result((status, body))

    async def post(self, path: bytes, body: bytes) -> tuple[int, bytes, float]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        self.transport.write(_RAW_HEAD % (path, len(body)) + body)
        status, answer = await self.waiter
        return status, answer, time.perf_counter() - started


_RAW_HEAD = (
    b"POST %s HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    + b"Authorization: Bearer "
    + TOKEN.encode()
    + b"\r\nContent-Length: %d\r\n\r\n"
)


async def _drive_empty(base: str, conc: int, duration: float, tag: str) -> dict[str, Any]:
    """``empty-claim``: claims of raw-lifecycle's commands (one a client, as there), from
    :class:`_Raw` connections of its own; anything but 204 is an error (a 200 after a
    raw-lifecycle round that ended mid-lifecycle leaves that task leased)."""
    host, port = base.removeprefix("http://").split(":")
    lat: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.perf_counter() + duration
    loop = asyncio.get_running_loop()

    async def claimer(i: int) -> None:
        _, conn = await loop.create_connection(_Raw, host, int(port))
        claim = json.dumps({"commands": [f"RL-{tag}-{i}"]}).encode()
        while time.perf_counter() < stop_at:
            status, _, took = await conn.post(b"/v1/codeq/tasks/claim", claim)
            if status != 204:
                errors["claim"] = errors.get("claim", 0) + 1
                continue
            lat.append(took)
        if conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(claimer(i) for i in range(conc)))
    return {"lat": {"claim": lat}, "errors": errors, "done": len(lat)}


async def _drive_raw(base: str, conc: int, duration: float, tag: str) -> dict[str, Any]:
    """``raw-lifecycle``: what ``lifecycle`` does, from :class:`_Raw` connections."""
    host, port = base.removeprefix("http://").split(":")
    lat: dict[str, list[float]] = {k: [] for k in OPS["raw-lifecycle"]}
    errors: dict[str, int] = {}
    done = {"n": 0}
    stop_at = time.perf_counter() + duration
    loop = asyncio.get_running_loop()
    result = b'{"status":"COMPLETED","result":{"ok":true}}'

    async def lifecycler(i: int) -> None:
        _, conn = await loop.create_connection(_Raw, host, int(port))
        command = f"RL-{tag}-{i}"
        body, claim = _task(command), json.dumps({"commands": [command]}).encode()
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            status, _, took = await conn.post(b"/v1/codeq/tasks", body)
            if status != 202:
                errors["create"] = errors.get("create", 0) + 1
                continue
            lat["create"].append(took)
            status, answer, took = await conn.post(b"/v1/codeq/tasks/claim", claim)
            if status != 200:
                errors["claim"] = errors.get("claim", 0) + 1
                continue
            lat["claim"].append(took)
            task = json.loads(answer)
            path = f"/v1/codeq/tasks/{task['id']}/result".encode()
            status, _, took = await conn.post(
                path, result.replace(b"{", b'{"leaseId":"%s",' % task["leaseId"].encode(), 1)
            )
            if status != 200:
                errors["result"] = errors.get("result", 0) + 1
                continue
            lat["result"].append(took)
            lat["lifecycle"].append(time.perf_counter() - started)
            done["n"] += 1
        if conn.transport is not None:
            conn.transport.close()

    await asyncio.gather(*(lifecycler(i) for i in range(conc)))
    return {"lat": lat, "errors": errors, "done": done["n"]}


def _child(base: str, scenario: str, conc: int, duration: float, tag: str, out: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if scenario == "raw-lifecycle":
        out.put(asyncio.run(_drive_raw(base, conc, duration, tag)))
    elif scenario == "empty-claim":
        out.put(asyncio.run(_drive_empty(base, conc, duration, tag)))
    else:
        out.put(asyncio.run(_drive(base, scenario, conc, duration, tag)))


def run_load(base: str, scenario: str, conc: int, duration: float, procs: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    shares = [conc // procs + (1 if i < conc % procs else 0) for i in range(procs)]
    children = [
        ctx.Process(target=_child, args=(base, scenario, n, duration, f"{conc}-{i}", q))
        for i, n in enumerate(shares)
        if n
    ]
    for c in children:
        c.start()
    parts = [q.get(timeout=duration + 120) for _ in children]
    for c in children:
        c.join(30)
    merged: dict[str, Any] = {"lat": {}, "errors": {}, "done": 0}
    for p in parts:
        merged["done"] += p["done"]
        for k, v in p["lat"].items():
            merged["lat"].setdefault(k, []).extend(v)
        for k, v in p["errors"].items():
            merged["errors"][k] = merged["errors"].get(k, 0) + v
    return merged


# -- pre-fill and wake-up -----------------------------------------------------------------


PREFILL_BATCH = 100  # tasks per batch request: short store calls on every store


async def prefill(base: str, n: int) -> None:
    batch = json.dumps(
        {"tasks": [{"command": "BENCH", "payload": {"n": i}} for i in range(PREFILL_BATCH)]}
    ).encode()
    async with aiohttp.ClientSession(base) as s:
        sem = asyncio.Semaphore(4)

        async def one() -> None:
            async with sem:
                status, data, _ = await _post(s, "/v1/codeq/tasks/batch", batch)
                assert status == 202 and not json.loads(data)["errors"], data[:200]

        await asyncio.gather(*(one() for _ in range(n // PREFILL_BATCH + 1)))


async def drain(base: str) -> None:
    """Empty the BENCH queue (claim + result) so one scenario does not feed the next."""
    admin = "/v1/codeq/admin/queues/BENCH"
    async with aiohttp.ClientSession(base) as s, s.get(admin, headers=HEADERS) as r:
        ready = (await r.json())["ready"] if r.status == 200 else 0
    if ready:
        await _drain(base, ready)


async def _drain(base: str, ready: int) -> None:
    claim = json.dumps({"commands": ["BENCH"]}).encode()
    async with aiohttp.ClientSession(base) as s:

        async def worker() -> None:
            while True:
                status, data, _ = await _post(s, "/v1/codeq/tasks/claim", claim)
                if status != 200:
                    return
                t = json.loads(data)
                body = json.dumps({"status": "COMPLETED", "result": {}, "leaseId": t["leaseId"]})
                await _post(s, f"/v1/codeq/tasks/{t['id']}/result", body.encode())

        await asyncio.gather(*(worker() for _ in range(20)))


#: how long a poll waits before the create that wakes it is sent (see wake_latency)
WAKE_SETTLE_S = 0.02


async def wake_latency(base: str, samples: int) -> list[float]:
    out: list[float] = []
    claim = json.dumps({"commands": ["WAKE"], "waitSeconds": 10}).encode()
    # the watcher asks each process in turn whether the poll waits there (a connection a look,
    # see _until_waiting); the producer's connection stays open, as a producer's would
    async with (
        aiohttp.ClientSession(base) as poller,
        aiohttp.ClientSession(base) as producer,
        aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(force_close=True)) as watcher,
    ):
        await _post(producer, "/v1/codeq/tasks/claim", claim.replace(b"10", b"0"))  # warm
        for _ in range(samples):
            answered: dict[str, float] = {}

            async def poll(answered: dict[str, float] = answered) -> None:
                status, _, _ = await _post(poller, "/v1/codeq/tasks/claim", claim)
                answered["at"] = time.perf_counter()
                answered["status"] = status

            polling = asyncio.create_task(poll())
            await _until_waiting(watcher, 1)
            # The gauge counts a poll from the moment it registers, before its first claim
            # has found nothing; a worker's poll has waited a while when a task comes. The
            # create goes once the poll has had 20 ms to settle.
            await asyncio.sleep(WAKE_SETTLE_S)
            sent = time.perf_counter()
            await _post(producer, "/v1/codeq/tasks", _task("WAKE"))
            await polling
            if answered.get("status") == 200:
                out.append(answered["at"] - sent)
    return out


async def _until_waiting(s: aiohttp.ClientSession, n: int) -> None:
    """Until a gateway process says ``n`` long polls wait in it. ``s`` opens a connection a
    look (``force_close``): with ``--workers 2`` the poll waits in one process, and a
    kept-alive connection would keep asking the same one."""
    deadline = time.perf_counter() + 10
    while time.perf_counter() < deadline:
        async with s.get("/metrics") as r:
            if f"codeq_long_polls_waiting {float(n)}" in await r.text():
                return
        await asyncio.sleep(0.002)
    raise SystemExit("the long poll never started waiting")


def run_cell(
    args: argparse.Namespace,
    base: str,
    meter: CpuMeter,
    scenario: str,
    conc: int,
    lines: list[str],
    cells: dict[tuple[str, int], list[tuple[float, float, float, float]]],
    variant: str = "",
) -> None:
    """One scenario at one concurrency: its rows, and its figures for the medians
    (``variant``: which of two gateways, named after the scenario)."""
    if scenario == "wrk-create":
        started = meter.start()
        n, rate, p50, p95, p99, bad = run_wrk(base, conc, args.duration)
        cpu = meter.per_unit(started, n)
        lines.append(
            f"| create (wrk){variant} | create | {conc} | {rate:,.0f} | {p50:.1f} | {p95:.1f} "
            f"| {p99:.1f} | {bad} | {cpu_text(cpu)} |"
        )
        cells.setdefault((scenario + variant, conc), []).append((rate, p99 / 1000, *cpu))
        print(lines[-1], flush=True)
        return
    if scenario == "claim":
        asyncio.run(prefill(base, args.prefill or int(4000 * args.duration)))
    started = meter.start()
    res = run_load(base, scenario, conc, args.duration, args.procs)
    cpu = meter.per_unit(started, res["done"])
    errors = sum(res["errors"].values())
    for i, op in enumerate(OPS[scenario]):
        op_rate = len(res["lat"][op]) / args.duration
        lines.append(
            row(
                scenario + variant,
                op,
                conc,
                op_rate,
                res["lat"][op],
                errors,
                cpu_text(cpu if i == 0 else None),
            )
        )
    if res["errors"]:
        lines.append(f"|  | errors: {res['errors']} |  |  |  |  |  |  |  |")
    first = sorted(res["lat"][OPS[scenario][0]])
    cells.setdefault((scenario + variant, conc), []).append(
        (res["done"] / args.duration, percentile(first, 99), *cpu)
    )
    print(lines[-1], flush=True)
    if scenario == "claim":
        asyncio.run(drain(base))


# -- report -----------------------------------------------------------------------------


OPS = {
    "create": ["create"],
    "claim": ["pair", "claim", "result"],
    "lifecycle": ["lifecycle", "create", "claim", "result"],
    "raw-lifecycle": ["lifecycle", "create", "claim", "result"],
    "empty-claim": ["claim"],
}


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def row(
    scenario: str, op: str, conc: int, rate: float, values: list[float], errors: int, cpu: str
) -> str:
    v = sorted(values)
    p50, p95, p99 = (percentile(v, p) for p in (50, 95, 99))
    return (
        f"| {scenario} | {op} | {conc} | {rate:,.0f} | {ms(p50)} | {ms(p95)} | {ms(p99)} "
        f"| {errors} | {cpu} |"
    )


STORE_NAMES = ("redis-server", "kvrocks")


class CpuMeter:
    """CPU seconds of the gateway (its process tree) and of the store, read from /proc around
    a cell; per unit of work (a create, a claim + result pair, a lifecycle) in µs."""

    def __init__(self, gateway_pid: int | None, store: int | None) -> None:
        self.gateway_pid, self.store = gateway_pid, store

    def _split(self) -> tuple[list[int], list[int]]:
        if self.gateway_pid is None:
            return [], [self.store] if self.store else []
        tree = process_tree(self.gateway_pid)
        # `codeq serve` with nothing configured runs its store as its own child
        ours = [p for p in tree if _comm(p) not in STORE_NAMES]
        stores = [p for p in tree if _comm(p) in STORE_NAMES] + ([self.store] if self.store else [])
        return ours, stores

    def start(self) -> tuple[float, float]:
        self._pids = self._split()
        return cpu_seconds(self._pids[0]), cpu_seconds(self._pids[1])

    def per_unit(self, started: tuple[float, float], units: int) -> tuple[float, float]:
        gw, store = cpu_seconds(self._pids[0]), cpu_seconds(self._pids[1])
        n = max(1, units)
        return (gw - started[0]) * 1e6 / n, (store - started[1]) * 1e6 / n


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def cpu_text(cpu: tuple[float, float] | None) -> str:
    return "—" if cpu is None else f"{cpu[0]:,.0f} / {cpu[1]:,.0f}"


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"command":"BENCH","payload":{"n":1}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CODEQ_BENCH_TOKEN")
bad = 0
local threads = {}
setup = function(thread) table.insert(threads, thread) end
response = function(status, headers, body) if status ~= 202 then bad = bad + 1 end end
done = function(summary, latency, requests)
  local e = summary.errors
  local others = 0  -- answers other than 202, counted in each thread's own Lua state
  for _, thread in ipairs(threads) do others = others + thread:get("bad") end
  io.write(string.format("RESULT %d %f %f %f %f %d\\n", summary.requests, summary.duration / 1e6,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3,
    others + e.connect + e.read + e.write + e.timeout))
end
"""


def run_wrk(base: str, conc: int, duration: float) -> tuple[int, float, float, float, float, int]:
    """Creates from wrk: (requests, per s, p50, p95, p99 ms, errors)."""
    import shutil
    import tempfile

    if shutil.which("wrk") is None:
        raise SystemExit("wrk-create needs wrk: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        out = subprocess.run(
            ["wrk", "-t1", f"-c{conc}", f"-d{duration:g}s", "-s", script.name,
             f"{base}/v1/codeq/tasks"],
            capture_output=True, text=True, check=True, timeout=duration + 60,
        ).stdout  # fmt: skip
    fields = next(ln for ln in out.splitlines() if ln.startswith("RESULT")).split()[1:]
    n, secs, p50, p95, p99, errors = (float(x) for x in fields)
    return int(n), n / secs, p50, p95, p99, int(errors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--redis-url", help="use this Redis/KVRocks instead of starting one")
    ap.add_argument(
        "--store", choices=STORES, default="redis", help="the server to start (no --redis-url)"
    )
    ap.add_argument(
        "--base-url",
        help="load a gateway that is already running (its token in $CODEQ_BENCH_TOKEN)",
    )
    ap.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[10, 50, 100, 200])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    ap.add_argument("--procs", type=int, default=1, help="load-generator processes")
    ap.add_argument("--scenarios", nargs="+", default=["create", "claim", "lifecycle", "wake"])
    ap.add_argument("--wake-samples", type=int, default=200)
    ap.add_argument(
        "--rounds", type=int, default=1, help="run each cell this many times; medians at the end"
    )
    ap.add_argument(
        "--prefill",
        type=int,
        help="tasks queued before each claim cell (default: 4000 per second of --duration)",
    )
    ap.add_argument("--access-log", action="store_true", help="keep the JSON access log on")
    ap.add_argument(
        "--direct",
        choices=["on", "off", "both"],
        default="on",
        help="directRoutes of the gateway; both: one gateway of each on the same store, "
        "cells alternating",
    )
    ap.add_argument(
        "--default",
        action="store_true",
        help="`codeq serve` with nothing configured: the private store it starts itself",
    )
    args = ap.parse_args()

    lines = [
        "| scenario | op | conc | per s | p50 ms | p95 ms | p99 ms | errors "
        "| CPU µs gateway / store |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    # (scenario, conc) -> [(per s, p99 s, gateway µs, store µs)] over the rounds
    cells: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {}
    wake: list[float] = []
    variants: list[tuple[str, str, CpuMeter]] = []  # (name, base URL, CPU meter)
    with contextlib.ExitStack() as stack:
        if args.base_url:
            variants.append(("", args.base_url, CpuMeter(None, None)))
        elif args.default:
            data = stack.enter_context(tempfile.TemporaryDirectory(prefix="codeq-bench-"))
            base, pid = stack.enter_context(
                gateway(None, args.server, args.workers, args.access_log, data)
            )
            variants.append(("", base, CpuMeter(pid, None)))
        else:
            url = stack.enter_context(local_store(args.redis_url, args.store))
            for direct in ["on", "off"] if args.direct == "both" else [args.direct]:
                env = {"DIRECT_ROUTES": "true" if direct == "on" else "false"}
                base, pid = stack.enter_context(
                    gateway(url, args.server, args.workers, args.access_log, extra_env=env)
                )
                name = f" · direct {direct}" if args.direct == "both" else ""
                variants.append((name, base, CpuMeter(pid, store_pid(url))))
        for _round in range(args.rounds):
            for scenario in [s for s in args.scenarios if s != "wake"]:
                for conc in args.concurrency:
                    for name, base, meter in variants:
                        run_cell(args, base, meter, scenario, conc, lines, cells, name)
        if "wake" in args.scenarios:
            wake = asyncio.run(wake_latency(variants[0][1], args.wake_samples))
    print()
    if args.default:
        what = "codeq serve (gateway, deliverers, sweeper) on its own local store"
    else:
        where = "the given store" if args.redis_url or args.base_url else args.store
        what = f"codeq gateway on {where}"
    print(
        f"server: {what}, --server {args.server} --workers {args.workers}; "
        f"load: {args.procs} aiohttp process(es); {args.duration:g} s per cell; "
        f"access log {'on' if args.access_log else 'off'}; directRoutes {args.direct}"
    )
    print("\n".join(lines))
    if args.rounds > 1:
        print(f"\nmedians of {args.rounds} rounds (per s and CPU per create, pair or lifecycle):")
        print("| scenario | conc | per s | p99 ms | CPU µs gateway | CPU µs store |")
        print("|---|---:|---:|---:|---:|---:|")
        for (scenario, conc), runs in cells.items():
            med = [statistics.median(r[i] for r in runs) for i in range(4)]
            print(
                f"| {scenario} | {conc} | {med[0]:,.0f} | {ms(med[1])} | {med[2]:,.0f} "
                f"| {med[3]:,.0f} |"
            )
    if wake:
        w = sorted(wake)
        print(
            f"\nlong-poll wake-up (create sent → poll answered), {len(w)} samples: "
            f"p50 {ms(percentile(w, 50))} ms, p99 {ms(percentile(w, 99))} ms, "
            f"max {ms(w[-1])} ms"
        )
    cmd = " ".join(["python", "bench/http.py", *sys.argv[1:]])
    print(f"\nreproduce: {cmd}")


if __name__ == "__main__":
    main()
