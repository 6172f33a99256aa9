"""What every handler needs, held by the app: settings, engine, auth, waker, metrics, rate
limits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from litestar.datastructures import State

from codeq.auth import Auth, Identity
from codeq.engine import Engine
from codeq.errors import Forbidden
from codeq.events import EventTail
from codeq.rate_limits import RateGuard
from codeq.settings import Settings
from codeq.store.protocol import Backend
from codeq.tracing import Tracing
from gateway.metrics import Metrics
from gateway.middleware import header_of
from gateway.waker import Waker

__all__ = ["Gateway", "gateway_for", "get_gateway", "note"]


@dataclass
class Gateway:
    settings: Settings
    store: Backend  # each route takes its part: store.deliveries, store.endpoints, ...
    engine: Engine
    auth: Auth
    waker: Waker
    metrics: Metrics
    rate: RateGuard
    tracing: Tracing
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)
    tail: EventTail | None = None  # set by the lifespan while it runs

    async def producer(self, request: Request[object, object, State]) -> Identity:
        identity = await self.auth.for_producer(header_of(request.scope, b"authorization"))
        note(request, tenant=identity.tenant)
        return identity

    async def worker(self, request: Request[object, object, State], scope: str) -> Identity:
        identity = await self.auth.for_worker(header_of(request.scope, b"authorization"))
        note(request, tenant=identity.tenant)
        if not identity.has_scope(scope):
            raise Forbidden(f"the token lacks scope {scope}")
        return identity

    async def anyone(self, request: Request[object, object, State]) -> Identity:
        identity = await self.auth.for_any(header_of(request.scope, b"authorization"))
        note(request, tenant=identity.tenant)
        return identity

    async def admin(self, request: Request[object, object, State]) -> Identity:
        identity = await self.auth.for_any(header_of(request.scope, b"authorization"))
        note(request, tenant=identity.tenant)
        if not identity.is_admin:
            raise Forbidden("admin credentials required")
        return identity


def note(request: Any, *, tenant: str | None = None, task_id: str | None = None) -> None:
    """Fields for the request's access-log line (``tenant``, ``taskId``): never secrets."""
    state = request.scope.setdefault("state", {})
    if tenant is not None:
        state["tenant"] = tenant
    if task_id is not None:
        state["task_id"] = task_id


def gateway_for(request: Request[Any, Any, Any]) -> Gateway:
    """The app's :class:`Gateway`, straight from the request (cheaper than a DI provider on
    every call of the hot routes)."""
    gateway: Gateway = request.app.state.gateway
    return gateway


def get_gateway(state: State) -> Gateway:
    gateway: Gateway = state.gateway
    return gateway
