"""Sending one webhook attempt: target safety (SSRF), bounded concurrency, no redirects.

Before each attempt the target host is resolved and every address checked (:class:`TargetPolicy`).
The check *is* the transport's connect step (:class:`deliverers.transport.Transport`): every new
connection is opened to exactly the addresses that were checked, so no second lookup can send
it elsewhere (DNS rebinding), while the ``Host`` header, TLS SNI and certificate check keep the
name. IP-literal targets are checked before the request as well.

The sender uses only the transport's protocol and its typed errors, which it turns into an
:class:`Attempt`. One transport serves every attempt, bounded per process and per target host;
``timeout`` covers an attempt's connect and exchange, never its wait for a slot; that wait is
bounded on its own (the transport's ``queue_seconds``), and an attempt that gets no slot in
time comes back ``busy``: nothing was sent, so it is no attempt at all.

The default transport is our own small HTTP/1.1 client on httptools (:mod:`deliverers.http1`)
rather than httpx or aiohttp: a deliverer spends most of its time in this one call, and it costs
~40 µs of CPU per request against ~250 µs for aiohttp (and more for httpx) on the project's
machine.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from codeq.webhooks import address_problem, allowed_networks, target_problem
from deliverers.http1 import HOST_QUEUE_SECONDS, HTTP1Pool
from deliverers.transport import (
    ConnectError,
    HostBusy,
    InvalidRequest,
    Transport,
    TransportError,
    TransportTimeout,
)

__all__ = ["Attempt", "TargetPolicy", "TargetRefused", "WebhookSender"]

log = logging.getLogger("codeq.deliverers")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESPONSE_HEAD_BYTES = 256  # of an answer's body, kept in the attempt log
_URLS_KEPT = 4096


class TargetRefused(Exception):
    """The target is not a place webhooks may go."""


class TargetPolicy:
    def __init__(self, allowed_cidrs: Sequence[str] = (), require_https: bool = False) -> None:
        self.allowed = allowed_networks(allowed_cidrs)
        self.require_https = require_https

    async def resolve(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    def check_url(self, url: str) -> None:
        """The URL as every webhook target is checked (codeq.webhooks.target_problem), then IP
        literals (those never reach a resolver) against the allowed networks."""
        problem = target_problem(url, require_https=self.require_https)
        if problem is not None:
            raise TargetRefused(problem)
        host = urlsplit(url).hostname
        if not host:
            raise TargetRefused("no host")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return
        self._check_address(host, ip)

    def _check_address(self, host: str, ip: IPAddress) -> None:
        reason = address_problem(ip, self.allowed)
        if reason:
            log.warning(
                "webhook target refused: %s is %s",
                host,
                reason,
                extra={"host": host, "reason": reason},
            )
            raise TargetRefused(f"{host} resolves to a {reason} address")

    async def check_host(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` and check every address; the addresses to connect to."""
        # A lookup that fails is an ordinary, retryable failure (a DNS outage must not kill
        # deliveries): it propagates as OSError, not as a refusal.
        addresses = await self.resolve(host, port)
        if not addresses:
            raise OSError(f"{host} has no address")
        for a in addresses:
            self._check_address(host, ipaddress.ip_address(a.split("%", 1)[0]))
        return addresses

    async def check(self, url: str) -> list[str]:
        """The whole check of one URL (tests, tools): scheme, then every resolved address."""
        self.check_url(url)
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return await self.check_host(parts.hostname or "", port)


@dataclass(slots=True)
class Attempt:
    ok: bool
    status_code: int | None
    latency_ms: float
    error: str | None = None
    response_head: str = ""
    retry_after_seconds: float | None = None
    refused: bool = False  # the target is not allowed: no retry can help
    busy: bool = False  # no connection slot in time: nothing was sent, no attempt was made


def _refused(error: str) -> Attempt:
    """An attempt that was not made and never can be."""
    return Attempt(ok=False, status_code=None, latency_ms=0.0, error=error, refused=True)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # ("²".isdigit() is true too)
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):  # not a date we can use: ignored
        return None


class WebhookSender:
    def __init__(
        self,
        policy: TargetPolicy,
        *,
        timeout: float = 10.0,
        transport: Transport | None = None,
        concurrency: int = 256,
        per_host_concurrency: int = 16,
        queue_seconds: float = HOST_QUEUE_SECONDS,
    ) -> None:
        """``timeout``: the connect and the exchange of one attempt. ``transport``: how the
        requests go out; by default the HTTP/1.1 pool of :mod:`deliverers.http1`, bounded by
        ``concurrency`` and ``per_host_concurrency``, with ``queue_seconds`` the longest wait
        for a connection slot (then the attempt is ``busy``). Those three apply to the default
        only: a given transport brings its own bounds. :meth:`aclose` closes the transport."""
        self.policy = policy
        self._timeout = timeout
        if transport is None:
            transport = HTTP1Pool(
                limit=concurrency, per_host=per_host_concurrency, queue_seconds=queue_seconds
            )
        self.transport = transport
        self._checked: set[str] = set()

    @property
    def queue_seconds(self) -> float:
        """The longest an attempt waits for a connection slot (part of a delivery's lease)."""
        return self.transport.queue_seconds

    def _check(self, url: str) -> None:
        """The policy's check of the URL, remembered (the policy does not change): most
        attempts go to URLs seen before, and checking each again was a few per cent of a
        deliverer's time."""
        if url not in self._checked:
            self.policy.check_url(url)
            if len(self._checked) >= _URLS_KEPT:
                self._checked.clear()
            self._checked.add(url)

    async def _connect(self, host: str, port: int) -> list[str]:
        """Every new connection: resolve and check; the connection goes to these addresses."""
        return await self.policy.check_host(host, port)

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Attempt:
        started = time.perf_counter()
        try:
            self._check(url)
            r = await self.transport.send(
                url,
                headers,
                body,
                connect=self._connect,
                time_limit=self._timeout,
                keep=RESPONSE_HEAD_BYTES,
            )
        except TargetRefused as exc:  # by the URL's check, or the connect step's
            return _refused(f"refused: {exc}")
        except InvalidRequest as exc:  # nothing a retry could change
            return _refused(f"invalid: {exc}")
        except HostBusy as exc:
            return Attempt(
                ok=False,
                status_code=None,
                latency_ms=(time.perf_counter() - started) * 1000,
                error=f"busy: {exc}",
                busy=True,
            )
        except TransportTimeout:
            return self._failed(started, "timeout")
        except ConnectError as exc:
            return self._failed(started, f"connect: {exc}"[:200])
        except TransportError as exc:
            return self._failed(started, f"{type(exc).__name__}: {exc}"[:200])
        except Exception as exc:  # a failed attempt all the same, never a lost one
            log.exception("webhook attempt failed unexpectedly")
            return self._failed(started, f"{type(exc).__name__}: {exc}"[:200])
        ok = 200 <= r.status < 300
        return Attempt(
            ok=ok,
            status_code=r.status,
            latency_ms=(time.perf_counter() - started) * 1000,
            error=None if ok else f"HTTP {r.status}",
            response_head=r.body.decode("utf-8", "replace"),
            retry_after_seconds=_retry_after(r.headers.get("retry-after")),
        )

    @staticmethod
    def _failed(started: float, error: str) -> Attempt:
        return Attempt(
            ok=False,
            status_code=None,
            latency_ms=(time.perf_counter() - started) * 1000,
            error=error,
        )

    async def aclose(self) -> None:
        await self.transport.aclose()
