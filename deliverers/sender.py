"""Sending one webhook attempt: target safety (SSRF), bounded concurrency, no redirects.

Before each attempt the target host is resolved and every address checked (:class:`TargetPolicy`);
the request then goes to the checked address itself — the URL's host is replaced by the IP,
the ``Host`` header keeps the name, and for https the TLS server name (SNI and certificate
check) stays the name through httpx's ``sni_hostname`` extension — so no second lookup can
send it elsewhere (DNS rebinding). One shared ``httpx.AsyncClient`` (keep-alive) serves every
attempt, bounded per process and per target host.
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
from urllib.parse import urlsplit, urlunsplit

import httpx

__all__ = ["Attempt", "TargetPolicy", "TargetRefused", "WebhookSender"]

log = logging.getLogger("codeq.deliverers")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class TargetRefused(Exception):
    """The target is not a place webhooks may go."""


def _forbidden(ip: IPAddress) -> str | None:
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared address space"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    return None


class TargetPolicy:
    def __init__(self, allowed_cidrs: Sequence[str] = (), require_https: bool = False) -> None:
        self.allowed = [ipaddress.ip_network(c, strict=False) for c in allowed_cidrs]
        self.require_https = require_https

    async def resolve(self, host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))

    async def check(self, url: str) -> list[str]:
        """The addresses ``url`` may be sent to; raises :class:`TargetRefused`."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise TargetRefused("only http and https targets")
        if self.require_https and parts.scheme != "https":
            raise TargetRefused("https is required")
        host = parts.hostname
        if not host:
            raise TargetRefused("no host")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = await self.resolve(host, port)
        except OSError as exc:
            raise TargetRefused(f"cannot resolve host: {exc.strerror or exc}") from None
        if not addresses:
            raise TargetRefused("host has no address")
        for a in addresses:
            ip = ipaddress.ip_address(a.split("%", 1)[0])
            reason = _forbidden(ip)
            if reason and not any(ip in net for net in self.allowed):
                log.warning("webhook target refused", extra={"host": host, "reason": reason})
                raise TargetRefused(f"{host} resolves to a {reason} address")
        return addresses


@dataclass(slots=True)
class Attempt:
    ok: bool
    status_code: int | None
    latency_ms: float
    error: str | None = None
    response_head: str = ""
    retry_after_seconds: float | None = None
    refused: bool = False  # the target is not allowed: no retry can help


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class WebhookSender:
    def __init__(
        self,
        policy: TargetPolicy,
        *,
        timeout: float = 10.0,
        concurrency: int = 256,
        per_host_concurrency: int = 16,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.policy = policy
        self._client = client or httpx.AsyncClient(
            timeout=timeout,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=64),
            trust_env=False,
        )
        self._global = asyncio.Semaphore(concurrency)
        self._per_host_limit = per_host_concurrency
        self._per_host: dict[str, asyncio.Semaphore] = {}

    def _host_gate(self, host: str) -> asyncio.Semaphore:
        gate = self._per_host.get(host)
        if gate is None:
            gate = self._per_host[host] = asyncio.Semaphore(self._per_host_limit)
        return gate

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> Attempt:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        async with self._host_gate(host), self._global:
            started = time.perf_counter()
            try:
                addresses = await self.policy.check(url)
            except TargetRefused as exc:
                return Attempt(
                    ok=False,
                    status_code=None,
                    latency_ms=0.0,
                    error=f"refused: {exc}",
                    refused=True,
                )
            ip = addresses[0]
            netloc_host = f"[{ip}]" if ":" in ip else ip
            netloc = f"{netloc_host}:{parts.port}" if parts.port else netloc_host
            target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
            send_headers = {**headers, "Host": parts.netloc.rsplit("@", 1)[-1]}
            extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
            try:
                r = await self._client.post(
                    target, content=body, headers=send_headers, extensions=extensions
                )
            except httpx.TimeoutException:
                return self._failed(started, "timeout")
            except httpx.HTTPError as exc:
                return self._failed(started, f"{type(exc).__name__}: {exc}"[:200])
            latency = (time.perf_counter() - started) * 1000
            head = r.content[:256].decode("utf-8", "replace")
            return Attempt(
                ok=200 <= r.status_code < 300,
                status_code=r.status_code,
                latency_ms=latency,
                error=None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}",
                response_head=head,
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
        await self._client.aclose()
