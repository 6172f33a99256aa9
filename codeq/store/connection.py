"""A redis-py asyncio connection that packs commands with hiredis's C packer, and notices when
the server has closed it.

redis-py's synchronous client can pack with hiredis; its asyncio connection packs in pure
Python, which was a third of the engine's Python time under load (``bench/engine.py``).

redis-py hands out a pooled connection whose server has gone (Redis restarted, a failover)
and the command on it fails: after a restart every idle connection in the pool failed once,
one request each. :func:`sound` looks at the socket's state instead (the server's close has
arrived as end-of-file), and the pool's checkout (``connect()``) replaces such a connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import hiredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection

__all__ = ["HiredisPackConnection", "HiredisPackUnixConnection", "sound"]


def _normalise(args: tuple[Any, ...]) -> tuple[Any, ...]:
    # redis-py lets a command name carry literal arguments ("SCRIPT LOAD"); split them.
    head = args[0]
    if isinstance(head, str) and " " in head:
        return (*head.split(), *args[1:])
    if isinstance(head, bytes) and b" " in head:
        return (*head.split(), *args[1:])
    return args


def sound(conn: Any) -> bool:
    """Connected, not closed by the server (end-of-file arrived), not failed."""
    reader, writer = getattr(conn, "_reader", None), getattr(conn, "_writer", None)
    if reader is None or writer is None:
        return False
    return not (reader.at_eof() or reader.exception() is not None or writer.is_closing())


class _HiredisPack:
    """Replaces redis-py's packing and checkout on either kind of socket."""

    if TYPE_CHECKING:  # provided by the redis-py connection class it is mixed into
        _reader: Any

        async def disconnect(self, nowait: bool = False) -> None: ...

    async def connect(self) -> None:
        if self._reader is not None and not sound(self):  # the server closed it meanwhile
            await self.disconnect()
        await super().connect()  # type: ignore[misc]

    def pack_command(self, *args: Any) -> list[bytes]:
        return [hiredis.pack_command(_normalise(args))]

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        return [b"".join(hiredis.pack_command(_normalise(tuple(c))) for c in commands)]


class HiredisPackConnection(_HiredisPack, Connection):  # type: ignore[misc]
    """TCP (``redis://``)."""


class HiredisPackUnixConnection(_HiredisPack, UnixDomainSocketConnection):  # type: ignore[misc]
    """A Unix socket (``unix://``): the local store of ``codeq serve``."""
