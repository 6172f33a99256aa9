"""``GET /v1/codeq/whoami``: who a token is and what it may do (any valid token).

The dashboard asks this once after sign-in to know which pages and actions to show; every
action it then takes is still decided by the route it calls, so this answer only hides what
would be refused anyway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Request, get
from litestar.datastructures import State

from codeq.auth import Identity
from codeq.errors import Unauthorized
from gateway.openapi_errors import errors
from gateway.state import gateway_for

__all__ = ["SessionOut", "whoami"]


class SessionOut(msgspec.Struct, kw_only=True, rename="camel"):
    """The caller: its subject and tenant, which sides accept the token (``producer``,
    ``worker``), and whether it is an admin (of its tenant, or of every tenant)."""

    subject: str
    tenant_id: str
    producer: bool
    worker: bool
    admin: bool
    super_admin: bool
    scopes: list[str]
    event_types: list[str]


@get(
    "/v1/codeq/whoami",
    tags=["session"],
    summary="Who the token is: tenant, producer/worker, admin, scopes (any token)",
    responses=errors(),
)
async def whoami(request: Request[Any, Any, State]) -> SessionOut:
    gw = gateway_for(request)
    identity = await gw.anyone(request)  # 401 with the usual message for a bad token
    header = request.headers.get("authorization")
    producer = await _side(gw.auth.for_producer, header)
    worker = await _side(gw.auth.for_worker, header)
    sides = [i for i in (producer, worker) if i is not None] or [identity]
    return SessionOut(
        subject=identity.subject,
        tenant_id=identity.tenant,
        producer=producer is not None,
        worker=worker is not None,
        admin=any(i.is_admin for i in sides),
        super_admin=any(i.is_super_admin for i in sides),
        scopes=sorted({s for i in sides for s in i.scopes}),
        event_types=sorted({t for i in sides for t in i.event_types}),
    )


async def _side(
    authenticate: Callable[[str | None], Awaitable[Identity]], header: str | None
) -> Identity | None:
    """The identity one side (producer or worker) makes of the token, or None if it refuses."""
    try:
        return await authenticate(header)
    except Unauthorized:
        return None
