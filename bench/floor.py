"""What one HTTP request costs a Python server process on this box before it does any work:
the floor under issue 19's CPU-per-request targets, next to what a create costs the gateway.

    python bench/floor.py [--duration 8] [--rounds 3] [--concurrency 50] [--no-gateway]

Every server answers ``POST /v1/codeq/tasks`` (wrk's create request: the same headers and
body as ``bench/http.py``'s wrk-create) with the same fixed 202 JSON answer, from its own
process, on uvloop; wrk (Debian's, C, one thread) drives it over keep-alive connections.
Per server: requests/s and the server process's CPU per request (user + system, from
/proc), medians of ``--rounds``:

  raw           an asyncio.Protocol that finds the head's end and Content-Length itself and
                writes the answer from data_received: the floor of a Python server on uvloop
                (the recv, the send, the loop's turn), no parser, no task
  raw-task      the same, the answer written from a task started per request (as a handler
                that awaits the store must be)
  httptools     an asyncio.Protocol on httptools' parser (uvicorn's), its callbacks collecting
                the URL, the headers and the body; the answer from a task per request
  uvicorn-protocol
                uvicorn's HTTP protocol (httptools, uvloop) answering from a task per request
                without ASGI, reading the body from uvicorn's cycle: what gateway.direct still
                runs of uvicorn
  uvicorn-asgi  uvicorn with an ASGI app that reads the body and answers
  granian-asgi, granian-rsgi
                granian (Rust HTTP) with the same app as ASGI and as RSGI
  engine-create the httptools server answering a real create: the bearer token compared,
                the body decoded, ``Engine.create`` (its store call merged with the others',
                as in the gateway), the task encoded; nothing else (no request id, limits,
                metrics, in-flight count, rate limits, access log)
  gateway       ``codeq gateway``: the same create with everything around it
The last two run on a throwaway redis-server (its CPU is not counted here; bench/http.py
shows it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from bench._common import cpu_seconds, free_port, local_store, process_tree, stop  # noqa: E402
from bench.http import TOKEN, run_wrk  # noqa: E402

PATH = "/v1/codeq/tasks"
#: settings of the caller's environment that would point the servers at another store
_STORE_VARS = ("REDIS_URL", "REDIS_ADDR", "PERSISTENCE_PROVIDER")
ANSWER = (
    b'{"id":"0123456789abcdef0123456789abcdef","command":"BENCH","status":"pending",'
    b'"priority":0,"attempts":0,"createdAt":"2026-12-07T00:00:00.000000Z"}'
)

# Each server is a small program run with `python -c`; ANSWER and the port come in argv.
_PRELUDE = """
import asyncio, sys, uvloop
ANSWER = sys.argv[2].encode()
HEAD = (b"HTTP/1.1 202 Accepted\\r\\ncontent-type: application/json\\r\\n"
        b"content-length: %d\\r\\n\\r\\n" % len(ANSWER))
RESPONSE = HEAD + ANSWER
PORT = int(sys.argv[1])
"""

_RAW = """
class Raw(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = b""

    def data_received(self, data):
        buf = self.buf + data
        while True:
            end = buf.find(b"\\r\\n\\r\\n")
            if end < 0:
                break
            head = buf[:end].lower()
            at = head.find(b"content-length:")
            stop = head.find(b"\\r\\n", at)  # -1: the last header
            size = int(head[at + 15:stop if stop >= 0 else None]) if at >= 0 else 0
            if len(buf) < end + 4 + size:
                break
            buf = buf[end + 4 + size:]
            self.answer()
        self.buf = buf

    def answer(self):
        self.t.write(RESPONSE)

class RawTask(Raw):
    def answer(self):
        asyncio.get_running_loop().create_task(self.reply())

    async def reply(self):
        self.t.write(RESPONSE)

async def main(cls):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(cls, "127.0.0.1", PORT, backlog=1024)
    await server.serve_forever()

uvloop.run(main(RawTask if sys.argv[3] == "raw-task" else Raw))
"""

_HTTPTOOLS = """
import httptools

class Proto(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data):
        self.parser.feed_data(data)

    def on_message_begin(self):
        self.url = b""
        self.headers = []
        self.body = []

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers.append((name.lower(), value))

    def on_body(self, body):
        self.body.append(body)

    def on_message_complete(self):
        request = (self.parser.get_method(), httptools.parse_url(self.url).path,
                   self.headers, b"".join(self.body))
        asyncio.get_running_loop().create_task(self.reply(request))

    async def reply(self, request):
        self.t.write(RESPONSE)

async def serve(protocol):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, "127.0.0.1", PORT, backlog=1024)
    await server.serve_forever()
