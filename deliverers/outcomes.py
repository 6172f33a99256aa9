"""Recording what became of deliveries: each attempt (or a delivery given up without one) is
counted, appended to its delivery's log and rescheduled, finished or buried by ``dlv_outcome``.

The outcomes that end in the same loop iteration share one ``dlv_outcome`` call per partition
(a backlog's answers arrive in bursts: one script call and one Lua run for a burst instead of
one each).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import msgspec

from codeq.errors import StoreUnavailable
from codeq.metrics import Metrics
from codeq.store.protocol import Deliveries
from deliverers.records import AttemptLog, Delivery

__all__ = ["Outcome", "Outcomes"]

log = logging.getLogger("codeq.deliverers")

Outcome = tuple[str, str, int, bytes]  # delivery id, outcome, delay ms, attempt JSON

_json = msgspec.json.Encoder()


class Outcomes:
    """Counts outcomes and records them, batched per partition and loop iteration."""

    MAX_BATCH = 200

    def __init__(self, deliveries: Deliveries, kept: int, metrics: Metrics) -> None:
        self._deliveries = deliveries
        self._kept = kept
        self._metrics = metrics
        self._pending: dict[int, list[tuple[Outcome, asyncio.Future[tuple[str, int]]]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    async def attempted(
        self, partition: int, d: Delivery, outcome: str, delay_ms: int, entry: AttemptLog
    ) -> None:
        """An attempt was made: ``outcome`` (``succeeded``, ``retry``, ``dead``, ``gone``) and,
        for a retry, when (``delay_ms``). A store that cannot answer leaves the attempt's lease
        to run out: the scheduler attempts it again then (at least once)."""
        self.count(d, outcome)
        try:
            status, attempts = await self.record(
                partition, (d.id, outcome, delay_ms, _json.encode(entry))
            )
        except StoreUnavailable:
            log.warning("could not record a delivery attempt", extra={"delivery": d.id})
            return
        if log.isEnabledFor(logging.INFO):
            log.info(
                "delivery attempt",
                extra={
                    "delivery": d.id,
                    "kind": d.kind,
                    "attempt": attempts,
                    "statusCode": entry.status_code,
                    "outcome": status,
                },
            )

    async def given_up(self, partition: int, d: Delivery, error: str) -> None:
        """The delivery is dead without an attempt (its endpoint was deleted or disabled)."""
        self.count(d, "dead")
        entry = AttemptLog(at=int(time.time() * 1000), latency_ms=0.0, error=error)
        with contextlib.suppress(StoreUnavailable):
            await self.record(partition, (d.id, "dead", 0, _json.encode(entry)))

    def count(self, d: Delivery, outcome: str) -> None:
        command = (d.command or "").lower()
        self._metrics.child(self._metrics.webhook_deliveries, d.kind, command, outcome).inc()

    async def record(self, partition: int, item: Outcome) -> tuple[str, int]:
        """(new status, attempts) of the delivery once ``item`` is recorded."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[str, int]] = loop.create_future()
        queue = self._pending.get(partition)
        if queue is None:  # the first of this iteration: the flush comes after the rest
            queue = self._pending[partition] = []
            loop.call_soon(self._flush, partition)
        queue.append((item, fut))
        return await fut

    def _flush(self, partition: int) -> None:
        queue = self._pending.pop(partition, [])
        for i in range(0, len(queue), self.MAX_BATCH):
            task = asyncio.get_running_loop().create_task(
                self._send(partition, queue[i : i + self.MAX_BATCH])
            )
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _send(
        self, partition: int, batch: list[tuple[Outcome, asyncio.Future[tuple[str, int]]]]
    ) -> None:
        try:
            items = [item for item, _ in batch]
            replies = await self._deliveries.outcomes(partition, items, self._kept)
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(
                        exc if isinstance(exc, Exception) else StoreUnavailable("interrupted")
                    )
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), reply in zip(batch, replies, strict=True):
            if not fut.done():
                fut.set_result(reply)
