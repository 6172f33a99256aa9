"""The transport contract (deliverers/transport.py): what the webhook sender relies on of the
client that sends its requests, run against every transport in ``TRANSPORTS`` and real servers
on loopback. Raw asyncio servers answer in the shapes a receiver may use, broken ones included;
TLS uses a certificate made here. A new transport (HTTP/2, say) joins ``TRANSPORTS`` and passes
this file; the sender does not change. ``proxy`` is :class:`deliverers.proxy.ProxyTransport`
through a real CONNECT proxy on loopback (tests/test_proxy.py), which must be asked for exactly
the pinned addresses."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from deliverers.http1 import HTTP1Pool
from deliverers.proxy import ProxyTransport
from deliverers.sender import Attempt, TargetPolicy, WebhookSender
from deliverers.transport import (
    Connect,
    ConnectError,
    HostBusy,
    InvalidRequest,
    Response,
    ResponseError,
    Transport,
    TransportError,
    TransportTimeout,
)
from tests.conftest import eventually
from tests.test_proxy import ConnectProxy, connect_proxy

# -- servers ------------------------------------------------------------------------------


@dataclass
class Request:
    head: bytes
    body: bytes
    connection: int  # which accepted connection (0, 1, ...) carried it

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == name.lower().encode():
                return v.strip().decode()
        return None


Answer = Callable[[Request, asyncio.StreamWriter], Awaitable[bool]]  # False: close after


@dataclass
class RawServer:
    answer: Answer
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    closed: int = 0  # connections that have ended
    port: int = 0
    host: str = "127.0.0.1"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = self.connections
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                req = Request(head, body, n)
                self.requests.append(req)
                if not await self.answer(req, writer):
                    return
        finally:
            self.closed += 1
            writer.close()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"


@asynccontextmanager
async def raw_server(
    answer: Answer, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[RawServer]:
    s = RawServer(answer, host=host)
    server = await asyncio.start_server(s.handle, host, 0, ssl=tls)
    s.port = server.sockets[0].getsockname()[1]
    try:
        yield s
    finally:
        server.close()


def replying(reply: bytes, *, keep_open: bool = True) -> Answer:
    async def answer(req: Request, w: asyncio.StreamWriter) -> bool:
        w.write(reply)
        await w.drain()
        return keep_open

    return answer


ok = replying(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


async def loopback(host: str, port: int) -> list[str]:
    return ["127.0.0.1"]


# -- transports ---------------------------------------------------------------------------


class New(Protocol):
    def __call__(
        self, *, per_host: int, queue_seconds: float, ssl_context: ssl.SSLContext | None
    ) -> Transport: ...


class Kind(Protocol):
    """How to get transports of one kind: what they need running (a proxy) for the test."""

    def __call__(
        self, stack: contextlib.AsyncExitStack
    ) -> Awaitable[tuple[New, ConnectProxy | None]]: ...


async def _http1(stack: contextlib.AsyncExitStack) -> tuple[New, ConnectProxy | None]:
    return HTTP1Pool, None


async def _proxy(stack: contextlib.AsyncExitStack) -> tuple[New, ConnectProxy | None]:
    proxy = await stack.enter_async_context(connect_proxy())

    def new(
        *, per_host: int, queue_seconds: float, ssl_context: ssl.SSLContext | None
    ) -> Transport:
        return ProxyTransport(
            proxy.url, per_host=per_host, queue_seconds=queue_seconds, ssl_context=ssl_context
        )

    return new, proxy


TRANSPORTS: dict[str, Kind] = {"http1": _http1, "proxy": _proxy}


class Make:
    """Builds transports of one kind (per-host slots, the wait for one, TLS trust); ``proxy``:
    the proxy they go through, if any."""

    def __init__(self, new: New, proxy: ConnectProxy | None) -> None:
        self._new = new
        self.proxy = proxy
        self.made: list[Transport] = []

    def __call__(
        self,
        *,
        per_host: int = 16,
        queue_seconds: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> Transport:
        t = self._new(per_host=per_host, queue_seconds=queue_seconds, ssl_context=ssl_context)
        self.made.append(t)
        return t

    def connected_to(self) -> list[str] | None:
        """What the proxy was asked to CONNECT to (None without a proxy)."""
        return None if self.proxy is None else [a.authority for a in self.proxy.asked]


@pytest.fixture(params=sorted(TRANSPORTS))
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Transports of one kind, closed after the test (before what they needed running)."""
    async with contextlib.AsyncExitStack() as stack:
        build = Make(*await TRANSPORTS[request.param](stack))
        yield build
        for t in build.made:
            await t.aclose()


