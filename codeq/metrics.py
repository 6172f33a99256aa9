"""The Prometheus series a codeQ process keeps in memory (spec 05, "Observability").

One :class:`Metrics` per app or deliverer, on its own registry, so several can live in one
process (tests, ``codeq serve``, where the gateway and its deliverers share one). The series
keep the original codeQ's names and labels; the gauges read from the store at scrape time are
the gateway's (``gateway/metrics.py``). Command labels are lower-cased: routing is
case-insensitive, so ``Render`` and ``RENDER`` are one queue and one series.

:func:`serve_metrics` answers ``GET /metrics`` on a port of its own (``metricsPort``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

#: a bucket bound as the exposition writes it ("0.001", "1.0", "+Inf"), as prometheus_client does
_le_text: Callable[[float], str] = floatToGoString

__all__ = ["CONTENT_TYPE", "Metrics", "serve_metrics"]

log = logging.getLogger("codeq.metrics")

#: The text exposition format (0.0.4) every Prometheus understands.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: The original's buckets for creation → completion (0.1 s to an hour).
PROCESSING_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
#: HTTP requests: milliseconds for the hot routes, up to 30 s for a long poll.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: One webhook attempt, bounded by ``webhookTimeoutSeconds``.
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# Counters and histograms are kept here as plain numbers, not as prometheus_client's objects:
# those take a lock on every update (two for an observation, and a walk of the buckets), which
# is pointless in a process whose metrics only its event loop's thread touches: the series
# took 12-14 µs of a create's gateway CPU, ~8 µs less now (bench/http.py). The registry
# reads them at scrape through `collect`, as the same families, samples and `_created` series
# prometheus_client's own would give (tests/test_metrics.py compares the two).


class _CounterChild:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self.created = time.time()

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self.value += amount


class _HistogramChild:
    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds  # ascending, the last +Inf
        self.counts = [0] * len(bounds)  # per bucket, not cumulative
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        self.sum += amount
        self.counts[bisect_left(self.bounds, amount)] += 1  # the first bound >= amount (le)


class _Family:
    """One counter or histogram family: its children by label values, made on first use."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        self._children: dict[tuple[str, ...], Any] = {}
        if not self.labelnames:
            self._children[()] = self._child()  # a series without labels shows from the start
        registry.register(self)

    def _child(self) -> Any:
        raise NotImplementedError

    def labels(self, *values: str) -> Any:
        if not self.labelnames or len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {values}")
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._child()
        return child

    def collect(self) -> Iterator[Metric]:
        raise NotImplementedError


class Counter(_Family):
    """A counter family (``name`` with or without ``_total``, as prometheus_client takes it)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name.removesuffix("_total"), documentation, labelnames, registry)

    def _child(self) -> _CounterChild:
        return _CounterChild()

    def inc(self, amount: float = 1) -> None:
        """The series without labels."""
        self._children[()].inc(amount)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            family.add_metric(values, child.value, created=child.created)
        yield family


class Histogram(_Family):
    """A histogram family with the given upper bounds (``+Inf`` added)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self.bounds = (*sorted(float(b) for b in buckets), float("inf"))
        self._les = [_le_text(b) for b in self.bounds]
        super().__init__(name, documentation, labelnames, registry)

    def _child(self) -> _HistogramChild:
        return _HistogramChild(self.bounds)

    def observe(self, amount: float) -> None:
        """The series without labels."""
        self._children[()].observe(amount)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, child in list(self._children.items()):
            running, buckets = 0, []
            for le, count in zip(self._les, child.counts, strict=True):
                running += count
                buckets.append((le, float(running)))
            family.add_metric(values, buckets, child.sum)
            labels = dict(zip(self.labelnames, values, strict=True))
            family.samples.append(Sample(f"{self.name}_created", labels, child.created))
        yield family


