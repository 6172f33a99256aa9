"""Delivery records (spec 03): one message to one URL, stable across attempts.

A record is stored as JSON in ``<prefix>:{p}:deliveries`` and changed only by the delivery
scripts; the field names are the ones those scripts read (``attempts``, ``started``, ``log``,
``status``, ``nextAt``, ``deadAt``, ``updatedAt``).

``started`` is the number of the attempt begun last, written before it is sent (by
``dlv_enqueue`` for the first, by ``dlv_claim`` when the schedule leases the next): a deliverer
that dies mid-attempt leaves it behind, so the next attempt says it is the next one.
``attempts`` counts the attempts recorded, and one begun whose outcome was lost.

``request`` is what the last attempt sent besides the body (which every attempt sends as
``body``): its headers, signatures included, with credentials redacted (:func:`redacted`: the
usual credential headers, and every custom header of the endpoint). One per record, replaced
by each attempt (``dlv_outcome``), so a record's size stays bounded.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection, Iterable, Sequence
from enum import StrEnum

import msgspec

__all__ = [
    "AttemptLog",
    "Delivery",
    "DeliveryStatus",
    "SentRequest",
    "delivery_id",
    "next_step",
    "partition_of",
    "redacted",
]


class DeliveryStatus(StrEnum):
    """A delivery record's ``status``: ``pending`` (not attempted yet, or replayed),
    ``retrying`` (failed, another attempt is scheduled), ``succeeded`` (a 2xx), ``dead`` (out
    of attempts, or refused for good: the delivery DLQ) and ``gone`` (the receiver answered
    410)."""

    PENDING = "pending"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    GONE = "gone"


#: headers whose value is a credential: kept by name, never by value
_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"}
)
REDACTED = "[redacted]"
MAX_HEADERS_KEPT = 64
MAX_HEADER_VALUE_KEPT = 1024


def redacted(
    headers: Iterable[tuple[str, str]], hide: Collection[str] = ()
) -> list[tuple[str, str]]:
    """Headers as a record keeps them: a credential's value (``Authorization``, ``Cookie``,
    API keys, any bearer token) and the value of every header named in ``hide`` (any case:
    an endpoint's custom headers, which only its producers may read) replaced by
    ``[redacted]``; signatures stay (they are no secret). Bounded: at most 64 headers of at
    most 1024 characters."""
    hidden = {h.lower() for h in hide}
    out: list[tuple[str, str]] = []
    for name, value in headers:
        if len(out) >= MAX_HEADERS_KEPT:
            break
        lower = name.lower()
        if lower in _SECRET_HEADERS or lower in hidden or value[:7].lower() == "bearer ":
            value = REDACTED
        out.append((name, value[:MAX_HEADER_VALUE_KEPT]))
    return out


class SentRequest(msgspec.Struct, kw_only=True, rename="camel"):
    """An attempt's request besides its body: when it began (ms) and its headers in the order
    they were sent (pairs: a list keeps the order the scripts' JSON objects would not)."""

    at: int
    headers: list[tuple[str, str]]


class AttemptLog(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    at: int  # ms
    latency_ms: float
    status_code: int | None = None
    error: str | None = None
    response: str | None = None  # the first bytes of the response body
    # On the way to dlv_outcome only: it becomes the record's ``request``, never a log entry's.
    request: SentRequest | None = None


class Delivery(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    id: str
    kind: str  # "callback" | "notification" | "endpoint"
    tenant: str
    url: str
    body: str  # frozen at creation: every attempt sends these bytes
    event_type: str
    created_at: int
    # Seconds before attempt 2, 3, ... Lists default to empty, so an empty one is omitted
    # from the JSON: the scripts' cjson would write it back as {} (it cannot tell [] from {}).
    schedule: list[float] = msgspec.field(default_factory=list)
    task_id: str | None = None
    command: str | None = None  # the task's (the metrics' label)
    endpoint_id: str | None = None
    subscription_id: str | None = None  # the worker subscription a notification is for
    trace_parent: str | None = None
    trace_state: str | None = None
    attempts: int = 0
    started: int = 0  # the number of the attempt begun last (persisted before it is sent)
    status: str = "pending"
    next_at: int | None = None
    updated_at: int | None = None
    dead_at: int | None = None
    replays: int = 0
    log: list[AttemptLog] = msgspec.field(default_factory=list)
    request: SentRequest | None = None  # the last attempt's (dlv_outcome)

    @property
    def max_attempts(self) -> int:
        return len(self.schedule) + 1

    @property
    def attempt_no(self) -> int:
        """The number of the attempt under way (``X-CodeQ-Delivery-Attempt``)."""
        return max(self.started, self.attempts + 1)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Delivery)


def encode(d: Delivery) -> bytes:
    return _encoder.encode(d)


def decode(raw: bytes) -> Delivery:
    return _decoder.decode(raw)


def delivery_id(partition: int, kind: str, entry_id: str, target: str) -> str:
    """``msg_<partition>_`` + a digest of what caused the delivery: stable across attempts (it
    is the ``webhook-id``) and across a repeated stream entry, so a repeat never duplicates it;
    the partition says where the record lives."""
    digest = hashlib.sha256(f"{kind}\x00{entry_id}\x00{target}".encode()).hexdigest()
    return f"msg_{partition}_{digest[:26]}"


def partition_of(delivery: str, partitions: int) -> int | None:
    """The partition a delivery id names, or None for an id we never issued."""
    parts = delivery.split("_")
    if len(parts) != 3 or parts[0] != "msg" or not parts[1].isdigit():
        return None
    p = int(parts[1])
    return p if p < partitions else None


_PERMANENT_AFTER = 3  # other 4xx: give up after this many attempts
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})


def next_step(
    d: Delivery,
    status_code: int | None,
    ok: bool,
    retry_after: float | None,
    *,
    rng: random.Random | None = None,
) -> tuple[str, int]:
    """What follows this attempt: ``(outcome, delay ms)`` with outcome ``succeeded``,
    ``retry``, ``dead`` or ``gone`` (410). ``d.attempts`` counts the attempts recorded before
    it, ``d.started`` the attempts begun (this one included, when it was leased).

    ``Retry-After`` (on 429 and 503) may lengthen the wait, up to the schedule's next two
    steps, and never shortens it: a receiver answering ``Retry-After: 0`` does not make the
    retries run out in seconds."""
    done = d.attempt_no
    if ok:
        return "succeeded", 0
    if status_code == 410:
        return "gone", 0
    if (
        status_code is not None
        and 400 <= status_code < 500
        and status_code not in _RETRYABLE_4XX
        and done >= _PERMANENT_AFTER
    ):
        return "dead", 0
    if done >= d.max_attempts:
        return "dead", 0
    step = d.schedule[done - 1]
    r = rng or random
    delay = step * r.uniform(0.8, 1.2)
    if retry_after is not None and status_code in (429, 503):
        # Honoured, but never beyond the schedule's next two steps nor below the schedule.
        ceiling = max(step, d.schedule[min(done, len(d.schedule) - 1)])
        delay = max(delay, min(retry_after, ceiling))
    return "retry", max(0, round(delay * 1000))


def schedule_from(
    steps: Sequence[float],
    *,
    max_attempts: int | None = None,
    base: float | None = None,
    cap: float | None = None,
) -> list[float]:
    """The retry schedule: the configured steps, or (result callbacks with the original's
    settings) ``base * 2^i`` capped at ``cap`` for ``max_attempts - 1`` retries."""
    if max_attempts is None and base is None and cap is None:
        return [float(s) for s in steps]
    n = (max_attempts or 5) - 1
    b = base or 2.0
    c = cap or 60.0
    return [min(c, b * 2**i) for i in range(n)]
