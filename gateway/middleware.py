"""ASGI middleware: ``X-Request-Id`` on every response, the request body limits, one JSON
access-log line per request, the request-duration histogram by route template and, with
tracing on, a server span per request.

Plain ASGI (not a Litestar middleware class) because every request of every route goes through
it; it runs once Litestar's router has matched the route, so the route's template is known.

Body limits (:class:`BodyLimits`), checked before any handler or decoder sees the body:

* ``Content-Length`` that is not a plain decimal number (negative, ``1e3``, two different
  values) → 400; one above ``maxBodyBytes`` → 413, before the body is read;
* a body read past ``maxBodyBytes`` (chunked, or a lying length) → 413;
* a ``Content-Type`` other than JSON (``application/json``, ``*/*+json``) on a non-empty
  body → 415; no ``Content-Type`` is accepted as JSON;
* a body that is not UTF-8 → 400 (msgspec would skip the bytes of an ignored field unread);
* arrays and objects nested deeper than ``maxJsonDepth`` → 400 (JSON decoders recurse per
  level: without a limit a deep body ends in a ``RecursionError``).

Overload (:class:`InFlight`): a process works on at most ``maxInFlightRequests`` requests at
once; one more is answered 503 ``overloaded`` with ``Retry-After: 1`` before its body is read,
so under twice the load it can serve, latency stays bounded instead of every request queueing
behind the others. A long poll counts until it starts to wait (:func:`release_in_flight`);
probes and ``/metrics`` are never shed.
The access line has method, route path, status, duration and request id (and the tenant and
task id when known): never headers, tokens, query strings or bodies. The histogram's ``route``
label is the route's template (``/v1/codeq/tasks/{task_id}/result``), never the raw path, so its
series stay bounded; so are span names (``POST /v1/codeq/tasks/{task_id}/result``).

Each step is a function of its own (:class:`Head`, :func:`begin`, :func:`admit`,
:func:`read_body`, :func:`finish`): the hot task routes the HTTP protocol serves without ASGI
(gateway.direct) take the same steps.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

from litestar.enums import ScopeType
from litestar.middleware import MiddlewareProtocol
from litestar.types import (
    ASGIApp,
    HTTPRequestEvent,
    HTTPScope,
    Message,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)
from litestar.utils.scope.state import ScopeState

from codeq.ids import is_task_id, random_hex
from codeq.metrics import Metrics
from codeq.tracing import Tracing
from gateway.errors import error_json
from gateway.json_depth import json_too_deep, too_deep

__all__ = [
    "NEVER_SHED",
    "OVERLOADED_BODY",
    "BodyLimits",
    "Head",
    "InFlight",
    "Problem",
    "RequestIdMiddleware",
    "admit",
    "begin",
    "count_in",
    "finish",
    "header_of",
    "json_too_deep",
    "read_body",
    "release_in_flight",
    "request_id_from",
    "request_id_of",
    "route_template",
]

access_log = logging.getLogger("codeq.access")
log = logging.getLogger("codeq.gateway")

_SANE = re.compile(rb"^[A-Za-z0-9._\-]{1,128}$")


def request_id_of(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", ""))


def _noted(scope: Scope) -> dict[str, str]:
    """``tenant`` and ``taskId`` when the handler noted them (gateway.state.note); else the
    task id of the route's path, when it is one (a hostile id never reaches the log)."""
    state = scope.get("state", {})
    out = {}
    if "tenant" in state:
        out["tenant"] = str(state["tenant"])
    if "task_id" in state:
        out["taskId"] = str(state["task_id"])
    else:
        task_id = scope.get("path_params", {}).get("task_id")
        if isinstance(task_id, str) and is_task_id(task_id):
            out["taskId"] = task_id
    return out


def route_template(scope: Scope) -> str:
    """The template of the route that served a request (set by Litestar's router);
    ``unmatched`` when none did."""
    return str(scope.get("path_template") or "unmatched")


