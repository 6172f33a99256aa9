"""Lookups several route modules share: one tenant's endpoint by id."""

from __future__ import annotations

from typing import Any

import msgspec

from codeq.errors import NotFound
from gateway.state import Gateway

__all__ = ["tenant_endpoint"]


async def tenant_endpoint(gw: Gateway, tenant: str, endpoint_id: str) -> dict[str, Any]:
    """One of the tenant's endpoints; 404 for another tenant's or an unknown one."""
    for raw in await gw.store.endpoints.all_of(tenant):
        e: dict[str, Any] = msgspec.json.decode(raw)
        if e.get("id") == endpoint_id:
            return e
    raise NotFound(f"endpoint {endpoint_id[:64]} not found")
