"""The sweeper: promotes due delayed tasks, expires leases, purges retention, trims streams,
and prunes webhook deliveries past their retention (``webhookDeliveryRetentionSeconds``).

One partition at a time, each step one script call under the partition's sweep lock (a short
``SET PX`` inside the script), so replicas running the same loop don't duplicate work. Runs in
``codeq serve`` and in every deliverer process. A pruning step (``dlv_prune``) looks at a
bounded number of ended deliveries, oldest first, and removes each one it looks at from the
set it reads, so no step ever looks at an entry twice; a tick takes a bounded number of steps
per partition and goes on at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from codeq.domain import SweepReport
from codeq.engine import Engine
from codeq.errors import CodeQError, StoreUnavailable
from codeq.store.protocol import Deliveries

__all__ = ["Sweeper"]

log = logging.getLogger("codeq.sweeper")

MAX_STEPS_PER_PARTITION = 50  # a tick never spends more than this many script calls per partition
PRUNE_BATCH = 200  # deliveries one pruning step looks at
MAX_PRUNE_STEPS = 10  # pruning steps per partition and tick (2,000 deliveries)
DEFAULT_DELIVERY_RETENTION_SECONDS = 30 * 86400


class Sweeper:
    def __init__(
        self,
        engine: Engine,
        *,
        interval_ms: int | None = None,
        trim_interval_seconds: float = 10.0,
        token: str | None = None,
        deliveries: Deliveries | None = None,
        delivery_retention_seconds: int = DEFAULT_DELIVERY_RETENTION_SECONDS,
    ) -> None:
        """``deliveries``: the store's delivery schedule, whose deliveries that ended more
        than ``delivery_retention_seconds`` ago are pruned (None: no pruning here)."""
        self.engine = engine
        self.interval = (interval_ms or engine.config.sweep_interval_ms) / 1000
        self.trim_interval = trim_interval_seconds
        self.token = token or f"{os.getpid()}-{os.urandom(6).hex()}"
        self.deliveries = deliveries
        self.delivery_retention_ms = delivery_retention_seconds * 1000
        self.pruned = 0  # deliveries pruned by this sweeper so far
        self._last_trim = 0.0
        self._stopping = asyncio.Event()

    async def run_once(self) -> SweepReport:
        """One pass over every partition; partitions held by another sweeper are skipped."""
        promoted = expired = purged = skipped = 0
        for partition in range(self.engine.keys.partitions):
            for _ in range(MAX_STEPS_PER_PARTITION):
                report = await self.engine.sweep_partition(partition, self.token)
                if report is None:
                    skipped += 1
                    break
                promoted += report.promoted
                expired += report.expired
                purged += report.purged
                if not report.more:
                    break
        await self.prune_deliveries()
        now = time.monotonic()
        if now - self._last_trim >= self.trim_interval:
            self._last_trim = now
            await self.engine.trim_events()
        return SweepReport(
            promoted=promoted, expired=expired, purged=purged, skipped_partitions=skipped
        )

    async def prune_deliveries(self) -> int:
        """Bounded retention steps over every partition's deliveries (partitions held by
        another sweeper are skipped); the deliveries pruned."""
        if self.deliveries is None:
            return 0
        pruned = 0
        lock_ms = max(self.engine.config.sweep_interval_ms * 4, 2000)
        for partition in range(self.engine.keys.partitions):
            for _ in range(MAX_PRUNE_STEPS):
                reply = await self.deliveries.prune(
                    partition,
                    token=self.token,
                    lock_ms=lock_ms,
                    limit=PRUNE_BATCH,
                    retention_ms=self.delivery_retention_ms,
                )
                if reply is None:
                    break
                pruned += reply.pruned
                if not reply.more:
                    break
        if pruned:
            self.pruned += pruned
            log.debug("pruned deliveries", extra={"pruned": pruned})
        return pruned

    async def run(self) -> None:
        """Sweep every interval until :meth:`stop`; store outages are logged and retried."""
        while not self._stopping.is_set():
            try:
                report = await self.run_once()
                if report.promoted or report.expired or report.purged:
                    log.debug(
                        "swept",
                        extra={
                            "promoted": report.promoted,
                            "expired": report.expired,
                            "purged": report.purged,
                        },
                    )
            except StoreUnavailable:
                log.warning("sweeper: store unavailable, retrying")
            except CodeQError:
                log.exception("sweeper: pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)

    def stop(self) -> None:
        self._stopping.set()
