"""What the store counts: queue depths per queue (``stats``, for the API) and the gauges
``/metrics`` reads (``gauges``: depths per command, delivery schedule and DLQ sizes,
consumer-group lag; and the live worker subscriptions). Read-only: one script call per
partition, one ``ZCOUNT`` for subscriptions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from codeq.domain import QueueStats
from codeq.store.base import ScriptStore
from codeq.store.keys import escape
from codeq.store.protocol import CommandDepths, GroupLag, PartitionGauges
from codeq.store.streams import text as _s

__all__ = ["StoreGauges", "queues_prefix"]


class _QueueMeta(msgspec.Struct):
    tenant: str
    command: str


_meta_decoder = msgspec.json.Decoder(_QueueMeta)


def queues_prefix(tenant: str) -> str:
    """The start of every queue segment of ``tenant`` (``stats.lua``'s prefix filter)."""
    return f"{escape(tenant)}/"


class StoreGauges(ScriptStore):
    """Queue stats and the ``/metrics`` gauges of a store (:class:`codeq.store.protocol.Meters`
    and ``stats`` of :class:`codeq.store.protocol.Store`)."""

    async def stats(
        self, partition: int, *, tenant: str | None = None, queues: Sequence[str] = ()
    ) -> list[QueueStats]:
        if queues:
            args: list[Any] = ["list", *queues]
        elif tenant is not None:
            args = ["prefix", queues_prefix(tenant)]
        else:
            args = ["all"]
        reply = await self._run("stats", partition, args)
        out: list[QueueStats] = []
        for i in range(0, len(reply), 6):
            meta_raw = reply[i + 1]
            if not meta_raw:
                continue
            meta = _meta_decoder.decode(meta_raw)
            out.append(
                QueueStats(
                    tenant_id=meta.tenant,
                    command=meta.command,
                    ready=int(reply[i + 2]),
                    delayed=int(reply[i + 3]),
                    in_progress=int(reply[i + 4]),
                    dlq=int(reply[i + 5]),
                )
            )
        return out

    async def gauges(self, partition: int) -> PartitionGauges:
        """Queue depths per command, delivery schedule and DLQ sizes and consumer-group lag
        of one partition: one read-only script call (``gauges.lua``)."""
        d = self.keys.delivery(partition)
        keys = (*self.keys.partition(partition).all, d.due, d.dead)
        deliveries, groups, rows = await self._eval(self._scripts["gauges"], keys, ())
        return PartitionGauges(
            scheduled_deliveries=int(deliveries[0]),
            dead_deliveries=int(deliveries[1]),
            groups=tuple(
                GroupLag(
                    group=_s(groups[i]),
                    lag=None if int(groups[i + 1]) < 0 else int(groups[i + 1]),
                    pending=int(groups[i + 2]),
                )
                for i in range(0, len(groups), 3)
            ),
            commands=tuple(
                CommandDepths(
                    command=_s(rows[i]),
                    ready=int(rows[i + 1]),
                    delayed=int(rows[i + 2]),
                    in_progress=int(rows[i + 3]),
                    dlq=int(rows[i + 4]),
                )
                for i in range(0, len(rows), 5)
            ),
        )

    async def active_subscriptions(self, now_ms: int) -> int:
        """Subscriptions of every tenant that have not expired at ``now_ms`` (one ``ZCOUNT``
        on the expiry index, read-only: expired records are dropped by the scripts)."""
        _, expiry, _ = self.keys.subscriptions("")
        return int(await self._command("zcount", expiry, f"({now_ms}", "+inf"))
