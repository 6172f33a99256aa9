"""Recording the outcomes of attempts: those that end in the same loop iteration share one
``dlv_outcome`` call per partition."""

from __future__ import annotations

import asyncio

from codeq.errors import StoreUnavailable
from codeq.store.deliveries import DeliveryStore

__all__ = ["Outcome", "Outcomes"]

Outcome = tuple[str, str, int, bytes]  # delivery id, outcome, delay ms, attempt JSON


class Outcomes:
    """The outcomes of attempts that end in the same loop iteration, per partition, go to the
    store in one ``dlv_outcome`` call (a backlog's answers arrive in bursts: one script call
    and one Lua run for a burst instead of one each)."""

    MAX_BATCH = 200

    def __init__(self, dstore: DeliveryStore, kept: int) -> None:
        self._dstore = dstore
        self._kept = kept
        self._pending: dict[int, list[tuple[Outcome, asyncio.Future[tuple[str, int]]]]] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    async def record(self, partition: int, item: Outcome) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[str, int]] = loop.create_future()
        queue = self._pending.get(partition)
        if queue is None:  # the first of this iteration: the flush comes after the rest
            queue = self._pending[partition] = []
            loop.call_soon(self._flush, partition)
        queue.append((item, fut))
        return await fut

    def _flush(self, partition: int) -> None:
        queue = self._pending.pop(partition, [])
        for i in range(0, len(queue), self.MAX_BATCH):
            task = asyncio.get_running_loop().create_task(
                self._send(partition, queue[i : i + self.MAX_BATCH])
            )
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)

    async def _send(
        self, partition: int, batch: list[tuple[Outcome, asyncio.Future[tuple[str, int]]]]
    ) -> None:
        try:
            items = [item for item, _ in batch]
            replies = await self._dstore.outcomes(partition, items, self._kept)
        except BaseException as exc:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(
                        exc if isinstance(exc, Exception) else StoreUnavailable("interrupted")
                    )
            if not isinstance(exc, Exception):
                raise
            return
        for (_, fut), reply in zip(batch, replies, strict=True):
            if not fut.done():
                fut.set_result(reply)
