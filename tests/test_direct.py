"""The hot task routes answer alike whether the HTTP protocol serves them itself
(gateway.direct, the default) or Litestar does (``directRoutes: false``): every case of the
six routes — success, each error, the framing a client may use — is sent as raw bytes to both,
on real uvicorn servers with the gateway's protocol over loopback, and the answers compared
byte for byte once what differs by nature is masked (the Date header, task and lease ids,
timestamps). Each case also shows which path served it: the direct server's route table
counts the requests it served, the other has none."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from gateway.app import create_app
from gateway.direct import DirectRoutes
from gateway.middleware import BodyLimits, InFlight
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store
from tests.servers import free_port
from tests.test_api import (
    NO_SCOPE,
    ONLY_RENDER,
    PRODUCER,
    WORKER,
    WORKER_B,
    auth,
    make_settings,
)

RID = "parity-request"
UNKNOWN = "01890000-0000-7000-8000-000000000000"

# what differs between two servers by nature, masked before the comparison
_MASKS = (
    (re.compile(rb"\r\ndate: [^\r]*"), b"\r\ndate: ~"),
    (re.compile(rb'"(id|taskId|leaseId)":"[^"]*"'), rb'"\1":"~"'),
    (re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), b"~T"),
    (re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), b"~id"),
)


_ALLOW = re.compile(rb"\r\nallow: ([^\r]*)")


def masked(raw: bytes) -> bytes:
    for pattern, replacement in _MASKS:
        raw = pattern.sub(replacement, raw)
    # Litestar lists a 405's allowed methods from a set: in no fixed order
    return _ALLOW.sub(lambda m: b"\r\nallow: " + b", ".join(sorted(m[1].split(b", "))), raw)


class Side:
    """One server of the pair: its client (for setting a case up) and its base URL."""

    def __init__(self, c: ApiClient, direct: DirectRoutes | None, in_flight: InFlight) -> None:
        self.c = c
        self.direct = direct
        self.in_flight = in_flight
        self.served = 0  # the case's requests the direct route table served

    async def exchange(self, raw: bytes, *, expect_continue: bytes = b"") -> bytes:
        """Send ``raw`` on a new connection and read until the server closes it (the last
        request asks it to). ``expect_continue``: the body sent once 100 Continue came."""
        url = self.c.base_url
        reader, writer = await asyncio.open_connection(url.host, url.port)
        try:
            writer.write(raw)
            interim = b""
            if expect_continue:
                interim = await reader.readuntil(b"\r\n\r\n")
                writer.write(expect_continue)
            await writer.drain()
            return interim + await asyncio.wait_for(reader.read(), timeout=20)
        finally:
            writer.close()


def request(
    method: str,
    path: str,
    body: bytes | None = b"",
    *,
    token: str | None = PRODUCER,
    headers: tuple[str, ...] = ("Content-Type: application/json",),
    close: bool = True,
    version: str = "1.1",
) -> bytes:
    """Raw request bytes: a fixed request id, ``Content-Length`` when ``body`` is bytes."""
    lines = [f"{method} {path} HTTP/{version}", "Host: parity", f"X-Request-Id: {RID}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += headers
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def create_raw(body: bytes | None = b'{"command":"RENDER","payload":{"n":1}}', **kw: Any) -> bytes:
    return request("POST", "/v1/codeq/tasks", body, **kw)


async def created(side: Side, **body: Any) -> dict[str, Any]:
    r = await side.c.post(
        "/v1/codeq/tasks",
        json={"command": "RENDER", "payload": {"n": 1}, **body},
        headers=auth(PRODUCER),
    )
    assert r.status_code == 202, r.text
    out: dict[str, Any] = r.json()
    return out


async def leased(side: Side, command: str = "RENDER", **body: Any) -> dict[str, Any]:
    """A task created and claimed by WORKER: the claim's answer (id, leaseId)."""
    await created(side, command=command, **body)
    r = await side.c.post(
        "/v1/codeq/tasks/claim", json={"commands": [command]}, headers=auth(WORKER)
    )
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def worker(method_path: str, body: bytes, token: str | None = WORKER, **kw: Any) -> bytes:
    return request("POST", method_path, body, token=token, **kw)


async def on_task(
    side: Side, action: str, body: str = "{}", token: str = WORKER, **claim: Any
) -> bytes:
    task = await leased(side, **claim)
    text = body.replace("LEASE", task["leaseId"])
    return worker(f"/v1/codeq/tasks/{task['id']}/{action}", text.encode(), token)


