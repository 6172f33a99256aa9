"""Consumer groups on a stream (:class:`~codeq.store.protocol.ConsumerGroups`): batches of
new entries, what a consumer and dead consumers hold, liveness. The same plain commands serve
the partition streams (:class:`~codeq.store.deliveries.DeliveryStore`) and the ``{hooks}``
stream (:class:`~codeq.store.hook_events.HookEventStore`); only the keys differ."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

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

__all__ = ["StreamGroups"]


class StreamGroups:
    """The consumer-group commands on ``stream_of(partition)``, with consumers' liveness
    marks at ``alive_key(partition, group, consumer)``."""

    def __init__(
        self,
        store: ScriptStore,
        stream_of: Callable[[int], str],
        alive_key: Callable[[int, str, str], str],
    ) -> None:
        self._store = store
        self._stream_of = stream_of
        self._alive_key = alive_key
        # XREADGROUP replies are taken raw (redis-py's parsing into nested dicts cost ~10 % of
        # a deliverer's CPU; `entries` reads the RESP2 and RESP3 shapes itself). Only
        # read_group sends XREADGROUP on this client.
        with contextlib.suppress(AttributeError):
            store.client.set_response_callback("XREADGROUP", raw_reply)

    async def _cmd(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._store._command(method, *args, **kwargs)

    async def ensure_group(self, partition: int, group: str, start: str = "0") -> bool:
        """Create ``group`` on the stream (and the stream); False if it existed."""
        key = self._stream_of(partition)
        try:
            await self._store._refusable("xgroup_create", key, group, id=start, mkstream=True)
        except rexc.ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise StoreError(f"store error in xgroup_create: {exc}") from exc
        return True

    async def group_exists(self, partition: int, group: str) -> bool:
        key = self._stream_of(partition)
        try:
            groups = await self._store._refusable("xinfo_groups", key)
        except rexc.ResponseError:
            return False  # no stream yet
        return any(text(g.get("name", g.get(b"name", b""))) == group for g in groups)

    async def read_group(
        self, partition: int, group: str, consumer: str, *, count: int, block_ms: int
    ) -> list[StreamEntry]:
        """New entries for ``consumer``; [] when none came in ``block_ms`` or the group is
        missing (Redis refuses, KVRocks answers nothing: ``group_exists`` tells)."""
        key = self._stream_of(partition)

        def read(block: int | None) -> Any:
            return self._store._refusable("xreadgroup", group, consumer, {key: ">"}, count, block)

        try:
            if await self._store.on_kvrocks():  # no blocking reads there (see streams.poll)
                reply = await poll(lambda: read(None), block_ms, GROUP_POLL_CAP_S)
            else:
                reply = await read(block_ms)
        except rexc.ResponseError as exc:
            if not await self.group_exists(partition, group):  # NOGROUP, or no stream at all
                return []
            raise StoreError(f"store error in xreadgroup: {exc}") from exc
        return entries(reply)

    async def pending_of(
        self, partition: int, group: str, consumer: str, *, count: int = 100
    ) -> list[tuple[str, int]]:
        """(entry id, times delivered) of the entries ``consumer`` holds unacknowledged."""
        key = self._stream_of(partition)
        reply = await self._cmd("xpending_range", key, group, "-", "+", count, consumer)
        return [(text(item["message_id"]), int(item["times_delivered"])) for item in reply or ()]

    async def consumers(self, partition: int, group: str) -> list[tuple[str, int]]:
        """(consumer name, pending count) of a group."""
        key = self._stream_of(partition)
        try:
            reply = await self._store._refusable("xinfo_consumers", key, group)
        except rexc.ResponseError:
            return []
        return [
            (text(c.get("name", c.get(b"name", b""))), int(c.get("pending", c.get(b"pending", 0))))
            for c in reply or ()
        ]

    async def take_over(
        self, partition: int, group: str, consumer: str, ids: Sequence[str]
    ) -> list[StreamEntry]:
        """XCLAIM ``ids`` for ``consumer`` (min idle 0: the owner is known dead)."""
        if not ids:
            return []
        key = self._stream_of(partition)
        reply = await self._cmd("xclaim", key, group, consumer, 0, list(ids))
        return [(entry_id, fields) for entry_id, fields in entry_list(reply) if fields]

    async def forget_consumer(self, partition: int, group: str, consumer: str) -> None:
        key = self._stream_of(partition)
        with contextlib.suppress(rexc.ResponseError):
            await self._store._refusable("xgroup_delconsumer", key, group, consumer)

    async def heartbeat(self, partition: int, group: str, consumer: str, ttl_s: int) -> None:
        await self._cmd("set", self._alive_key(partition, group, consumer), 1, ex=ttl_s)

    async def release(self, partition: int, group: str, consumer: str) -> None:
        """A consumer that stops says so: it is dead to the others from now on."""
        await self._cmd("delete", self._alive_key(partition, group, consumer))

    async def alive(self, partition: int, group: str, consumer: str) -> bool:
        key = self._alive_key(partition, group, consumer)
        return bool(await self._cmd("exists", key))
