"""Identifiers: UUIDv7 task ids (time-ordered), lease ids."""

from __future__ import annotations

import os
import re
import time

__all__ = ["is_task_id", "new_lease_id", "new_task_id"]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def new_task_id(now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562) in canonical lowercase form."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = rand >> 68  # 12 bits
    rand_b = rand & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_lease_id() -> str:
    return os.urandom(16).hex()


def is_task_id(text: str) -> bool:
    """Well-formed task id? Anything else never reaches the store (it answers 404)."""
    return len(text) == 36 and _UUID.match(text) is not None
