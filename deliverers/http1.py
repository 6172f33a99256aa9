"""A small keep-alive HTTP/1.1 client for webhook POSTs: asyncio transports, httptools' parser.

Why not a general client: a deliverer's time is mostly this one call, and measured on the
project's machine (50 POSTs in flight to a local receiver, client CPU per request) aiohttp cost
~250 µs, aiosonic ~285 µs, pyreqwest ~160 µs, curl_cffi ~560 µs and httpx more than aiohttp, where
this client costs ~40 µs (docs/performance.md §4). It does one thing: POST a body with given
headers and read the status, the headers and the first bytes of the answer — the sender's
:class:`deliverers.transport.Transport`, whose errors it raises. The HTTP parsing is httptools
(llhttp, the parser of Node.js and uvicorn); what is here is the connection handling:

- connections are opened to addresses the caller's ``connect`` hook returns (the SSRF check:
  the address checked is the address connected to), TLS with the URL's host name for SNI and the
  certificate check, ``Host`` kept. How a connection to such an address is made is the pool's
  :data:`Dial` (:func:`dial_direct` by default; :mod:`deliverers.proxy` tunnels through an
  egress proxy): everything else here (the request, the answer, keep-alive, the bounds) is the
  same either way;
- idle keep-alive connections are reused, newest first, and dropped after ``idle_seconds`` or
  as soon as the server closes them; a request that fails on a reused connection before any
  byte of an answer (the server closed it as we wrote) is sent once more on a new connection —
  webhooks are at-least-once, and the receiver has the ``webhook-id`` to see repeats;
- in-flight requests are bounded per process and per origin. Waiting for a slot is bounded on
  its own (``queue_seconds``, and at most ``queue_limit`` waiting per origin): a request that
  gets no slot in time fails with :class:`HostBusy` having sent nothing. The time limit of a
  request starts once it has its slots and covers the connect and the exchange only, so a burst
  to one slow host never times out requests the host answered in time;
- redirects are answers like any other (never followed); response heads over 64 KiB fail; a
  body is read to ``keep`` bytes and drained up to 64 KiB so the connection can be reused, past
  that the connection is closed instead.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import httptools

from codeq.webhooks import HEADER_NAME, target_problem
from deliverers.transport import (
    Connect,
    ConnectError,
    HostBusy,
    InvalidRequest,
    Response,
    ResponseError,
    TransportTimeout,
)

__all__ = [
    "HOST_QUEUE_FACTOR",
    "HOST_QUEUE_SECONDS",
    "MAX_HEAD",
    "Dial",
    "HTTP1Pool",
    "HostBusy",
    "Target",
    "dial_direct",
    "header_block",
]

MAX_HEAD = 64 * 1024
DRAIN_LIMIT = 64 * 1024
# Waiting for a connection slot (docs/webhooks.md "Timeouts and concurrency"): at most this
# long, and at most per-host slots x this factor requests waiting per origin (16 x 64 = 1,024
# by default, more than a host answering in 50 ms gets through in the wait). A request past
# either bound sends nothing; the deliverer puts it off without counting an attempt.
HOST_QUEUE_SECONDS = 5.0
HOST_QUEUE_FACTOR = 64
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SAFE_TARGET = "/?#[]@!$&'()*+,;=:%-._~"
_TARGETS_KEPT = 4096  # parsed URLs remembered (most attempts go to URLs seen before)


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed webhook URL: where to connect and the start of the request."""

    scheme: str
    host: str
    port: int
    head: bytes  # request line, Host (and Authorization from the URL's user info)

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)

    @classmethod
    def parse(cls, url: str) -> Target:
        """Raises :class:`InvalidRequest` for a URL that cannot be a webhook target."""
        problem = target_problem(url)  # the check the API applies to webhook URLs
        if problem is not None:
            raise InvalidRequest(problem)
        try:
            parts = urlsplit(url)
            scheme, host = parts.scheme, parts.hostname or ""
            if ":" not in host:  # a name (or an IPv4 literal): its DNS form, punycode if need be
                host = host.encode("idna").decode("ascii")
            port = parts.port if parts.port is not None else _DEFAULT_PORTS[scheme]
        except ValueError as exc:  # what target_problem let through (it should not)
            raise InvalidRequest(str(exc)) from exc
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        if not target.isascii() or any(c <= " " or c == "\x7f" for c in target):
            target = quote(target, safe=_SAFE_TARGET)
        name = f"[{host}]" if ":" in host else host
        authority = name if port == _DEFAULT_PORTS[scheme] else f"{name}:{port}"
        head = f"POST {target} HTTP/1.1\r\nHost: {authority}\r\n"
        if parts.username is not None:
            secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            head += f"Authorization: Basic {base64.b64encode(secret.encode()).decode()}\r\n"
        return cls(scheme=scheme, host=host, port=port, head=head.encode())


