"""Attempting deliveries: a scheduler loop per partition leases whatever is due (``dlv_claim``:
retries, deliveries of a deliverer that died mid-attempt, replays), and each delivery, new or
due, is attempted in a task of its own: signed, sent, and its outcome recorded
(:mod:`deliverers.outcomes`).

A target host over its ``rateLimit.webhook`` bucket is not sent to: the delivery is put off
until the bucket has a token again (``dlv_defer``), without counting an attempt; so is one that
gets no connection slot in time (``busy``: nothing was sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec

from codeq import __version__
from codeq.errors import StoreUnavailable
from codeq.metrics import Metrics
from codeq.rate_limits import RateGuard
from codeq.settings import Settings
from codeq.store.protocol import Deliveries, Endpoints
from codeq.tracing import Tracing
from codeq.webhooks import sign
from deliverers import records
from deliverers.endpoints import EndpointDirectory, active_secrets
from deliverers.outcomes import Outcomes
from deliverers.records import AttemptLog, Delivery
from deliverers.sender import Attempt, WebhookSender
from deliverers.stopping import Stopping

__all__ = ["Dispatcher", "attempt_lease_ms"]

log = logging.getLogger("codeq.deliverers")

DUE_BATCH = 200  # due deliveries leased per dlv_claim
_ATTEMPT_LEASE_MARGIN_MS = 5_000
_BUSY_DELAY_MS = 1_000  # a host with no free connection slot: try again about this much later


def attempt_lease_ms(settings: Settings, sender: WebhookSender) -> int:
    """How long an attempt holds its delivery: its wait for a connection slot (bounded by the
    sender), its exchange (the timeout) and a margin, so no other deliverer takes it
    meanwhile."""
    return (
        int((settings.webhook_timeout_seconds + sender.queue_seconds) * 1000)
        + _ATTEMPT_LEASE_MARGIN_MS
    )


class Dispatcher:
    """Attempts deliveries: those written by the consumer groups at once, the due ones as the
    scheduler leases them."""

    def __init__(
        self,
        deliveries: Deliveries,
        endpoints: Endpoints,
        directory: EndpointDirectory,
        sender: WebhookSender,
        outcomes: Outcomes,
        *,
        settings: Settings,
        metrics: Metrics,
        rate: RateGuard,
        tracing: Tracing,
        secret: str | None,
        scan_interval: float,
        stopping: Stopping,
    ) -> None:
        self._deliveries = deliveries
        self._endpoints = endpoints
        self._directory = directory
        self._sender = sender
        self._outcomes = outcomes
        self._settings = settings
        self._metrics = metrics
        self._rate = rate
        self._tracing = tracing
        self._secret = secret
        self._scan_interval = scan_interval
        self._stopping = stopping
        self.lease_ms = attempt_lease_ms(settings, sender)
        self._inflight: set[asyncio.Task[None]] = set()

    async def run_schedule(self, partition: int) -> None:
        """Lease and attempt the partition's due deliveries until the stop."""
        while not self._stopping.is_set():
            try:
                due = await self._deliveries.claim_due(
                    partition, lease_ms=self.lease_ms, limit=DUE_BATCH
                )
                for raw in due:
                    try:
                        d = records.decode(raw)
                    except msgspec.DecodeError:  # one bad record must not stop the others
                        log.error(
                            "a delivery record cannot be decoded", extra={"partition": partition}
                        )
                        continue
                    self.attempt_soon(partition, d)
                if len(due) < DUE_BATCH:
                    await self._stopping.pause(self._scan_interval)
            except asyncio.CancelledError:
                raise
            except StoreUnavailable:
                await self._stopping.pause(1.0)
            except Exception:
                log.exception("delivery scheduler failed, retrying")
                await self._stopping.pause(1.0)

    def attempt_soon(self, partition: int, d: Delivery) -> None:
        """Attempt ``d`` (leased to this deliverer) in a task of its own."""
        task = asyncio.create_task(self._attempt(partition, d))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - a grace period, not I/O
        """Let the attempts in flight finish within ``timeout``; cut off the rest (each stays
        leased in the schedule and is attempted again when its lease ends)."""
        if not self._inflight:
            return
        _, pending = await asyncio.wait(set(self._inflight), timeout=max(0.0, timeout))
        for task in pending:
            task.cancel()

    async def _attempt(self, partition: int, d: Delivery) -> None:
        body = d.body.encode()
        attempt_no = d.attempt_no  # persisted before the send (dlv_enqueue, dlv_claim)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"codeq/{__version__}",
            "X-CodeQ-Event": d.event_type,
            "X-CodeQ-Delivery-Attempt": str(attempt_no),
        }
        if d.trace_parent:
            headers["traceparent"] = d.trace_parent
            if d.trace_state:
                headers["tracestate"] = d.trace_state
        secrets = [self._secret] if self._secret else []
        endpoint: dict[str, Any] | None = None
        if d.endpoint_id is not None:
            endpoint = await self._directory.find(d.tenant, d.endpoint_id, fresh=True)
            if endpoint is None or not endpoint.get("enabled", True):
                await self._outcomes.given_up(partition, d, "endpoint deleted or disabled")
                return
            secrets = active_secrets(endpoint)
        if self._rate.limited("webhook") and await self._put_off(partition, d):
            return
        if secrets:
            headers.update(sign(body, secrets=secrets, msg_id=d.id))
        else:
            headers["webhook-id"] = d.id
        started = int(time.time() * 1000)
        if self._tracing.enabled:
            result = await self._traced_send(d, attempt_no, body, headers)
        else:
            result = await self._sender.send(d.url, body, headers)
        if result.busy:
            # No connection slot for the host in time: nothing was sent, so no attempt is
            # counted; the delivery comes back a little later.
            delay_ms = round(_BUSY_DELAY_MS * random.uniform(0.5, 1.5))
            with contextlib.suppress(StoreUnavailable):
                await self._deliveries.defer(partition, d.id, delay_ms=delay_ms)
            return
        if endpoint is not None and d.endpoint_id is not None:
            mark = "ok" if result.ok else "gone" if result.status_code == 410 else "failed"
            with contextlib.suppress(StoreUnavailable):
                await self._endpoints.mark(
                    d.endpoint_id,
                    d.tenant,
                    mark,
                    int(self._settings.endpoint_disable_after_hours * 3_600_000),
                )
        if result.refused:
            outcome, delay_ms = "dead", 0
        else:
            outcome, delay_ms = records.next_step(
                d, result.status_code, result.ok, result.retry_after_seconds
            )
            self._metrics.child(self._metrics.webhook_latency, d.kind).observe(
                result.latency_ms / 1000
            )
        entry = AttemptLog(
            at=started,
            latency_ms=round(result.latency_ms, 1),
            status_code=result.status_code,
            error=result.error,
            response=result.response_head or None,
        )
        await self._outcomes.attempted(partition, d, outcome, delay_ms, entry)

    async def _traced_send(
        self, d: Delivery, attempt_no: int, body: bytes, headers: dict[str, str]
    ) -> Attempt:
        attributes: dict[str, str | int | float | bool] = {
            "codeq.delivery.id": d.id,
            "codeq.delivery.kind": d.kind,
            "codeq.delivery.attempt": attempt_no,
            "codeq.event_type": d.event_type,
            "server.address": urlsplit(d.url).hostname or "",
        }
        # The delivery joins the task's trace; the receiver gets this span as its parent.
        with self._tracing.span(
            "codeq.deliver", parent=d.trace_parent, kind="client", attributes=attributes
        ) as span:
            own = self._tracing.traceparent()
            if own is not None:
                headers["traceparent"] = own
            result = await self._sender.send(d.url, body, headers)
            if span is not None:
                span.set_attribute("http.response.status_code", result.status_code or 0)
        return result

    async def _put_off(self, partition: int, d: Delivery) -> bool:
        """The target host's bucket (scope ``webhook``): True when it is empty and the attempt
        has been put off until it has a token, without counting as an attempt."""
        host = urlsplit(d.url).hostname or ""
        wait = await self._rate.wait("webhook", d.kind, d.tenant, host)
        if wait <= 0:
            return False
        # A store error here leaves the lease to run out: the scheduler tries again then.
        with contextlib.suppress(StoreUnavailable):
            await self._deliveries.defer(partition, d.id, delay_ms=math.ceil(wait * 1000))
        return True
