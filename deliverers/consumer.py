"""The consumer-group loop: for each partition and group, read ``XREADGROUP ... >`` a batch at a
time, let the group's handler (:mod:`deliverers.handlers`) make deliveries of it, and write
them and acknowledge the batch in one script (``dlv_enqueue``); the new deliveries are
attempted at once (:mod:`deliverers.dispatch`).

An entry that cannot be decoded, or whose task cannot be read, is quarantined on its own (a
dead-letter record with the reason, acknowledged with its batch): the rest of the batch is
delivered. An entry that fails for another reason stays pending and is handled again after a
pause (:mod:`deliverers.recovery`, which also takes over what dead consumers hold). A group
that vanished (a store restarted without its data) is created again, with a log line.

:class:`HookConsumer` reads the ``{hooks}`` stream (the endpoints' operational events) the
same way; only its write and acknowledgement differ (two steps: see the class).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping

import msgspec

from codeq.errors import CodeQError, StoreUnavailable
from codeq.metrics import Metrics
from codeq.store.protocol import ConsumerGroups, Deliveries, Endpoints, HookEvents
from codeq.store.streams import StreamEntry
from deliverers import records
from deliverers.events import Handled
from deliverers.handlers import Handler
from deliverers.records import Delivery
from deliverers.recovery import Recovery
from deliverers.stopping import Stopping

__all__ = ["READ_COUNT", "GroupConsumer", "HookConsumer"]

log = logging.getLogger("codeq.deliverers")

READ_COUNT = 100  # stream entries per XREADGROUP: one batch, one dlv_enqueue
_RETRY_PAUSE = 1.0  # before a consumer handles again the entries that failed
# What an entry's own data makes a handler raise (a record that cannot be decoded, a field out
# of range): quarantined at once. Anything else may pass: tried again before it is set aside.
_BAD_DATA = (
    ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
    msgspec.MsgspecError,
)  # fmt: skip


class GroupConsumer:
    """One consumer (``consumer``) in every group of ``handlers``, on every partition it is
    asked to run: its read loops, its liveness, and its batches' enqueueing."""

    def __init__(
        self,
        groups: ConsumerGroups,
        deliveries: Deliveries,
        endpoints: Endpoints,
        handlers: Mapping[str, Handler],
        *,
        consumer: str,
        attempt: Callable[[int, Delivery], None],
        lease_ms: int,
        consumer_ttl_seconds: int,
        max_receives: int,
        metrics: Metrics,
        block_ms: int,
        stopping: Stopping,
    ) -> None:
        self._groups = groups
        self._deliveries = deliveries
        self._endpoints = endpoints
        self._handlers = dict(handlers)
        self.consumer = consumer
        self._attempt = attempt
        self._lease_ms = lease_ms
        self._ttl = consumer_ttl_seconds
        self._metrics = metrics
        self._block_ms = block_ms
        self._stopping = stopping
        self.recovery = Recovery(
            groups, consumer, max_receives=max_receives, metrics=metrics, handle=self.handle_batch
        )
        # (partition, group) with entries held back by a failure
        self._held_back: set[tuple[int, str]] = set()

    async def run(self, partition: int, group: str) -> None:
        """Read and handle the group's batches on ``partition`` until the stop."""
        loop = asyncio.get_running_loop()
        # when to handle again the entries this consumer holds from a failed attempt at them
        # (None: it holds none); at once on start, after a pause once one failed
        retry_own: float | None = 0.0
        takeover_every = max(0.2, self._ttl / 3)
        next_takeover = 0.0
        while not self._stopping.is_set():
            try:
                if retry_own is not None and loop.time() >= retry_own:
                    retry_own = None
                    await self.recovery.reprocess(partition, group, self.consumer)
                if loop.time() >= next_takeover:  # a dead consumer's key lasts a TTL anyway
                    next_takeover = loop.time() + takeover_every
                    await self.recovery.take_over_dead(partition, group)
                entries = await self._groups.read_group(
                    partition, group, self.consumer, count=READ_COUNT, block_ms=self._block_ms
                )
                if not entries and not await self._groups.group_exists(partition, group):
                    await self._recreate(partition, group)
                    continue
                await self.handle_batch(partition, group, entries)
                if (partition, group) in self._held_back:  # some entry failed: again later
                    self._held_back.discard((partition, group))
                    retry_own = loop.time() + _RETRY_PAUSE
            except asyncio.CancelledError:
                raise
            except StoreUnavailable:
                log.warning("deliverer: store unavailable, retrying", extra={"group": group})
                await self._stopping.pause(1.0)
            except Exception:
                if await self._missing(partition, group):  # gone while we held entries
                    await self._recreate(partition, group)
                    continue
                log.exception("deliverer loop failed, retrying", extra={"group": group})
                retry_own = 0.0
                await self._stopping.pause(_RETRY_PAUSE)

    async def keep_alive(self, partition: int, group: str) -> None:
        """Refresh this consumer's liveness key until the stop."""
        while not self._stopping.is_set():
            with contextlib.suppress(StoreUnavailable):
                await self._groups.heartbeat(partition, group, self.consumer, self._ttl)
            await self._stopping.pause(max(0.2, self._ttl / 3))

    async def _missing(self, partition: int, group: str) -> bool:
        try:
            return not await self._groups.group_exists(partition, group)
        except CodeQError:
            return False

    async def _recreate(self, partition: int, group: str) -> None:
        with contextlib.suppress(StoreUnavailable):
            if await self._groups.ensure_group(partition, group, start="0"):
                log.warning(
                    "consumer group was missing and has been created again",
                    extra={"group": group, "partition": partition},
                )

    async def handle_batch(self, partition: int, group: str, entries: list[StreamEntry]) -> None:
        """The batch's deliveries are written and its entries acknowledged by one script call,
        whether they caused deliveries, were quarantined or neither.

        A batch that fails for a reason other than the store being unavailable (a task record
        that cannot be read, ...) is handled again one entry at a time, so that only the
        entries that fail on their own are held back and every other one is delivered. An entry
        that fails on bad data is quarantined at once; one that fails otherwise stays pending
        and is tried again (``Recovery.reprocess``) until ``eventMaxReceives`` sets it aside."""
        if not entries:
            return
        handler = self._handlers[group]
        failed: dict[str, str] = {}
        try:
            handled = await handler(partition, entries)
        except (StoreUnavailable, asyncio.CancelledError):
            raise
        except Exception:
            if len(entries) > 1:
                log.warning("a batch failed: handling it one entry at a time",
                            extra={"group": group, "partition": partition})  # fmt: skip
            handled, failed = await self._one_by_one(partition, handler, entries)
        for entry_id, reason in failed.items():
            log.warning(
                "event failed: it stays pending and is tried again",
                extra={"group": group, "partition": partition, "entry": entry_id,
                       "reason": reason},
            )  # fmt: skip
            self.recovery.note_failure(entry_id, reason)
        if failed:
            self._held_back.add((partition, group))
        done = [eid for eid, _ in entries if eid not in failed]
        await self._enqueue(partition, group, done, handled)

    async def _one_by_one(
        self, partition: int, handler: Handler, entries: list[StreamEntry]
    ) -> tuple[Handled, dict[str, str]]:
        """Each entry on its own: what they made, and (entry id, reason) of those that failed
        for a reason other than their data."""
        out = Handled()
        failed: dict[str, str] = {}
        for entry in entries:
            try:
                one = await handler(partition, [entry])
            except (StoreUnavailable, asyncio.CancelledError):
                raise
            except Exception as exc:
                # the exception's type only: its text may carry a field's value
                reason = f"cannot be handled: {type(exc).__name__}"
                if isinstance(exc, _BAD_DATA):
                    out.quarantined.append((entry[0], reason))
                else:
                    failed[entry[0]] = reason
                continue
            out.deliveries += one.deliveries
            out.quarantined += one.quarantined
        return out, failed

    async def _enqueue(
        self, partition: int, group: str, entry_ids: list[str], handled: Handled
    ) -> None:
        """Write the deliveries, the quarantined entries' dead-letter records and the
        acknowledgement of ``entry_ids`` in one step (``dlv_enqueue``), then attempt the new
        deliveries at once."""
        for d in handled.deliveries:
            d.started = 1  # attempted at once: the first attempt is begun as it is written
        fresh = await self._write(partition, group, entry_ids, handled)
        for entry_id, reason in handled.quarantined:
            self._metrics.events_set_aside.labels(group, "quarantined").inc()
            log.error(
                "event quarantined: it cannot be decoded or handled",
                extra={"group": group, "partition": partition, "entry": entry_id,
                       "reason": reason},
            )  # fmt: skip
        for p, d in fresh:
            if d.endpoint_id is not None:
                with contextlib.suppress(StoreUnavailable):
                    await self._endpoints.remember(d.endpoint_id, d.id)
            self._attempt(p, d)

    async def _write(
        self, partition: int, group: str, entry_ids: list[str], handled: Handled
    ) -> list[tuple[int, Delivery]]:
        """One ``dlv_enqueue``: the deliveries, the dead-letter records and the
        acknowledgement. The deliveries written now (a repeated entry's are not), with their
        partition."""
        written = set(
            await self._deliveries.enqueue(
                partition,
                group,
                entry_ids,
                self._lease_ms,
                [(d.id, records.encode(d)) for d in handled.deliveries],
                quarantined=handled.quarantined,
            )
        )
        return [(partition, d) for d in handled.deliveries if d.id in written]


