"""Attempting deliveries: a scheduler loop per partition leases whatever is due (``dlv_claim``:
retries, deliveries of a deliverer that died mid-attempt, replays), and each delivery, new or
due, is attempted in a task of its own: signed, sent, and its outcome recorded
(:mod:`deliverers.outcomes`).

A target host over its ``rateLimit.webhook`` bucket is not sent to: the delivery is put off
until the bucket has a token again (``dlv_defer``). A delivery to an endpoint with a
``rateLimit`` then waits for the endpoint's pace (:class:`deliverers.endpoints.EndpointPacer`:
a store bucket all deliverers share), held here for a moment or put off. The host's bucket is
asked first: the buckets take a token as they answer and give none back, and the endpoint's
is the one that must not lose any (its pace is what its owner set; a host's bucket only bounds
what a host gets). Neither counts an attempt; nor does one that gets no connection slot in
time (``busy``: nothing was sent).

What an attempt sent is kept in its record with every custom header's value redacted (the
endpoint's own headers are often credentials, and deliveries are readable by every token of
the tenant; the values stay readable to producers on the endpoint). A request that cannot be
built (a secret that does not sign, say) is a failed attempt like any other, never an
exception that would leave its delivery to be leased again forever.

What an attempt is signed with: an endpoint's secrets in force (HMAC ``whsec_`` secrets, or
ed25519 ``whsk_`` keys), a worker subscription's own secret, else the global secret
(``webhookHmacSecret``) with the previous ones still in their overlap window
(``webhookHmacPreviousSecrets``). :func:`attempt_now` makes one attempt from outside a
deliverer (the gateway's test send), through this same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from codeq import __version__
from codeq.errors import StoreUnavailable
from codeq.metrics import Metrics
from codeq.rate_limits import RateGuard
from codeq.settings import Settings
from codeq.store.protocol import Deliveries, Endpoints, Subscriptions
from codeq.tracing import Tracing
from codeq.webhooks import has_user_info, reserved_header, sign
from deliverers import records
from deliverers.endpoints import EndpointDirectory, EndpointPacer, active_secrets, signing_keys
from deliverers.outcomes import Outcomes
from deliverers.records import AttemptLog, Delivery
from deliverers.sender import Attempt, WebhookSender
from deliverers.stopping import Stopping

__all__ = ["Dispatcher", "attempt_lease_ms", "attempt_now"]

log = logging.getLogger("codeq.deliverers")

DUE_BATCH = 200  # due deliveries leased per dlv_claim
_ATTEMPT_LEASE_MARGIN_MS = 5_000
_BUSY_DELAY_MS = 1_000  # a host with no free connection slot: try again about this much later
# An endpoint's pace: a delivery is held here at most this long (well inside the lease margin,
# so its attempt still ends inside its lease), and a queue holds about a second of deliveries
# (at least two scans of the schedule, so the put-off ones are back before it runs dry).
_HOLD_MAX_SECONDS: Final = 2.0
_HOLD_SECONDS: Final = 1.0


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
        subscriptions: Subscriptions | None = None,
    ) -> None:
        """``secret``: the global signing secret (None: unsigned), with the settings'
        previous ones beside it while they are in force. ``subscriptions``: where a
        notification's subscription (and its own secret) is found; without it notifications
        are signed with the global secret."""
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
        self._global: list[dict[str, Any]] = []
        if secret is not None:
            self._global = [{"secret": secret}]
            if secret == settings.webhook_hmac_secret:  # not the development secret
                self._global += [
                    {"secret": p.secret, "expiresAt": int(p.expires_at.timestamp() * 1000)}
                    for p in settings.webhook_hmac_previous_secrets
                ]
        self._subscriptions = subscriptions
        self._scan_interval = scan_interval
        self._stopping = stopping
        self.lease_ms = attempt_lease_ms(settings, sender)
        self._inflight: set[asyncio.Task[None]] = set()
        self._pacer = EndpointPacer(
            rate.limiter,
            hold_seconds=min(_HOLD_MAX_SECONDS, max(_HOLD_SECONDS, 2 * scan_interval)),
            max_hold_seconds=_HOLD_MAX_SECONDS,
            on_fail_open=self._pace_failed_open,
        )

    def _pace_failed_open(self) -> None:
        self._metrics.rate_limit_fail_open.labels("endpoint").inc()

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
        endpoint: dict[str, Any] | None = None
        if d.endpoint_id is not None:
            endpoint = await self._directory.find(d.tenant, d.endpoint_id, fresh=True)
            if endpoint is None or not endpoint.get("enabled", True):
                await self._outcomes.given_up(partition, d, "endpoint deleted or disabled")
                return
        await self.attempt(partition, d, endpoint)

    async def attempt(
        self,
        partition: int,
        d: Delivery,
        endpoint: Mapping[str, Any] | None,
        *,
        paced: bool = True,
    ) -> None:
        """One attempt of ``d`` (leased to this process) and its outcome recorded:
        ``endpoint`` is the record of the endpoint it goes to (read just now), None for a
        callback or a notification. ``paced``: first the host's bucket and the endpoint's
        ``rateLimit`` (a test send is not paced)."""
        body = d.body.encode()
        attempt_no = d.attempt_no  # persisted before the send (dlv_enqueue, dlv_claim)
        if paced and await self._paced_off(partition, d, endpoint):
            return
        custom = _custom_headers(endpoint, d.url)
        try:
            headers = await self._headers(d, endpoint, custom, body, attempt_no)
        except StoreUnavailable:  # the lease runs out: the scheduler tries again then
            return
        except Exception as exc:
            await self._not_built(partition, d, exc)
            return
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
            self._metrics.webhook_latency.labels(d.kind).observe(result.latency_ms / 1000)
        entry = AttemptLog(
            at=started,
            latency_ms=round(result.latency_ms, 1),
            status_code=result.status_code,
            error=result.error,
            response=result.response_head or None,
        )
        sent = dict(records.redacted(headers.items(), hide=custom))
        await self._outcomes.attempted(partition, d, outcome, delay_ms, entry, sent=sent)

    async def _headers(
        self,
        d: Delivery,
        endpoint: Mapping[str, Any] | None,
        custom: Mapping[str, str],
        body: bytes,
        attempt_no: int,
    ) -> dict[str, str]:
        """Every header of this attempt but the transport's (``Host``, ``Content-Length``,
        ``Authorization`` from the URL's user info): the endpoint's own, ours, the trace and
        the signatures."""
        headers = dict(custom)
        headers.update(
            {
                "Content-Type": "application/json",
                "User-Agent": f"codeq/{__version__}",
                "X-CodeQ-Event": d.event_type,
                "X-CodeQ-Delivery-Attempt": str(attempt_no),
            }
        )
        if d.trace_parent:
            headers["traceparent"] = d.trace_parent
            if d.trace_state:
                headers["tracestate"] = d.trace_state
        hmac_secrets, ed25519_keys = signing_keys(await self._secrets_of(d, endpoint))
        if hmac_secrets or ed25519_keys:
            headers.update(sign(body, secrets=hmac_secrets, msg_id=d.id, ed25519_key=ed25519_keys))
        else:
            headers["webhook-id"] = d.id
        return headers

    async def _not_built(self, partition: int, d: Delivery, exc: Exception) -> None:
        """The request could not be built (a secret that does not sign, a record written
        another way): a failed attempt, recorded and retried on the schedule like any other,
        so the delivery ends in the DLQ rather than being leased again forever. The error
        names the kind of failure, never a secret."""
        log.error(
            "a delivery's request could not be built",
            exc_info=exc,
            extra={"delivery": d.id, "kind": d.kind},
        )
        outcome, delay_ms = records.next_step(d, None, False, None)
        entry = AttemptLog(
            at=int(time.time() * 1000),
            latency_ms=0.0,
            error=f"request not built: {type(exc).__name__}: {exc}"[:200],
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

    async def _secrets_of(self, d: Delivery, endpoint: Mapping[str, Any] | None) -> list[str]:
        """What ``d`` is signed with: its endpoint's secrets in force; a notification's
        subscription's own secret; else the global secret(s) in force."""
        if endpoint is not None:
            return active_secrets(endpoint.get("secrets") or [])
        # The subscription a notification is for, found by its id (one read); a record that
        # names none, or whose subscription is gone, is signed with the global secret.
        if d.subscription_id is not None and self._subscriptions is not None:
            raw = await self._subscriptions.get(d.subscription_id, d.tenant)
            if raw is not None:
                own = active_secrets(msgspec.json.decode(raw).get("secrets") or [])
                if own:
                    return own
        return active_secrets(self._global)

    async def _paced_off(
        self, partition: int, d: Delivery, endpoint: Mapping[str, Any] | None
    ) -> bool:
        """The rate limits, the target host's bucket first (module docstring): True when the
        attempt has been put off."""
        if self._rate.limited("webhook") and await self._put_off(partition, d):
            return True
        return endpoint is not None and await self._hold_back(partition, d, endpoint)

    async def _hold_back(self, partition: int, d: Delivery, endpoint: Mapping[str, Any]) -> bool:
        """The endpoint's ``rateLimit`` (deliveries per second): wait here for its pace, or
        put the attempt off without counting one; True when it has been put off."""
        per_second = endpoint.get("rateLimit")
        if not isinstance(per_second, int) or isinstance(per_second, bool) or per_second < 1:
            return False
        wait = await self._pacer.admit(d.tenant, str(endpoint.get("id")), per_second)
        if wait <= 0:
            return False
        self._metrics.rate_limit_hits.labels("endpoint", d.kind).inc()
        # A store error here leaves the lease to run out: the scheduler tries again then.
        with contextlib.suppress(StoreUnavailable):
            await self._deliveries.defer(partition, d.id, delay_ms=math.ceil(wait * 1000))
        return True

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