Case = Callable[[Side], Awaitable[bytes]]


def plain(raw: bytes) -> Case:
    async def case(side: Side) -> bytes:
        return await side.exchange(raw)

    return case


def after(setup: Callable[[Side], Awaitable[bytes]]) -> Case:
    """A case whose request is made after ``setup`` prepared the server's state."""

    async def case(side: Side) -> bytes:
        return await side.exchange(await setup(side))

    return case


async def _replay(side: Side) -> bytes:
    await created(side, idempotencyKey="k-1")
    return await side.exchange(
        create_raw(b'{"command":"RENDER","payload":{"n":1},"idempotencyKey":"k-1"}')
    )


async def _conflict(side: Side) -> bytes:
    await created(side, idempotencyKey="k-2")
    return await side.exchange(
        create_raw(b'{"command":"RENDER","payload":{"n":2},"idempotencyKey":"k-2"}')
    )


async def _continue(side: Side) -> bytes:
    body = b'{"command":"RENDER","payload":{"n":1}}'
    head = create_raw(None, headers=("Content-Type: application/json", "Expect: 100-continue"))
    head = head.replace(
        b"Connection: close", f"Content-Length: {len(body)}\r\nConnection: close".encode()
    )
    return await side.exchange(head, expect_continue=body)


async def _chunked(side: Side) -> bytes:
    body = b'{"command":"RENDER","payload":{"n":1}}'
    raw = create_raw(None, headers=("Content-Type: application/json", "Transfer-Encoding: chunked"))
    return await side.exchange(raw + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))


async def _pipelined(side: Side) -> bytes:
    first = create_raw(close=False)
    second = create_raw(b'{"command":"RENDER","payload":"second"}')
    return await side.exchange(first + second)


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One answer off a kept-alive connection: its head and its Content-Length of body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    assert length is not None, head
    return head + await reader.readexactly(int(length[1]))


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def _one_by_one(side: Side) -> bytes:
    """Two creates on one kept-alive connection, the second sent once the first is answered."""
    url = side.c.base_url
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(create_raw(close=False))
        first = await read_answer(reader)
        writer.write(create_raw(b'{"command":"RENDER","payload":"second"}'))
        return first + await asyncio.wait_for(reader.read(), timeout=20)
    finally:
        writer.close()


async def _claimed(side: Side) -> bytes:
    await created(side, command="PAIRED")
    return await side.exchange(worker("/v1/codeq/tasks/claim", b'{"commands":["PAIRED"]}'))


async def _woken(side: Side) -> bytes:
    """A long poll that a create wakes."""
    command = "WOKEN" + uuid.uuid4().hex[:6].upper()  # the same length on both sides
    raw = worker(
        "/v1/codeq/tasks/claim", b'{"commands":["%s"],"waitSeconds":10}' % command.encode()
    )
    polling = asyncio.ensure_future(side.exchange(raw))

    async def parked() -> bool:
        return side.c.gw.waker.waiting() > 0

    await eventually(parked, timeout=10)
    await created(side, command=command)
    answer = await polling
    return answer.replace(command.encode(), b"WOKEN~")


async def _claim_without_body(side: Side) -> bytes:
    await created(side)
    return await side.exchange(worker("/v1/codeq/tasks/claim", b"", ONLY_RENDER, headers=()))


async def _second_result(side: Side) -> bytes:
    task = await leased(side)
    first = await side.c.post(
        f"/v1/codeq/tasks/{task['id']}/result",
        json={"status": "COMPLETED", "result": {"ok": True}},
        headers=auth(WORKER),
    )
    assert first.status_code == 200, first.text
    again = b'{"status":"COMPLETED","result":{"ok":true}}'
    return await side.exchange(worker(f"/v1/codeq/tasks/{task['id']}/result", again))


async def _artifact(side: Side) -> bytes:
    data = base64.b64encode(b"hello").decode()
    body = '{"status":"COMPLETED","result":{},"artifacts":[{"name":"a.txt","contentBase64":"%s"}]}'
    return await on_task(side, "result", body % data)


async def _not_leased(side: Side) -> bytes:
    task = await created(side, command="IDLE")
    return worker(f"/v1/codeq/tasks/{task['id']}/abandon", b"{}")


_DEEP = b'{"command":"RENDER","payload":' + b"[" * 80 + b"]" * 80 + b"}"

