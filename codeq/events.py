"""Reading the partition event streams without a consumer group (for long-poll wake-ups).

``EventTail`` follows every partition stream with ``XREAD BLOCK`` and hands each entry to a
callback. It follows only while somebody listens (``wanted()``): with no long poll waiting it
reads nothing, so a process answering creates and claims does not also decode every event.
When the first listener arrives it calls :meth:`EventTail.attach`, which positions every
partition at the stream's end *after* the call and returns once they all are; an event written
after ``attach`` returns is therefore seen. (Repositioning only happens when nobody listened,
so no listener can lose an event to it.) The deliverers use consumer groups instead (spec 03).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from codeq.errors import StoreUnavailable
from codeq.store.protocol import EventStreams

__all__ = ["EventTail"]

log = logging.getLogger("codeq.events")

Event = Mapping[str, str]


class EventTail:
    """One reader task per partition (a cluster cannot XREAD keys of several slots at once)."""

    def __init__(
        self,
        store: EventStreams,
        on_event: Callable[[Event], None],
        *,
        wanted: Callable[[], bool] | None = None,
        block_ms: int = 1000,
        count: int = 500,
    ) -> None:
        self._store = store
        self._on_event = on_event
        self._wanted = wanted
        self._block_ms = block_ms
        self._count = count
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        n = store.keys.partitions
        # Positioning requests are numbered; partition p has answered up to _positioned[p].
        self._generation = 1
        self._positioned = [0] * n
        self._live = [False] * n  # reading continuously from a known position
        self._kick = asyncio.Event()  # replaced (after being set) at every new request
        self._moved = asyncio.Event()  # replaced (after being set) whenever a partition moves

    async def start(self) -> None:
        for p in range(self._store.keys.partitions):
            self._tasks.append(asyncio.create_task(self._follow(p), name=f"codeq-tail-{p}"))

    async def stop(self) -> None:
        self._stopping.set()
        self._kick.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _covered(self, target: int) -> bool:
        return all(
            live or positioned >= target
            for live, positioned in zip(self._live, self._positioned, strict=True)
        )

    @property
    def ready(self) -> bool:
        """Every partition follows, or is positioned for the newest request."""
        return self._covered(self._generation)

    async def attach(self, *, first: bool) -> None:
        """Return once every partition follows from a point after this call began. ``first``:
        the caller is the only listener, so idle partitions must be (re)positioned. Callers
        bound the wait (a store outage holds it)."""
        if first:
            self._generation += 1
            kick, self._kick = self._kick, asyncio.Event()
            kick.set()
        target = self._generation
        while not self._covered(target) and not self._stopping.is_set():
            await self._moved.wait()

    def _mark(self, partition: int, generation: int) -> None:
        self._positioned[partition] = generation
        self._live[partition] = True
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    def _idle(self, partition: int) -> None:
        self._live[partition] = False

    async def _follow(self, partition: int) -> None:
        key = self._store.keys.partition(partition).events
        last: str | None = None
        while not self._stopping.is_set():
            try:
                if last is None:
                    generation = self._generation
                    if (
                        self._wanted is not None
                        and not self._wanted()
                        and generation <= self._positioned[partition]
                    ):
                        await self._kick.wait()  # nobody listens and nobody asked: idle
                        continue
                    last = await self._store.stream_end(key)
                    self._mark(partition, generation)
                reply = await self._store.read_stream(
                    key, last, block_ms=self._block_ms, count=self._count
                )
                for entry_id, fields in reply:
                    last = entry_id
                    try:
                        self._on_event(fields)
                    except Exception:  # a bad subscriber must not stop the tail
                        log.exception("event handler failed")
                if self._wanted is not None and not self._wanted():
                    last = None  # idle from here; the next first listener repositions
                    self._idle(partition)
            except StoreUnavailable:
                log.warning("event tail: store unavailable, retrying")
                last = None
                self._idle(partition)
                await self._pause(1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event tail failed, retrying")
                last = None
                self._idle(partition)
                await self._pause(1.0)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
