"""Subscriptions ("work available" notifications): one script per change (``sub_*.lua``), and
one read by id (:meth:`SubscriptionStore.get`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from codeq.store.base import ScriptStore
from codeq.store.streams import text

__all__ = ["SubscriptionStore"]


class SubscriptionStore:
    """Worker availability subscriptions: one script per operation (``sub_*.lua``)."""

    def __init__(self, store: ScriptStore) -> None:
        self._store = store
        self.keys = store.keys

    async def _call(self, name: str, tenant: str, args: Sequence[Any]) -> Any:
        keys = self.keys.subscriptions(tenant)
        return await self._store._eval(self._store._scripts[name], keys, args)

    async def put(self, sub_id: str, tenant: str, record: bytes, ttl_ms: int) -> int | None:
        """Create (``record``) or renew (``b""``); the new expiry ms, None when unknown."""
        reply = await self._call("sub_put", tenant, [sub_id, tenant, record, ttl_ms])
        return int(reply[1]) if text(reply[0]) == "OK" else None

    async def delete(self, sub_id: str, tenant: str) -> bool:
        return bool(await self._call("sub_del", tenant, [sub_id, tenant]))

    async def get(self, sub_id: str, tenant: str) -> bytes | None:
        """The record of one subscription of ``tenant`` (one ``HGET``: read-only, no script),
        None when unknown or another tenant's. One not swept yet after its expiry is
        returned (its ``expiresAt`` says so): a notification picked while it was live is
        still signed with its own secret."""
        raw = await self._store._command("hget", self.keys.subscriptions(tenant)[0], sub_id)
        if raw is None:
            return None
        record = bytes(raw)
        try:
            owner = msgspec.json.decode(record).get("tenant")
        except (msgspec.DecodeError, AttributeError):  # not a record sub_put wrote
            return None
        return record if owner == tenant else None

    async def live(self, tenant: str) -> list[bytes]:
        return [bytes(r) for r in await self._call("sub_list", tenant, [])]

    async def pick(self, tenant: str, command: str, bucket: int) -> list[bytes]:
        return [bytes(r) for r in await self._call("sub_pick", tenant, [command.lower(), bucket])]