def _custom_headers(endpoint: Mapping[str, Any] | None, url: str) -> dict[str, str]:
    """The endpoint's own headers (the API refused reserved names; a record written another
    way still never sets one of ours). No ``Authorization`` when the URL has user info: the
    URL's credentials are sent (``Authorization: Basic``, deliverers/http1.py), and a request
    never carries two (the URL and the headers can be changed apart)."""
    custom = endpoint.get("headers") if endpoint is not None else None
    if not custom or not isinstance(custom, dict):
        return {}
    user_info = has_user_info(url)
    return {
        str(k): str(v)
        for k, v in custom.items()
        if not reserved_header(str(k)) and not (user_info and str(k).lower() == "authorization")
    }


async def attempt_now(
    deliveries: Deliveries,
    endpoints: Endpoints,
    partition: int,
    d: Delivery,
    endpoint: Mapping[str, Any],
    *,
    sender: WebhookSender,
    settings: Settings,
    metrics: Metrics,
    rate: RateGuard,
    tracing: Tracing,
) -> None:
    """Write ``d``, a new delivery to ``endpoint``, and make its first attempt now, here
    (the gateway's test send), with ``sender`` (``deliverers.runner.webhook_sender``: the
    deliverers' target policy and transport): the same attempt as every other (target
    checks, custom headers, signatures, outcome, endpoint mark), but not paced by the rate
    limits. A failed attempt is retried by the deliverers on ``d``'s schedule, like any
    delivery."""
    dispatcher = Dispatcher(
        deliveries,
        endpoints,
        EndpointDirectory(endpoints),
        sender,
        Outcomes(deliveries, settings.delivery_attempts_kept, metrics),
        settings=settings,
        metrics=metrics,
        rate=rate,
        tracing=tracing,
        secret=None,
        scan_interval=1.0,
        stopping=Stopping(),
    )
    d.started = 1  # begun as it is written, as the consumer groups' deliveries are
    await deliveries.enqueue(
        partition, "endpoints", [], dispatcher.lease_ms, [(d.id, records.encode(d))]
    )
    if d.endpoint_id is not None:
        with contextlib.suppress(StoreUnavailable):
            await endpoints.remember(d.endpoint_id, d.id)
    await dispatcher.attempt(partition, d, endpoint, paced=False)