"""

_ASGI = """
START = {"type": "http.response.start", "status": 202,
         "headers": [(b"content-type", b"application/json")]}
BODY = {"type": "http.response.body", "body": ANSWER}

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send(START)
    await send(BODY)

async def rsgi(scope, proto):
    await proto()
    proto.response_bytes(202, [("content-type", "application/json")], ANSWER)

class Rsgi:
    __rsgi__ = staticmethod(rsgi)

rsgi_app = Rsgi()
"""

_UVICORN = """
import uvicorn
uvicorn.run(app, host="127.0.0.1", port=PORT, loop="uvloop", http="httptools",
            access_log=False, log_level="warning", server_header=False, date_header=False)
"""

# A create with nothing around the engine: httptools' parser, the bearer token compared, the
# body decoded, Engine.create (its store round trip merged with the others'), the task encoded
_ENGINE = """
import os
from codeq.schemas import TaskOut
from codeq.settings import Settings
from gateway.app import create_app, gateway_of
from gateway.routes.tasks import _create_decoder, _encoder, _new_task

BEARER = b"Bearer " + os.environ["CODEQ_DEV_TOKEN"].encode()

class _Request:  # what _new_task reads of a request
    scope = {"headers": []}

class EngineCreate(Proto):
    async def reply(self, request):
        _, _, headers, body = request
        if dict(headers).get(b"authorization") != BEARER:
            self.t.write(b"HTTP/1.1 401 Unauthorized\\r\\ncontent-length: 0\\r\\n\\r\\n")
            return
        data = _create_decoder.decode(body)
        out = await GW.engine.create("default", _new_task(GW, data, _Request()))
        answer = _encoder.encode(TaskOut.of(out.task))
        if self.t.is_closing():  # wrk left at its end
            return
        self.t.write(b"HTTP/1.1 202 Accepted\\r\\ncontent-type: application/json\\r\\n"
                     b"content-length: %d\\r\\n\\r\\n%b" % (len(answer), answer))

async def main():
    global GW
    app = create_app(Settings.load(environ=dict(os.environ)), environ=dict(os.environ))
    GW = gateway_of(app)
    async with app.lifespan():
        await serve(EngineCreate)

uvloop.run(main())
"""

# uvicorn's protocol without ASGI: what gateway.direct still runs of uvicorn per request
_UVICORN_PROTOCOL = """
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

class Protocol(HttpToolsProtocol):
    def _start_asgi_task(self, cycle, app):
        task = self.loop.create_task(self.reply(cycle))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def reply(self, cycle):
        more = True
        while more:  # the body, as gateway.direct reads it
            message = await cycle.receive()
            more = message.get("more_body", False)
        cycle.response_started = True
        cycle.transport.write(RESPONSE)
        cycle.response_complete = True
        cycle.message_event.set()
        cycle.on_response()

uvicorn.run(app, host="127.0.0.1", port=PORT, loop="uvloop", http=Protocol,
            access_log=False, log_level="warning", server_header=False, date_header=False)
