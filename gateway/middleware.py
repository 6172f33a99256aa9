"""ASGI middleware: ``X-Request-Id`` on every response and one JSON access-log line per request.

Plain ASGI (not a Litestar middleware class) because it sits on every request's hot path.
The access line has method, route path, status, duration and request id: never headers,
tokens, query strings or bodies.
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

__all__ = ["RequestIdMiddleware", "request_id_of"]

access_log = logging.getLogger("codeq.access")

_SANE = re.compile(rb"^[A-Za-z0-9._\-]{1,128}$")


def request_id_of(scope: Scope) -> str:
    return str(scope.get("state", {}).get("request_id", ""))


class RequestIdMiddleware(MiddlewareProtocol):
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

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
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "requestId": rid.decode(),
                        "method": scope.get("method"),
                        "path": scope.get("path"),
                        "status": status,
                        "durationMs": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
