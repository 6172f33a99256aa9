"""A redis-py asyncio connection that packs commands with hiredis's C packer.

redis-py's synchronous client can pack with hiredis; its asyncio connection packs in pure
Python, which was a third of the engine's Python time under load (``bench/engine.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import hiredis
from redis.asyncio.connection import Connection

__all__ = ["HiredisPackConnection"]


def _normalise(args: tuple[Any, ...]) -> tuple[Any, ...]:
    # redis-py lets a command name carry literal arguments ("SCRIPT LOAD"); split them.
    head = args[0]
    if isinstance(head, str) and " " in head:
        return (*head.split(), *args[1:])
    if isinstance(head, bytes) and b" " in head:
        return (*head.split(), *args[1:])
    return args


class HiredisPackConnection(Connection):
    def pack_command(self, *args: Any) -> list[bytes]:
        return [hiredis.pack_command(_normalise(args))]

    def pack_commands(self, commands: Iterable[Iterable[Any]]) -> list[bytes]:
        return [b"".join(hiredis.pack_command(_normalise(tuple(c))) for c in commands)]
