"""Long-poll wake-ups: claims waiting for work are woken by ``task.ready`` events.

One :class:`~codeq.events.EventTail` per process follows the partition streams; each
``task.ready`` wakes at most ``depth`` waiters of that (tenant, command) — the longest waiting
first — instead of every one of them, so a single new task does not stampede a hundred polls
into a hundred claim scripts. Waiters also re-check on a fallback timer, so a missed event
costs at most that interval, never the whole poll.

A task created through this process wakes a waiter here at once (:meth:`Waker.on_created`),
without waiting for its ``task.ready`` to come back through the tail (on KVRocks the tail
polls, so that takes up to its pause). Whichever of the two comes second wakes one waiter
fewer: the first remembers the task (the last :data:`LOCAL_WAKES_KEPT` of each kind).
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


#: how many tasks woken for at creation are remembered until their ``task.ready`` comes, and
#: how many woken for by their ``task.ready`` until their creation's answer comes (the oldest
#: is forgotten first: if its other half still comes, it wakes one waiter more)
LOCAL_WAKES_KEPT = 1024


class Waker:
    def __init__(self) -> None:
        self._waiters: dict[tuple[str, str], deque[Waiter]] = {}
        self._count = 0
        self._woken_for: dict[str, None] = {}  # task ids woken for at creation, oldest first
        self._evented: dict[str, None] = {}  # task ids woken for by their event, oldest first
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

    def on_created(self, tenant: str, command: str, task_id: str) -> None:
        """A task this process created is ready now: wake the longest waiting poll for it, if
        there is one here and its ``task.ready`` has not come first (then it did the waking),
        and remember that the event has had one wake-up already."""
        if task_id in self._evented:
            del self._evented[task_id]
        elif self._wake((tenant, command.lower()), 1):
            _remember(self._woken_for, task_id)

    def on_event(self, fields: Mapping[str, str]) -> None:
        if fields.get("type") != "task.ready":
            return
        try:
            budget = max(1, int(fields.get("depth", "1")))
        except ValueError:
            budget = 1
        task_id = fields.get("id", "")
        key = (fields.get("tenant", ""), fields.get("command", "").lower())
        if task_id in self._woken_for:  # woken for at its creation, here: one fewer
            del self._woken_for[task_id]
            self._wake(key, budget - 1)
        elif self._wake(key, budget):
            _remember(self._evented, task_id)  # its creation's answer may be ours, and later

    def _wake(self, key: tuple[str, str], budget: int) -> bool:
        """Wake up to ``budget`` waiters of ``key``, the longest waiting first; whether any."""
        queue = self._waiters.get(key)
        if not queue or budget <= 0:
            return False
        woke = False
        for waiter in queue:
            if budget <= 0:
                break
            if not waiter.event.is_set():
                waiter.event.set()
                budget -= 1
                woke = True
        return woke

    def close(self) -> None:
        """Shutting down: wake every poll so it answers now instead of at its deadline."""
        self.closed = True
        for queue in self._waiters.values():
            for waiter in queue:
                waiter.event.set()


def _remember(ids: dict[str, None], task_id: str) -> None:
    """Add ``task_id``, forgetting the oldest past :data:`LOCAL_WAKES_KEPT`."""
    ids[task_id] = None
    if len(ids) > LOCAL_WAKES_KEPT:
        del ids[next(iter(ids))]