async def send(
    t: Transport,
    url: str,
    body: bytes = b"{}",
    *,
    headers: dict[str, str] | None = None,
    connect: Callable[[str, int], Awaitable[list[str]]] = loopback,
    limit: float = 5.0,
    keep: int = 256,
) -> Response:
    return await t.send(
        url,
        {"X-A": "1"} if headers is None else headers,
        body,
        connect=connect,
        time_limit=limit,
        keep=keep,
    )


# -- what goes out ------------------------------------------------------------------------


async def test_the_request_goes_to_the_pinned_address_under_the_urls_name(make: Make) -> None:
    asked: list[tuple[str, int]] = []

    async def pinned(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["127.0.0.2"]  # the name resolves nowhere: only this address can work

    t = make()
    async with raw_server(ok, host="127.0.0.2") as s:
        url = f"http://hooks.example.test:{s.port}/hook?x=1"
        body = b'{"n":1,"text":"\xc3\xa9"}'
        r = await send(t, url, body, headers={"X-A": "1", "Webhook-Id": "msg_1"}, connect=pinned)
        assert (r.status, r.body, r.headers["content-length"]) == (200, b"ok", "2")
        assert asked == [("hooks.example.test", s.port)]
        [req] = s.requests
        assert req.head.startswith(b"POST /hook?x=1 HTTP/1.1\r\n")
        assert req.header("host") == f"hooks.example.test:{s.port}"
        assert req.header("x-a") == "1" and req.header("webhook-id") == "msg_1"
        assert req.header("content-length") == str(len(body)) and req.body == body
        assert req.header("proxy-authorization") is None
        assert make.connected_to() in (None, [f"127.0.0.2:{s.port}"])


async def test_every_new_connection_asks_connect_again(make: Make) -> None:
    """The SSRF check runs for every connection the transport opens, never cached by it."""
    asked: list[str] = []

    async def counting(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    t = make()
    close = replying(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    async with raw_server(close) as s:
        for _ in range(2):
            assert (await send(t, s.url, connect=counting)).status == 200
        assert s.connections == 2 and asked == ["127.0.0.1", "127.0.0.1"]


async def test_the_addresses_are_tried_in_order(make: Make) -> None:
    async def two(host: str, port: int) -> list[str]:
        return ["127.0.0.3", "127.0.0.2"]  # nothing listens on the first

    t = make()
    async with raw_server(ok, host="127.0.0.2") as s:
        assert (await send(t, s.url, connect=two)).status == 200
        assert make.connected_to() in (None, [f"127.0.0.3:{s.port}", f"127.0.0.2:{s.port}"])


# -- answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [201, 204, 404, 410, 429, 500, 503])
async def test_any_status_is_an_answer_with_its_headers_and_first_bytes(
    make: Make, status: int
) -> None:
    body = b"" if status == 204 else b"why"
    reply = b"HTTP/1.1 %d X\r\nRetry-After: 7\r\nX-Mixed-Case: V\r\nContent-Length: %d\r\n\r\n%s"
    t = make()
    async with raw_server(replying(reply % (status, len(body), body))) as s:
        r = await send(t, s.url)
        assert (r.status, r.body) == (status, body)
        assert r.headers["retry-after"] == "7" and r.headers["x-mixed-case"] == "V"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_an_answer_never_followed(make: Make, status: int) -> None:
    t = make()
    async with raw_server(ok) as elsewhere:
        moved = b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n"
        async with raw_server(replying(moved % (status, elsewhere.url.encode()))) as s:
            r = await send(t, s.url)
            assert r.status == status and r.headers["location"] == elsewhere.url
            assert len(s.requests) == 1 and elsewhere.requests == []


async def test_an_interim_answer_is_skipped(make: Make) -> None:
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
    t = make()
    async with raw_server(replying(reply)) as s:
        r = await send(t, s.url)
        assert (r.status, r.body) == (200, b"abc")


@pytest.mark.parametrize("keep", [0, 16, 256])
async def test_only_the_first_keep_bytes_of_the_body_come_back(make: Make, keep: int) -> None:
    sizes = iter([10, 100_000, 3])

    async def answer(req: Request, w: asyncio.StreamWriter) -> bool:
        n = next(sizes)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + b"x" * n)
        await w.drain()
        return True

    t = make()
    async with raw_server(answer) as s:
        for n in (10, 100_000, 3):  # the big one does not spill into the next answer
            r = await send(t, s.url, keep=keep)
            assert r.status == 200 and r.body == b"x" * min(n, keep)


async def test_a_later_request_never_gets_an_earlier_answer(make: Make) -> None:
    async def answer(req: Request, w: asyncio.StreamWriter) -> bool:
        if len(s.requests) == 1:  # a broken server: an extra response nobody asked for
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            w.write(b"HTTP/1.1 500 Stale\r\nContent-Length: 0\r\n\r\n")
            await w.drain()
            return True
        return await ok(req, w)

    t = make()
    async with raw_server(answer) as s:
        assert (await send(t, s.url)).status == 200
        assert (await send(t, s.url)).status == 200


# -- failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH_9.2p1\r\n",
        b"HTTP/1.1 abc\r\n\r\n",
        b"\x00\xff" * 64,
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nabcde",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ],
    ids=["not-http", "bad-status", "binary", "two-lengths", "switching-protocols"],
)
async def test_an_answer_that_is_not_http_fails(make: Make, reply: bytes) -> None:
    t = make()
    async with raw_server(replying(reply)) as s:
        with pytest.raises(ResponseError):
            await send(t, s.url)


@pytest.mark.parametrize("shape", ["many headers", "one endless header"])
async def test_a_huge_head_fails(make: Make, shape: str) -> None:
    async def answer(req: Request, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\n")
        if shape == "many headers":
            for i in range(100):
                w.write(b"X-Filler-%d: %s\r\n" % (i, b"y" * 1000))
            w.write(b"Content-Length: 0\r\n\r\n")
        else:  # never ends: the limit must apply while the header is still arriving
            w.write(b"X-Endless: ")
            for _ in range(400):
                w.write(b"y" * 16384)
                await w.drain()
                if w.is_closing():
                    break
        await w.drain()
        return True

    t = make()
    async with raw_server(answer) as s:
        with pytest.raises(ResponseError, match="too large"):
            await send(t, s.url)


async def test_a_connection_closed_before_the_answer_fails_and_is_not_sent_again(
    make: Make,
) -> None:
    async def silent(req: Request, w: asyncio.StreamWriter) -> bool:
        return False  # close without a word

    t = make()
    async with raw_server(silent) as s:
        with pytest.raises(ResponseError, match="closed before the response"):
            await send(t, s.url)
        assert len(s.requests) == 1  # a new connection: the receiver may have acted on it


async def test_the_time_limit_cuts_the_exchange(make: Make) -> None:
    release = asyncio.Event()

    async def answer(req: Request, w: asyncio.StreamWriter) -> bool:
        n = len(s.requests)
        if n == 1:
            await release.wait()
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n%d" % n)
        await w.drain()
        return True

    t = make()
    async with raw_server(answer) as s:
        started = time.monotonic()
        with pytest.raises(TransportTimeout) as caught:
            await send(t, s.url, limit=0.2)
        assert isinstance(caught.value, TimeoutError)
        assert 0.15 <= time.monotonic() - started < 2
        release.set()
        assert (await send(t, s.url)).body == b"2"  # its own answer, not the late one


async def test_the_time_limit_does_not_count_the_wait_for_a_slot(make: Make) -> None:
    """One slot, an exchange of 0.3 s, a limit of 0.5 s: the third request waits 0.6 s for
    the slot and still gets its answer."""

    async def slow(req: Request, w: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.3)  # the receiver's own slowness
        return await ok(req, w)

    t = make(per_host=1)
    async with raw_server(slow) as s:
        answers = await asyncio.gather(*(send(t, s.url, limit=0.5) for _ in range(3)))
        assert [r.status for r in answers] == [200] * 3


async def test_no_slot_in_time_is_host_busy_and_sends_nothing(make: Make) -> None:
    release = asyncio.Event()

    async def held(req: Request, w: asyncio.StreamWriter) -> bool:
        await release.wait()
        return await ok(req, w)

    t = make(per_host=1, queue_seconds=0.2)
    assert t.queue_seconds == 0.2
    async with raw_server(held) as s:
        first = asyncio.create_task(send(t, s.url))

        async def in_flight() -> bool:
            return len(s.requests) == 1

        await eventually(in_flight)
        started = time.monotonic()
        with pytest.raises(HostBusy):
            await send(t, s.url, limit=10)
        assert 0.15 <= time.monotonic() - started < 2
        release.set()
        assert (await first).status == 200
        assert len(s.requests) == 1


async def test_a_refused_connection_is_a_connect_error(make: Make) -> None:
    async with raw_server(ok) as s:
        url = s.url  # closed once the block ends: nothing listens there any more
    with pytest.raises(ConnectError):
        await send(make(), url)


async def test_a_failed_lookup_is_a_connect_error(make: Make) -> None:
    async def no_dns(host: str, port: int) -> list[str]:
        raise OSError(f"{host}: name or service not known")

    with pytest.raises(ConnectError, match="not known"):
        await send(make(), "http://hooks.example.test/hook", connect=no_dns)


async def test_what_connect_raises_otherwise_comes_through_unchanged(make: Make) -> None:
    class Refused(Exception):
        pass

    async def refuse(host: str, port: int) -> list[str]:
        raise Refused(host)

    t = make()
    async with raw_server(ok) as s:
        with pytest.raises(Refused):
            await send(t, s.url, connect=refuse)
        assert s.connections == 0
        assert make.connected_to() in (None, [])


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        ("{url}", {"X-Event": "a\r\nX-Evil: 1"}),
        ("{url}", {"Bad Name": "1"}),
        ("{url}", {"X": "a\0b"}),
        ("ftp://127.0.0.1/hook", {}),
        ("http://a..b.example/hook", {}),
    ],
    ids=["crlf-value", "bad-name", "nul-value", "not-http", "bad-host-name"],
)
async def test_what_cannot_be_sent_is_refused_before_sending(
    make: Make, url: str, headers: dict[str, str]
) -> None:
    t = make()
    async with raw_server(ok) as s:
        with pytest.raises(InvalidRequest) as caught:
            await send(t, url.format(url=s.url), headers=headers)
        assert isinstance(caught.value, ValueError)
        assert not isinstance(caught.value, TransportError)  # no retry can help
        assert s.connections == 0


