"""uvicorn's HTTP/1.1 protocol (httptools), answering in the API's JSON error shape, and
shedding load before it costs anything.

A request the HTTP parser itself refuses (a negative or malformed ``Content-Length``, two
different ones, a broken request line or header) never reaches the app: uvicorn answers it
400 with a plain-text body. This subclass sends the same status with the JSON error every other
400 has (``{"error", "code": "invalid_request"}``), so a client has one error shape to read.

uvicorn writes a response's head and its body in two sends, two TCP segments: the head is
held here and goes out with the body's first bytes, one send (about a tenth of the process's
CPU per small request was the second send).

A request that arrives while the process works on ``maxInFlightRequests`` others
(:class:`gateway.middleware.InFlight`, found on the app's state) is answered 503
``overloaded`` here, from bytes made once, without the task, the request object and the
middleware a request costs: shedding has to be much cheaper than serving, or at twice the
load a process can take the shed requests alone would fill it. The middleware sheds the same
way (same decision, same body) for a request that slips past this check in the same instant.

The hot task routes (create, claim, heartbeat, abandon, nack, result) are served from here
without ASGI by :mod:`gateway.direct` (``app.state.direct``; off with ``directRoutes: false``
or tracing on); every other request starts the app's ASGI task as uvicorn does.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import uvicorn
from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from codeq.ids import random_hex
from gateway.direct import DirectRoutes
from gateway.errors import error_json
from gateway.middleware import NEVER_SHED, OVERLOADED_BODY, InFlight, request_id_from

__all__ = ["JsonErrorHttpToolsProtocol"]

_SHED_HEAD = (
    b"content-type: application/json\r\n"
    + b"content-length: %d\r\n" % len(OVERLOADED_BODY)
    + b"retry-after: 1\r\n"
)


class _HeadWithBody:
    """A cycle's transport that holds the response head until the body's first bytes and
    writes both at once. An interim ``100 Continue`` passes at once; closing flushes."""

    __slots__ = ("_held", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started and not data.startswith(b"HTTP/1.1 100 "):
            self._started = True
            self._held = data  # the head: it waits for the body
            return
        if self._held is not None:
            data, self._held = self._held + data, None
        self._transport.write(data)

    def close(self) -> None:
        if self._held is not None:
            self._transport.write(self._held)
            self._held = None
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self._transport, name)


def _state_of(app: Any, name: str) -> Any:
    """``app.state.<name>`` (the in-flight count, the direct routes), through any wrapper
    uvicorn put around the app; None when it has none."""
    for _ in range(4):
        state = getattr(app, "state", None)
        if state is not None and getattr(state, name, None) is not None:
            return getattr(state, name)
        app = getattr(app, "app", None)
    return None


def uvicorn_problem(protocol: type = HttpToolsProtocol, config: type = uvicorn.Config) -> str:
    """What the installed uvicorn lacks of what this protocol uses ("" when nothing): it
    overrides ``_start_asgi_task`` and reads ``Config.reset_contextvars``, both from uvicorn
    0.45 (pyproject's lower bound). Without them every connection would fail as it opens."""
    missing = []
    if not callable(getattr(protocol, "_start_asgi_task", None)):
        missing.append("HttpToolsProtocol._start_asgi_task")
    if "reset_contextvars" not in inspect.signature(config).parameters:
        missing.append("Config(reset_contextvars=...)")
    if not missing:
        return ""
    return (
        f"uvicorn {getattr(uvicorn, '__version__', '?')} lacks {', '.join(missing)}: the "
        "gateway's HTTP protocol needs uvicorn >= 0.45 (pip install 'uvicorn[standard]>=0.45')"
    )


if _problem := uvicorn_problem():  # refuse at start-up, not on every connection
    raise ImportError(_problem)


_MESSAGE = (
    "malformed HTTP request: the request line or a header (Content-Length, "
    "Transfer-Encoding, ...) cannot be parsed"
)


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        found = _state_of(self.app, "in_flight")
        self._in_flight: InFlight | None = found if isinstance(found, InFlight) else None
        found = _state_of(self.app, "direct")
        # a context of its own per request (uvicorn's reset_contextvars) only through ASGI
        direct = isinstance(found, DirectRoutes) and not self.config.reset_contextvars
        self._direct: DirectRoutes | None = found if direct else None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        in_flight = self._in_flight
        if in_flight is None or cycle.scope["path"] in NEVER_SHED or not in_flight.sheds():
            direct = self._direct
            route = (  # not the app uvicorn swaps in past its own limit_concurrency
                None
                if direct is None or app is not self.app
                else direct.match(cycle.scope["method"], cycle.scope["path"])
            )
            if direct is not None and route is not None:  # served here, without ASGI
                task = self.loop.create_task(direct.serve(cycle, *route))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
                return
            if cycle.scope["method"] != "HEAD":  # a HEAD answer has no body to wait for
                cycle.transport = _HeadWithBody(self.transport)  # type: ignore[assignment]
            super()._start_asgi_task(cycle, app)
            return
        head = [b"HTTP/1.1 503 Service Unavailable\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        rid = request_id_from(cycle.scope) or random_hex(16).encode()
        head += [_SHED_HEAD, b"x-request-id: ", rid, b"\r\n"]
        if not cycle.keep_alive:
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        if cycle.scope["method"] != "HEAD":  # a HEAD answer has no body (RFC 9110 9.3.2)
            head.append(OVERLOADED_BODY)
        cycle.response_complete = True  # the request's body, as it arrives, is dropped
        self.transport.write(b"".join(head))
        if cycle.keep_alive:
            # the connection serves its next request; from the loop, not from here, when
            # requests are pipelined (one frame per shed request would overflow the stack)
            if self.pipeline:
                self.loop.call_soon(self.on_response_complete)
            else:
                self.on_response_complete()
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # the rest of an answered request's body (a shed one, say) cancelled the keep-alive
        # timer and nothing would arm it again: the connection would stay open forever
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.response_complete
            and not self.pipeline
            and self.timeout_keep_alive_task is None
            and not self.transport.is_closing()
        ):
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def send_400_response(self, msg: str) -> None:
        body = error_json(400, _MESSAGE)
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
