"""The hot task routes, served by the HTTP protocol itself instead of through ASGI (issue 19).

A create cost one gateway process ~190 µs of CPU through uvicorn's ASGI cycle, the
middleware's ASGI wrapping and Litestar's router, request and response objects; served here,
~130 (docs/performance.md §17). The routes workers and producers call most are served from
the request uvicorn's protocol parsed, with the answer written in one piece.

One way to each thing, still:
- **One route table: Litestar's.** The routes served here are Litestar's own, marked
  ``opt={"direct": True}``; the function called is the handler Litestar calls, with a
  :class:`DirectRequest`, which is the part of Litestar's ``Request`` those handlers use
  (``scope``, ``body()``, ``receive()``, ``app``). Anything that does not match exactly
  (another method, a trailing slash, an empty id) goes the usual way, where Litestar answers.
- **One set of request checks.** The request id, the in-flight place, the body limits, the
  duration histogram and the access line are the middleware's own functions
  (gateway.middleware); a handler's exception becomes its answer through the same map
  (gateway.errors.error_response); the answer's bytes are what uvicorn writes for the same
  ASGI messages (tests/test_direct.py compares both paths for every case of these routes).
- With tracing on, nothing is served here: the middleware makes the request spans.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple, cast

from litestar import Litestar
from litestar._asgi.utils import is_valid_host  # the router's own rule for the Host header
from litestar.exceptions import ClientException
from litestar.types import Message, Receive, Scope
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

from codeq.metrics import Metrics
from gateway.bodies import JsonAnswer
from gateway.errors import error_json, error_response
from gateway.middleware import (
    BodyLimits,
    Head,
    InFlight,
    Problem,
    begin,
    count_in,
    finish,
    read_body,
)

__all__ = ["DirectRequest", "DirectRoutes"]

log = logging.getLogger("codeq.gateway")

_Parts = tuple[int, list[tuple[bytes, bytes]], bytes]


class DirectRequest:
    """What the handlers of direct routes use of Litestar's ``Request``: the scope, the body
    (read and checked already), ``receive`` (a long poll waits on it for the client to leave)
    and the app (its state holds the gateway)."""

    __slots__ = ("_body", "app", "receive", "scope")

    def __init__(self, scope: Scope, body: bytes, receive: Receive, app: Litestar) -> None:
        self.scope = scope
        self._body = body
        self.receive = receive
        self.app = app

    async def body(self) -> bytes:
        return self._body


class _Route(NamedTuple):
    template: str  # as Litestar names it: /v1/codeq/tasks/{task_id}/result
    segments: tuple[str | None, ...]  # the path split at "/", None where a parameter is
    names: tuple[str, ...]  # the parameters' names, in order
    call: Callable[..., Awaitable[Any]]  # the handler, bound as Litestar calls it


def _served_alike(handler: Any, template: str) -> None:
    """Refuse a direct route Litestar would wrap in more than the app does for every route:
    guards, hooks, middleware, response headers or cookies of its own would not run here."""
    extra = {
        "guards": handler.resolve_guards(),
        "middleware": handler.resolve_middleware(),
        "response headers": handler.resolve_response_headers(),
        "response cookies": handler.resolve_response_cookies(),
        "before_request": handler.resolve_before_request(),
        "after_request": [x.after_request for x in handler.ownership_layers if x.after_request],
        "after_response": handler.resolve_after_response(),
    }
    found = [name for name, value in extra.items() if value]
    if found:
        raise ValueError(f"direct route {template} has {', '.join(found)}: not served alike")


class DirectRoutes:
    """The routes the protocol serves itself (:meth:`match`, then :meth:`serve`)."""

    def __init__(
        self,
        app: Litestar,
        routes: list[tuple[str, _Route]],
        *,
        limits: BodyLimits,
        metrics: Metrics | None,
        in_flight: InFlight | None,
    ) -> None:
        self._app = app
        self._exact: dict[tuple[str, str], _Route] = {}
        self._templated: dict[tuple[str, int], list[_Route]] = {}
        for method, route in routes:
            if not route.names:
                self._exact[method, route.template] = route
            else:
                self._templated.setdefault((method, len(route.segments)), []).append(route)
        self._limits = limits
        self._metrics = metrics
        self._in_flight = in_flight

    @classmethod
    def of(
        cls,
        app: Litestar,
        *,
        limits: BodyLimits,
        metrics: Metrics | None,
        in_flight: InFlight | None,
    ) -> DirectRoutes:
        """The routes of ``app`` whose handlers are marked ``opt={"direct": True}``."""
        found: list[tuple[str, _Route]] = []
        for route in app.routes:
            for method, entry in getattr(route, "route_handler_map", {}).items():
                handler = entry[0] if isinstance(entry, tuple) else entry
                if not handler.opt.get("direct"):
                    continue
                segments: list[str | None] = []
                names: list[str] = []
                for part in route.path_format.split("/"):
                    if part.startswith("{"):
                        segments.append(None)
                        names.append(part.strip("{}"))
                    else:
                        segments.append(part)
                _served_alike(handler, route.path_format)
                route_ = _Route(route.path_format, tuple(segments), tuple(names), handler.fn)
                found.append((method, route_))
        routes = cls(app, found, limits=limits, metrics=metrics, in_flight=in_flight)
        for route in app.routes:  # Litestar prefers a fixed segment to a parameter: so must we
            for method, entry in getattr(route, "route_handler_map", {}).items():
                handler = entry[0] if isinstance(entry, tuple) else entry
                taken = routes.match(method, route.path_format)
                if not handler.opt.get("direct") and taken is not None:
                    raise ValueError(
                        f"{method} {route.path_format} would be served as the direct route "
                        f"{taken[0].template}"
                    )
        return routes

    def __len__(self) -> int:
        return len(self._exact) + sum(len(r) for r in self._templated.values())

    def match(self, method: str, path: str) -> tuple[_Route, dict[str, str]] | None:
        """The route that serves exactly this method and path, with its parameters."""
        route = self._exact.get((method, path))
        if route is not None:
            return route, {}
        segments = path.split("/")
        for route in self._templated.get((method, len(segments)), ()):
            values: list[str] = []
            for want, got in zip(route.segments, segments, strict=True):
                if want is None:
                    if not got:
                        break
                    values.append(got)
                elif want != got:
                    break
            else:
                return route, dict(zip(route.names, values, strict=True))
        return None

    async def serve(
        self, cycle: RequestResponseCycle, route: _Route, params: dict[str, str]
    ) -> None:
        """Serve one request: what the middleware and Litestar would do, in one coroutine."""
        scope: Any = cycle.scope
        head = Head.of(scope)
        rid = begin(scope, head)
        scope["path_template"] = route.template
        scope["path_params"] = params
        if self._in_flight is not None:  # the protocol did not shed it: it counts
            count_in(scope, self._in_flight)
        started = time.perf_counter()
        status = 0
        receive = cast(Receive, cycle.receive)  # uvicorn's types, the same messages
        try:
            body = await read_body(self._limits, receive, head)
            if body is None:
                return  # the client left
            if isinstance(body, Problem):
                parts = JsonAnswer(error_json(body.status, body.message), body.status).parts()
            elif head.host is not None and not is_valid_host(head.host):  # as Litestar's router
                answered = error_response(ClientException("Invalid host header"))
                parts = await _captured(answered.to_asgi_response(None, cast(Any, None)), scope)
            else:
                request = DirectRequest(scope, body, receive, self._app)
                try:
                    answer = await route.call(request=request, **params)
                    if isinstance(answer, JsonAnswer):
                        parts = answer.parts()
                    else:  # pragma: no cover - direct handlers answer with a JsonAnswer
                        parts = await _captured(answer, scope)
                except Exception as exc:  # the same answer Litestar's handlers make
                    response = error_response(exc)  # (its request argument goes unused)
                    parts = await _captured(
                        response.to_asgi_response(None, cast(Any, request)), scope
                    )
            status = await _write(cycle, parts, rid)
        except asyncio.CancelledError:  # shutdown's grace ran out: as uvicorn, no answer
            cycle.transport.close()
            raise
        except Exception:  # a fault of this code (the handler's errors are answered above):
            log.exception("direct route failed")  # what uvicorn answers for a failed app
            if not cycle.response_started and not cycle.disconnected:
                await cycle.send_500_response()
            else:
                cycle.transport.close()
        finally:
            finish(scope, self._metrics, rid, status, started, False)


async def _no_receive() -> Message:  # pragma: no cover - answers do not read
    return {"type": "http.disconnect"}


async def _captured(app: Any, scope: Scope) -> _Parts:
    """What an ASGI answer sends, collected."""
    status = 0
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        else:
            chunks.append(cast(bytes, message.get("body", b"")))

    await app(scope, _no_receive, send)
    return status, headers, b"".join(chunks)


async def _write(cycle: RequestResponseCycle, parts: _Parts, rid: bytes) -> int:
    """Write the answer as uvicorn writes the same two messages (its default headers, the
    answer's, the request id the middleware adds, ``connection: close`` when the connection
    ends), then finish the cycle as uvicorn does. The answer's status (also when the client
    left before it: it was decided)."""
    status, headers, body = parts
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:  # the answer was decided: it counts, as the middleware counts it
        return status
    out = [STATUS_LINE[status]]
    for name, value in cycle.default_headers:
        out += [name, b": ", value, b"\r\n"]
    closes = False
    for name, value in headers:
        name = name.lower()
        if name == b"connection" and b"close" in [t.strip().lower() for t in value.split(b",")]:
            cycle.keep_alive = False
            closes = True
        out += [name, b": ", value, b"\r\n"]
    out += [b"x-request-id: ", rid, b"\r\n"]
    if not cycle.keep_alive and not closes:
        out.append(b"connection: close\r\n")
    out += [b"\r\n", body]
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.transport.write(b"".join(out))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return status
