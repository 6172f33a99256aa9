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

from collections.abc import Sequence
from typing import Any

import msgspec

from codeq.store.base import ScriptStore
from codeq.store.groups import StreamGroups

__all__ = ["HookEventStore"]


class HookEventStore(StreamGroups):
    """:class:`HookEvents` on a store: the consumer-group commands of the partition streams
    (:class:`StreamGroups`) on this stream, ``ep_ack`` for the acknowledgement."""

    def __init__(self, store: ScriptStore) -> None:
        stream, self._set_aside = store.keys.hook_events()
        super().__init__(
            store,
            lambda _: stream,
            lambda _, group, consumer: store.keys.hook_consumer_alive(group, consumer),
        )
        self._stream = stream
        self.keys = store.keys

    async def poison(
        self, partition: int, group: str, entry_id: str, receives: int,
        reason: str = "received too many times",
    ) -> None:  # fmt: skip
        # floor 0 trims nothing: the next batch's acknowledgement does
        await self.acknowledge(group, [], set_aside=[(entry_id, reason)], floor_ms=0)

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
