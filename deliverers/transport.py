"""What the webhook sender needs of an HTTP client: :class:`Transport`.

A transport sends one POST and reads the answer's status, headers and first bytes. The sender
(:mod:`deliverers.sender`) owns everything around it (the target policy, signing, what an
answer means for the delivery); the transport owns connections. There are two, both passing
``tests/test_transport_contract.py``: :class:`deliverers.http1.HTTP1Pool` (straight to the
target) and :class:`deliverers.proxy.ProxyTransport` (through an egress proxy, a tunnel to each
pinned address); :func:`deliverers.proxy.webhook_transport` picks one from the settings.
Another (HTTP/2, say) implements this protocol and passes that suite, and the sender does not
change.

The contract:

- **Pinned addresses.** Every new connection goes to an address that ``connect(host, port)``
  returned (the sender's SSRF check: the addresses checked are the addresses used; through a
  proxy, the address the tunnel is asked for), while the ``Host`` header, TLS SNI and the
  certificate check keep the URL's name. An :class:`OSError` from ``connect`` is a
  :class:`ConnectError`; anything else it raises propagates unchanged, and nothing is sent.
- **The time limit** covers the connect and the exchange, not the wait for a connection slot.
  That wait is bounded on its own (``queue_seconds``); a request that gets no slot in time
  fails with :class:`HostBusy` having sent nothing.
- **Answers are answers.** Any status is returned, redirects are never followed, 1xx interim
  answers are skipped; the body is read to ``keep`` bytes; a later request never gets bytes
  of an earlier answer.
- **Failures are typed.** Only the exceptions below (and what ``connect`` raises) leave
  :meth:`Transport.send`:

  ValueError
  └── InvalidRequest      the URL or a header cannot be sent as given; nothing was sent,
                          and no retry can help
  TransportError          this attempt failed; a later one may succeed
  ├── ConnectError        no connection: lookup, refusal, TLS handshake
  ├── HostBusy            no slot within the queue bounds; nothing was sent
  ├── TransportTimeout    the time limit passed (also a TimeoutError)
  └── ResponseError       the exchange broke: the connection closed before the whole answer,
                          or the answer is not HTTP, switches protocols or is too large
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "Connect",
    "ConnectError",
    "HostBusy",
    "InvalidRequest",
    "Response",
    "ResponseError",
    "Transport",
    "TransportError",
    "TransportTimeout",
]

Connect = Callable[[str, int], Awaitable[list[str]]]
"""``connect(host, port)``: the addresses a new connection to ``host`` may use, in order."""


class InvalidRequest(ValueError):
    """The URL or a header cannot be sent as given (it could split the request, say)."""


class TransportError(Exception):
    """The attempt failed; a later one may succeed."""


class ConnectError(TransportError):
    """No connection could be made (lookup, refusal, TLS handshake)."""


class HostBusy(TransportError):
    """No connection slot within the queue bounds: nothing was sent."""


class TransportTimeout(TransportError, TimeoutError):
    """The time limit passed during the connect or the exchange."""


class ResponseError(TransportError):
    """The exchange broke: no whole answer, or not one we can read."""


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes  # the first ``keep`` bytes


class Transport(Protocol):
    """Sends webhook POSTs over connections it keeps."""

    @property
    def queue_seconds(self) -> float:
        """The longest a request waits for a connection slot before :class:`HostBusy`."""
        ...

    async def send(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        connect: Connect,
        time_limit: float,
        keep: int,
    ) -> Response:
        """POST ``body`` to ``url`` with ``headers`` (``Host`` and ``Content-Length`` are the
        transport's); the answer with its first ``keep`` body bytes, or one of the errors of
        the module's tree."""
        ...

    async def aclose(self) -> None:
        """Close every connection; requests in flight may fail."""
        ...
