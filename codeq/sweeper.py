"""The sweeper: promotes due delayed tasks, expires leases, purges retention, trims streams.

One partition at a time, each step one script call under the partition's sweep lock (a short
``SET PX`` inside the script), so replicas running the same loop don't duplicate work. Runs in
``codeq serve`` and in every deliverer process.
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

__all__ = ["Sweeper"]

log = logging.getLogger("codeq.sweeper")

MAX_STEPS_PER_PARTITION = 50  # a tick never spends more than this many script calls per partition


class Sweeper:
    def __init__(
        self,
        engine: Engine,
        *,
        interval_ms: int | None = None,
        trim_interval_seconds: float = 10.0,
        token: str | None = None,
    ) -> None:
        self.engine = engine
        self.interval = (interval_ms or engine.config.sweep_interval_ms) / 1000
        self.trim_interval = trim_interval_seconds
        self.token = token or f"{os.getpid()}-{os.urandom(6).hex()}"
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
        now = time.monotonic()
        if now - self._last_trim >= self.trim_interval:
            self._last_trim = now
            await self.engine.trim_events()
        return SweepReport(
            promoted=promoted, expired=expired, purged=purged, skipped_partitions=skipped
        )

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