#: name -> (case, requests the direct route table serves in it)
CASES: dict[str, tuple[Case, int]] = {
    # create
    "create": (plain(create_raw()), 1),
    "create-replay": (_replay, 1),
    "create-idempotency-conflict": (_conflict, 1),
    "create-malformed-json": (plain(create_raw(b'{"command":')), 1),
    "create-no-command": (plain(create_raw(b'{"payload":1}')), 1),
    "create-priority-type": (plain(create_raw(b'{"command":"A","payload":1,"priority":"5"}')), 1),
    "create-null-payload": (plain(create_raw(b'{"command":"A","payload":null}')), 1),
    "create-array-body": (plain(create_raw(b"[1]")), 1),
    "create-empty-body": (plain(create_raw(b"")), 1),
    "create-no-token": (plain(create_raw(token=None)), 1),
    "create-unknown-token": (plain(create_raw(token="nobody")), 1),
    "create-worker-token": (plain(create_raw(token=WORKER)), 1),
    "create-too-large": (plain(create_raw(b"{" + b" " * 70_000 + b"}")), 1),
    "create-text-plain": (plain(create_raw(headers=("Content-Type: text/plain",))), 1),
    "create-not-utf8": (plain(create_raw(b'{"command":"A","payload":"\xff"}')), 1),
    "create-too-deep": (plain(create_raw(_DEEP)), 1),
    "create-expect-continue": (_continue, 1),
    "create-chunked": (_chunked, 1),
    "create-http-1.0": (plain(create_raw(version="1.0", close=False)), 1),
    "create-pipelined": (_pipelined, 2),
    "create-one-by-one": (_one_by_one, 2),
    "create-bad-host": (plain(create_raw().replace(b"Host: parity", b"Host: par ity")), 1),
    "create-query-string": (
        plain(request("POST", "/v1/codeq/tasks?x=1", b'{"command":"A","payload":1}')),
        1,
    ),
    # claim
    "claim": (_claimed, 1),
    "claim-nothing": (plain(worker("/v1/codeq/tasks/claim", b'{"commands":["NONE"]}')), 1),
    "claim-wait-nothing": (
        plain(worker("/v1/codeq/tasks/claim", b'{"commands":["NONE"],"waitSeconds":1}')),
        1,
    ),
    "claim-woken": (_woken, 1),
    "claim-no-body": (_claim_without_body, 1),
    "claim-no-scope": (plain(worker("/v1/codeq/tasks/claim", b"{}", NO_SCOPE)), 1),
    "claim-command-not-allowed": (
        plain(worker("/v1/codeq/tasks/claim", b'{"commands":["OTHER"]}', ONLY_RENDER)),
        1,
    ),
    "claim-every-command": (plain(worker("/v1/codeq/tasks/claim", b"{}")), 1),
    "claim-bad-command": (plain(worker("/v1/codeq/tasks/claim", b'{"commands":[""]}')), 1),
    "claim-wait-range": (
        plain(worker("/v1/codeq/tasks/claim", b'{"commands":["A"],"waitSeconds":31}')),
        1,
    ),
    "claim-producer-token": (plain(worker("/v1/codeq/tasks/claim", b"{}", PRODUCER)), 1),
    # heartbeat
    "heartbeat": (after(lambda s: on_task(s, "heartbeat", '{"leaseId":"LEASE"}')), 1),
    "heartbeat-extend": (after(lambda s: on_task(s, "heartbeat", '{"extendSeconds":60}')), 1),
    "heartbeat-extend-range": (after(lambda s: on_task(s, "heartbeat", '{"extendSeconds":0}')), 1),
    "heartbeat-wrong-lease": (
        after(lambda s: on_task(s, "heartbeat", '{"leaseId":"' + "0" * 32 + '"}')),
        1,
    ),
    "heartbeat-not-owner": (after(lambda s: on_task(s, "heartbeat", "{}", WORKER_B)), 1),
    "heartbeat-unknown": (plain(worker(f"/v1/codeq/tasks/{UNKNOWN}/heartbeat", b"{}")), 1),
    "heartbeat-not-an-id": (plain(worker("/v1/codeq/tasks/not-a-task/heartbeat", b"{}")), 1),
    "heartbeat-escaped-slash": (plain(worker("/v1/codeq/tasks/..%2Fx/heartbeat", b"{}")), 0),
    # abandon
    "abandon": (after(lambda s: on_task(s, "abandon")), 1),
    "abandon-not-leased": (after(_not_leased), 1),
    "abandon-unknown": (plain(worker(f"/v1/codeq/tasks/{UNKNOWN}/abandon", b"{}")), 1),
    # nack
    "nack-requeued": (after(lambda s: on_task(s, "nack", '{"delaySeconds":30}', maxAttempts=3)), 1),
    "nack-dead": (after(lambda s: on_task(s, "nack", '{"reason":"boom"}', maxAttempts=1)), 1),
    "nack-delay-range": (after(lambda s: on_task(s, "nack", '{"delaySeconds":-1}')), 1),
    "nack-reason-long": (after(lambda s: on_task(s, "nack", '{"reason":"' + "r" * 5000 + '"}')), 1),
    # result
    "result-completed": (
        after(lambda s: on_task(s, "result", '{"status":"COMPLETED","result":{"a":1}}')),
        1,
    ),
    "result-failed": (
        after(lambda s: on_task(s, "result", '{"status":"FAILED","error":"bad"}')),
        1,
    ),
    "result-completed-without-result": (
        after(lambda s: on_task(s, "result", '{"status":"COMPLETED"}')),
        1,
    ),
    "result-failed-without-error": (
        after(lambda s: on_task(s, "result", '{"status":"FAILED"}')),
        1,
    ),
    "result-not-an-object": (
        after(lambda s: on_task(s, "result", '{"status":"COMPLETED","result":[1]}')),
        1,
    ),
    "result-bad-status": (
        after(lambda s: on_task(s, "result", '{"status":"DONE","result":{}}')),
        1,
    ),
    "result-second": (_second_result, 1),
    "result-artifact": (after(_artifact), 1),
    "result-unknown": (
        plain(worker(f"/v1/codeq/tasks/{UNKNOWN}/result", b'{"status":"FAILED","error":"x"}')),
        1,
    ),
    # not served directly: the same answers by Litestar on both
    "trailing-slash": (
        plain(create_raw(b'{"command":"A","payload":1}').replace(b"tasks HTTP", b"tasks/ HTTP")),
        0,
    ),
    "wrong-method": (plain(request("GET", "/v1/codeq/tasks/claim", None)), 0),
    "empty-task-id": (plain(worker("/v1/codeq/tasks//heartbeat", b"{}")), 0),
}


