"""Under overload a gateway process sheds: past ``maxInFlightRequests`` requests being worked
on, one more is answered 503 ``overloaded`` with ``Retry-After`` at once (issue 19), in the
JSON error shape; probes and ``/metrics`` still answer; parked long polls do not count; the
count never leaks (every request that ends gives its place back). A real ``codeq serve``."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gateway import middleware
from gateway.middleware import InFlight
from tests.conftest import eventually
from tests.served import TOKEN, Served, serve

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"
LIMIT = 3
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BODY = b'{"command":"SLOW","payload":{"n":1}}'


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve({"MAX_IN_FLIGHT_REQUESTS": str(LIMIT)}) as s:
        yield s


def _held(served: Served) -> socket.socket:
    """A create whose body has not arrived: the process works on it (waits for its body)."""
    url = urlsplit(served.base)
    s = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10)
    s.sendall(
        f"POST /v1/codeq/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    return s


def _finish(s: socket.socket) -> int:
    """Send the held request's body; its status."""
    with s:
        s.sendall(BODY)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def _shed(served: Served) -> httpx.Response:
    """The next create, once the process sheds it (it has taken the held requests)."""

    async def probe() -> httpx.Response | None:
        async with httpx.AsyncClient(headers=AUTH) as c:
            r = await c.post(f"{served.base}/v1/codeq/tasks", json={"command": "X", "payload": 1})
        return r if r.status_code == 503 else None

    async def until() -> httpx.Response:
        shed: httpx.Response = await eventually(probe, timeout=10)
        return shed

    return asyncio.run(until())


def test_past_the_bound_a_request_is_shed_at_once_and_probes_still_answer(
    served: Served,
) -> None:
    held = [_held(served) for _ in range(LIMIT)]
    try:
        shed = _shed(served)
        assert shed.headers["retry-after"] == "1"
        assert shed.headers["content-type"] == "application/json"
        answer = shed.json()
        assert answer["code"] == "overloaded"
        assert "maxInFlightRequests" in answer["error"]
        documented = next(
            line for line in API_DOC.read_text().splitlines() if '"code":"overloaded"' in line
        )
        assert answer == json.loads(documented)  # docs/api.md shows this very answer
        assert shed.headers.get("x-request-id")
        again = httpx.post(
            f"{served.base}/v1/codeq/tasks",
            headers={**AUTH, "X-Request-Id": "trace-42"},
            json={"command": "X", "payload": 1},
        )
        assert again.status_code == 503 and again.headers["x-request-id"] == "trace-42"
        for probe in ("/healthz", "/readyz", "/metrics"):
            assert httpx.get(served.base + probe).status_code == 200, probe
        metrics = httpx.get(served.base + "/metrics").text
        assert f"codeq_http_requests_in_flight {float(LIMIT)}" in metrics
        shed_total = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("codeq_http_shed_total ")
        )
        assert shed_total >= 1
        # ... and said in the log (how often: the test below)
        lines = [ln for ln in served.stderr().splitlines() if "overloaded: shed" in ln]
        assert lines and "maxInFlightRequests" in lines[-1], served.stderr()[-2000:]
    finally:
        statuses = [_finish(s) for s in held]
    # Every held request was taken (not shed), and created its task.
    assert statuses == [202] * LIMIT
    r = httpx.get(f"{served.base}/v1/codeq/admin/queues/SLOW", headers=AUTH)
    assert r.json()["ready"] == LIMIT


def test_parked_long_polls_do_not_count_and_no_place_leaks(served: Served) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=served.base, headers=AUTH, timeout=30) as c:
            # Refused requests and long polls that time out come and go first.
            for _ in range(5):
                assert (await c.post("/v1/codeq/tasks", content=b"{")).status_code == 400
                r = await c.post(
                    "/v1/codeq/tasks", content=b"{}", headers={"Content-Type": "text/plain"}
                )
                assert r.status_code == 415
            polls = [
                c.post("/v1/codeq/tasks/claim", json={"commands": ["PARK"], "waitSeconds": 0.2})
                for _ in range(LIMIT * 2)
            ]
            assert {r.status_code for r in await asyncio.gather(*polls)} == {204}
            # Twice the bound of long polls park at once: none is shed, and work still goes on.
            parked = [
                asyncio.ensure_future(
                    c.post("/v1/codeq/tasks/claim", json={"commands": ["PARK"], "waitSeconds": 20})
                )
                for _ in range(LIMIT * 2)
            ]

            async def waiting() -> bool:
                text = (await c.get("/metrics")).text
                return f"codeq_long_polls_waiting {float(LIMIT * 2)}" in text

            await eventually(waiting, timeout=10)
            for i in range(LIMIT * 2):
                r = await c.post("/v1/codeq/tasks", json={"command": "PARK", "payload": i})
                assert r.status_code == 202, r.text
            answers = await asyncio.gather(*parked)
            assert sorted(r.status_code for r in answers) == [200] * (LIMIT * 2)
            assert len({r.json()["id"] for r in answers}) == LIMIT * 2

    asyncio.run(scenario())
    # Everything above gave its place back: exactly LIMIT held requests are taken again.
    held = [_held(served) for _ in range(LIMIT)]
    try:
        assert _shed(served).json()["code"] == "overloaded"
    finally:
        assert [_finish(s) for s in held] == [202] * LIMIT
    ok = httpx.post(
        f"{served.base}/v1/codeq/tasks", headers=AUTH, json={"command": "Y", "payload": 1}
    )
    assert ok.status_code == 202
    assert json.loads(ok.content)["command"] == "Y"


