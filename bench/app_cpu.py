"""CPU per create of the ASGI app alone, without HTTP, next to the engine alone (issue 19).

    python bench/app_cpu.py [--store redis|kvrocks] [--creates 20000] [--concurrency 50]

``app``: the gateway's ASGI app (the middleware, Litestar's routing, auth, the create handler,
the answer) called in this process with a ready-made scope and body, ``--concurrency`` at a
time, on a real store. ``engine``: what the handler does without the framework around it
(decode the body, ``Engine.create`` with its store round trip, encode the answer). CPU time is
this process's (``time.process_time``): the difference between the two rows is what the
framework and the request checks cost per create, with no HTTP parsing in either.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from bench._common import STORES, local_store  # noqa: E402

TOKEN = "bench-" + uuid.uuid4().hex
BODY = b'{"command":"BENCH","payload":{"n":1}}'
HEADERS = [
    (b"host", b"bench"),
    (b"authorization", b"Bearer " + TOKEN.encode()),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
]


def _scope() -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/codeq/tasks", "raw_path": b"/v1/codeq/tasks",
        "query_string": b"", "root_path": "", "headers": list(HEADERS),
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8080), "state": {},
    }  # fmt: skip


async def _call(app: Any) -> None:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the answer comes first
        raise AssertionError

    status: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(_scope(), receive, send)
    if status != [202]:
        raise SystemExit(f"create answered {status}")


async def _timed(n: int, conc: int, one: Callable[[], Awaitable[None]]) -> float:
    for _ in range(500):  # warm: scripts loaded, caches filled
        await one()
    gate = asyncio.Semaphore(conc)

    async def bounded() -> None:
        async with gate:
            await one()

    started = time.process_time()
    await asyncio.gather(*(bounded() for _ in range(n)))
    return (time.process_time() - started) * 1e6 / n


async def run(url: str, n: int, conc: int) -> dict[str, float]:
    from codeq.schemas import TaskOut
    from codeq.settings import Settings
    from gateway.app import create_app, gateway_of
    from gateway.routes.tasks import _create_decoder, _encoder, _new_task

    env = {"REDIS_URL": url, "CODEQ_DEV_TOKEN": TOKEN, "KEY_PREFIX": "cpu" + uuid.uuid4().hex[:6]}
    app = create_app(Settings.load(environ=env), environ=env)
    gw = gateway_of(app)

    class _Request:  # what _new_task reads of a request
        scope: dict[str, Any] = {"headers": []}  # noqa: RUF012

    async def engine_only() -> None:
        data = _create_decoder.decode(BODY)
        out = await gw.engine.create("default", _new_task(gw, data, _Request()))  # type: ignore[arg-type]
        _encoder.encode(TaskOut.of(out.task))

    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    lifespan = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, events.get, answers.put)
    )
    await events.put({"type": "lifespan.startup"})
    if (await answers.get())["type"] != "lifespan.startup.complete":
        raise SystemExit("the app did not start")
    try:
        return {
            "app": await _timed(n, conc, lambda: _call(app)),
            "engine": await _timed(n, conc, engine_only),
        }
    finally:
        await events.put({"type": "lifespan.shutdown"})
        await answers.get()
        await lifespan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--store", choices=STORES, default="redis")
    ap.add_argument("--redis-url", help="use this Redis/KVRocks instead of starting one")
    ap.add_argument("--creates", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=50)
    args = ap.parse_args()
    os.environ.pop("REDIS_ADDR", None)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with local_store(args.redis_url, args.store) as url:
        cpu = asyncio.run(run(url, args.creates, args.concurrency))
    print(f"| what | CPU µs per create ({args.store}, c = {args.concurrency}) |")
    print("|---|---:|")
    print(f"| the ASGI app (no HTTP) | {cpu['app']:.0f} |")
    print(f"| the engine alone | {cpu['engine']:.0f} |")
    print(f"| framework and request checks | {cpu['app'] - cpu['engine']:.0f} |")
    print("\nreproduce: " + " ".join(["python bench/app_cpu.py", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