_names_ok: set[str] = set()


def header_block(headers: Mapping[str, str]) -> bytes:
    """``Name: value`` lines; a name or value that could split the request is refused
    (:class:`InvalidRequest`)."""
    out = []
    for name, value in headers.items():
        if name not in _names_ok:
            if not HEADER_NAME.fullmatch(name):
                raise InvalidRequest(f"header {name!r} cannot be sent")
            if len(_names_ok) < 1024:
                _names_ok.add(name)
        if "\r" in value or "\n" in value or "\0" in value:
            raise InvalidRequest(f"header {name!r} cannot be sent")
        out.append(f"{name}: {value}\r\n")
    return "".join(out).encode()


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reusable = False
        self.answered = False  # any byte of an answer to the current request
        self._parser = httptools.HttpResponseParser(self)
        self._fut: asyncio.Future[Response] | None = None
        self._keep = 0
        self._reset()

    # -- asyncio ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._fut is None or self._fut.done():  # nothing was asked: a broken server
            self.close()
            return
        self.answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ResponseError("the server switched protocols"))
            return
        except httptools.HttpParserError as exc:
            self._fail(ResponseError(f"bad response: {exc}"))
            return
        if not self._headers_done:  # all of it was head; httptools only calls on_header
            self._head_size += len(data)  # once a header is whole, so count here
            if self._head_size > MAX_HEAD:
                self._fail(ResponseError("response head too large"))

    def eof_received(self) -> bool | None:
        self.closed = True  # not to be taken from the pool any more
        return None  # the transport closes itself (connection_lost follows)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        fut = self._fut
        if fut is None or fut.done():
            return
        if self._headers_done and self._until_eof:  # a body that ends with the connection
            self._finish(keep_alive=False)
        else:
            reason = f": {exc}" if exc else ""
            fut.set_exception(ResponseError(f"connection closed before the response{reason}"))

    # -- httptools ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._fut is None or self._fut.done():  # more than the one answer asked for
            self._fail(ResponseError("unexpected data after the response"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > MAX_HEAD:
            self._fail(ResponseError("response head too large"))
            return
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        h = self._headers
        self._until_eof = "content-length" not in h and "transfer-encoding" not in h

    def on_body(self, body: bytes) -> None:
        room = self._keep - len(self._body)
        if room > 0:
            self._body += body[:room]
        self._seen += len(body)
        if self._seen > self._keep + DRAIN_LIMIT:  # not worth draining: drop the connection
            self._finish(keep_alive=False)
            self.close()

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue, 103): the real one follows
            self._reset()
            return
        self._finish(keep_alive=self._parser.should_keep_alive())

    # -- use ----------------------------------------------------------------------------

    def request(self, data: bytes, keep: int, deadline: float) -> asyncio.Future[Response]:
        """Send ``data``; the answer, or TimeoutError at ``deadline`` (loop time)."""
        assert self.transport is not None
        if self.closed or self.transport.is_closing():
            raise ResponseError("connection closed before the request")
        self._reset()
        self.answered = False
        self.reusable = False
        self._keep = keep
        loop = asyncio.get_running_loop()
        fut = self._fut = loop.create_future()
        timer = loop.call_at(deadline, _expire, fut)
        fut.add_done_callback(lambda _: timer.cancel())
        self.transport.write(data)
        return fut

    def _reset(self) -> None:
        """The state of one answer (an interim 1xx starts it again)."""
        self._headers: dict[str, str] = {}
        self._head_size = 0  # bytes of data received while the head was unfinished
        self._header_bytes = 0  # bytes of the headers httptools has handed us whole
        self._headers_done = False
        self._until_eof = False
        self._body = bytearray()
        self._seen = 0

    def _finish(self, *, keep_alive: bool) -> None:
        fut = self._fut
        if fut is None or fut.done():
            return
        self.reusable = keep_alive and not self.closed
        fut.set_result(
            Response(self._parser.get_status_code(), dict(self._headers), bytes(self._body))
        )

    def _fail(self, exc: Exception) -> None:
        if self._fut is not None and not self._fut.done():
            self._fut.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


Dial = Callable[[asyncio.Protocol, Target, str, ssl.SSLContext | None], Awaitable[None]]
"""``dial(protocol, target, address, tls)``: connect ``protocol`` (it gets
``connection_made``) to ``address:target.port``, one of the addresses ``connect`` returned for
``target``; with ``tls``, TLS over it for ``target.host`` (SNI and the certificate check). An
:class:`OSError` (refused, unreachable, TLS handshake) lets the pool try the next address; a
:class:`ConnectError` ends the attempt to connect at once (no other address can help)."""


async def dial_direct(
    protocol: asyncio.Protocol, target: Target, address: str, tls: ssl.SSLContext | None
) -> None:
    """The default :data:`Dial`: a TCP connection straight to the address."""
    loop = asyncio.get_running_loop()
    await loop.create_connection(
        lambda: protocol,
        address,
        target.port,
        ssl=tls,
        server_hostname=target.host if tls is not None else None,
    )


class _Slots:
    """A counting limit whose waiters give up at a deadline: what ``asyncio.Semaphore`` under
    ``asyncio.timeout_at`` does, without a timeout context per wait (a backlog to one host
    waits here all the time). A freed slot is handed to the oldest waiter still waiting."""

    __slots__ = ("_free", "_waiters", "waiting")

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.waiting = 0  # waiters still waiting (the deque also holds ones that gave up)

    async def take(self, deadline: float) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        self.waiting += 1
        timer = loop.call_at(deadline, _expire, fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.give()  # handed a slot, but leaving (cancelled meanwhile): pass it on
            raise
        finally:
            self.waiting -= 1
            timer.cancel()

    def give(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():  # skip the ones that timed out or were cancelled
                fut.set_result(None)
                return
        self._free += 1


@dataclass(slots=True)
class _Origin:
    slots: _Slots
    idle: deque[_Connection] = field(default_factory=deque)
    active: int = 0


class HTTP1Pool:
    """Keep-alive HTTP/1.1 connections for webhook POSTs: the default
    :class:`deliverers.transport.Transport`."""

    def __init__(
        self,
        *,
        limit: int = 256,
        per_host: int = 16,
        idle_seconds: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
        queue_seconds: float = HOST_QUEUE_SECONDS,
        queue_limit: int | None = None,
        dial: Dial = dial_direct,
    ) -> None:
        """``idle_seconds``: how long an unused connection is kept; below the usual server
        keep-alive timeouts (5 s for Node.js and uvicorn), so the server rarely closes one
        first. ``queue_seconds``: the longest wait for a slot; ``queue_limit``: the most
        requests waiting for one origin (default ``per_host * 64``). ``dial``: how a new
        connection to a checked address is made (:data:`Dial`)."""
        self._dial = dial
        self._slots = _Slots(limit)
        self._per_host = per_host
        self.queue_seconds = queue_seconds
        self._queue_limit = per_host * HOST_QUEUE_FACTOR if queue_limit is None else queue_limit
        self._idle_seconds = idle_seconds
        self._ssl = ssl_context
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self._targets: dict[str, Target] = {}
        self._next_prune = 0.0
        self._closed = False

    async def send(
        self, url: str, headers: Mapping[str, str], body: bytes, *, connect: Connect,
        time_limit: float, keep: int,
    ) -> Response:  # fmt: skip
        """:meth:`deliverers.transport.Transport.send`: the URL parsed (and remembered) and
        the headers checked, then :meth:`post`."""
        target = self._targets.get(url)
        if target is None:
            target = Target.parse(url)
            if len(self._targets) >= _TARGETS_KEPT:
                self._targets.clear()
            self._targets[url] = target
        head = header_block(headers)
        return await self.post(
            target, head, body, connect=connect, time_limit=time_limit, keep=keep
        )

    async def post(
        self, target: Target, headers: bytes, body: bytes, *, connect: Connect,
        time_limit: float, keep: int = 256,
    ) -> Response:  # fmt: skip
        """POST ``body`` to a parsed target with the ``headers`` block (see
        :func:`header_block`); raises the errors of :mod:`deliverers.transport`: HostBusy (no
        slot within the queue bounds, nothing sent), TransportTimeout (``time_limit`` after the
        slots were taken), ConnectError (and whatever else ``connect`` raises), ResponseError."""
        key = target.origin
        origin = self._origins.get(key)
        if origin is None:
            origin = self._origins[key] = _Origin(_Slots(self._per_host))
        if origin.slots.waiting >= self._queue_limit:
            raise HostBusy(f"the queue for this host is full ({self._queue_limit} waiting)")
        data = b"%s%sContent-Length: %d\r\n\r\n%s" % (target.head, headers, len(body), body)
        loop = asyncio.get_running_loop()
        queued_until = loop.time() + self.queue_seconds
        origin.active += 1
        try:
            # The host's slot first: requests queued for one slow host must not hold the
            # process-wide slots that other hosts need.
            try:
                await origin.slots.take(queued_until)
            except TimeoutError:
                raise HostBusy("no free connection slot for this host in time") from None
            try:
                try:
                    await self._slots.take(queued_until)
                except TimeoutError:
                    raise HostBusy("no free connection slot in time") from None
                try:
                    # The time limit starts here: the connect and the exchange, not the
                    # queue. The common case (a kept connection) arms one timer, on the answer.
                    deadline = loop.time() + time_limit
                    try:
                        return await self._exchange(target, origin, data, connect, keep, deadline)
                    except TimeoutError:
                        raise TransportTimeout(f"no answer within {time_limit:g} s") from None
                finally:
                    self._slots.give()
            finally:
                origin.slots.give()
        finally:
            origin.active -= 1
            if origin.active == 0 and not origin.idle and self._origins.get(key) is origin:
                del self._origins[key]  # nothing going on there: forget it

    async def _exchange(
        self, target: Target, origin: _Origin, data: bytes, connect: Connect, keep: int,
        deadline: float,
    ) -> Response:  # fmt: skip
        conn = self._take_idle(origin)
        while True:
            reused = conn is not None
            if conn is None:
                async with asyncio.timeout_at(deadline):
                    conn = await self._open(target, connect, deadline)
            try:
                answer = await conn.request(data, keep, deadline)
            except ResponseError:
                conn.close()
                if reused and not conn.answered:  # closed by the server as we wrote: again
                    conn = None
                    continue
                raise
            except BaseException:  # cancelled (the timeout): the exchange is cut off
                conn.close()
                raise
            self._release(origin, conn)
            return answer

    async def _open(self, target: Target, connect: Connect, deadline: float) -> _Connection:
        try:
            addresses = await connect(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise ConnectError(str(exc) or type(exc).__name__) from exc
        tls: ssl.SSLContext | None = None
        if target.scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        loop = asyncio.get_running_loop()
        failure: OSError | None = None
        for i, address in enumerate(addresses):
            # each address gets an equal share of the time left, so one that never answers
            # (a black-holed IPv6 route) does not use it all
            share = (deadline - loop.time()) / (len(addresses) - i)
            conn = _Connection()
            try:
                async with asyncio.timeout(share if i < len(addresses) - 1 else None):
                    await self._dial(conn, target, address, tls)
                return conn
            except TimeoutError as exc:
                failure = OSError(f"connect to {address} timed out")
                failure.__cause__ = exc
            except OSError as exc:
                failure = exc
        raise ConnectError(str(failure) if failure else f"{target.host} has no address")

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        now = asyncio.get_running_loop().time()
        while origin.idle:
            conn = origin.idle.pop()  # the newest: the others age out
            fresh = now - conn.idle_since < self._idle_seconds
            if (
                fresh
                and not conn.closed
                and conn.transport is not None
                and not conn.transport.is_closing()
            ):
                return conn
            conn.close()
        return None

    def _release(self, origin: _Origin, conn: _Connection) -> None:
        now = asyncio.get_running_loop().time()
        if conn.reusable and not conn.closed and not self._closed:
            if len(origin.idle) >= self._per_host:
                origin.idle.popleft().close()
            conn.idle_since = now
            origin.idle.append(conn)
        else:
            conn.close()
        if now >= self._next_prune:
            self._next_prune = now + self._idle_seconds
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Close connections idle too long; forget origins with nothing going on."""
        for key, origin in list(self._origins.items()):
            while origin.idle and (
                origin.idle[0].closed or now - origin.idle[0].idle_since >= self._idle_seconds
            ):
                origin.idle.popleft().close()
            if not origin.idle and origin.active == 0:
                del self._origins[key]

    async def aclose(self) -> None:
        self._closed = True
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.popleft().close()
        self._origins.clear()