def header_of(scope: Scope, name: bytes) -> str | None:
    """A request header straight from the ASGI scope (``name`` in lower case, as ASGI gives
    names): cheaper than building Litestar's case-insensitive ``Headers`` for one or two."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class BodyLimits(NamedTuple):
    """What a request body may be: ``maxBodyBytes`` and ``maxJsonDepth``."""

    max_bytes: int
    max_depth: int

    @classmethod
    def of(cls, settings: Any) -> BodyLimits:
        return cls(max_bytes=settings.max_body_bytes, max_depth=settings.max_json_depth)


class InFlight:
    """How many requests this process is working on, how many it takes at once, and how
    many it has shed. The middleware counts; the HTTP protocol (gateway.http_protocol) sheds
    before a request costs a task when it can, the middleware otherwise.

    Shedding is said in the log too, at most once per :data:`SHED_NOTE_SECONDS`: the first
    shed request at once, then how many were shed since the last line (a line per shed
    request would cost more than shedding it)."""

    __slots__ = ("_next_note", "_noted", "count", "limit", "shed")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.shed = 0
        self._noted = 0  # `shed` at the last log line
        self._next_note = 0.0  # monotonic time from which the next line may be written

    def sheds(self) -> bool:
        """Whether a request arriving now is shed (and counted as shed); never ask for a
        path in :data:`NEVER_SHED`."""
        if self.count < self.limit:
            return False
        self.shed += 1
        now = time.monotonic()
        if now >= self._next_note:
            self._next_note = now + SHED_NOTE_SECONDS
            log.warning(
                "overloaded: shed %d request(s) with 503 since the last such line, "
                "%d in flight (maxInFlightRequests); add gateway processes or raise the limit",
                self.shed - self._noted,
                self.count,
            )
            self._noted = self.shed
        return True


#: at most one "overloaded" log line per this many seconds and process
SHED_NOTE_SECONDS = 10.0


#: answered however busy the process is: an orchestrator must not restart a loaded process
NEVER_SHED = frozenset({"/healthz", "/readyz", "/metrics"})
#: the body of a shed request's 503 (with ``Retry-After: 1``)
OVERLOADED_BODY = error_json(
    503,
    "overloaded: this gateway process is working on as many requests as it takes "
    "(maxInFlightRequests); retry after Retry-After seconds",
    "overloaded",
)


def request_id_from(scope: Mapping[str, Any]) -> bytes | None:
    """The client's ``X-Request-Id`` when it is 1-128 of ``[A-Za-z0-9._-]`` (echoed), else
    None (one is made)."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            return bytes(value) if _SANE.match(value) else None
    return None


def release_in_flight(scope: Scope) -> None:
    """The request stops counting as in flight (a long poll about to wait: it costs nothing
    while parked). Once per request; the middleware's own release is then a no-op."""
    state = scope.get("state", {})
    if state.pop("in_flight", None) is not None:
        state["in_flight_slot"].count -= 1


_DEFAULT_LIMITS = BodyLimits(max_bytes=1 << 20, max_depth=64)  # the settings' defaults


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def _is_json(media_type: bytes) -> bool:
    essence = media_type.partition(b";")[0].strip().lower()
    return essence == b"application/json" or (
        essence.endswith(b"+json") and essence.count(b"/") == 1
    )


class RequestIdMiddleware(MiddlewareProtocol):
    """Request id, body limits, access log, duration histogram and (``tracing`` on) the
    server span of every HTTP request. ``limits`` default to the settings' defaults."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics | None = None,
        limits: BodyLimits | None = None,
        tracing: Tracing | None = None,
        in_flight: InFlight | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.limits = limits if limits is not None else _DEFAULT_LIMITS
        self.in_flight = in_flight
        # Tracing off (the default): one attribute check per request, nothing imported.
        self.tracing = tracing if tracing is not None and tracing.enabled else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
        elif self.tracing is None:
            await self._handle(scope, receive, send)
        else:
            await self._traced(self.tracing, scope, receive, send)

    async def _traced(
        self, tracing: Tracing, scope: HTTPScope, receive: Receive, send: Send
    ) -> None:
        """The request in a server span continuing the caller's ``traceparent``, named by
        the route's template once the router has found it (bounded names), with the HTTP
        attributes."""
        method = scope.get("method", "")
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with tracing.span(
            method,
            parent=header_of(scope, b"traceparent"),
            kind="server",
            attributes={"http.request.method": method},
        ) as span:
            try:
                await self._handle(scope, receive, send_status)
            finally:
                route = route_template(scope)
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                if status:  # 0: the client left before an answer
                    span.set_attribute("http.response.status_code", status)

    async def _handle(self, scope: HTTPScope, receive: Receive, send: Send) -> None:
        head = Head.of(scope)
        rid = begin(scope, head)
        slot = self.in_flight
        shed = slot is not None and admit(scope, slot)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        try:
            if shed:
                await _send_json(send_with_id, 503, OVERLOADED_BODY, ((b"retry-after", b"1"),))
                return
            body_receive = await _guard_body(scope, self.limits, receive, send_with_id, head)
            if body_receive is not None:
                await self.app(scope, body_receive, send_with_id)
        finally:
            finish(scope, self.metrics, rid, status, started, shed)


class Head(NamedTuple):
    """What the middleware reads from a request's headers, in one pass."""

    rid: bytes  # the client's X-Request-Id when it is sane (request_id_from), else b""
    length: bytes | None  # Content-Length
    media_type: bytes | None  # Content-Type
    chunked: bool  # any Transfer-Encoding
    framing: bytes  # what is wrong with the framing headers, if anything
    host: bytes | None  # the first Host header

    @classmethod
    def of(cls, scope: Scope) -> Head:
        rid = b""
        length: bytes | None = None
        media_type: bytes | None = None
        framing = b""
        chunked = False
        host: bytes | None = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                rid = value if _SANE.match(value) else b""
            elif name == b"host":
                host = value if host is None else host
            elif name == b"content-length":
                if length is not None and value != length:
                    framing = b"two different Content-Length values"
                length = value
            elif name == b"content-type":
                media_type = value
            elif name == b"transfer-encoding":
                chunked = True
        return cls(rid, length, media_type, chunked, framing, host)


