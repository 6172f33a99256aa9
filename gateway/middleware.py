"""ASGI middleware: ``X-Request-Id`` on every response, one JSON access-log line per request
and the request-duration histogram by route template.

Plain ASGI (not a Litestar middleware class) because it sits on every request's hot path.
The access line has method, route path, status, duration and request id: never headers,
tokens, query strings or bodies. The histogram's ``route`` label is the route's template
(``/v1/codeq/tasks/{task_id}/result``), never the raw path, so its series stay bounded.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any, cast

from litestar.enums import ScopeType
from litestar.middleware import MiddlewareProtocol
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from codeq.metrics import Metrics

__all__ = ["RequestIdMiddleware", "request_id_of", "route_template"]

access_log = logging.getLogger("codeq.access")

_SANE = re.compile(rb"^[A-Za-z0-9._\-]{1,128}$")


def request_id_of(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", ""))


def _noted(scope: Scope) -> dict[str, str]:
    """``tenant`` and ``taskId`` when the handler noted them (gateway.state.note)."""
    state = scope.get("state", {})
    out = {}
    if "tenant" in state:
        out["tenant"] = str(state["tenant"])
    if "task_id" in state:
        out["taskId"] = str(state["task_id"])
    return out


def route_template(scope: Scope) -> str:
    """The template of the route that served a request (set by Litestar's router, or by
    gateway.hotpath for the routes it serves); ``unmatched`` when none did."""
    return str(scope.get("path_template") or "unmatched")


class RequestIdMiddleware(MiddlewareProtocol):
    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        rid = b""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                rid = value if _SANE.match(value) else b""
                break
        if not rid:
            rid = os.urandom(16).hex().encode()
        cast(dict[str, Any], scope).setdefault("state", {})["request_id"] = rid.decode()
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            if self.metrics is not None and status:  # 0: the client left before an answer
                self.metrics.observe_http(
                    scope.get("method", ""), route_template(scope), status, elapsed
                )
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
