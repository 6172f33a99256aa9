"""Identifiers: UUIDv7 task ids (time-ordered), lease ids."""

from __future__ import annotations

import os
import re
import threading
import time

__all__ = ["is_task_id", "new_lease_id", "new_task_id", "random_hex"]

_POOL_BYTES = 4096
_pool = b""
_taken = 0
_lock = threading.Lock()


def _random(n: int) -> bytes:
    """``n`` bytes from the OS's CSPRNG, read 4 KiB at a time: one ``getrandom`` serves a
    few hundred ids instead of one (a create makes two, a claim one)."""
    global _pool, _taken
    with _lock:
        if _taken + n > len(_pool):
            _pool, _taken = os.urandom(_POOL_BYTES), 0
        out = _pool[_taken : _taken + n]
        _taken += n
    return out


def _forget() -> None:  # a forked child must not hand out its parent's bytes again
    global _pool, _taken, _lock
    _pool, _taken = b"", 0
    _lock = threading.Lock()  # a thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_forget)


def random_hex(n_bytes: int = 16) -> str:
    """``n_bytes`` random bytes as hex (lease ids, request ids)."""
    return _random(n_bytes).hex()


_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_task_id(now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562) in canonical lowercase form."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(_random(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_lease_id() -> str:
    return random_hex(16)


def is_task_id(text: str) -> bool:
    """Well-formed task id? Anything else never reaches the store (it answers 404)."""
    return len(text) == 36 and _UUID.match(text) is not None