class Metrics:
    """The in-process series of one app (and its deliverers)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.task_created = Counter(
            "codeq_task_created_total", "Tasks created (idempotent replays excluded)",
            ["command"], registry=r,
        )  # fmt: skip
        self.task_claimed = Counter(
            "codeq_task_claimed_total", "Tasks claimed by workers", ["command"], registry=r
        )
        self.task_completed = Counter(
            "codeq_task_completed_total", "Tasks finished by a worker's result",
            ["command", "status"], registry=r,
        )  # fmt: skip
        self.processing_latency = Histogram(
            "codeq_task_processing_latency_seconds",
            "From a task's creation to the result that finished it (server timestamps)",
            ["command", "status"], buckets=PROCESSING_BUCKETS, registry=r,
        )  # fmt: skip
        self.lease_expired = Counter(
            "codeq_lease_expired_total", "Leases that ran out before a result (from the events)",
            ["command"], registry=r,
        )  # fmt: skip
        self.webhook_deliveries = Counter(
            "codeq_webhook_deliveries_total",
            "Webhook delivery attempts by kind (callback, notification, endpoint) and outcome "
            "(succeeded, retry, dead, gone)",
            ["kind", "command", "outcome"], registry=r,
        )  # fmt: skip
        self.events_set_aside = Counter(
            "codeq_events_set_aside_total",
            "Stream entries a deliverer group set aside with a dead-letter record: quarantined "
            "(they cannot be read) or poison (received too often)",
            ["group", "why"], registry=r,
        )  # fmt: skip
        self.webhook_latency = Histogram(
            "codeq_webhook_delivery_latency_seconds", "Duration of one webhook attempt",
            ["kind"], buckets=DELIVERY_BUCKETS, registry=r,
        )  # fmt: skip
        self.rate_limit_hits = Counter(
            "codeq_rate_limit_hits_total", "Requests and deliveries refused by a rate limit",
            ["scope", "operation"], registry=r,
        )  # fmt: skip
        self.rate_limit_fail_open = Counter(
            "codeq_rate_limit_fail_open_total",
            "Rate-limit checks the store could not answer (the request went ahead)",
            ["scope"], registry=r,
        )  # fmt: skip
        self.http_duration = Histogram(
            "codeq_http_request_duration_seconds", "HTTP requests by route template",
            ["method", "route", "status"], buckets=HTTP_BUCKETS, registry=r,
        )  # fmt: skip
        self.http_in_flight = Gauge(
            "codeq_http_requests_in_flight",
            "Requests this process is working on (parked long polls excluded; maxInFlightRequests)",
            registry=r,
        )  # fmt: skip
        self.http_shed = Counter(
            "codeq_http_shed_total",
            "Requests answered 503 overloaded because maxInFlightRequests were in flight",
            registry=r,
        )  # fmt: skip
        self.long_polls_waiting = Gauge(
            "codeq_long_polls_waiting", "Claim requests of this process waiting in a long poll",
            registry=r,
        )  # fmt: skip
        self.scrape_errors = Counter(
            "codeq_metrics_scrape_errors_total",
            "Scrapes that could not read the store gauges (they were left out)",
            registry=r,
        )

    def created(self, command: str, n: int = 1) -> None:
        self.task_created.labels(command.lower()).inc(n)

    def claimed(self, command: str) -> None:
        self.task_claimed.labels(command.lower()).inc()

    def completed(self, command: str, status: str, seconds: float | None) -> None:
        """A result: counted, and its creation → completion time observed when known."""
        command = command.lower()
        self.task_completed.labels(command, status).inc()
        if seconds is not None:
            self.processing_latency.labels(command, status).observe(max(0.0, seconds))

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        if method not in _METHODS:  # a client picks the method: keep the label bounded
            method = "OTHER"
        self.http_duration.labels(method, route, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def serve_metrics(
    host: str, port: int, render: Callable[[], Awaitable[bytes]]
) -> asyncio.Server:
    """A minimal HTTP/1.1 server for ``GET /metrics`` alone (``metricsPort``): one request per
    connection, the body from ``render``; anything else is a 404."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].split(b"?", 1)[0] if len(parts) >= 2 else b""
            if parts[:1] in ([b"GET"], [b"HEAD"]) and path == b"/metrics":
                status, ctype, body = b"200 OK", CONTENT_TYPE.encode(), await render()
            else:
                status, ctype, body = b"404 Not Found", b"text/plain", b"not found\n"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype
                + b"\r\nContent-Length: " + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + (b"" if parts[:1] == [b"HEAD"] else body)
            )  # fmt: skip
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        except Exception:
            log.exception("metrics port: request failed")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port)
