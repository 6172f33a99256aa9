"""Long-poll wake-ups: claims waiting for work are woken by ``task.ready`` events (and by the
``task.created`` entries that are a create's ``task.ready`` too, :func:`codeq.domain.makes_ready`).

One :class:`~codeq.events.EventTail` per process follows the partition streams; each
``task.ready`` wakes at most ``depth`` waiters of that (tenant, command) — the longest waiting
first — instead of every one of them, so a single new task does not stampede a hundred polls
into a hundred claim scripts. Waiters also re-check on a fallback timer, so a missed event
costs at most that interval, never the whole poll.

A task created through this process wakes a waiter here at once (:meth:`Waker.on_created`),
without waiting for its ``task.ready`` to come back through the tail (on KVRocks the tail
polls, so that takes up to its pause). The two halves meet: a create that woke a waiter makes
its event wake one fewer, and an event that came first (Redis' tail blocks) makes the create
wake none. Each side remembers a task for :data:`LOCAL_WAKE_WINDOW_S` at most (the last
:data:`LOCAL_WAKES_KEPT`), so a half that never comes (the tail idle, the store away) cannot
take a wake-up from a later ``task.ready`` of the same task (after an abandon, a retry).

A poll whose claim brought a task while a wake-up was set for it hands that wake-up on to the
next waiter of its commands (:meth:`Waker.pass_on`): the wake-up was for a task it did not
take, or for one another poll also waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping

from codeq.domain import makes_ready

__all__ = ["Waiter", "Waker"]


class Waiter:
    __slots__ = ("event", "keys", "registered")

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        self.keys = keys
        self.event = asyncio.Event()
        self.registered = True


#: how many tasks are remembered on each side until the other half comes (the oldest is
#: forgotten first: if its other half still comes, it wakes one waiter more)
LOCAL_WAKES_KEPT = 1024
#: how long, in seconds: a create's answer and its event come within milliseconds of each other
LOCAL_WAKE_WINDOW_S = 2.0


class Waker:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._waiters: dict[tuple[str, str], deque[Waiter]] = {}
        self._count = 0
        self._clock = clock
        self._woken_for: dict[str, float] = {}  # task id -> when a create here woke a waiter
        self._evented: dict[str, float] = {}  # task id -> when its event came, polls waiting
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
        there is one here and its ``task.ready`` has not come first (then the event did the
        waking, and a poll that came after it finds the task with its first claim), and
        remember that the event has had one wake-up already."""
        if self._take(self._evented, task_id):
            return
        if self._wake((tenant, command.lower()), 1):
            self._remember(self._woken_for, task_id)

    def on_event(self, fields: Mapping[str, str]) -> None:
        if not makes_ready(fields.get("type", ""), "depth" in fields):
            return
        try:
            budget = max(1, int(fields.get("depth", "1")))
        except ValueError:
            budget = 1
        task_id = fields.get("id", "")
        key = (fields.get("tenant", ""), fields.get("command", "").lower())
        if self._take(self._woken_for, task_id):  # woken for at its creation, here
            budget -= 1
        elif self._count:  # its creation's answer may be ours, and still to come
            self._remember(self._evented, task_id)
        self._wake(key, budget)

    def pass_on(self, waiter: Waiter) -> None:
        """``waiter``'s poll took a task while a wake-up was set for it: wake the next waiter
        of its commands instead, so a task another poll waits for is not left to the
        fallback re-check."""
        for key in waiter.keys:
            if self._wake(key, 1):
                return

    def _remember(self, ids: dict[str, float], task_id: str) -> None:
        ids[task_id] = self._clock()
        if len(ids) > LOCAL_WAKES_KEPT:
            del ids[next(iter(ids))]

    def _take(self, ids: dict[str, float], task_id: str) -> bool:
        """Whether ``task_id`` was remembered within the window (it is forgotten either way)."""
        at = ids.pop(task_id, None)
        return at is not None and self._clock() - at <= LOCAL_WAKE_WINDOW_S

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
