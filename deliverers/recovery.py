"""Recovering stream entries that a consumer read and did not acknowledge: those of consumers
that died (their liveness key expired), and this consumer's own after a failed batch.

Each consumer refreshes a liveness key; a live one takes a dead one's entries with ``XCLAIM``
(not ``XAUTOCLAIM``'s idle time, which KVRocks reports wrongly) and hands them to its loop's
batch handling again. An entry received ``eventMaxReceives`` times is set aside as poison (a
dead-letter record, acknowledged), with the reason it last failed when one is known.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from codeq.metrics import Metrics
from codeq.store.protocol import ConsumerGroups
from codeq.store.streams import StreamEntry

__all__ = ["BatchHandler", "Recovery"]

log = logging.getLogger("codeq.deliverers")

#: the loop's handling of a batch: (partition, group, entries)
BatchHandler = Callable[[int, str, list[StreamEntry]], Awaitable[None]]

_FAILURES_KEPT = 10_000


class Recovery:
    """Takes over what dead consumers hold, and this one's entries that failed."""

    def __init__(
        self,
        groups: ConsumerGroups,
        consumer: str,
        *,
        max_receives: int,
        metrics: Metrics,
        handle: BatchHandler,
    ) -> None:
        self._groups = groups
        self._consumer = consumer
        self._max_receives = max_receives
        self._metrics = metrics
        self._handle = handle
        self._failures: dict[str, str] = {}  # why each held-back entry last failed

    def note_failure(self, entry_id: str, reason: str) -> None:
        """The reason an entry last failed, for its dead-letter record if it comes to that."""
        if len(self._failures) >= _FAILURES_KEPT:
            self._failures.clear()
        self._failures[entry_id] = reason

    async def take_over_dead(self, partition: int, group: str) -> None:
        """Entries held by consumers whose liveness key expired come to this one; a dead
        consumer that holds nothing is forgotten.

        XINFO CONSUMERS only names whom to look at. KVRocks (2.10) also lists there the
        consumers of the stream's other groups, and its per-consumer pending counts drift (see
        ``_claim``): what a consumer holds comes from XPENDING, right on both. A consumer is
        forgotten only when both say it holds nothing: KVRocks' XGROUP DELCONSUMER subtracts the
        consumer's count from the group's, and a drifted one wraps the group's below zero."""
        reported: dict[str, int] = {}
        for name, pending in await self._groups.consumers(partition, group):
            reported[name] = max(pending, reported.get(name, 0))
        reported.pop(self._consumer, None)
        for name, pending in reported.items():
            if await self._groups.alive(partition, group, name):
                continue
            if await self.reprocess(partition, group, name):
                continue  # it may hold more: the next pass looks again
            if pending == 0:
                await self._groups.forget_consumer(partition, group, name)

    async def reprocess(self, partition: int, group: str, owner: str) -> bool:
        """Claim ``owner``'s unacknowledged entries (a dead consumer's, or this one's after a
        failure) and handle them again; one received too often is set aside as poison. False
        when ``owner`` holds nothing."""
        held = await self._groups.pending_of(partition, group, owner)
        if not held:
            return False
        limit = self._max_receives
        for entry_id, receives in held:
            if receives >= limit:
                log.error(
                    "event set aside after too many receives",
                    extra={"group": group, "entry": entry_id, "partition": partition},
                )
                reason = self._failures.pop(entry_id, f"received {receives} times")
                await self._groups.poison(partition, group, entry_id, receives, reason)
                self._metrics.events_set_aside.labels(group, "poison").inc()
        taken = await self._claim(partition, group, [i for i, n in held if n < limit])
        if taken and owner != self._consumer:
            log.warning(
                "took over the entries of a dead consumer",
                extra={"group": group, "from": owner, "count": len(taken)},
            )
        await self._handle(partition, group, taken)
        return True

    async def _claim(self, partition: int, group: str, ids: list[str]) -> list[StreamEntry]:
        """XCLAIM one entry per call: KVRocks (2.10) lowers the previous owner's pending count
        by one per XCLAIM however many entries it moves, so a batch leaves that count too high.
        Taking over is rare and bounded (``pending_of`` lists 100), so the round trips are cheap.
        """
        taken: list[StreamEntry] = []
        for entry_id in ids:
            taken += await self._groups.take_over(partition, group, self._consumer, [entry_id])
        return taken
