"""The ``{hooks}`` event stream: the operational events of endpoints (``endpoint.disabled``,
``endpoint.enabled``), appended by the endpoint scripts (``ep_mark.lua``, ``ep_patch.lua``) in
the step that makes the change, and read by the deliverers' ``endpoints`` group exactly as the
partition streams are (:class:`~codeq.store.protocol.ConsumerGroups`: batches, what a consumer
and dead consumers hold, liveness).

The endpoint scripts run on the ``{hooks}`` hash tag, so their events cannot go to a partition
stream (another cluster slot): the tag has this stream of its own. There is one, whatever the
partition count: the ``partition`` every :class:`ConsumerGroups` method takes is ignored here.
What differs from a partition stream is the acknowledgement: an entry's deliveries are written
in their partitions first (``dlv_enqueue``), then the entry is acknowledged here
(:meth:`HookEventStore.acknowledge`, ``ep_ack.lua``, which also sets aside the entries that
cannot be handled and trims the stream); a crash in between repeats the entry, and its
deliveries' ids are the same, so none is written twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import msgspec
from redis import exceptions as rexc

from codeq.store.base import ScriptStore
from codeq.store.errors import StoreError
from codeq.store.streams import (
    GROUP_POLL_CAP_S,
    StreamEntry,
    entries,
    entry_list,
    poll,
    raw_reply,
    text,
)

__all__ = ["HookEventStore"]


class HookEventStore:
    """:class:`HookEvents` on a store: plain commands on the stream, ``ep_ack`` for the
    acknowledgement."""

    def __init__(self, store: ScriptStore) -> None:
        self._store = store
        self.keys = store.keys
        self._stream, self._set_aside = store.keys.hook_events()
        # XREADGROUP replies are taken raw, as the partition streams' are (DeliveryStore).
        with contextlib.suppress(AttributeError):
            store.client.set_response_callback("XREADGROUP", raw_reply)

    async def _cmd(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._store._command(method, *args, **kwargs)

    async def ensure_group(self, partition: int, group: str, start: str = "0") -> bool:
        try:
            await self._store._refusable(
                "xgroup_create", self._stream, group, id=start, mkstream=True
            )
        except rexc.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise StoreError(f"store error in xgroup_create: {exc}") from exc
        return True

    async def group_exists(self, partition: int, group: str) -> bool:
        try:
            groups = await self._store._refusable("xinfo_groups", self._stream)
        except rexc.ResponseError:
            return False  # no stream yet
        return any(text(g.get("name", g.get(b"name", b""))) == group for g in groups)

    async def read_group(
        self, partition: int, group: str, consumer: str, *, count: int, block_ms: int
    ) -> list[StreamEntry]:
        def read(block: int | None) -> Any:
            return self._store._refusable(
                "xreadgroup", group, consumer, {self._stream: ">"}, count, block
            )

        try:
            if await self._store.on_kvrocks():  # no blocking reads there (see streams.poll)
                reply = await poll(lambda: read(None), block_ms, GROUP_POLL_CAP_S)
            else:
                reply = await read(block_ms)
        except rexc.ResponseError as exc:
            if not await self.group_exists(partition, group):
                return []
            raise StoreError(f"store error in xreadgroup: {exc}") from exc
        return entries(reply)

    async def pending_of(
        self, partition: int, group: str, consumer: str, *, count: int = 100
    ) -> list[tuple[str, int]]:
        reply = await self._cmd("xpending_range", self._stream, group, "-", "+", count, consumer)
        return [(text(item["message_id"]), int(item["times_delivered"])) for item in reply or ()]

    async def consumers(self, partition: int, group: str) -> list[tuple[str, int]]:
        try:
            reply = await self._store._refusable("xinfo_consumers", self._stream, group)
        except rexc.ResponseError:
            return []
        return [
            (text(c.get("name", c.get(b"name", b""))), int(c.get("pending", c.get(b"pending", 0))))
            for c in reply or ()
        ]

    async def take_over(
        self, partition: int, group: str, consumer: str, ids: Sequence[str]
    ) -> list[StreamEntry]:
        if not ids:
            return []
        reply = await self._cmd("xclaim", self._stream, group, consumer, 0, list(ids))
        return [(entry_id, fields) for entry_id, fields in entry_list(reply) if fields]

    async def forget_consumer(self, partition: int, group: str, consumer: str) -> None:
        with contextlib.suppress(rexc.ResponseError):
            await self._store._refusable("xgroup_delconsumer", self._stream, group, consumer)

    async def poison(
        self, partition: int, group: str, entry_id: str, receives: int,
        reason: str = "received too many times",
    ) -> None:  # fmt: skip
        # floor 0 trims nothing: the next batch's acknowledgement does
        await self.acknowledge(group, [], set_aside=[(entry_id, reason)], floor_ms=0)

    async def heartbeat(self, partition: int, group: str, consumer: str, ttl_s: int) -> None:
        await self._cmd("set", self.keys.hook_consumer_alive(group, consumer), 1, ex=ttl_s)

    async def release(self, partition: int, group: str, consumer: str) -> None:
        await self._cmd("delete", self.keys.hook_consumer_alive(group, consumer))

    async def alive(self, partition: int, group: str, consumer: str) -> bool:
        return bool(await self._cmd("exists", self.keys.hook_consumer_alive(group, consumer)))

    async def acknowledge(
        self, group: str, entry_ids: Sequence[str], *,
        set_aside: Sequence[tuple[str, str]] = (), floor_ms: int,
    ) -> None:  # fmt: skip
        args: list[Any] = [group, floor_ms, len(set_aside)]
        for entry_id, reason in set_aside:
            args.extend((entry_id, reason))
        args.extend(entry_ids)
        keys = (self._stream, self._set_aside)
        await self._store._eval(self._store._scripts["ep_ack"], keys, args)

    async def set_aside_records(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The oldest dead-letter records of the stream's entries (group, entry, reason,
        at)."""
        raws = await self._cmd("lrange", self._set_aside, 0, limit - 1)
        return [msgspec.json.decode(raw) for raw in raws or ()]