@contextlib.asynccontextmanager
async def both(
    request: pytest.FixtureRequest, tmp_path: Path, store_url: str | None = None, **extra: Any
) -> AsyncIterator[tuple[Side, Side]]:
    """The same app twice on Redis (each its own keys), with and without direct routes;
    ``store_url``: another store's address."""
    sides: list[Side] = []
    async with contextlib.AsyncExitStack() as stack:
        for direct in (True, False):
            prefix = "parity" + uuid.uuid4().hex[:8]
            store: RedisStore = (
                make_store(request, "redis", prefix)
                if store_url is None
                else RedisStore.from_url(store_url, KeySchema(prefix))
            )
            settings = make_settings(tmp_path, prefix, directRoutes=direct, **extra)
            app = create_app(settings, store=store, close_store=True)
            routes = app.state.direct
            c = await stack.enter_async_context(serve_in_process(app, http=True))
            side = Side(c, routes, app.state.in_flight)
            if routes is not None:
                serve = routes.serve

                async def counted(
                    cycle: Any, *args: Any, _side: Side = side, _serve: Any = serve
                ) -> None:
                    if (b"x-request-id", RID.encode()) in cycle.scope["headers"]:
                        _side.served += 1  # the case's own requests, not its set-up's
                    await _serve(cycle, *args)

                routes.serve = counted
            sides.append(side)
        yield sides[0], sides[1]


@pytest.fixture
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Side, Side]]:
    async with both(request, tmp_path) as sides:
        yield sides


@pytest.mark.parametrize("name", list(CASES))
async def test_both_paths_answer_alike(pair: tuple[Side, Side], name: str) -> None:
    direct, routed = pair
    assert direct.direct is not None and len(direct.direct) == 6
    assert routed.direct is None
    case, served = CASES[name]
    a = await case(direct)
    b = await case(routed)
    assert a.startswith(b"HTTP/1."), a[:200]
    assert masked(a) == masked(b), (a, b)
    assert direct.served == served  # the direct server served exactly the case's requests