"""

_GRANIAN = """
from granian.server import Server
from granian.constants import Interfaces, Loops
rsgi_mode = sys.argv[3] == "granian-rsgi"
Server("floor_app:" + ("rsgi_app" if rsgi_mode else "app"), address="127.0.0.1", port=PORT,
       interface=Interfaces.RSGI if rsgi_mode else Interfaces.ASGI, workers=1,
       loop=Loops.uvloop, log_enabled=False).serve()
"""

SERVERS = (
    "raw", "raw-task", "httptools", "uvicorn-protocol", "uvicorn-asgi", "granian-asgi",
    "granian-rsgi", "engine-create",
)  # fmt: skip


def _program(name: str, folder: Path) -> list[str]:
    prelude = textwrap.dedent(_PRELUDE)
    if name in ("raw", "raw-task"):
        code = prelude + textwrap.dedent(_RAW)
    elif name == "httptools":
        code = prelude + textwrap.dedent(_HTTPTOOLS) + "uvloop.run(serve(Proto))\n"
    elif name == "uvicorn-asgi":
        code = prelude + textwrap.dedent(_ASGI) + textwrap.dedent(_UVICORN)
    elif name == "engine-create":
        code = prelude + textwrap.dedent(_HTTPTOOLS) + textwrap.dedent(_ENGINE)
    elif name == "uvicorn-protocol":
        code = prelude + textwrap.dedent(_ASGI) + textwrap.dedent(_UVICORN_PROTOCOL)
    else:  # granian imports the app by name: it lives in a module of its own
        (folder / "floor_app.py").write_text(prelude + textwrap.dedent(_ASGI))
        code = prelude + textwrap.dedent(_GRANIAN)
    return [sys.executable, "-c", code]


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    import urllib.error  # here: the stdlib's http package, not this folder's http.py
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{PATH}", data=b"{}", method="POST"
            )
            with urllib.request.urlopen(req, timeout=1):  # noqa: S310
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not become ready")


@contextmanager
def _running(cmd: list[str], env: dict[str, str], cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        stop(proc)


def _measure(pid: int, port: int, args: argparse.Namespace) -> tuple[float, float]:
    base = f"http://127.0.0.1:{port}"
    run_wrk(base, args.concurrency, 2)  # warm up
    pids = process_tree(pid)  # granian serves from a worker process
    before = cpu_seconds(pids)
    requests, rate, _, _, _, bad = run_wrk(base, args.concurrency, args.duration)
    if bad:
        raise SystemExit(f"{bad} requests failed or were answered other than 202")
    return rate, (cpu_seconds(pids) - before) / requests * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    ap.add_argument("--no-gateway", action="store_true", help="leave out the gateway's create")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/floor.py needs wrk: apt-get install wrk")
    results: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="codeq-floor-") as tmp:
        folder = Path(tmp)
        for _ in range(args.rounds):
            with local_store(None) as url:  # for the servers that create (a new one a round)
                for name in [*args.servers, *([] if args.no_gateway else ["gateway"])]:
                    port = free_port()
                    env = {
                        **{k: v for k, v in os.environ.items() if k not in _STORE_VARS},
                        "PYTHONPATH": str(folder), "CODEQ_DEV_TOKEN": TOKEN,
                        "REDIS_URL": url, "KEY_PREFIX": "floor" + uuid.uuid4().hex[:6],
                        "LOG_LEVEL": "warning",
                    }  # fmt: skip
                    if name == "gateway":
                        cmd = [sys.executable, "-m", "codeq.cli", "gateway", "--port", str(port)]
                    else:
                        cmd = [*_program(name, folder), str(port), ANSWER.decode(), name]
                    with _running(cmd, env, _HERE.parent) as proc:
                        _wait_ready(port, proc)
                        results.setdefault(name, []).append(_measure(proc.pid, port, args))
    print(f"\nmedians of {args.rounds} round(s), c={args.concurrency}, {args.duration:g} s each:")
    print("| server | requests/s | server CPU µs per request |")
    print("|---|---:|---:|")
    for name, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"| {name} | {rate:,.0f} | {cpu:.1f} |")
    print("reproduce: python bench/floor.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
