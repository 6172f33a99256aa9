"""Event-subscription endpoints as the deliverers see them: each tenant's list, cached briefly
(:class:`EndpointDirectory`), which of them want an event (:func:`endpoint_matches`), and the
secrets an attempt is signed with (:func:`active_secrets`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import msgspec

from codeq.store.protocol import Endpoints

__all__ = ["ENDPOINT_CACHE_SECONDS", "EndpointDirectory", "active_secrets", "endpoint_matches"]

ENDPOINT_CACHE_SECONDS = 1.0  # endpoint changes reach the deliverers within this
_TENANTS_KEPT = 10_000


class EndpointDirectory:
    """The endpoints of each tenant, read at most once per :data:`ENDPOINT_CACHE_SECONDS`
    (most events are of tenants with none: usually no store call at all)."""

    def __init__(self, endpoints: Endpoints) -> None:
        self._endpoints = endpoints
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    async def of(self, tenant: str, *, fresh: bool = False) -> list[dict[str, Any]]:
        """The tenant's endpoints; ``fresh``: read now (an attempt needs current secrets)."""
        now = time.monotonic()
        cached = self._cache.get(tenant)
        if cached is not None and not fresh and now - cached[0] < ENDPOINT_CACHE_SECONDS:
            return cached[1]
        found = [msgspec.json.decode(raw) for raw in await self._endpoints.all_of(tenant)]
        self._cache[tenant] = (now, found)
        if len(self._cache) > _TENANTS_KEPT:
            self._cache.clear()
        return found

    async def find(
        self, tenant: str, endpoint_id: str, *, fresh: bool = False
    ) -> dict[str, Any] | None:
        for e in await self.of(tenant, fresh=fresh):
            if e.get("id") == endpoint_id:
                return e
        return None


def active_secrets(endpoint: Mapping[str, Any], now_ms: int | None = None) -> list[str]:
    """The endpoint's signing secrets still in force: the current one first, then rotated
    ones inside their grace period."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    out = []
    for s in endpoint.get("secrets") or []:
        expires = s.get("expiresAt")
        if expires is None or int(expires) > now:
            out.append(str(s["secret"]))
    return out


def endpoint_matches(endpoint: Mapping[str, Any], kind: str, command: str) -> bool:
    if not endpoint.get("enabled", True):
        return False
    types = endpoint.get("eventTypes") or []
    if "*" not in types and kind not in types:
        return False
    commands = endpoint.get("commands") or []  # cjson turns [] into {}: both mean "any"
    return not commands or command in {str(c).lower() for c in commands}