async def test_aclose_closes_the_kept_connections(make: Make) -> None:
    t = make()
    async with raw_server(ok) as s:
        assert (await send(t, s.url)).status == 200
        await t.aclose()

        async def all_closed() -> bool:
            return s.closed == s.connections == 1

        await eventually(all_closed)


# -- TLS ----------------------------------------------------------------------------------


def _certificate(tmp: Path, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for ``name``: (server context, client context trusting it)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


async def test_tls_to_a_pinned_address_keeps_the_name_for_sni_and_the_certificate(
    make: Make, tmp_path: Path
) -> None:
    server_ctx, client_ctx = _certificate(tmp_path, "hooks.example.test")
    seen: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: seen.append(name)
    t = make(ssl_context=client_ctx)
    async with raw_server(ok, tls=server_ctx) as s:
        r = await send(t, f"https://hooks.example.test:{s.port}/hook")
        assert r.status == 200 and seen == ["hooks.example.test"]
        assert s.requests[0].header("host") == f"hooks.example.test:{s.port}"
        wrong = f"https://other.example.test:{s.port}/hook"  # same address, wrong name
        with pytest.raises(ConnectError, match="certificate"):
            await send(t, wrong)


# -- the sender over any transport --------------------------------------------------------


class Scripted:
    """A transport that connects as the sender asks, then answers from a script: the sender
    sees only the protocol, no network and no patching."""

    queue_seconds = 0.25

    def __init__(self, outcome: Response | Exception) -> None:
        self.outcome = outcome
        self.sent: list[tuple[str, dict[str, str], bytes, float, int]] = []
        self.closed = False

    async def send(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        connect: Connect,
        time_limit: float,
        keep: int,
    ) -> Response:
        await connect("127.0.0.1", 80)  # the sender's check of every new connection
        self.sent.append((url, dict(headers), body, time_limit, keep))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Response(200, {}, b"thanks"), {"ok": True, "status_code": 200, "response_head": "thanks"}),
        (
            Response(503, {"retry-after": "3"}, b""),
            {"ok": False, "status_code": 503, "error": "HTTP 503", "retry_after_seconds": 3.0},
        ),
        (HostBusy("queue full"), {"busy": True, "error": "busy: queue full"}),
        (TransportTimeout("no answer"), {"error": "timeout", "busy": False, "refused": False}),
        (ConnectError("refused"), {"error": "connect: refused"}),
        (ResponseError("bad response"), {"error": "ResponseError: bad response"}),
        (InvalidRequest("header 'X' cannot be sent"), {"refused": True}),
    ],
    ids=["2xx", "503", "busy", "timeout", "connect", "response", "invalid"],
)
async def test_the_sender_turns_each_outcome_into_an_attempt(
    outcome: Response | Exception, expected: dict[str, object]
) -> None:
    transport = Scripted(outcome)
    sender = WebhookSender(TargetPolicy(["127.0.0.0/8"]), timeout=3.0, transport=transport)
    assert sender.queue_seconds == 0.25
    attempt = await sender.send("http://127.0.0.1/hook", b"{}", {"Webhook-Id": "msg_1"})
    assert {k: getattr(attempt, k) for k in expected} == expected
    assert transport.sent == [("http://127.0.0.1/hook", {"Webhook-Id": "msg_1"}, b"{}", 3.0, 256)]
    await sender.aclose()
    assert transport.closed


async def test_the_senders_connect_step_refuses_an_address_outside_the_policy() -> None:
    transport = Scripted(Response(200, {}, b""))
    sender = WebhookSender(TargetPolicy([]), transport=transport)  # loopback not allowed
    attempt: Attempt = await sender.send("http://hooks.example.test/hook", b"{}", {})
    assert attempt.refused and attempt.error and attempt.error.startswith("refused")
    assert transport.sent == []
