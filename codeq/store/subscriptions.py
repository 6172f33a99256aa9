"""Subscriptions ("work available" notifications): one script per change (``sub_*.lua``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis import exceptions as rexc

from codeq.errors import StoreUnavailable
from codeq.store.redis_store import _UNAVAILABLE, RedisStore, StoreError
from codeq.store.streams import text

__all__ = ["SubscriptionStore"]


class SubscriptionStore:
    """Worker availability subscriptions: one script per operation (``sub_*.lua``)."""

    def __init__(self, store: RedisStore) -> None:
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

    async def live(self, tenant: str) -> list[bytes]:
        return [bytes(r) for r in await self._call("sub_list", tenant, [])]

    async def pick(self, tenant: str, command: str, bucket: int) -> list[bytes]:
        return [bytes(r) for r in await self._call("sub_pick", tenant, [command.lower(), bucket])]

    async def active(self, now_ms: int) -> int:
        """Subscriptions of every tenant that have not expired at ``now_ms`` (one ``ZCOUNT``
        on the expiry index, read-only: expired records are dropped by the scripts)."""
        _, expiry, _ = self.keys.subscriptions("")
        try:
            return int(await self._store.client.zcount(expiry, f"({now_ms}", "+inf"))
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"store unavailable: {type(exc).__name__}") from exc
        except rexc.RedisError as exc:
            raise StoreError(f"store error counting subscriptions: {exc}") from exc
