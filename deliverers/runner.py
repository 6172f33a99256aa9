"""The deliverer process: consumer groups on every partition stream turn events into durable
deliveries, and a scheduler attempts every delivery that is due (spec 03).

For each partition and group, one loop reads ``XREADGROUP ... >`` a batch at a time. The group's
handler picks the entries it has a use for by their type (the rest are never decoded), reads
what it needs for all of them in one call (``get_many``, ``sub_pick`` per queue), and the
batch's deliveries are written and its entries acknowledged in one script (``dlv_enqueue``);
the new deliveries are attempted at once. Deliveries
that fail are rescheduled by ``dlv_outcome``; a scheduler loop per partition leases whatever is
due (``dlv_claim``) — retries, deliveries of a deliverer that died mid-attempt, replays.

A target host over its ``rateLimit.webhook`` bucket is not sent to: the delivery is put off
until the bucket has a token again (``dlv_defer``), without counting an attempt.

Each consumer refreshes a liveness key; a consumer whose key has expired is dead, and a live one
takes its unacknowledged entries with ``XCLAIM`` (not ``XAUTOCLAIM`` idle time, which KVRocks
reports wrongly). An entry received more than ``eventMaxReceives`` times is set aside as poison.
An entry that cannot be decoded, or whose task cannot be read, is quarantined on its own (a
dead-letter record with the reason, acknowledged with its batch): the rest of the batch is
delivered. A group that vanished (a store restarted without its data) is created again, with a
log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import msgspec

from codeq import __version__
from codeq.errors import StoreUnavailable
from codeq.metrics import Metrics, serve_metrics
from codeq.rate_limits import RateGuard
from codeq.settings import Settings
from codeq.store.deliveries import DeliveryStore
from codeq.store.endpoints import EndpointStore
from codeq.store.protocol import GetReply
from codeq.store.rate_limits import RateLimiter
from codeq.store.records import decode_result
from codeq.store.redis_store import RedisStore
from codeq.store.streams import StreamEntry
from codeq.store.subscriptions import SubscriptionStore
from codeq.tracing import Tracing
from codeq.webhooks import sign, signing_secret
from deliverers import bodies, records
from deliverers.events import Event, Handled, raw_field, text_or_none
from deliverers.outcomes import Outcomes
from deliverers.records import AttemptLog, Delivery
from deliverers.sender import Attempt, TargetPolicy, WebhookSender

__all__ = ["CALLBACK_EVENTS", "Deliverer"]

log = logging.getLogger("codeq.deliverers")

READ_COUNT = 100  # stream entries per XREADGROUP: one batch, one dlv_enqueue
CALLBACKS = "callbacks"
NOTIFIER = "notifier"
ENDPOINTS = "endpoints"
ENDPOINT_CACHE_SECONDS = 1.0  # endpoint changes reach the deliverers within this
TERMINAL_EVENTS = frozenset({"task.completed", "task.failed", "task.dead_lettered"})
NOTIFY_SCHEDULE = [0.5, 1.5]  # notifications are advisory: one try plus two quick retries
HASH_BUCKET_SECONDS = 60
CALLBACK_EVENTS = frozenset({"task.completed", "task.failed", "task.dead_lettered"})
_ATTEMPT_LEASE_MARGIN_MS = 5_000
_BUSY_DELAY_MS = 1_000  # a host with no free connection slot: try again about this much later
_RETRY_PAUSE = 1.0  # before a consumer handles again the entries that failed
# What an entry's own data makes a handler raise (a record that cannot be decoded, a field out
# of range): quarantined at once. Anything else may pass: tried again before it is set aside.
_BAD_DATA = (
    ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError,
    msgspec.MsgspecError,
)  # fmt: skip
_json = msgspec.json.Encoder()

Use = tuple[str, Event]  # (entry id, event) of an entry a handler has a use for


Handler = Callable[[int, list[StreamEntry]], Awaitable[Handled]]


def _now_ms() -> int:
    return int(time.time() * 1000)


class Deliverer:
    def __init__(
        self,
        store: RedisStore,
        settings: Settings,
        *,
        sender: WebhookSender | None = None,
        consumer: str | None = None,
        allow_loopback: bool = False,
        block_ms: int = 1000,
        scan_interval: float = 0.5,
        metrics: Metrics | None = None,
        rate: RateGuard | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``metrics``: the sink of the process (``codeq serve`` passes the gateway's); without
        one the deliverer keeps its own and serves it on ``metricsPort`` when that is set.
        ``rate``: the rate limits (default: ``rateLimit`` of the settings, on ``store``)."""
        self.store = store
        self.tracing = tracing if tracing is not None else Tracing(settings)
        self._owns_tracing = tracing is None
        self.dstore = DeliveryStore(store)
        self.settings = settings
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        allowed = list(settings.webhook_allowed_cidrs)
        if allow_loopback:  # dev mode: webhooks to this machine are the point
            allowed += ["127.0.0.0/8", "::1/128"]
        self.sender = sender or WebhookSender(
            TargetPolicy(allowed, settings.webhook_require_https),
            timeout=settings.webhook_timeout_seconds,
            concurrency=settings.delivery_concurrency,
            per_host_concurrency=settings.delivery_per_host_concurrency,
        )
        self._owns_sender = sender is None
        self._owns_metrics = metrics is None
        self.metrics = metrics if metrics is not None else Metrics()
        self.rate = rate or RateGuard(settings.rate_limit, RateLimiter(store), self.metrics)
        self._metrics_server: asyncio.Server | None = None
        self._block_ms = block_ms
        self._scan_interval = scan_interval
        # An attempt's lease covers its wait for a connection slot (bounded by the sender),
        # its exchange (the timeout) and a margin: no other deliverer takes it meanwhile.
        self._lease_ms = (
            int((settings.webhook_timeout_seconds + self.sender.queue_seconds) * 1000)
            + _ATTEMPT_LEASE_MARGIN_MS
        )
        self._secret = signing_secret(
            settings.webhook_hmac_secret,
            unsigned=settings.webhook_unsigned,
            data_dir=settings.data_dir,
        )
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._handlers: dict[str, Handler] = {
            CALLBACKS: self._callback_deliveries,
            NOTIFIER: self._notifications,
            ENDPOINTS: self._endpoint_deliveries,
        }
        self.endpoints = EndpointStore(store)
        self._endpoint_cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}
        self.subscriptions = SubscriptionStore(store)
        self._outcomes = Outcomes(self.dstore, settings.delivery_attempts_kept)
        # (partition, group) with entries held back by a failure; why each entry last failed
        self._held_back: set[tuple[int, str]] = set()
        self._failures: dict[str, str] = {}
        self._callback_schedule = records.schedule_from(
            settings.webhook_retry_schedule,
            max_attempts=settings.result_webhook_max_attempts,
            base=settings.result_webhook_base_backoff_seconds,
            cap=settings.result_webhook_max_backoff_seconds,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        port = self.settings.metrics_port
        if self._owns_metrics and port is not None:
            try:
                self._metrics_server = await serve_metrics(self.settings.host, port, self._render)
            except OSError as exc:  # metrics are not worth a crash loop
                log.warning("metricsPort not served", extra={"port": port, "error": str(exc)})
        for p in range(self.store.keys.partitions):
            for group in self._handlers:
                with contextlib.suppress(StoreUnavailable):
                    await self.dstore.ensure_group(p, group)
                self._spawn(self._consume(p, group), f"codeq-dlv-{group}-{p}")
                self._spawn(self._liveness(p, group), f"codeq-dlv-alive-{group}-{p}")
            self._spawn(self._schedule(p), f"codeq-dlv-due-{p}")

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))  # type: ignore[arg-type]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop reading. The batch being handled finishes (its events become deliveries and
        are acknowledged) and attempts in flight finish, all within ``grace``; then this
        consumer's liveness keys go, so another deliverer takes over anything it still holds
        at once rather than after ``consumerTtlSeconds``. An attempt cut off stays leased in
        the schedule and is attempted again when its lease ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self._stopping.set()
        if self._tasks:
            # Each loop sees the flag after its current read (block_ms) and batch.
            _, busy = await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - loop.time()))
            for task in busy:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._inflight:
            _, pending = await asyncio.wait(
                set(self._inflight), timeout=max(0.0, deadline - loop.time())
            )
            for task in pending:
                task.cancel()
        with contextlib.suppress(StoreUnavailable):
            for p in range(self.store.keys.partitions):
                for group in self._handlers:
                    await self.dstore.release(p, group, self.consumer)
        if self._owns_tracing:
            self.tracing.shutdown()
        if self._owns_sender:
            await self.sender.aclose()
        if self._metrics_server is not None:
            self._metrics_server.close()
            await self._metrics_server.wait_closed()
            self._metrics_server = None

    async def _render(self) -> bytes:
        return self.metrics.render()

    # -- consumer groups ----------------------------------------------------------------

    async def _consume(self, partition: int, group: str) -> None:
        handler = self._handlers[group]
        loop = asyncio.get_running_loop()
        # when to handle again the entries this consumer holds from a failed attempt at them
        # (None: it holds none); at once on start, after a pause once one failed
        retry_own: float | None = 0.0
        takeover_every = max(0.2, self.settings.consumer_ttl_seconds / 3)
        next_takeover = 0.0
        while not self._stopping.is_set():
            try:
                if retry_own is not None and loop.time() >= retry_own:
                    retry_own = None
                    await self._reprocess(partition, group, self.consumer)
                if loop.time() >= next_takeover:  # a dead consumer's key lasts a TTL anyway
                    next_takeover = loop.time() + takeover_every
                    await self._take_over_dead(partition, group)
                entries = await self.dstore.read_group(
                    partition, group, self.consumer, count=READ_COUNT, block_ms=self._block_ms
                )
                if not entries and not await self.dstore.group_exists(partition, group):
                    raise _NoGroup
                await self._handle_batch(partition, group, handler, entries)
                if (partition, group) in self._held_back:  # some entry failed: again later
                    self._held_back.discard((partition, group))
                    retry_own = loop.time() + _RETRY_PAUSE
            except asyncio.CancelledError:
                raise
            except _NoGroup:
                await self._recreate(partition, group)
            except StoreUnavailable:
                log.warning("deliverer: store unavailable, retrying", extra={"group": group})
                await self._pause(1.0)
            except Exception as exc:
                if "NOGROUP" in str(exc):
                    await self._recreate(partition, group)
                    continue
                log.exception("deliverer loop failed, retrying", extra={"group": group})
                retry_own = 0.0
                await self._pause(_RETRY_PAUSE)

    async def _recreate(self, partition: int, group: str) -> None:
        with contextlib.suppress(StoreUnavailable):
            if await self.dstore.ensure_group(partition, group, start="0"):
                log.warning(
                    "consumer group was missing and has been created again",
                    extra={"group": group, "partition": partition},
                )

    async def _handle_batch(
        self, partition: int, group: str, handler: Handler, entries: list[StreamEntry]
    ) -> None:
        """The batch's deliveries are written and its entries acknowledged by one script call,
        whether they caused deliveries, were quarantined or neither.

        A batch that fails for a reason other than the store being unavailable (a task record
        that cannot be read, ...) is handled again one entry at a time, so that only the
        entries that fail on their own are held back and every other one is delivered. An entry
        that fails on bad data is quarantined at once; one that fails otherwise stays pending
        and is tried again (``_reprocess``) until ``eventMaxReceives`` sets it aside."""
        if not entries:
            return
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
            self._remember_failure(entry_id, reason)
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

    def _remember_failure(self, entry_id: str, reason: str) -> None:
        """The reason an entry last failed, for its dead-letter record if it comes to that."""
        if len(self._failures) >= 10_000:
            self._failures.clear()
        self._failures[entry_id] = reason

    async def _enqueue(
        self, partition: int, group: str, entry_ids: list[str], handled: Handled
    ) -> None:
        """Write the deliveries, the quarantined entries' dead-letter records and the
        acknowledgement of ``entry_ids`` in one step (``dlv_enqueue``), then attempt the new
        deliveries at once."""
        deliveries = handled.deliveries
        for d in deliveries:
            d.started = 1  # attempted at once: the first attempt is begun as it is written
        written = await self.dstore.enqueue(
            partition,
            group,
            entry_ids,
            self._lease_ms,
            [(d.id, records.encode(d)) for d in deliveries],
            quarantined=handled.quarantined,
        )
        for entry_id, reason in handled.quarantined:
            self.metrics.child(self.metrics.events_set_aside, group, "quarantined").inc()
            log.error(
                "event quarantined: it cannot be decoded or handled",
                extra={"group": group, "partition": partition, "entry": entry_id,
                       "reason": reason},
            )  # fmt: skip
        fresh = set(written)
        for d in deliveries:
            if d.id in fresh:
                if d.endpoint_id is not None:
                    with contextlib.suppress(StoreUnavailable):
                        await self.endpoints.remember(d.endpoint_id, d.id)
                self._attempt_soon(partition, d)

    async def _liveness(self, partition: int, group: str) -> None:
        ttl = self.settings.consumer_ttl_seconds
        while not self._stopping.is_set():
            with contextlib.suppress(StoreUnavailable):
                await self.dstore.heartbeat(partition, group, self.consumer, ttl)
            await self._pause(max(0.2, ttl / 3))

    async def _take_over_dead(self, partition: int, group: str) -> None:
        """Entries held by consumers whose liveness key expired come to this one; a dead
        consumer that holds nothing is forgotten.

        XINFO CONSUMERS only names whom to look at. KVRocks (2.10) also lists there the
        consumers of the stream's other groups, and its per-consumer pending counts drift (see
        ``_claim``): what a consumer holds comes from XPENDING, right on both. A consumer is
        forgotten only when both say it holds nothing: KVRocks' XGROUP DELCONSUMER subtracts the
        consumer's count from the group's, and a drifted one wraps the group's below zero."""
        reported: dict[str, int] = {}
        for name, pending in await self.dstore.consumers(partition, group):
            reported[name] = max(pending, reported.get(name, 0))
        reported.pop(self.consumer, None)
        for name, pending in reported.items():
            if await self.dstore.alive(partition, group, name):
                continue
            if await self._reprocess(partition, group, name):
                continue  # it may hold more: the next pass looks again
            if pending == 0:
                await self.dstore.forget_consumer(partition, group, name)

    async def _reprocess(self, partition: int, group: str, owner: str) -> bool:
        """Claim ``owner``'s unacknowledged entries (a dead consumer's, or this one's after a
        failure) and handle them again; one received too often is set aside as poison. False
        when ``owner`` holds nothing."""
        held = await self.dstore.pending_of(partition, group, owner)
        if not held:
            return False
        limit = self.settings.event_max_receives
        for entry_id, receives in held:
            if receives >= limit:
                log.error(
                    "event set aside after too many receives",
                    extra={"group": group, "entry": entry_id, "partition": partition},
                )
                reason = self._failures.pop(entry_id, f"received {receives} times")
                await self.dstore.poison(partition, group, entry_id, receives, reason)
                self.metrics.child(self.metrics.events_set_aside, group, "poison").inc()
        taken = await self._claim(partition, group, [i for i, n in held if n < limit])
        if taken and owner != self.consumer:
            log.warning(
                "took over the entries of a dead consumer",
                extra={"group": group, "from": owner, "count": len(taken)},
            )
        await self._handle_batch(partition, group, self._handlers[group], taken)
        return True

    async def _claim(self, partition: int, group: str, ids: list[str]) -> list[StreamEntry]:
        """XCLAIM one entry per call: KVRocks (2.10) lowers the previous owner's pending count
        by one per XCLAIM however many entries it moves, so a batch leaves that count too high.
        Taking over is rare and bounded (``pending_of`` lists 100), so the round trips are cheap.
        """
        taken: list[StreamEntry] = []
        for entry_id in ids:
            taken += await self.dstore.take_over(partition, group, self.consumer, [entry_id])
        return taken

    # -- the schedule -------------------------------------------------------------------

    async def _schedule(self, partition: int) -> None:
        while not self._stopping.is_set():
            try:
                due = await self.dstore.claim_due(partition, lease_ms=self._lease_ms, limit=200)
                for raw in due:
                    try:
                        d = records.decode(raw)
                    except msgspec.DecodeError:  # one bad record must not stop the others
                        log.error(
                            "a delivery record cannot be decoded", extra={"partition": partition}
                        )
                        continue
                    self._attempt_soon(partition, d)
                if len(due) < 200:
                    await self._pause(self._scan_interval)
            except asyncio.CancelledError:
                raise
            except StoreUnavailable:
                await self._pause(1.0)
            except Exception:
                log.exception("delivery scheduler failed, retrying")
                await self._pause(1.0)

    def _attempt_soon(self, partition: int, d: Delivery) -> None:
        task = asyncio.create_task(self._attempt(partition, d))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

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
            endpoint = await self._endpoint(d.tenant, d.endpoint_id, fresh=True)
            if endpoint is None or not endpoint.get("enabled", True):
                await self._record(partition, d, "dead", 0, None, "endpoint deleted or disabled")
                return
            secrets = active_secrets(endpoint)
        if self.rate.limited("webhook") and await self._put_off(partition, d):
            return
        if secrets:
            headers.update(sign(body, secrets=secrets, msg_id=d.id))
        else:
            headers["webhook-id"] = d.id
        started = _now_ms()
        if self.tracing.enabled:
            result = await self._traced_send(d, attempt_no, body, headers)
        else:
            result = await self.sender.send(d.url, body, headers)
        if result.busy:
            # No connection slot for the host in time: nothing was sent, so no attempt is
            # counted; the delivery comes back a little later.
            delay_ms = round(_BUSY_DELAY_MS * random.uniform(0.5, 1.5))
            with contextlib.suppress(StoreUnavailable):
                await self.dstore.defer(partition, d.id, delay_ms=delay_ms)
            return
        if endpoint is not None and d.endpoint_id is not None:
            mark = "ok" if result.ok else "gone" if result.status_code == 410 else "failed"
            with contextlib.suppress(StoreUnavailable):
                await self.endpoints.mark(
                    d.endpoint_id,
                    d.tenant,
                    mark,
                    int(self.settings.endpoint_disable_after_hours * 3_600_000),
                )
        if result.refused:
            outcome, delay_ms = "dead", 0
        else:
            outcome, delay_ms = records.next_step(
                d, result.status_code, result.ok, result.retry_after_seconds
            )
            self.metrics.child(self.metrics.webhook_latency, d.kind).observe(
                result.latency_ms / 1000
            )
        self._count(d, outcome)
        entry = AttemptLog(
            at=started,
            latency_ms=round(result.latency_ms, 1),
            status_code=result.status_code,
            error=result.error,
            response=result.response_head or None,
        )
        try:
            status, attempts = await self._outcomes.record(
                partition, (d.id, outcome, delay_ms, _json.encode(entry))
            )
        except StoreUnavailable:
            # The lease runs out and the scheduler attempts it again: at least once.
            log.warning("could not record a delivery attempt", extra={"delivery": d.id})
            return
        if log.isEnabledFor(logging.INFO):
            log.info(
                "delivery attempt",
                extra={
                    "delivery": d.id,
                    "kind": d.kind,
                    "attempt": attempts,
                    "statusCode": result.status_code,
                    "outcome": status,
                },
            )

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
        with self.tracing.span(
            "codeq.deliver", parent=d.trace_parent, kind="client", attributes=attributes
        ) as span:
            own = self.tracing.traceparent()
            if own is not None:
                headers["traceparent"] = own
            result = await self.sender.send(d.url, body, headers)
            if span is not None:
                span.set_attribute("http.response.status_code", result.status_code or 0)
        return result

    async def _put_off(self, partition: int, d: Delivery) -> bool:
        """The target host's bucket (scope ``webhook``): True when it is empty and the attempt
        has been put off until it has a token, without counting as an attempt."""
        host = urlsplit(d.url).hostname or ""
        wait = await self.rate.wait("webhook", d.kind, d.tenant, host)
        if wait <= 0:
            return False
        # A store error here leaves the lease to run out: the scheduler tries again then.
        with contextlib.suppress(StoreUnavailable):
            await self.dstore.defer(partition, d.id, delay_ms=math.ceil(wait * 1000))
        return True

    def _count(self, d: Delivery, outcome: str) -> None:
        command = (d.command or "").lower()
        self.metrics.child(self.metrics.webhook_deliveries, d.kind, command, outcome).inc()

    async def _record(
        self, partition: int, d: Delivery, outcome: str, delay_ms: int, status: int | None,
        error: str | None,
    ) -> None:  # fmt: skip
        self._count(d, outcome)
        entry = AttemptLog(at=_now_ms(), latency_ms=0.0, status_code=status, error=error)
        with contextlib.suppress(StoreUnavailable):
            await self.dstore.outcome(
                partition, d.id, outcome, delay_ms=delay_ms, attempt=_json.encode(entry),
                kept=self.settings.delivery_attempts_kept,
            )  # fmt: skip

    # -- event-subscription endpoints ---------------------------------------------------

    async def _endpoints_of(self, tenant: str, *, fresh: bool = False) -> list[dict[str, Any]]:
        now = time.monotonic()
        cached = self._endpoint_cache.get(tenant)
        if cached is not None and not fresh and now - cached[0] < ENDPOINT_CACHE_SECONDS:
            return cached[1]
        found = [msgspec.json.decode(raw) for raw in await self.endpoints.all_of(tenant)]
        self._endpoint_cache[tenant] = (now, found)
        if len(self._endpoint_cache) > 10_000:
            self._endpoint_cache.clear()
        return found

    async def _endpoint(
        self, tenant: str, endpoint_id: str, *, fresh: bool = False
    ) -> dict[str, Any] | None:
        for e in await self._endpoints_of(tenant, fresh=fresh):
            if e.get("id") == endpoint_id:
                return e
        return None

    async def _endpoint_deliveries(self, partition: int, entries: list[StreamEntry]) -> Handled:
        out = Handled()
        by_tenant: dict[bytes | str | None, list[dict[str, Any]]] = {}
        wanted: list[tuple[Use, list[dict[str, Any]]]] = []
        for eid, raw in entries:
            tenant_raw = raw_field(raw, b"tenant")
            if tenant_raw not in by_tenant:  # cached: usually no store call at all
                tenant = text_or_none(tenant_raw)
                by_tenant[tenant_raw] = await self._endpoints_of(tenant) if tenant else []
            endpoints = by_tenant[tenant_raw]
            if not endpoints:  # most tenants have no endpoints: nothing to decode
                continue
            event = out.decode(eid, raw)
            if event is None:
                continue
            command = event.command.lower()
            targets = [e for e in endpoints if endpoint_matches(e, event.type, command)]
            if targets:
                wanted.append(((eid, event), targets))
        if not wanted:
            return out
        replies = await self.store.get_many(
            partition,
            [(ev.tenant, ev.id, ev.type in TERMINAL_EVENTS) for (_, ev), _ in wanted],
        )
        for ((eid, ev), targets), reply in zip(wanted, replies, strict=True):
            if reply is not None:  # None: purged before its event was read
                out.deliveries.extend(self._endpoint_messages(partition, eid, ev, reply, targets))
        return out

    def _endpoint_messages(
        self, partition: int, entry_id: str, event: Event, reply: GetReply,
        targets: list[dict[str, Any]],
    ) -> list[Delivery]:  # fmt: skip
        result = decode_result(reply.task, reply.result) if reply.result is not None else None
        body = bodies.encode(
            bodies.endpoint_body(event.type, event.at or _now_ms(), reply.task, result)
        )
        out = []
        for e in targets:
            did = records.delivery_id(partition, f"endpoint:{e['id']}", entry_id, e["url"])
            out.append(
                Delivery(
                    id=did,
                    kind="endpoint",
                    tenant=event.tenant,
                    url=str(e["url"]),
                    body=body,
                    event_type=event.type,
                    created_at=_now_ms(),
                    schedule=list(self.settings.webhook_retry_schedule),
                    task_id=reply.task.id,
                    command=reply.task.command,
                    endpoint_id=str(e["id"]),
                    trace_parent=reply.task.trace_parent,
                    trace_state=reply.task.trace_state,
                )
            )
        return out

    # -- result callbacks ---------------------------------------------------------------

    async def _callback_deliveries(self, partition: int, entries: list[StreamEntry]) -> Handled:
        out = Handled()
        wanted: list[Use] = []
        for eid, raw in entries:
            kind = out.kind(eid, raw)
            if kind in CALLBACK_EVENTS:
                event = out.decode(eid, raw)
                if event is not None and event.webhook:  # terminal events of a task with one
                    wanted.append((eid, event))
            elif kind == "task.lease_expired":  # this group reads every event of the partition
                command = (text_or_none(raw_field(raw, b"command")) or "").lower()
                self.metrics.child(self.metrics.lease_expired, command).inc()
        if not wanted:
            return out
        replies = await self.store.get_many(
            partition, [(ev.tenant, ev.id, True) for _, ev in wanted]
        )
        for (eid, ev), reply in zip(wanted, replies, strict=True):
            # None: purged before its event was read, nothing to say
            if reply is not None and reply.task.webhook:
                out.deliveries.append(self._callback(partition, eid, ev, reply))
        return out

    def _callback(self, partition: int, entry_id: str, event: Event, reply: GetReply) -> Delivery:
        task = reply.task
        assert task.webhook is not None
        result = decode_result(task, reply.result) if reply.result is not None else None
        return Delivery(
            id=records.delivery_id(partition, "callback", entry_id, task.webhook),
            kind="callback",
            tenant=event.tenant,
            url=task.webhook,
            body=bodies.encode(bodies.callback_body(task, result)),
            event_type=event.type,
            created_at=_now_ms(),
            schedule=self._callback_schedule,
            task_id=task.id,
            command=task.command,
            trace_parent=task.trace_parent,
            trace_state=task.trace_state,
        )

    # -- availability notifications --------------------------------------------------------

    async def _notifications(self, partition: int, entries: list[StreamEntry]) -> Handled:
        """One ``sub_pick`` per queue that became ready in the batch, on behalf of its newest
        ``task.ready`` (a batch is one "work is available" signal per queue; the pick is
        rate-bounded per subscription anyway)."""
        out = Handled()
        newest: dict[tuple[str, str], Use] = {}
        for eid, raw in entries:
            if out.kind(eid, raw) == "task.ready":
                event = out.decode(eid, raw)
                if event is not None:
                    newest[(event.tenant, event.command.lower())] = (eid, event)
        if newest:
            found = await asyncio.gather(
                *(self._notify(partition, eid, ev) for eid, ev in newest.values())
            )
            out.deliveries = [d for ds in found for d in ds]
        return out

    async def _notify(self, partition: int, entry_id: str, event: Event) -> list[Delivery]:
        tenant, command = event.tenant, event.command
        now = _now_ms()
        bucket_key = f"{command.lower()}:{now // 1000 // HASH_BUCKET_SECONDS}"
        bucket = int.from_bytes(hashlib.sha256(bucket_key.encode()).digest()[:4], "big")
        chosen = await self.subscriptions.pick(tenant, command, bucket)
        out: list[Delivery] = []
        for raw in chosen:
            sub = msgspec.json.decode(raw)
            target = str(sub["callbackUrl"])
            did = records.delivery_id(partition, f"notify:{sub['id']}", entry_id, target)
            out.append(
                Delivery(
                    id=did,
                    kind="notification",
                    tenant=tenant,
                    url=target,
                    body=bodies.notification_body(command, event.depth, now, did),
                    event_type="worker.notification",
                    created_at=now,
                    schedule=NOTIFY_SCHEDULE,
                    command=command,
                )
            )
        return out

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)


def active_secrets(endpoint: Mapping[str, Any], now_ms: int | None = None) -> list[str]:
    """The endpoint's signing secrets still in force: the current one first, then rotated
    ones inside their grace period."""
    now = _now_ms() if now_ms is None else now_ms
    out = []
    for s in endpoint.get("secrets") or []:
        expires = s.get("expiresAt")
        if expires is None or int(expires) > now:
            out.append(str(s["secret"]))
    return out


def endpoint_matches(endpoint: Mapping[str, Any], kind: str, command: str) -> bool:
    if not endpoint.get("enabled", True):
        return False
    types = endpoint.get("eventTypes") or []
    if "*" not in types and kind not in types:
        return False
    commands = endpoint.get("commands") or []  # cjson turns [] into {}: both mean "any"
    return not commands or command in {str(c).lower() for c in commands}


class _NoGroup(Exception):
    pass
