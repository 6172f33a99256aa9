"""``GET /v1/codeq/webhooks/event-types``: the event-type catalog (:mod:`codeq.catalog`) —
every type an endpoint may receive, when it is sent, the JSON schema of its body and an
example. Any valid token may read it: it is the same for every tenant."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State

from codeq.catalog import EventTypeCatalog, catalog
from gateway.openapi_errors import errors
from gateway.state import gateway_for

__all__ = ["EventTypeController"]


class EventTypeController(Controller):
    path = "/v1/codeq/webhooks/event-types"
    tags = ["webhook endpoints"]  # noqa: RUF012

    @get(
        "/",
        summary="Every event type an endpoint may receive: when it is sent, the JSON schema of "
        "its body, an example (any token)",
        responses=errors(),
    )
    async def list_event_types(self, request: Request[Any, Any, State]) -> EventTypeCatalog:
        await gateway_for(request).anyone(request)
        return catalog()