class HookConsumer(GroupConsumer):
    """The consumer of the ``{hooks}`` stream (:mod:`codeq.store.hook_events`), read, recovered
    and kept alive as a partition stream is; ``hooks`` is its consumer groups (the
    ``partition`` they take means nothing: :meth:`run` it as partition 0).

    Its entries' deliveries live in partitions, another slot than the stream's, so they are
    written and the entries acknowledged in two steps: the deliveries first, one
    ``dlv_enqueue`` per partition that acknowledges nothing, then the entries (``ep_ack``, which
    also sets aside the quarantined ones and trims the stream to ``retention_seconds``). A
    crash between the two repeats the entries: their deliveries' ids are the same, so the
    repeat writes nothing new, and the deliveries written before are attempted when their
    lease in the schedule ends."""

    def __init__(
        self,
        hooks: HookEvents,
        deliveries: Deliveries,
        endpoints: Endpoints,
        handlers: Mapping[str, Handler],
        *,
        partitions: int,
        retention_seconds: int,
        consumer: str,
        attempt: Callable[[int, Delivery], None],
        lease_ms: int,
        consumer_ttl_seconds: int,
        max_receives: int,
        metrics: Metrics,
        block_ms: int,
        stopping: Stopping,
    ) -> None:
        super().__init__(
            hooks, deliveries, endpoints, handlers, consumer=consumer, attempt=attempt,
            lease_ms=lease_ms, consumer_ttl_seconds=consumer_ttl_seconds,
            max_receives=max_receives, metrics=metrics, block_ms=block_ms, stopping=stopping,
        )  # fmt: skip
        self._hooks = hooks
        self._partitions = partitions
        self._retention_ms = retention_seconds * 1000

    async def _write(
        self, partition: int, group: str, entry_ids: list[str], handled: Handled
    ) -> list[tuple[int, Delivery]]:
        by_partition: dict[int, list[Delivery]] = {}
        for d in handled.deliveries:
            p = records.partition_of(d.id, self._partitions)
            if p is None:  # not an id of ours: a bug, never a delivery to lose silently
                raise ValueError("a delivery id that names no partition")
            by_partition.setdefault(p, []).append(d)
        fresh: list[tuple[int, Delivery]] = []
        for p, ds in by_partition.items():
            written = set(
                await self._deliveries.enqueue(
                    p, group, [], self._lease_ms, [(d.id, records.encode(d)) for d in ds]
                )
            )
            fresh += [(p, d) for d in ds if d.id in written]
        set_aside = {entry_id for entry_id, _ in handled.quarantined}
        await self._hooks.acknowledge(
            group,
            [i for i in entry_ids if i not in set_aside],
            set_aside=handled.quarantined,
            floor_ms=int(time.time() * 1000) - self._retention_ms,
        )
        return fresh
