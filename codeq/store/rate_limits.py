"""Token buckets in the store (spec 04, "Rate limits"): one ``rate_limit.lua`` call per take.

The bucket of a caller is keyed by scope, tenant and subject (the authenticated identity, never
its token; for webhooks, the target host); its state lives in the store, so every gateway
replica and deliverer shares it, and the refill runs on the server's clock.
"""

from __future__ import annotations

from codeq.store.base import ScriptStore
from codeq.store.errors import StoreError
from codeq.store.protocol import RateDecision

__all__ = ["RateDecision", "RateLimiter"]


class RateLimiter:
    """Takes tokens from the buckets of one store (its own connection pool may be another
    store's: the limiter fails open, so it may live on a separate, less critical server)."""

    def __init__(self, store: ScriptStore) -> None:
        self._store = store
        self._script = store._scripts["rate_limit"]

    async def take(
        self, scope: str, tenant: str, subject: str, *, requests_per_minute: int, burst: int
    ) -> RateDecision:
        """Take one token; raises :class:`~codeq.errors.StoreUnavailable` (or
        :class:`StoreError`) when the store cannot answer — the caller decides to fail open."""
        key = self._store.keys.rate_limit(scope, tenant, subject)
        reply = await self._store._eval(self._script, (key,), (requests_per_minute, burst))
        try:
            allowed, retry_ms, remaining = (int(x) for x in reply)
        except (TypeError, ValueError) as exc:
            raise StoreError(f"unexpected rate_limit reply {reply!r}") from exc
        return RateDecision(allowed=allowed == 1, retry_after_ms=retry_ms, remaining=remaining)
