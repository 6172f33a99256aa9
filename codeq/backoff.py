"""Retry delays for nack and lease expiry (spec 01, "Backoff"). Pure functions.

The scripts learn the delay from a table computed here, indexed by the attempt count they read
from the task record: Python owns the policy and the randomness, Lua only looks it up.
"""

from __future__ import annotations

import random

from codeq.domain import BackoffPolicy

__all__ = ["TABLE_SIZE", "delay_seconds", "delay_table_ms"]

TABLE_SIZE = 24  # attempts beyond this use the last entry; b·2^23 exceeds any sane cap
_MAX_EXPONENT = 62


def _ceiling(attempt: int, base: float, cap: float) -> float:
    exponent = min(max(attempt, 1) - 1, _MAX_EXPONENT)
    return min(base * (2.0**exponent), cap)


def delay_seconds(
    policy: BackoffPolicy,
    attempt: int,
    *,
    base: float,
    cap: float,
    rng: random.Random | None = None,
) -> float:
    """Delay before the next try, after ``attempt`` (≥1) claims so far."""
    n = max(attempt, 1)
    r = rng or random
    match policy:
        case BackoffPolicy.FIXED:
            return min(base, cap)
        case BackoffPolicy.LINEAR:
            return min(base * n, cap)
        case BackoffPolicy.EXPONENTIAL:
            return _ceiling(n, base, cap)
        case BackoffPolicy.EXP_FULL_JITTER:
            return r.uniform(0.0, _ceiling(n, base, cap))
        case BackoffPolicy.EXP_EQUAL_JITTER:
            d = _ceiling(n, base, cap)
            return d / 2 + r.uniform(0.0, d / 2)
    raise ValueError(f"unknown backoff policy {policy!r}")  # pragma: no cover


def delay_table_ms(
    policy: BackoffPolicy,
    *,
    base: float,
    cap: float,
    rng: random.Random | None = None,
    size: int = TABLE_SIZE,
) -> list[int]:
    """Delays in ms for attempts 1..size, each with its own jitter draw."""
    return [
        round(delay_seconds(policy, n, base=base, cap=cap, rng=rng) * 1000)
        for n in range(1, size + 1)
    ]