def test_the_middleware_sheds_what_the_protocol_let_through_in_the_same_instant() -> None:
    """Under another server (or two requests admitted by the protocol at once) the middleware
    makes the same decision with the same answer; probes pass, and places come back."""
    from gateway.middleware import InFlight, RequestIdMiddleware

    release = asyncio.Event()
    entered = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal entered
        entered += 1
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})

    in_flight = InFlight(2)
    middleware = RequestIdMiddleware(app, in_flight=in_flight)

    async def call(path: str) -> tuple[int, dict[bytes, bytes], bytes]:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": path, "headers": []}
        await middleware(scope, receive, send)  # type: ignore[arg-type]
        return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]

    async def scenario() -> None:
        first = [asyncio.ensure_future(call("/v1/codeq/tasks")) for _ in range(2)]
        await eventually(lambda: _true(entered == 2))
        status, headers, body = await call("/v1/codeq/tasks")
        assert (status, headers[b"retry-after"]) == (503, b"1")
        assert json.loads(body)["code"] == "overloaded" and headers[b"x-request-id"]
        assert in_flight.shed == 1 and in_flight.count == 2
        probe = asyncio.ensure_future(call("/healthz"))  # neither shed nor counted
        await eventually(lambda: _true(entered == 3))
        assert in_flight.count == 2
        release.set()
        assert [(await f)[0] for f in (*first, probe)] == [200, 200, 200]
        assert in_flight.count == 0

    asyncio.run(scenario())


async def _true(value: bool) -> bool:
    return value


def test_the_sdk_retries_a_shed_create_even_without_an_idempotency_key(served: Served) -> None:
    """A 503 ``overloaded`` was refused before anything was done, so the SDK repeats any call
    after its Retry-After (a store outage's 503 only for calls safe to repeat)."""
    from concurrent.futures import ThreadPoolExecutor

    from codeq.client import CodeQClient

    def shed_total() -> float:
        text = httpx.get(served.base + "/metrics").text
        return next(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("codeq_http_shed_total ")
        )

    held = [_held(served) for _ in range(LIMIT)]
    _shed(served)  # the process has taken the held ones
    before = shed_total()
    with ThreadPoolExecutor(1) as pool, CodeQClient(served.base, token=TOKEN, retries=5) as cq:
        created = pool.submit(cq.create_task, "SDK_SHED", {"n": 1})

        async def shed_once() -> bool:
            return shed_total() > before

        asyncio.run(eventually(shed_once, timeout=10))  # its first attempt was refused
        assert [_finish(s) for s in held] == [202] * LIMIT
        task = created.result(timeout=30)
    assert task.command == "SDK_SHED"
    r = httpx.get(f"{served.base}/v1/codeq/tasks/{task.id}", headers=AUTH)
    assert r.status_code == 200


def _read_all(s: socket.socket) -> bytes:
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data


def _connect(served: Served) -> socket.socket:
    url = urlsplit(served.base)
    return socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=20)


def test_a_shed_head_has_no_body_and_the_next_answer_follows_it(served: Served) -> None:
    held = [_held(served) for _ in range(LIMIT)]
    try:
        _shed(served)
        with _connect(served) as s:  # HEAD, then a probe, pipelined on one connection
            s.sendall(
                b"HEAD /ui/ HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            data = _read_all(s)
    finally:
        assert [_finish(h) for h in held] == [202] * LIMIT
    first, _, rest = data.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 503"), first
    assert rest.startswith(b"HTTP/1.1 200"), rest[:80]  # no body between the two


def test_pipelined_requests_are_all_shed_and_answered(served: Served) -> None:
    """Requests pipelined behind one the process works on wait in uvicorn's queue; when it
    answers, each shed one lets the next in from the event loop, not from a deeper call: three
    thousand behind a create are all answered, nothing dropped."""
    n = 3000
    create = (
        f"POST /v1/codeq/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY
    one = b"GET /v1/codeq/tasks/abc HTTP/1.1\r\nHost: x\r\n"  # shed before auth is looked at
    held = [_held(served) for _ in range(LIMIT - 1)]  # the create takes the last place
    try:
        with _connect(served) as s:
            s.sendall(create + (one + b"\r\n") * (n - 1) + one + b"Connection: close\r\n\r\n")
            data = _read_all(s)
    finally:
        assert [_finish(h) for h in held] == [202] * (LIMIT - 1)
    statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]
    assert len(statuses) == n + 1 and statuses[0] == 202  # every one answered, in order
    # the rest: shed, or (let in while the one before still counted) refused for no token
    assert set(statuses[1:]) <= {503, 401} and statuses.count(503) >= n // 3


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_shedding_is_logged_at_once_then_at_most_every_ten_seconds_with_the_count(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = _Clock()
    monkeypatch.setattr(middleware, "time", clock)
    slot = InFlight(2)
    slot.count = 1
    assert not slot.sheds() and not caplog.records  # below the limit: nothing
    slot.count = 2
    with caplog.at_level(logging.WARNING, logger="codeq.gateway"):
        assert slot.sheds()  # the first: said at once
        for _ in range(60):  # 15 s of sheds: said once more, 10 s after the first
            clock.now += 0.25
            assert slot.sheds()
        clock.now += middleware.SHED_NOTE_SECONDS  # later: how many since the last line
        assert slot.sheds()
    said = [r.getMessage() for r in caplog.records if "overloaded: shed" in r.getMessage()]
    assert [int(m.split("shed ")[1].split(" ")[0]) for m in said] == [1, 40, 21], said
    assert all("2 in flight" in m for m in said) and slot.shed == 62
