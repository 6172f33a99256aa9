"""What the store counts: queue depths per queue (``stats``, for the API) and the gauges
``/metrics`` reads (``gauges``: depths per command, delivery schedule and DLQ sizes,
consumer-group lag; and the live worker subscriptions). Read-only: one script call per
partition, one ``ZCOUNT`` for subscriptions.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from codeq.domain import OutcomeCounts, QueueStats, RateWindow
from codeq.store.base import ScriptStore
from codeq.store.keys import escape
from codeq.store.protocol import CommandDepths, GroupLag, PartitionGauges
from codeq.store.streams import text as _s

__all__ = ["StoreGauges", "queues_prefix", "rate_windows"]


class _QueueMeta(msgspec.Struct):
    tenant: str
    command: str


_meta_decoder = msgspec.json.Decoder(_QueueMeta)


def queues_prefix(tenant: str) -> str:
    """The start of every queue segment of ``tenant`` (``stats.lua``'s prefix filter)."""
    return f"{escape(tenant)}/"


#: entries per queue in a ``stats.lua`` reply: q, registry, 4 depths, 5 totals, the ring
_STATS_STRIDE = 2 + 4 + 5 + 16
#: how far back the rates ring is read (its slots are overwritten after 16 minutes)
_RATES_HORIZON_MS = 16 * 60_000


def _counts(values: Sequence[Any]) -> OutcomeCounts:
    created, completed, failed, dead, cancelled = (int(v) for v in values)
    return OutcomeCounts(
        created=created, completed=completed, failed=failed, dead=dead, cancelled=cancelled
    )


def rate_windows(
    totals: OutcomeCounts,
    snapshots: Sequence[bytes | str],
    now_ms: int,
    last_snapshot_ms: int | None = None,
) -> tuple[RateWindow, ...]:
    """The windows between the ring's snapshots (``"<ms>,<created>,...``, see sweep.lua) of the
    last 16 minutes, oldest first, and the running one from the newest snapshot to now.
    ``last_snapshot_ms``: when the partition's last snapshot was taken; a queue it did not name
    had no task in the partition then, so it counts from zero from that time."""
    points: list[tuple[int, OutcomeCounts]] = []
    for raw in snapshots:
        parts = _s(raw).split(",") if raw else []
        if len(parts) != 6 or not all(p.isdigit() for p in parts):
            continue  # an empty slot, or one nobody can read
        at = int(parts[0])
        if now_ms - _RATES_HORIZON_MS <= at <= now_ms + 60_000:
            points.append((at, _counts(parts[1:])))
    recent = last_snapshot_ms is not None and now_ms - _RATES_HORIZON_MS <= last_snapshot_ms
    if recent and all(at != last_snapshot_ms for at, _ in points):
        points.append((last_snapshot_ms or 0, OutcomeCounts()))
    points.sort(key=lambda p: p[0])
    windows = [
        RateWindow(start_ms=a_at, end_ms=b_at, counts=b - a)
        for (a_at, a), (b_at, b) in itertools.pairwise(points)
    ]
    if points:
        at, last = points[-1]
        windows.append(RateWindow(start_ms=at, end_ms=max(now_ms, at), counts=totals - last))
    return tuple(windows)


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
        rates = self.keys.partition(partition).rates
        reply = await self._run("stats", partition, args, (rates,))
        now_ms = time.time_ns() // 1_000_000
        last = _s(reply[0])
        last_snapshot_ms = int(last) if last.isdigit() else None
        out: list[QueueStats] = []
        for i in range(1, len(reply), _STATS_STRIDE):
            meta_raw = reply[i + 1]
            if not meta_raw:
                continue
            meta = _meta_decoder.decode(meta_raw)
            totals = _counts(reply[i + 6 : i + 11])
            out.append(
                QueueStats(
                    tenant_id=meta.tenant,
                    command=meta.command,
                    ready=int(reply[i + 2]),
                    delayed=int(reply[i + 3]),
                    in_progress=int(reply[i + 4]),
                    dlq=int(reply[i + 5]),
                    totals=totals,
                    windows=rate_windows(
                        totals, reply[i + 11 : i + _STATS_STRIDE], now_ms, last_snapshot_ms
                    ),
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
