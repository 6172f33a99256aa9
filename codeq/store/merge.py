"""Merging concurrent calls of one script into fewer, bigger calls.

Creates are the operation producers make most, and most of a create's cost in the store is not
its writes but running a script at all (on KVRocks ~70 µs a call, and ~7 µs for each command
the script makes beyond the command itself). The create script takes many items, groups their
writes, and stays one atomic step per call; :class:`CallMerger` hands it every create of a
partition that coroutines made in the same event-loop iteration (``patience``: or in as many
more), so under load one call carries many, and an idle store still gets each create at once
(an idle loop turns in microseconds; nothing waits for a batch to fill). Each caller gets
exactly its own items' answers, or the exception of the call that carried them.

Creates wait one more turn (``patience=1``): the requests whose bytes arrived in the next
poll join the call. Side by side (``bench/ab.py . <one turn>``, 10 rounds, wrk creates,
docs/performance.md §19): creates/s ×1.109 with two gateway processes on KVRocks (10/10
rounds; creates per call 6–8 → 9–12, KVRocks CPU per create ×0.90), ×1.048 with one on Redis
(gateway and store CPU per create ×0.87 and ×0.89), ×0.952 with one on KVRocks (0.87–1.02,
within the bench's noise). Claims and results send on the next turn: a claim's or a result's
latency is a worker's, and their calls are smaller.

Calls never grow past ``max_items`` (16): a long script holds the store (KVRocks runs one at a
time) and the callers it carries wait for its last item, and KVRocks' transaction batch gets
slower per write as it grows (a 1,000-task create took 0.44 s as one call, 0.08 s as calls of
16). Bigger sets of items are cut into several calls, sent together. 16 measured best for
HTTP creates at c=50 (wrk; 8: 6,572/s, 16: 6,794–7,057/s, 24–32: 6,315–6,405/s, 100:
6,226/s on Redis; on KVRocks 16 and 100 within 3 %).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from codeq.errors import StoreUnavailable

__all__ = ["MAX_SCRIPT_ITEMS", "CallMerger"]

#: the most items one create script call carries
MAX_SCRIPT_ITEMS = 16

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

_Job = tuple[Sequence[T], "asyncio.Future[list[Any]]"]


class CallMerger(Generic[K, T]):
    """``submit(key, items)`` → one reply per item, from ``send(key, items)`` calls that may
    carry other callers' items of the same ``key`` too."""

    def __init__(
        self,
        send: Callable[[K, list[T]], Awaitable[Sequence[Any]]],
        *,
        max_items: int = MAX_SCRIPT_ITEMS,
        patience: int = 0,
    ) -> None:
        self._send = send
        self._max_items = max_items
        self._patience = patience  # loop turns to wait for more items past the first
        self._pending: dict[K, list[_Job[T]]] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, key: K, items: Sequence[T]) -> list[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Any]] = loop.create_future()
        jobs = self._pending.get(key)
        if jobs is None:
            jobs = self._pending[key] = []
            loop.call_soon(self._flush, key, self._patience)
        jobs.append((items, fut))
        return await fut

    def _flush(self, key: K, turns: int = 0) -> None:
        if turns > 0:  # more items may come in the next turn
            asyncio.get_running_loop().call_soon(self._flush, key, turns - 1)
            return
        jobs = self._pending.pop(key)
        task = asyncio.get_running_loop().create_task(self._run(key, jobs))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, key: K, jobs: list[_Job[T]]) -> None:
        try:
            flat = [(j, item) for j, (items, _) in enumerate(jobs) for item in items]
            chunks = [flat[i : i + self._max_items] for i in range(0, len(flat), self._max_items)]
            if len(chunks) == 1:
                results: list[Any] = [await _settle(self._send(key, [x for _, x in chunks[0]]))]
            else:
                results = await asyncio.gather(
                    *(_settle(self._send(key, [x for _, x in c])) for c in chunks)
                )
            answers: list[list[Any]] = [[] for _ in jobs]
            failed: dict[int, BaseException] = {}
            for chunk, result in zip(chunks, results, strict=True):
                if isinstance(result, BaseException):
                    for j, _ in chunk:
                        failed.setdefault(j, result)
                    continue
                for (j, _), answer in zip(chunk, result, strict=True):
                    answers[j].append(answer)
            for j, (_, fut) in enumerate(jobs):
                if fut.done():
                    continue  # its caller was cancelled
                if j in failed:
                    fut.set_exception(failed[j])
                else:
                    fut.set_result(answers[j])
        except BaseException as exc:  # a bug above, or the loop shutting down: no caller hangs
            failure = (
                exc if isinstance(exc, Exception) else StoreUnavailable("store call interrupted")
            )
            for _, fut in jobs:
                if not fut.done():
                    fut.set_exception(failure)
            if not isinstance(exc, Exception):
                raise


async def _settle(call: Awaitable[Sequence[Any]]) -> Sequence[Any] | BaseException:
    """The call's replies, or the exception it raised (a cancellation is re-raised)."""
    try:
        return await call
    except Exception as exc:
        return exc
