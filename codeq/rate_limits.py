"""Rate limits per scope (spec 04): ``producer``, ``worker``, ``admin`` and ``webhook``.

:class:`RateGuard` holds the configured limits and asks the store's token buckets
(:class:`~codeq.store.protocol.RateBuckets`) only for scopes that have one: an unlimited
scope costs no store call. The guard fails open: when the store cannot answer, the request
(or delivery) goes ahead and ``codeq_rate_limit_fail_open_total{scope}`` counts it; a refusal
counts in ``codeq_rate_limit_hits_total{scope,operation}``.
"""

from __future__ import annotations

import logging
from typing import Final, Literal

from codeq.errors import CodeQError, RateLimited
from codeq.metrics import Metrics
from codeq.settings import RateLimit, RateLimits
from codeq.store.protocol import RateBuckets

__all__ = ["SCOPES", "RateGuard", "Scope"]

log = logging.getLogger("codeq.rate_limits")

Scope = Literal["producer", "worker", "admin", "webhook"]
SCOPES: Final[tuple[Scope, ...]] = ("producer", "worker", "admin", "webhook")


class RateGuard:
    """The configured limits of one process over the store's buckets, with the metrics."""

    def __init__(self, limits: RateLimits, limiter: RateBuckets, metrics: Metrics) -> None:
        self.limits = limits
        self.limiter = limiter
        self.metrics = metrics
        self._of: dict[str, RateLimit | None] = {s: getattr(limits, s) for s in SCOPES}

    def limited(self, scope: Scope) -> bool:
        """Whether ``scope`` has a limit at all (no limit: no store call, ever)."""
        return self._of[scope] is not None

    async def wait(self, scope: Scope, operation: str, tenant: str, subject: str) -> float:
        """Take a token for ``subject`` of ``tenant``: ``0.0`` to go ahead, else the seconds
        until the bucket has one again."""
        limit = self._of[scope]
        if limit is None:
            return 0.0
        try:
            decision = await self.limiter.take(
                scope,
                tenant,
                subject,
                requests_per_minute=limit.requests_per_minute,
                burst=limit.burst_size,
            )
        except CodeQError as exc:  # StoreUnavailable, StoreError: never stop traffic for it
            self.metrics.rate_limit_fail_open.labels(scope).inc()
            log.warning(
                "rate limit not checked: store error", extra={"scope": scope, "error": exc.message}
            )
            return 0.0
        if decision.allowed:
            return 0.0
        self.metrics.rate_limit_hits.labels(scope, operation).inc()
        return max(decision.retry_after_ms, 1) / 1000

    async def check(self, scope: Scope, operation: str, tenant: str, subject: str) -> None:
        """:meth:`wait`, raising :class:`~codeq.errors.RateLimited` (429) on a refusal."""
        if self._of[scope] is None:
            return
        retry_after = await self.wait(scope, operation, tenant, subject)
        if retry_after > 0:
            raise RateLimited(
                "rate limit exceeded", retry_after=retry_after, scope=scope, operation=operation
            )
