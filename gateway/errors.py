"""The one place where errors become HTTP answers: ``{"error": ..., "code": ...}``.

Domain errors carry their status; store outages become 503 with ``Retry-After``; Litestar's
own validation, routing and size errors are reshaped to the same body. Nothing answers with a
stack trace.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import msgspec
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from codeq.errors import CodeQError, RateLimited, StoreUnavailable

__all__ = ["error_json", "error_response", "exception_handlers"]

log = logging.getLogger("codeq.gateway")

_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "unavailable",
}
_MSGSPEC_PATH = re.compile(r" - at `\$(?:\.([^`]*))?`$")


def _body(message: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, "code": code, **extra}


_encoder = msgspec.json.Encoder()


def error_json(status: int, message: str, code: str | None = None) -> bytes:
    """The encoded error body of ``status`` (its usual ``code`` unless one is given), for
    answers sent before Litestar is involved (the body limits and the overload bound in
    :mod:`gateway.middleware`)."""
    return _encoder.encode(_body(message, code or _STATUS_CODES.get(status, "error")))


def _json(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response[Any]:
    return Response(content=body, status_code=status, media_type=MediaType.JSON, headers=headers)


def handle_codeq_error(_: Request[Any, Any, Any] | None, exc: CodeQError) -> Response[Any]:
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if isinstance(exc, StoreUnavailable):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        if exc.outcome_unknown:
            extra["outcomeUnknown"] = True
        log.warning("store unavailable", extra={"error": exc.message})
    elif isinstance(exc, RateLimited):
        # Whole seconds, rounded up: a client that waits that long finds a token.
        seconds = max(1, math.ceil(exc.retry_after))
        headers["Retry-After"] = str(seconds)
        if exc.scope is not None:
            extra["scope"] = exc.scope
        if exc.operation is not None:
            extra["operation"] = exc.operation
        extra["retryAfterSeconds"] = seconds
    status = exc.status if exc.status != 500 else HTTP_500_INTERNAL_SERVER_ERROR
    if status == 500:
        log.error("internal error", extra={"code": exc.code, "error": exc.message})
        return _json(500, _body("internal error", exc.code))
    return _json(status, _body(exc.message, exc.code, **extra), headers)


_MISSING = re.compile(r"missing required field `([^`]+)`")


def _field_message(detail: Any) -> str | None:
    if not isinstance(detail, dict):
        return None
    key, message = detail.get("key"), str(detail.get("message", "invalid value"))
    if message.strip("'\"") == "data":  # Litestar's KeyError text for a missing body
        return "body: required (a JSON object)"
    missing = _MISSING.search(message)
    if missing:  # "Object missing required field `command`" names the field itself
        return f"{missing.group(1)}: required"
    if key == "data":
        key = None  # the body as a whole: the message names the field, or there is none
    match = _MSGSPEC_PATH.search(message)
    if match:
        key = key or match.group(1)
        message = message[: match.start()]
    if key:
        return f"{key}: {message}"
    return message


def validation_message(text: str) -> str:
    """A msgspec validation error's text with the field first: ``priority: Expected `int`...``."""
    return _field_message({"message": text}) or text


def handle_validation(_: Request[Any, Any, Any] | None, exc: ValidationException) -> Response[Any]:
    details = exc.extra if isinstance(exc.extra, list) else [exc.extra] if exc.extra else []
    parts = [m for m in (_field_message(d) for d in details) if m]
    message = "; ".join(parts) if parts else "request body is not valid JSON for this route"
    return _json(400, _body(message, "invalid_request"))


def handle_http(_: Request[Any, Any, Any] | None, exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    code = _STATUS_CODES.get(status, "error")
    if status >= 500:
        log.error("server error", extra={"status": status, "error": exc.detail})
        return _json(status, _body("internal error", "internal"))
    message = exc.detail or code
    if status == 413:
        message = "request body too large"
    return _json(status, _body(message, code), dict(exc.headers or {}))


def handle_unexpected(_: Request[Any, Any, Any] | None, exc: Exception) -> Response[Any]:
    log.exception("unhandled error", exc_info=exc)
    return _json(500, _body("internal error", "internal"))


exception_handlers: dict[type[Exception] | int, Any] = {
    CodeQError: handle_codeq_error,
    ValidationException: handle_validation,
    HTTPException: handle_http,
    Exception: handle_unexpected,
}


def error_response(exc: Exception) -> Response[Any]:
    """The answer to what a handler raised, from the map above (by the exception's class, as
    Litestar looks it up): for the routes the HTTP protocol serves itself (gateway.direct)."""
    for kind in type(exc).__mro__:
        handler = exception_handlers.get(kind)
        if handler is not None:
            answer: Response[Any] = handler(None, exc)
            return answer
    return handle_unexpected(None, exc)  # pragma: no cover - Exception is in the map
