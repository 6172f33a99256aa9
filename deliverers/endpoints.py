"""Event-subscription endpoints as the deliverers see them: each tenant's list, cached briefly
(:class:`EndpointDirectory`), which of them want an event (:func:`endpoint_matches`), the keys
an attempt is signed with (:func:`signing_keys`), the pace of an endpoint with a
``rateLimit`` (:class:`EndpointPacer`), and the ``webhook.test`` message
(:func:`webhook_test_delivery`)."""

from __future__ import annotations

import asyncio
import math
import secrets as _secrets
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import msgspec

from codeq.bodies import encode, webhook_test_body
from codeq.domain import EventType
from codeq.errors import CodeQError
from codeq.store.protocol import Endpoints, RateBuckets
from codeq.webhooks import is_signing_key
from deliverers import records
from deliverers.records import Delivery

__all__ = [
    "ENDPOINT_CACHE_SECONDS",
    "OPERATIONAL_TYPES",
    "EndpointDirectory",
    "EndpointPacer",
    "active_secrets",
    "endpoint_matches",
    "pace_burst",
    "signing_keys",
    "webhook_test_delivery",
]

ENDPOINT_CACHE_SECONDS = 1.0  # endpoint changes reach the deliverers within this
_TENANTS_KEPT = 10_000

#: The rate-limit scope of endpoint buckets (``keys.rate_limit("endpoint", tenant, id)``).
PACE_SCOPE: Final = "endpoint"


class EndpointDirectory:
    """The endpoints of each tenant, read at most once per :data:`ENDPOINT_CACHE_SECONDS`
    (most events are of tenants with none: usually no store call at all)."""

    def __init__(self, endpoints: Endpoints) -> None:
        self._endpoints = endpoints
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    async def of(self, tenant: str, *, fresh: bool = False) -> list[dict[str, Any]]:
        """The tenant's endpoints; ``fresh``: read now (an attempt needs current secrets)."""
        now = time.monotonic()
        cached = self._cache.get(tenant)
        if cached is not None and not fresh and now - cached[0] < ENDPOINT_CACHE_SECONDS:
            return cached[1]
        found = [msgspec.json.decode(raw) for raw in await self._endpoints.all_of(tenant)]
        self._cache[tenant] = (now, found)
        if len(self._cache) > _TENANTS_KEPT:
            self._cache.clear()
        return found

    async def find(
        self, tenant: str, endpoint_id: str, *, fresh: bool = False
    ) -> dict[str, Any] | None:
        for e in await self.of(tenant, fresh=fresh):
            if e.get("id") == endpoint_id:
                return e
        return None


