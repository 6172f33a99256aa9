"""OpenAPI descriptions of the error answers each route can give."""

from __future__ import annotations

from litestar.openapi.datastructures import ResponseSpec

from gateway.schemas import ErrorOut

__all__ = ["errors"]

_TEXT = {
    400: "Invalid request: the message names the field (`invalid_request`)",
    401: "Missing, invalid or expired credentials (`unauthorized`)",
    403: "Not allowed: scope, command not in `eventTypes`, not the lease holder (`not_owner`), "
    "not admin (`forbidden`)",
    404: "Unknown id, or one that belongs to another tenant (`not_found`)",
    409: "Illegal transition (`not_in_progress`, `lease_mismatch`, `idempotency_conflict`)",
    413: "Body, payload, result or artifact larger than its limit (`payload_too_large`)",
    503: "Store unreachable or shutting down; retry after `Retry-After` seconds",
}


def errors(*codes: int) -> dict[int, ResponseSpec]:
    wanted = sorted({401, 503, *codes})
    return {code: ResponseSpec(data_container=ErrorOut, description=_TEXT[code]) for code in wanted}
