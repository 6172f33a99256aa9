"""Webhook endpoints (event subscriptions of a tenant): one script per change (``ep_*.lua``).

Every change is made by its script on the stored record (create, patch, rotate-secret, mark,
delete), never read here, changed and written back: concurrent changes cannot lose each other.
A change of ``enabled`` (``ep_mark`` disabling a gone or failing endpoint, ``ep_patch``) appends
its operational event to the ``{hooks}`` stream in the same step (read by the deliverers:
:mod:`codeq.store.hook_events`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from redis import exceptions as rexc

from codeq.store.base import ScriptStore
from codeq.store.errors import UNAVAILABLE, StoreError, unavailable
from codeq.store.streams import text

__all__ = ["EndpointStore"]

#: The fields a patch may set (ep_patch.lua applies exactly these).
PATCHABLE = frozenset(
    {
        "url",
        "eventTypes",
        "commands",
        "description",
        "enabled",
        "headers",
        "rateLimit",
        "channels",
        "metadata",
    }
)


class EndpointStore:
    """Event-subscription endpoints: one script per operation (``ep_*.lua``)."""

    def __init__(self, store: ScriptStore) -> None:
        self._store = store
        self.keys = store.keys

    async def _call(
        self, name: str, tenant: str, args: Sequence[Any], *, appends: bool = False
    ) -> Any:
        """Script ``name`` on the tenant's keys; ``appends``: and the ``{hooks}`` stream."""
        keys: tuple[str, ...] = self.keys.endpoints(tenant)
        if appends:
            keys = (*keys, self.keys.hook_events()[0])
        return await self._store._eval(self._store._scripts[name], keys, args)

    async def create(self, endpoint_id: str, tenant: str, record: bytes) -> None:
        """Store a new endpoint (``record`` is its JSON, ``tenant`` included)."""
        await self._call("ep_put", tenant, [endpoint_id, record])

    async def patch(
        self, endpoint_id: str, tenant: str, changes: Mapping[str, Any]
    ) -> bytes | None:
        """Set the named fields (of :data:`PATCHABLE`) of one endpoint of ``tenant``, leaving
        every other field as stored (an empty list or mapping, or a ``rateLimit`` of 0,
        removes the field); the record after the change, None when there is none."""
        unknown = set(changes) - PATCHABLE
        if unknown:
            raise ValueError(f"not fields an endpoint patch sets: {sorted(unknown)}")
        reply = await self._call(
            "ep_patch", tenant, [endpoint_id, tenant, msgspec.json.encode(changes)], appends=True
        )
        return bytes(reply) if reply else None

    async def rotate(
        self, endpoint_id: str, tenant: str, new_secret: str, grace_ms: int
    ) -> int | None:
        """Make ``new_secret`` the endpoint's current secret (an ed25519 endpoint's: a new
        ``whsk_`` signing key); the secrets in force keep signing for ``grace_ms`` more
        (rotated ones: until their own expiry). The expiry given to the previous current
        secret (ms), None when the endpoint is unknown, foreign, or of the other scheme."""
        reply = await self._call("ep_rotate", tenant, [endpoint_id, tenant, new_secret, grace_ms])
        return int(text(reply[0])) if reply else None

    async def delete(self, endpoint_id: str, tenant: str) -> bool:
        return bool(await self._call("ep_del", tenant, [endpoint_id, tenant]))

    async def all_of(self, tenant: str) -> list[bytes]:
        return [bytes(r) for r in await self._call("ep_list", tenant, [])]

    async def mark(
        self, endpoint_id: str, tenant: str, outcome: str, disable_after_ms: int
    ) -> None:
        await self._call("ep_mark", tenant, [endpoint_id, outcome, disable_after_ms], appends=True)

    async def remember(self, endpoint_id: str, delivery_id: str, keep: int = 100) -> None:
        """Index a delivery under its endpoint (newest first); an index only, not state."""
        key = self.keys.endpoint_deliveries(endpoint_id)
        try:
            async with self._store.client.pipeline(transaction=False) as pipe:
                pipe.lpush(key, delivery_id)
                pipe.ltrim(key, 0, keep - 1)
                await pipe.execute()
        except UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        except rexc.RedisError as exc:
            raise StoreError(f"store error indexing a delivery: {exc}") from exc

    async def recent(self, endpoint_id: str, limit: int) -> list[str]:
        key = self.keys.endpoint_deliveries(endpoint_id)
        return [text(i) for i in await self._store._command("lrange", key, 0, limit - 1)]