def active_secrets(entries: Iterable[Mapping[str, Any]], now_ms: int | None = None) -> list[str]:
    """The secrets of ``entries`` (``[{"secret", "expiresAt"?}, ...]``: an endpoint's or a
    subscription's ``secrets``, or the global secret with its previous ones) still in force:
    the current one (no expiry) first, then rotated ones inside their overlap window."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    out = []
    for s in entries:
        expires = s.get("expiresAt")
        if expires is None or int(expires) > now:
            out.append(str(s["secret"]))
    return out


def signing_keys(secrets: Iterable[str]) -> tuple[list[str], list[str]]:
    """(HMAC secrets, ed25519 signing keys) of the secrets in force, each in order: what
    :func:`codeq.webhooks.sign` takes as ``secrets`` and ``ed25519_key``."""
    hmac: list[str] = []
    ed25519: list[str] = []
    for s in secrets:
        (ed25519 if is_signing_key(s) else hmac).append(s)
    return hmac, ed25519


#: The operational event types (``EventType.is_operational``): received only when named.
OPERATIONAL_TYPES: Final = frozenset(e.value for e in EventType if e.is_operational)


def endpoint_matches(endpoint: Mapping[str, Any], kind: str, command: str) -> bool:
    """Whether an enabled ``endpoint`` wants an event of type ``kind`` (of ``command``).
    ``*`` is every task event; an operational type (``endpoint.disabled``, ...) must be named,
    and ``commands`` does not narrow it (it is about no command)."""
    if not endpoint.get("enabled", True):
        return False
    types = endpoint.get("eventTypes") or []
    if kind in OPERATIONAL_TYPES:
        return kind in types
    if "*" not in types and kind not in types:
        return False
    commands = endpoint.get("commands") or []  # cjson turns [] into {}: both mean "any"
    return not commands or command in {str(c).lower() for c in commands}


# -- the pace of an endpoint with a rateLimit --------------------------------------------------


def pace_burst(per_second: int) -> int:
    """The bucket size of an endpoint's ``rateLimit``: a tenth of a second of deliveries (at
    least one). Enough that an attempt a few milliseconds late loses no token, small enough
    that after a quiet spell the first second carries at most 10 % more than the limit (and
    under a steady load, when the bucket never fills, the limit itself)."""
    return max(1, math.ceil(per_second / 10))


class _Line:
    """The deliveries of one endpoint this process holds back."""

    __slots__ = ("horizon", "turn", "waiting")

    def __init__(self) -> None:
        self.turn = asyncio.Lock()  # FIFO: whoever holds it takes the next token
        self.waiting = 0  # held here, the holder included
        self.horizon = 0.0  # monotonic time of the last slot handed to a put-off delivery


class EndpointPacer:
    """Holds deliveries to an endpoint with a ``rateLimit`` (deliveries per second) to that
    pace, whatever the number of deliverer processes: the token bucket is in the store
    (``rate_limit.lua``, scope ``endpoint``, one per endpoint), shared by all of them.

    In a process, the deliveries of one endpoint queue in arrival order and only the first
    asks the bucket, so a backlog costs about two store calls per delivery rather than one per
    waiting delivery per token. A queue holds about ``hold_seconds`` of deliveries; one that
    arrives behind a full queue is not held in memory but put off (:meth:`admit` answers the
    delay), each to a slot of its own one interval after the last, so a backlog comes back
    spread at the endpoint's pace rather than all at once. A delivery also leaves the queue
    with a delay when it has waited ``max_hold_seconds`` (other processes take their share of
    the tokens): a held delivery must be attempted well inside its lease.

    The pacer fails open, as the other rate limits do: when the store cannot answer, the
    delivery goes ahead.
    """

    def __init__(
        self,
        buckets: RateBuckets,
        *,
        hold_seconds: float,
        max_hold_seconds: float,
        on_fail_open: Callable[[], None] | None = None,
    ) -> None:
        self._buckets = buckets
        self._hold = hold_seconds
        self._max_hold = max(hold_seconds, max_hold_seconds)
        self._on_fail_open = on_fail_open
        self._lines: dict[tuple[str, str], _Line] = {}

    async def admit(self, tenant: str, endpoint_id: str, per_second: int) -> float:
        """Wait for the endpoint's next token: ``0.0`` when one was taken (send now), else
        the seconds to put the delivery off by (no token taken)."""
        key = (tenant, endpoint_id)
        line = self._lines.get(key)
        if line is None:
            if len(self._lines) > _TENANTS_KEPT:
                self._forget_idle()
            line = self._lines[key] = _Line()
        now = time.monotonic()
        interval = 1.0 / per_second
        if line.waiting >= max(1, per_second * self._hold):
            line.horizon = max(line.horizon, now + self._hold) + interval
            return line.horizon - now
        deadline = now + self._max_hold
        line.waiting += 1
        try:
            try:
                await asyncio.wait_for(line.turn.acquire(), timeout=self._max_hold)
            except TimeoutError:
                return self._put_off(line, interval)
            try:
                while True:
                    wait = await self._take(tenant, endpoint_id, per_second)
                    if wait <= 0:
                        return 0.0
                    if time.monotonic() + wait > deadline:
                        return max(wait, self._put_off(line, interval))
                    await asyncio.sleep(wait)
            finally:
                line.turn.release()
        finally:
            line.waiting -= 1

    def _put_off(self, line: _Line, interval: float) -> float:
        now = time.monotonic()
        line.horizon = max(line.horizon, now + self._hold) + interval
        return line.horizon - now

    async def _take(self, tenant: str, endpoint_id: str, per_second: int) -> float:
        try:
            decision = await self._buckets.take(
                PACE_SCOPE,
                tenant,
                endpoint_id,
                requests_per_minute=per_second * 60,
                burst=pace_burst(per_second),
            )
        except CodeQError:  # StoreUnavailable, StoreError: never stop deliveries for it
            if self._on_fail_open is not None:
                self._on_fail_open()
            return 0.0
        return 0.0 if decision.allowed else max(decision.retry_after_ms, 1) / 1000

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for key, line in list(self._lines.items()):
            if line.waiting == 0 and line.horizon <= now:
                del self._lines[key]


# -- the test send -----------------------------------------------------------------------------


def webhook_test_delivery(
    endpoint: Mapping[str, Any], *, partitions: int, schedule: list[float], now_ms: int
) -> tuple[int, Delivery]:
    """A ``webhook.test`` delivery to ``endpoint`` (its partition, the delivery), with the
    catalog's body (:func:`codeq.bodies.webhook_test_body`): a delivery like any other of
    the endpoint, retried on ``schedule`` when its first attempt fails."""
    partition = _secrets.randbelow(partitions)
    endpoint_id = str(endpoint["id"])
    url = str(endpoint["url"])
    delivery = Delivery(
        id=records.delivery_id(partition, f"test:{endpoint_id}", _secrets.token_hex(12), url),
        kind="endpoint",
        tenant=str(endpoint["tenant"]),
        url=url,
        body=encode(webhook_test_body(endpoint_id, now_ms)),
        event_type=EventType.WEBHOOK_TEST.value,
        created_at=now_ms,
        schedule=list(schedule),
        endpoint_id=endpoint_id,
    )
    return partition, delivery