_RETRY = re.compile(rb"(retry-after: |\"retryAfterSeconds\":)\d+")


async def test_rate_limited_creates_answer_alike(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    limits = {"producer": {"requestsPerMinute": 1, "burstSize": 1}}
    async with both(request, tmp_path, rateLimit=limits) as (direct, routed):
        answers = [
            [await side.exchange(create_raw()) for _ in range(2)] for side in (direct, routed)
        ]
    for first, limited in answers:
        assert first.startswith(b"HTTP/1.1 202 "), first
        assert limited.startswith(b"HTTP/1.1 429 "), limited
    a, b = (_RETRY.sub(rb"\1~", masked(x[1])) for x in answers)
    assert a == b  # the wait left differs by when each was asked
    assert direct.served == 2


async def test_a_store_outage_answers_alike(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with both(request, tmp_path, store_url=nowhere) as (direct, routed):
        a, b = [await side.exchange(create_raw()) for side in (direct, routed)]
    assert a.startswith(b"HTTP/1.1 503 "), a
    assert b"\r\nretry-after: " in a
    assert masked(a) == masked(b)
    assert direct.served == 1


_CLAIM_204 = re.compile(
    rb'codeq_http_request_duration_seconds_count\{method="POST",'
    rb'route="/v1/codeq/tasks/claim",status="204"\} (\d+)'
)


async def test_a_long_poll_whose_client_left_is_counted_alike(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A client that leaves during a long poll: its place in flight is given back and the
    decided 204 is observed in the duration histogram on both paths."""
    async with both(request, tmp_path) as sides:
        for side in sides:
            url = side.c.base_url
            _, writer = await asyncio.open_connection(url.host, url.port)
            claim = b'{"commands":["GONE"],"waitSeconds":2}'
            writer.write(worker("/v1/codeq/tasks/claim", claim))
            await writer.drain()

            async def parked(side: Side = side) -> bool:
                return side.c.gw.waker.waiting() > 0

            await eventually(parked, timeout=10)
            writer.close()

            async def answered(side: Side = side) -> bool:
                r = await side.c.get("/metrics")
                return side.in_flight.count == 0 and _CLAIM_204.search(r.content) is not None

            await eventually(answered, timeout=10)
            found = _CLAIM_204.search((await side.c.get("/metrics")).content)
            assert found is not None and found[1] == b"1"
        assert sides[0].served == 1


def _route_app(*handlers: Any) -> Any:
    from litestar import Litestar

    return Litestar(route_handlers=list(handlers))


def test_a_direct_route_litestar_would_serve_otherwise_is_refused() -> None:
    """Guards and hooks would not run on the direct path, and a fixed route its template
    covers would be shadowed: the table refuses both at start-up."""
    from litestar import post
    from litestar.params import FromPath

    async def guard(connection: Any, handler: Any) -> None:
        return None

    @post("/t/{x:str}/go", opt={"direct": True}, guards=[guard], sync_to_thread=False)
    def guarded(x: FromPath[str]) -> None:
        return None

    @post("/t/{x:str}/go", opt={"direct": True}, sync_to_thread=False)
    def plain_route(x: FromPath[str]) -> None:
        return None

    @post("/t/fixed/go", sync_to_thread=False)
    def fixed() -> None:
        return None

    limits = BodyLimits(1024, 8)
    with pytest.raises(ValueError, match="guards"):
        DirectRoutes.of(_route_app(guarded), limits=limits, metrics=None, in_flight=None)
    with pytest.raises(ValueError, match="/t/fixed/go"):
        DirectRoutes.of(_route_app(plain_route, fixed), limits=limits, metrics=None, in_flight=None)
    alone = DirectRoutes.of(_route_app(plain_route), limits=limits, metrics=None, in_flight=None)
    assert len(alone) == 1 and alone.match("POST", "/t/abc/go") is not None


@pytest.mark.parametrize("kind", ["redis", "kvrocks"])
async def test_many_workers_over_http_hold_no_task_twice_and_lose_none(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    """40 workers long-polling over overlapping command lists through the direct routes (their
    claims merge into shared script calls) while 4 producers create 400 tasks: no task is
    handed to a worker while another holds it, each is finished exactly once, none is lost."""
    prefix = "race" + uuid.uuid4().hex[:8]
    app = create_app(
        make_settings(tmp_path, prefix), store=make_store(request, kind, prefix), close_store=True
    )
    commands = ["RA", "RB", "RC"]
    lists = [["RA"], ["RB"], ["RC"], ["RA", "RB"], ["RB", "RC"], ["RC", "RA", "RB"]]
    total, workers = 400, 40
    held: dict[str, str] = {}  # task id -> the worker holding it now
    finished: list[str] = []
    created: list[str] = []
    async with serve_in_process(app, http=True) as c:
        assert app.state.direct is not None
        done = asyncio.Event()

        async def produce(p: int) -> None:
            for i in range(total // 4):
                command = commands[(p + i) % 3]
                body = {"command": command, "payload": {"p": p, "i": i}}
                r = await c.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))
                assert r.status_code == 202, r.text
                created.append(r.json()["id"])

        async def work(w: int) -> None:
            name = f"w{w}"
            body = {"commands": lists[w % len(lists)], "waitSeconds": 1}
            while not done.is_set():
                r = await c.post("/v1/codeq/tasks/claim", json=body, headers=auth(WORKER))
                if r.status_code == 204:
                    continue
                assert r.status_code == 200, r.text
                task = r.json()
                assert task["id"] not in held, f"{task['id']} held by {held.get(task['id'])}"
                held[task["id"]] = name
                result = {"status": "COMPLETED", "result": {"by": name}, "leaseId": task["leaseId"]}
                r = await c.post(
                    f"/v1/codeq/tasks/{task['id']}/result", json=result, headers=auth(WORKER)
                )
                assert r.status_code == 200, r.text
                del held[task["id"]]
                finished.append(task["id"])
                if len(finished) == total:
                    done.set()

        running = [asyncio.create_task(work(w)) for w in range(workers)]
        await asyncio.gather(*(produce(p) for p in range(4)))
        await asyncio.wait_for(done.wait(), timeout=60)
        await asyncio.gather(*running)
        assert sorted(finished) == sorted(created)  # each exactly once, none lost
        queues = await c.gw.engine.list_queues("acme")
        by_command = {q.command: q for q in queues}
        for command in commands:
            q = by_command[command.lower()]
            assert (q.ready, q.delayed, q.in_progress, q.dlq) == (0, 0, 0, 0)


async def test_a_shed_request_whose_body_comes_later_leaves_a_connection_that_still_works(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A request shed (503) before its body has arrived is answered at once; its body, when it
    comes, is dropped, and the connection goes on: it serves the next request, or, idle, is
    closed after the keep-alive time (the body's arrival had stopped the keep-alive timer and
    nothing armed it again: such a connection stayed open for good)."""
    prefix = "shedka" + uuid.uuid4().hex[:8]
    app = create_app(
        make_settings(tmp_path, prefix, maxInFlightRequests=2),
        store=make_store(request, "redis", prefix),
        close_store=True,
    )
    body = b'{"command":"SHED","payload":{"n":1}}'
    head = (
        f"POST /v1/codeq/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PRODUCER}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    ).encode()

    async with serve_in_process(app, http=True, keep_alive=1) as c:
        url, in_flight = c.base_url, app.state.in_flight
        held = [await asyncio.open_connection(url.host, url.port) for _ in range(2)]
        for _, writer in held:  # two creates waiting for their bodies: the process is full
            writer.write(head + b"Connection: close\r\n\r\n")

        async def full() -> bool:
            return bool(in_flight.count == 2)

        await eventually(full)
        try:
            idle_r, idle_w = await asyncio.open_connection(url.host, url.port)
            next_r, next_w = await asyncio.open_connection(url.host, url.port)
            for writer in (idle_w, next_w):
                writer.write(head + b"\r\n")  # keep-alive, body not sent yet
            for reader in (idle_r, next_r):
                shed = await asyncio.wait_for(read_answer(reader), timeout=10)
                assert status_of(shed) == 503 and b'"code":"overloaded"' in shed
            for writer in (idle_w, next_w):
                writer.write(body)  # the shed request's body arrives after its answer
            next_w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status_of(await asyncio.wait_for(read_answer(next_r), timeout=10)) == 200
            # the idle one is closed by the server once the keep-alive time has passed
            assert await asyncio.wait_for(idle_r.read(), timeout=10) == b""
            for writer in (idle_w, next_w):
                writer.close()
        finally:
            for reader, writer in held:
                writer.write(body)
                taken = await asyncio.wait_for(read_answer(reader), timeout=10)
                assert status_of(taken) == 202  # taken, not shed
                writer.close()
