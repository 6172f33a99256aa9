"""Long-poll wake-ups: claims waiting for work are woken by ``task.ready`` events.

One :class:`~codeq.events.EventTail` per process follows the partition streams; each
``task.ready`` wakes at most ``depth`` waiters of that (tenant, command) — the longest waiting
first — instead of every one of them, so a single new task does not stampede a hundred polls
into a hundred claim scripts. Waiters also re-check on a fallback timer, so a missed event
costs at most that interval, never the whole poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable, Mapping

__all__ = ["Waiter", "Waker"]


class Waiter:
    __slots__ = ("event", "keys", "registered")

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        self.keys = keys
        self.event = asyncio.Event()
        self.registered = True


class Waker:
    def __init__(self) -> None:
        self._waiters: dict[tuple[str, str], deque[Waiter]] = {}
        self._count = 0
        self.closed = False

    def register(self, tenant: str, commands: Iterable[str]) -> Waiter:
        keys = list(dict.fromkeys((tenant, c.lower()) for c in commands))
        waiter = Waiter(keys)
        self._count += 1
        for key in keys:
            self._waiters.setdefault(key, deque()).append(waiter)
        if self.closed:
            waiter.event.set()
        return waiter

    def unregister(self, waiter: Waiter) -> None:
        if not waiter.registered:
            return
        waiter.registered = False
        self._count -= 1
        for key in waiter.keys:
            queue = self._waiters.get(key)
            if queue is None:
                continue
            with contextlib.suppress(ValueError):
                queue.remove(waiter)
            if not queue:
                del self._waiters[key]

    def waiting(self) -> int:
        return self._count

    def on_event(self, fields: Mapping[str, str]) -> None:
        if fields.get("type") != "task.ready":
            return
        queue = self._waiters.get((fields.get("tenant", ""), fields.get("command", "").lower()))
        if not queue:
            return
        try:
            budget = max(1, int(fields.get("depth", "1")))
        except ValueError:
            budget = 1
        for waiter in queue:
            if budget <= 0:
                break
            if not waiter.event.is_set():
                waiter.event.set()
                budget -= 1

    def close(self) -> None:
        """Shutting down: wake every poll so it answers now instead of at its deadline."""
        self.closed = True
        for queue in self._waiters.values():
            for waiter in queue:
                waiter.event.set()
