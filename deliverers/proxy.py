"""Webhooks through an egress proxy (``webhookProxyUrl``): the :class:`ProxyTransport`.

Where outbound traffic is filtered, every webhook goes through one HTTP proxy. The SSRF rules
still hold for the final target, because the proxy is only given addresses that were checked:

- the sender resolves the target's name and checks every address as it does without a proxy
  (:class:`deliverers.sender.TargetPolicy`; the transport's ``connect`` step), so a refused
  target is refused before the proxy hears of it;
- each new connection is a tunnel: ``CONNECT <checked address>:<port>`` (never the name, so
  neither the proxy's resolver nor anyone who can change it can send the request elsewhere),
  with ``Proxy-Authorization: Basic`` when the proxy URL has user info;
- through the tunnel, TLS with the URL's host name for SNI and the certificate check (https),
  or the plain request (http), with ``Host`` keeping the URL's name.

The request and the answer are :mod:`deliverers.http1`'s: a :class:`ProxyTransport` is an
:class:`~deliverers.http1.HTTP1Pool` whose connections are dialled through the proxy (its
:data:`~deliverers.http1.Dial`), so keep-alive, the bounds and the errors are the same. A proxy
that cannot be reached, or that asks for credentials (407), fails the attempt with
:class:`~deliverers.transport.ConnectError` at once (retried by the schedule like any failed
connect); a proxy that refuses one address (502, 403, ...) lets the next checked address be
tried. Credentials are never logged, shown or put in an error.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from dataclasses import dataclass

from codeq.settings import Settings
from codeq.webhooks import parse_proxy_url
from deliverers.http1 import HOST_QUEUE_SECONDS, MAX_HEAD, HTTP1Pool, Target
from deliverers.transport import ConnectError, Transport

__all__ = ["Proxy", "ProxyDial", "ProxyTransport", "webhook_transport"]

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})(?: ([^\r\n]*))?")


@dataclass(frozen=True, slots=True, repr=False)
class Proxy:
    """Where the proxy listens and the ``Proxy-Authorization`` value, if any (never shown)."""

    host: str
    port: int
    authorization: str | None = None

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """``http://[user[:password]@]host:port``, read by
        :func:`codeq.webhooks.parse_proxy_url` (the settings' check of ``webhookProxyUrl``);
        ValueError naming no credentials for anything else."""
        try:
            parsed = parse_proxy_url(url)
        except ValueError as exc:
            raise ValueError(f"webhookProxyUrl: {exc}") from None
        authorization = None
        if parsed.username is not None:
            secret = f"{parsed.username}:{parsed.password or ''}"
            authorization = "Basic " + base64.b64encode(secret.encode()).decode()
        return cls(host=parsed.host, port=parsed.port, authorization=authorization)

    def __repr__(self) -> str:
        shown = "***@" if self.authorization else ""
        return f"Proxy(http://{shown}{self.host}:{self.port})"

    def connect_request(self, address: str, port: int) -> bytes:
        """The ``CONNECT`` request for a tunnel to ``address:port`` (an IP address)."""
        authority = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        head = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
        if self.authorization is not None:
            head += f"Proxy-Authorization: {self.authorization}\r\n"
        return (head + "\r\n").encode()


class _Tunnel(asyncio.Protocol):
    """A new connection to the proxy until its answer to ``CONNECT``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()
        self.extra = b""  # bytes after the answer's head: the target's, not the proxy's
        self._head = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.answer.done():  # the target speaking before the switch (see ProxyDial)
            self.extra += data
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self.answer.set_exception(OSError("the proxy's answer to CONNECT is too large"))
            return
        self.extra = bytes(self._head[end + 4 :])
        match = _STATUS_LINE.match(bytes(self._head[:end]))
        if match is None:
            self.answer.set_exception(OSError("the proxy's answer to CONNECT is not HTTP"))
            return
        reason = (match[2] or b"").decode("latin-1")
        self.answer.set_result((int(match[1]), "".join(c for c in reason if c.isprintable())))

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost says what it means

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(
                ConnectionResetError("the proxy closed the connection before answering CONNECT")
            )


class ProxyDial:
    """The :data:`deliverers.http1.Dial` of a :class:`ProxyTransport`: a tunnel through the
    proxy to the checked address, then TLS through it for the URL's name (https)."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    async def __call__(
        self, protocol: asyncio.Protocol, target: Target, address: str, tls: ssl.SSLContext | None
    ) -> None:
        loop = asyncio.get_running_loop()
        where = f"{self.proxy.host}:{self.proxy.port}"
        try:
            raw, tunnel = await loop.create_connection(_Tunnel, self.proxy.host, self.proxy.port)
        except OSError as exc:  # no other address of the target can help
            raise ConnectError(f"proxy {where} unreachable: {exc}") from exc
        try:
            raw.write(self.proxy.connect_request(address, target.port))
            status, reason = await tunnel.answer
            if status == 407:
                raise ConnectError(
                    f"proxy {where} wants credentials (407): check webhookProxyUrl's user info"
                )
            if not 200 <= status < 300:
                raise ConnectionRefusedError(
                    f"proxy {where} answered CONNECT {address}:{target.port} with {status} "
                    f"{reason}".rstrip()[:200]
                )
            transport: asyncio.BaseTransport = raw
            if tls is not None:
                # The certificate is checked for the URL's name, end to end: the proxy only
                # carries bytes it cannot read.
                started = await loop.start_tls(raw, tunnel, tls, server_hostname=target.host)
                if started is None:  # the connection closed during the handshake
                    raise ConnectionResetError("the connection closed during the TLS handshake")
                transport = started
        except BaseException:
            if not tunnel.answer.done():  # cut off (the time limit): nobody waits for it now
                tunnel.answer.cancel()
            raw.close()
            raise
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if tunnel.extra:  # nothing was asked yet: the connection treats it as a broken server
            protocol.data_received(tunnel.extra)


class ProxyTransport(HTTP1Pool):
    """:class:`deliverers.transport.Transport` through an HTTP proxy: an
    :class:`~deliverers.http1.HTTP1Pool` whose connections are tunnels (module docstring)."""

    def __init__(
        self,
        proxy: Proxy | str,
        *,
        limit: int = 256,
        per_host: int = 16,
        idle_seconds: float = 4.0,
        ssl_context: ssl.SSLContext | None = None,
        queue_seconds: float = HOST_QUEUE_SECONDS,
        queue_limit: int | None = None,
    ) -> None:
        """``proxy``: a :class:`Proxy` or its URL (``webhookProxyUrl``); the other options
        are :class:`~deliverers.http1.HTTP1Pool`'s."""
        self.proxy = proxy if isinstance(proxy, Proxy) else Proxy.parse(proxy)
        super().__init__(
            limit=limit,
            per_host=per_host,
            idle_seconds=idle_seconds,
            ssl_context=ssl_context,
            queue_seconds=queue_seconds,
            queue_limit=queue_limit,
            dial=ProxyDial(self.proxy),
        )

    def __repr__(self) -> str:
        return f"ProxyTransport({self.proxy!r})"


def webhook_transport(
    settings: Settings, *, limit: int | None = None, per_host: int | None = None
) -> Transport:
    """The transport every webhook of a process with these settings goes out on: through
    ``webhookProxyUrl``'s proxy when it is set, else straight to the target. Bounded by
    ``limit`` and ``per_host`` (default ``deliveryConcurrency``, ``deliveryPerHostConcurrency``)."""
    limit = settings.delivery_concurrency if limit is None else limit
    per_host = settings.delivery_per_host_concurrency if per_host is None else per_host
    if settings.webhook_proxy_url:
        return ProxyTransport(settings.webhook_proxy_url, limit=limit, per_host=per_host)
    return HTTP1Pool(limit=limit, per_host=per_host)
