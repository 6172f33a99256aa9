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
    429: "Rate limited (`rate_limited`); retry after `Retry-After` seconds. The body also "
    "names the limit: `scope`, `operation` and `retryAfterSeconds`",
    503: "Store unreachable or shutting down; retry after `Retry-After` seconds. With "
    "`outcomeUnknown: true` the store got the call but its answer did not come back: the change "
    "may have been made, and a retry is safe with the same `idempotencyKey` (create) or "
    "`leaseId` (a second result or nack answers 409)",
}


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """The ``responses=`` of an authenticated route: ``codes`` plus 401 and 503, each an
    :class:`ErrorOut`. A route that reads a body or parameters should name 400 (Litestar
    documents one for it anyway, in its own shape, unless told otherwise) and, with a body, 413.
    """
    wanted = sorted({401, 503, *codes})
    return {
        # no generated examples: they are random, and the document must be reproducible
        code: ResponseSpec(
            data_container=ErrorOut, description=_TEXT[code], generate_examples=False
        )
        for code in wanted
    }