def begin(scope: Scope, head: Head) -> bytes:
    """The request's id (the client's when sane, else a new one), noted in its state."""
    rid = head.rid or random_hex(16).encode()
    cast(dict[str, Any], scope).setdefault("state", {})["request_id"] = rid.decode()
    return rid


def admit(scope: Scope, slot: InFlight) -> bool:
    """Count the request as in flight, or say it is shed (True); probes neither shed nor
    count."""
    if scope["path"] in NEVER_SHED:
        return False
    if slot.sheds():
        return True
    count_in(scope, slot)
    return False


def count_in(scope: Scope, slot: InFlight) -> None:
    """The request counts as in flight until :func:`release_in_flight` (once)."""
    slot.count += 1
    state = scope["state"]
    state["in_flight"], state["in_flight_slot"] = True, slot


def finish(
    scope: Scope, metrics: Metrics | None, rid: bytes, status: int, started: float, shed: bool
) -> None:
    """A request is done: its place in flight back, its duration observed (``status`` 0: the
    client left before an answer) and its access-log line."""
    release_in_flight(scope)
    elapsed = time.perf_counter() - started
    if metrics is not None and status:
        route = "overloaded" if shed else route_template(scope)
        metrics.observe_http(str(scope.get("method", "")), route, status, elapsed)
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "request",
            extra={
                "requestId": rid.decode(),
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": status,
                "durationMs": round(elapsed * 1000, 2),
                **_noted(scope),
            },
        )


async def _answer(send: Send, status: int, message: str) -> None:
    await _send_json(send, status, error_json(status, message))


async def _send_json(
    send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Problem(NamedTuple):
    """Why a request body is refused: the status and the message of its JSON error."""

    status: int
    message: str


async def read_body(limits: BodyLimits, receive: Receive, head: Head) -> bytes | Problem | None:
    """The request's body once it is whole and passes every limit; the :class:`Problem` when it
    does not (nothing more is read); ``None`` when the client left while it was read."""
    length = head.length
    if head.framing or (length is not None and not (length.isdigit() and len(length) <= 19)):
        return Problem(400, "Content-Length: expected one non-negative decimal number")
    expected = 0 if length is None else int(length)
    if expected > limits.max_bytes:
        return Problem(413, "request body too large")
    if expected == 0 and not head.chunked:
        return b""  # no body: nothing to check, nothing to read
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None  # the client went away
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limits.max_bytes:
            return Problem(413, "request body too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if body:
        if head.media_type is not None and not _is_json(head.media_type):
            return Problem(415, "Content-Type: expected application/json")
        if not (body.isascii() or _is_utf8(body)):  # JSON is UTF-8 (RFC 8259), even where
            return Problem(400, "body: not valid UTF-8")  # a decoder would skip it
        if await too_deep(body, limits.max_depth):
            deep = f"body: nested deeper than {limits.max_depth} levels (maxJsonDepth)"
            return Problem(400, deep)
    return body


async def _guard_body(
    scope: Scope, limits: BodyLimits, receive: Receive, send: Send, head: Head
) -> Receive | None:
    """The ``receive`` the app should use (replaying the checked body), or ``None`` when the
    request was answered here (or the client left while its body was read)."""
    body = await read_body(limits, receive, head)
    if body is None:
        return None
    if isinstance(body, Problem):
        await _answer(send, body.status, body.message)
        return None
    # What Request.body() answers, without streaming the body a second time
    ScopeState.from_scope(scope).body = body
    if not body:
        return receive
    replayed = False

    async def replay() -> ReceiveMessage:
        nonlocal replayed
        if replayed:
            return await receive()  # after the body: the disconnect, for long polls
        replayed = True
        request: HTTPRequestEvent = {"type": "http.request", "body": body, "more_body": False}
        return request

    return replay
