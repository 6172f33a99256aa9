"""Request bodies a handler decodes itself: strictly, with msgspec, straight from the bytes
(Litestar's extraction was ~20 % of a create's CPU), and documented for the OpenAPI document
all the same. Every route that reads a body goes through here; the hot routes' answers, encoded
once, go out through :class:`JsonAnswer`."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.di import Provide
from litestar.types import Receive, Scope, Send

from codeq.errors import InvalidRequest
from gateway.errors import validation_message

__all__ = ["JsonAnswer", "decode_body", "documents", "optional_body"]

AnyRequest = Request[Any, Any, State]


class JsonAnswer:
    """An answer whose JSON body is already encoded, sent as it is: an ASGI app a handler
    returns (annotated ``ASGIApp``), so Litestar passes it through instead of building a
    ``Response`` and then an ``ASGIResponse`` from it (about a tenth of a create's CPU).
    One per request: middleware may change the messages it sends."""

    __slots__ = ("_body", "_start")

    def __init__(self, body: bytes, status: int, headers: tuple[tuple[bytes, bytes], ...] = ()):
        self._start: dict[str, Any] = {
            "type": "http.response.start",
            "status": status,
            "headers": [*_framing(body, status), *headers],
        }
        self._body: dict[str, Any] = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(self._start)  # type: ignore[arg-type]
        await send(self._body)  # type: ignore[arg-type]

    def parts(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body: what the two messages carry (gateway.direct writes them
        without the messages)."""
        return self._start["status"], self._start["headers"], self._body["body"]


def _framing(body: bytes, status: int) -> list[tuple[bytes, bytes]]:
    if status == 204:  # no content, and no Content-Length (RFC 9110 8.6)
        return []
    return [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]


def decode_body(raw: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    """The body as ``decoder`` types it, strictly (no ``"5"`` for ``5``); 400 naming the field."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(validation_message(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"body: not valid JSON ({exc})") from None


async def optional_body(request: AnyRequest, decoder: msgspec.json.Decoder[Any]) -> Any:
    """A body that may be absent, empty or ``null`` (then ``None``), decoded strictly."""
    raw = await request.body()
    if not raw.strip():
        return None
    return decode_body(raw, decoder)


def documents(body: type[Any]) -> dict[str, Provide]:
    """An OpenAPI description of a body the handler decodes itself (msgspec, straight from
    the bytes: Litestar's extraction was ~20 % of a create's CPU). Litestar documents the
    ``data`` of a route's dependencies; this one is never resolved, as no handler asks for it.
    """

    def body_doc(data: Any) -> None:
        raise AssertionError("documentation only")  # pragma: no cover

    body_doc.__annotations__ = {"data": body, "return": None}  # the real type, not a string
    return {"body_doc": Provide(body_doc, sync_to_thread=False)}
