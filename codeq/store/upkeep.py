"""Keeping the task partitions in shape: the dead-letter queue (browse, requeue), the purge of
finished tasks past retention, the sweeper's step and the trimming of the event streams. Each
is one script (``codeq/store/lua/<name>.lua``) on one partition. And the switch of the listing
layout (:meth:`TaskUpkeep.list_waiting_apart`), one mark per partition.
"""

from __future__ import annotations

from collections.abc import Sequence

from codeq.domain import SweepReport, Task
from codeq.store.base import ScriptStore
from codeq.store.protocol import PurgeReply
from codeq.store.records import decode_task
from codeq.store.scripts import library_names
from codeq.store.streams import text as _s
from codeq.store.tasks import delays_arg

__all__ = ["TaskUpkeep"]


class TaskUpkeep(ScriptStore):
    """DLQ, purge, sweep and trimming of a store (part of :class:`codeq.store.protocol.Store`)."""

    async def requeue_dlq(
        self, partition: int, tenant: str, queue: str, ids: Sequence[str], *, limit: int
    ) -> list[str]:
        reply = await self._run("requeue_dlq", partition, [tenant, queue, limit, *ids])
        return [_s(x) for x in reply[1:]]

    async def dlq_page(
        self, partition: int, queue: str, *, cursor: str | None, size: int
    ) -> tuple[list[Task], str | None]:
        reply = await self._run("dlq_page", partition, [queue, cursor or "", size])
        nxt = _s(reply[0]) or None
        return [decode_task(raw) for raw in reply[1:]], nxt

    async def purge(
        self,
        partition: int,
        *,
        before_ms: int | None,
        limit: int,
        tenant: str | None = None,
        after: tuple[int, str] | None = None,
    ) -> PurgeReply:
        args = [
            "" if before_ms is None else before_ms,
            limit,
            tenant or "",
            "" if after is None else after[0],
            "" if after is None else after[1],
        ]
        reply = await self._run("purge", partition, args)
        score, member = _s(reply[2]), _s(reply[3])
        return PurgeReply(
            purged=int(reply[0]),
            looked=int(reply[4]),
            more=bool(int(reply[1])),
            last=(int(float(score)), member) if member else None,
        )

    async def sweep(
        self,
        partition: int,
        *,
        token: str,
        lock_ms: int,
        limit: int,
        delays_ms: Sequence[int],
        dlq_retention_ms: int,
    ) -> SweepReport | None:
        args = [token, lock_ms, limit, delays_arg(delays_ms), dlq_retention_ms]
        reply = await self._run("sweep", partition, args, (self.keys.partition(partition).rates,))
        if _s(reply[0]) == "LOCKED":
            return None
        return SweepReport(
            promoted=int(reply[1]),
            expired=int(reply[2]),
            purged=int(reply[3]),
            more=bool(int(reply[4])),
        )

    async def list_waiting_apart(self, *, if_empty: bool = False) -> list[bool] | None:
        """Switch every partition to listing its delayed tasks under W (qstats ``!ixw`` = 0,
        lib.lua ``ixw``; a partition switched before keeps its mark); the sweeper then moves
        the entries an older release left under P and marks the partition done (1). Returns,
        per partition, whether it is done. Only safe once no process of a release before W
        runs (docs/deploy.md). With ``if_empty`` (a server's start) nothing is switched, and
        None returned, where a partition has ever held a task or the store holds function
        libraries of another release (one that ran here may still run). One mark per
        partition, set where absent: not a transition of any task."""
        parts = [self.keys.partition(p) for p in range(self.keys.partitions)]
        if if_empty:
            ours = {script.function for script in self._scripts.values()}
            for on in await self._on_nodes():  # (LIBRARYNAME is a glob on Redis, a prefix
                # on KVRocks: every library is listed, and ours told apart by name)
                listed = await self._command("execute_command", "FUNCTION", "LIST", **on)
                if {n for n in library_names(listed) if n.startswith("codeq_")} - ours:
                    return None
            for k in parts:
                if await self._command("hlen", k.queues):
                    return None
        done = []
        for k in parts:
            await self._command("hsetnx", k.qstats, "!ixw", "0")
            done.append(_s(await self._command("hget", k.qstats, "!ixw")) == "1")
        return done

    async def trim_events(self, partition: int, *, floor_ms: int) -> int:
        reply = await self._run("trim_events", partition, [floor_ms])
        return int(reply[0])
