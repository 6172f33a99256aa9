"""Reading the partition event streams without a consumer group (for long-poll wake-ups).

``EventTail`` follows every partition stream from its current end with ``XREAD BLOCK`` and
hands each entry to a callback. The deliverers use consumer groups instead (spec 03).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from codeq.errors import StoreUnavailable
from codeq.store.redis_store import RedisStore

__all__ = ["EventTail"]

log = logging.getLogger("codeq.events")

Event = Mapping[str, str]


class EventTail:
    """One reader task per partition (a cluster cannot XREAD keys of several slots at once)."""

    def __init__(
        self,
        store: RedisStore,
        on_event: Callable[[Event], None],
        *,
        block_ms: int = 1000,
        count: int = 500,
    ) -> None:
        self._store = store
        self._on_event = on_event
        self._block_ms = block_ms
        self._count = count
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self._started = 0

    async def start(self) -> None:
        for p in range(self._store.keys.partitions):
            self._tasks.append(asyncio.create_task(self._follow(p), name=f"codeq-tail-{p}"))

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _follow(self, partition: int) -> None:
        key = self._store.keys.partition(partition).events
        last: str | None = None
        while not self._stopping.is_set():
            try:
                if last is None:
                    last = await self._store.stream_end(key)
                    self._started += 1
                    if self._started == len(self._tasks):
                        self.ready.set()
                reply = await self._store.read_stream(
                    key, last, block_ms=self._block_ms, count=self._count
                )
                for entry_id, fields in reply:
                    last = entry_id
                    try:
                        self._on_event(fields)
                    except Exception:  # a bad subscriber must not stop the tail
                        log.exception("event handler failed")
            except StoreUnavailable:
                log.warning("event tail: store unavailable, retrying")
                await self._pause(1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("event tail failed, retrying")
                await self._pause(1.0)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
