"""Recording what became of deliveries: each attempt (or a delivery given up without one) is
counted, appended to its delivery's log and rescheduled, finished or buried by ``dlv_outcome``,
with the request it sent (headers; the body is the record's) and, for an endpoint, in the
endpoint's statistics.

The outcomes that end in the same loop iteration share one ``dlv_outcome`` call per partition
(a backlog's answers arrive in bursts: one script call and one Lua run for a burst instead of
one each).

Endpoint statistics (issue 18): ``dlv_outcome`` counts each attempt to an endpoint in a minute
bucket and an hour bucket (rings of 60 and 24 per endpoint and partition), with a histogram of
latencies in 64 buckets whose bounds grow by 2^(1/4) (bucket i: at most 2^(i/4) ms).
:func:`endpoint_stats` sums the buckets of the last hour and day and reads the percentiles off
the histogram (geometric interpolation inside a bucket: within 19 % of the true value).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache

import msgspec

from codeq.errors import StoreUnavailable
from codeq.metrics import Metrics
from codeq.store.protocol import Deliveries, EndpointBuckets, StatsBucket
from deliverers.http1 import Target
from deliverers.records import AttemptLog, Delivery, SentRequest, redacted
from deliverers.transport import InvalidRequest

__all__ = ["EndpointStats", "Outcome", "Outcomes", "WindowStats", "endpoint_stats"]

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
        self,
        partition: int,
        d: Delivery,
        outcome: str,
        delay_ms: int,
        entry: AttemptLog,
        sent: Mapping[str, str] | None = None,
    ) -> None:
        """An attempt was made: ``outcome`` (``succeeded``, ``retry``, ``dead``, ``gone``) and,
        for a retry, when (``delay_ms``); ``sent``: the headers the deliverer gave the HTTP
        client (kept with the ones the client adds, credentials redacted). A store that cannot
        answer leaves the attempt's lease to run out: the scheduler attempts it again then (at
        least once)."""
        self.count(d, outcome)
        if sent is not None:
            entry = msgspec.structs.replace(entry, request=sent_request(d, entry.at, sent))
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
        self._metrics.webhook_deliveries.labels(d.kind, command, outcome).inc()

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


# -- what an attempt sent ------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _client_headers(url: str) -> tuple[tuple[str, str], ...]:
    """The headers the HTTP client (deliverers/http1.py) puts before ours: ``Host`` (and
    ``Authorization`` from the URL's user info), from the very request head it sends."""
    try:
        head = Target.parse(url).head.decode("latin-1")
    except InvalidRequest:
        return ()
    lines = head.split("\r\n")[1:]  # after the request line
    return tuple(
        (name, value.strip()) for name, _, value in (line.partition(":") for line in lines) if name
    )


def sent_request(d: Delivery, at: int, sent: Mapping[str, str]) -> SentRequest:
    """The request an attempt sent, as the record keeps it: the client's headers, ours, and
    ``Content-Length`` (the client's last), credentials redacted."""
    headers = [
        *_client_headers(d.url),
        *sent.items(),
        ("Content-Length", str(len(d.body.encode()))),
    ]
    return SentRequest(at=at, headers=redacted(headers))


# -- endpoint statistics -------------------------------------------------------------------


class WindowStats(msgspec.Struct, kw_only=True, rename="camel"):
    """Attempts to an endpoint over a window: how many, how many succeeded (2xx) and failed,
    and latency percentiles in ms (None without a measured attempt)."""

    attempts: int
    succeeded: int
    failed: int
    success_rate: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None


class EndpointStats(msgspec.Struct, kw_only=True, rename="camel"):
    last_hour: WindowStats
    last_day: WindowStats


def latency_bound_ms(i: int) -> float:
    """The upper bound of latency bucket ``i`` (dlv_lib.lua ``latency_bucket``)."""
    return math.pow(2, i / 4)


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0 < q <= 1) of the latencies a histogram counts, in ms."""
    total = sum(histogram)
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, n in enumerate(histogram):
        if n and seen + n >= rank:
            hi = latency_bound_ms(i)
            if i == 0:
                return round(hi, 1)
            lo = latency_bound_ms(i - 1)
            return round(lo * math.pow(hi / lo, (rank - seen) / n), 1)
        seen += n
    return None  # unreachable: the ranks end inside the histogram


def summarize(buckets: Iterable[StatsBucket]) -> WindowStats:
    ok = failed = 0
    histogram: list[int] = []
    for b in buckets:
        ok += b.ok
        failed += b.failed
        if len(histogram) < len(b.latency):
            histogram += [0] * (len(b.latency) - len(histogram))
        for i, n in enumerate(b.latency):
            histogram[i] += n
    attempts = ok + failed
    return WindowStats(
        attempts=attempts,
        succeeded=ok,
        failed=failed,
        success_rate=round(ok / attempts, 4) if attempts else None,
        p50_ms=percentile(histogram, 0.5),
        p90_ms=percentile(histogram, 0.9),
        p99_ms=percentile(histogram, 0.99),
    )


def endpoint_stats(parts: Iterable[EndpointBuckets], now_ms: int) -> EndpointStats:
    """An endpoint's statistics from the buckets of every partition: the last hour is the
    minute buckets of the last 60 minutes (this one included), the last day the hour buckets
    of the last 24 hours (this one included). A bucket a minute ahead (the store's clock
    against ours) counts; a stale one (its ring slot not reused yet) does not."""
    minute, hour = now_ms // 60_000, now_ms // 3_600_000
    minutes: list[StatsBucket] = []
    hours: list[StatsBucket] = []
    for part in parts:
        minutes += [b for b in part.minutes if minute - 60 < b.epoch <= minute + 1]
        hours += [b for b in part.hours if hour - 24 < b.epoch <= hour + 1]
    return EndpointStats(last_hour=summarize(minutes), last_day=summarize(hours))
