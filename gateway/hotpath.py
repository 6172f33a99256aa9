"""The hot task routes served straight from ASGI, in front of Litestar.

Create, claim, heartbeat, abandon, nack and result are most of a deployment's traffic. Their
handlers already decode and encode with msgspec themselves; what remained was Litestar's
per-request machinery (routing, the request object, dependency resolution, the response
pipeline), about a third of the gateway's CPU per request (docs/performance.md). :class:`HotPath`
recognises these six ``POST`` routes by their path, runs the *same* handler functions of
:class:`gateway.routes.tasks.TaskController` with a small request object, and answers with the
same bodies, headers and errors; everything else — other methods and paths, OpenAPI — goes to
the Litestar app unchanged. The request-id/access-log middleware wraps both.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple, cast

import msgspec
from litestar import Litestar, Response
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Message,
    Receive,
    Scope,
    Send,
)

from codeq.errors import CodeQError
from codeq.ids import is_task_id
from codeq.tracing import Tracing
from gateway.errors import handle_codeq_error, handle_http, handle_unexpected
from gateway.middleware import BodyLimits, RequestIdMiddleware, route_template
from gateway.routes.tasks import TaskController
from gateway.state import note

__all__ = ["HotPath"]

log = logging.getLogger("codeq.gateway")

_PREFIX = "/v1/codeq/tasks"
_ROUTE = "codeq.hot_route"  # the scope key of the route found by HotPath.__call__
_encoder = msgspec.json.Encoder()
_JSON = (b"content-type", b"application/json")
_ACTIONS = {
    "heartbeat": TaskController.heartbeat,
    "abandon": TaskController.abandon,
    "nack": TaskController.nack,
    "result": TaskController.result,
}
Handler = Callable[..., Awaitable[Response[Any]]]


class _Headers:
    __slots__ = ("_raw",)

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self._raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower().encode()
        for k, v in self._raw:
            if k == key:
                return v.decode("latin-1")
        return default


class _TooLarge(Exception):
    pass


class HotRequest:
    """What the task handlers use of a request: headers, the body, ``receive``, the app."""

    __slots__ = ("_body", "_limit", "app", "headers", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive, app: Litestar, limit: int) -> None:
        self.scope = scope
        self.receive = receive
        self.app = app
        self.headers = _Headers(scope["headers"])
        self._limit = limit
        self._body: bytes | None = None

    async def body(self) -> bytes:
        if self._body is not None:
            return self._body
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self._limit:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":  # the client went away
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._limit:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        self._body = b"".join(chunks)
        return self._body


class _Route(NamedTuple):
    handler: Handler
    task_id: str | None
    template: str  # as Litestar's router names it, for metrics and span names


def _route(path: str) -> _Route | None:
    """The handler, task id and template of a hot ``POST`` path, or ``None``."""
    if not path.startswith(_PREFIX):
        return None
    rest = path[len(_PREFIX) :]
    if rest in ("", "/"):
        return _Route(TaskController.create.fn, None, _PREFIX)
    if rest == "/claim":
        return _Route(TaskController.claim.fn, None, f"{_PREFIX}/claim")
    parts = rest.split("/")  # "", task id, action
    if len(parts) == 3 and parts[1] and parts[1] != "claim" and parts[2] in _ACTIONS:
        action = parts[2]
        return _Route(_ACTIONS[action].fn, parts[1], f"{_PREFIX}/{{task_id}}/{action}")
    return None


class HotPath:
    """ASGI app: the hot task routes directly, everything else through ``app``."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        settings = app.state.gateway.settings
        self.limit = settings.max_body_bytes
        # The same middleware as the Litestar routes, with the same body limits: a hostile
        # body gets the same answer on either path.
        self._hot = RequestIdMiddleware(
            self._serve, metrics=app.state.gateway.metrics, limits=BodyLimits.of(settings)
        )
        self.tracing: Tracing = app.state.gateway.tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        found = _route(scope["path"]) if scope.get("method") == "POST" else None
        target: ASGIApp = self.app
        if found is not None:
            # Routed once, here: _serve takes the route from the scope, and the template is
            # where the access log, the metrics and the span look for it (as Litestar sets it).
            raw = cast(dict[str, Any], scope)
            raw["path_template"] = found.template
            raw[_ROUTE] = found
            target = self._hot
        if not self.tracing.enabled:
            await target(scope, receive, send)
            return
        await self._traced(target, scope, receive, send)

    async def _traced(self, target: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """A server span per request, continuing the caller's ``traceparent``."""
        parent = _Headers(scope["headers"]).get("traceparent")
        method = scope.get("method", "")
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self.tracing.span(f"{method} {scope['path']}", parent=parent, kind="server") as span:
            try:
                await target(scope, receive, send_status)
            finally:
                span.update_name(f"{method} {route_template(scope)}")  # bounded names
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route_template(scope))
                span.set_attribute("http.response.status_code", status)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler, task_id, _ = cast(dict[str, Any], scope)[_ROUTE]
        request = HotRequest(scope, receive, self.app, self.limit)
        if task_id is not None and is_task_id(task_id):  # a hostile id never reaches the log
            note(request, task_id=task_id)
        try:
            if task_id is None:
                response = await handler(None, request)
            else:
                response = await handler(None, request, task_id)
        except CodeQError as exc:
            response = handle_codeq_error(request, exc)  # type: ignore[arg-type]
        except _TooLarge:
            response = handle_http(request, HTTPException(status_code=413))  # type: ignore[arg-type]
        except Exception as exc:
            response = handle_unexpected(request, exc)  # type: ignore[arg-type]
        await _send(send, response)


async def _send(send: Send, response: Response[Any]) -> None:
    status = response.status_code or 200
    content = response.content
    body = content if isinstance(content, bytes) else _encoder.encode(content)
    headers: list[tuple[bytes, bytes]] = [
        (k.lower().encode("latin-1"), str(v).encode("latin-1"))
        for k, v in (response.headers or {}).items()
    ]
    if status != 204:
        headers.append(_JSON)
        headers.append((b"content-length", str(len(body)).encode()))
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": headers,
    }
    await send(start)
    end: HTTPResponseBodyEvent = {
        "type": "http.response.body",
        "body": b"" if status == 204 else body,
        "more_body": False,
    }
    await send(end)
