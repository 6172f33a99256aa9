"""The worker runtime: handlers per command, long-poll claims, heartbeats, results.

    from codeq.client import AsyncCodeQClient
    from codeq.worker import Worker

    client = AsyncCodeQClient("http://127.0.0.1:8080", token="...")
    worker = Worker(client, concurrency=20)

    @worker.handler("RENDER_VIDEO")
    async def render(job):               # or a plain def: it runs in a thread
        return {"url": f"s3://bucket/{job.payload['id']}.mp4"}

    await worker.run()                   # until worker.stop(), or worker.run_forever() in main

What happens to a claimed task:
- the handler returns a mapping (or ``None``, sent as ``{}``) → ``COMPLETED`` with it; any other
  JSON value is sent as ``{"value": ...}``;
- it raises :class:`NonRetryable` (or a type listed in ``non_retryable``) → ``FAILED`` with
  the exception text, final;
- it raises anything else → nack with ``"<Type>: <text>"`` as the reason: the server retries with
  backoff and dead-letters after ``maxAttempts``;
- while it runs, the lease is extended every third of ``lease_seconds``. If a heartbeat finds the
  lease gone (404/409: it expired and someone else holds the task), ``job.lease_lost`` is set
  and the answer is not sent.

Every task handled gets one log line (logger ``codeq.worker``, INFO): its id, command,
outcome (``completed``, ``failed``, ``nacked``, ``abandoned``, ``lost``: the lease was gone, or
``unsent``: the answer could not be sent) and how long it took.

Credentials the server refuses (401, or 403 on the claim) are not a blip to wait out: after
``max_rejections`` refused claims in a row the worker stops and :meth:`Worker.run` raises that
error (:class:`~codeq.errors.Unauthorized` or :class:`~codeq.errors.Forbidden`). A server that
cannot be reached is waited for, with backoff.

Stopping: :meth:`Worker.stop` stops claiming at once (an open long poll is cancelled; the
server gives back a task claimed for a request that went away). With ``abandon=False`` the
running handlers finish within ``grace`` seconds; whatever is still running then is abandoned
(back to ready, no backoff) and its handler cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from codeq.client import AsyncCodeQClient, Unavailable
from codeq.errors import CodeQError, Conflict, Forbidden, NotFound, RateLimited, Unauthorized
from codeq.schemas import TaskOut

__all__ = ["Job", "NonRetryable", "Outcome", "Worker", "WorkerStats"]

log = logging.getLogger("codeq.worker")

Handler = Callable[["Job"], Any]
#: What became of a task (a field of :class:`WorkerStats`).
Outcome = Literal["completed", "failed", "nacked", "abandoned", "lost", "unsent"]


class NonRetryable(Exception):
    """Raise it (or subclass it) from a handler to fail the task for good (``FAILED``)."""


@dataclass
class Job:
    """A claimed task as a handler sees it."""

    task: TaskOut
    payload: Any
    lease_lost: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def id(self) -> str:
        return self.task.id

    @property
    def command(self) -> str:
        return self.task.command

    @property
    def attempts(self) -> int:
        return self.task.attempts

    @property
    def max_attempts(self) -> int:
        return self.task.max_attempts


def _decode_payload(task: TaskOut) -> Any:
    if task.payload is None:
        return None
    try:
        return msgspec.json.decode(task.payload)
    except msgspec.DecodeError:
        return task.payload


def _result_of(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    return {"value": value}


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class WorkerStats:
    """How many tasks were claimed, and what became of them."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    nacked: int = 0
    abandoned: int = 0
    lost: int = 0
    unsent: int = 0

    @property
    def unsuccessful(self) -> int:
        """Tasks whose handler failed, or whose answer did not reach the server."""
        return self.failed + self.nacked + self.lost + self.unsent


class Worker:
    """Runs handlers for the commands registered with :meth:`handler`."""

    def __init__(
        self,
        client: AsyncCodeQClient,
        *,
        concurrency: int = 1,
        lease_seconds: int = 300,
        wait_seconds: float = 20.0,
        non_retryable: Iterable[type[BaseException]] = (),
        max_tasks: int | None = None,
        max_rejections: int = 3,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if not 1 <= lease_seconds <= 86400:
            raise ValueError("lease_seconds must be between 1 and 86400")
        if not 0 <= wait_seconds <= 30:
            raise ValueError("wait_seconds must be between 0 and 30")
        if max_rejections < 1:
            raise ValueError("max_rejections must be >= 1")
        self.client = client
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.wait_seconds = wait_seconds
        self.non_retryable: tuple[type[BaseException], ...] = (NonRetryable, *non_retryable)
        self.max_tasks = max_tasks
        self.max_rejections = max_rejections
        self.stats = WorkerStats()
        self._rejections = 0
        self._rejected: Unauthorized | Forbidden | None = None
        self._handlers: dict[str, Handler] = {}
        self._stopping = asyncio.Event()
        self._abandon = False
        self._grace = 30.0
        self._running: dict[str, asyncio.Task[tuple[Outcome, str]]] = {}
        self._started = 0

    # -- set-up -------------------------------------------------------------------------

    def handler(self, *commands: str) -> Callable[[Handler], Handler]:
        """Register the decorated callable (sync or async) for ``commands``."""

        def register(fn: Handler) -> Handler:
            for command in commands:
                self._handlers[command] = fn
            return fn

        return register

    def add_handler(self, command: str, fn: Handler) -> None:
        self._handlers[command] = fn

    @property
    def stopping(self) -> bool:
        """:meth:`stop` was called (or ``max_tasks`` were handled)."""
        return self._stopping.is_set()

    @property
    def commands(self) -> list[str]:
        return list(self._handlers)

    # -- running ------------------------------------------------------------------------

    async def run(self) -> WorkerStats:
        """Claim and handle tasks until :meth:`stop` (or ``max_tasks`` handled). Raises
        :class:`~codeq.errors.Unauthorized` or :class:`~codeq.errors.Forbidden` when the server
        refused ``max_rejections`` claims in a row (running tasks are finished first)."""
        if not self._handlers:
            raise ValueError("no handlers: register one with @worker.handler(COMMAND)")
        slots = [
            asyncio.create_task(self._slot(), name=f"codeq-worker-{i}")
            for i in range(self.concurrency)
        ]
        try:
            await asyncio.gather(*slots)
        finally:
            for slot in slots:
                slot.cancel()
            await asyncio.gather(*slots, return_exceptions=True)
        if self._rejected is not None:
            raise self._rejected
        return self.stats

    def stop(self, *, abandon: bool = False, grace: float = 30.0) -> None:
        """Stop claiming; let running handlers finish within ``grace`` seconds (or abandon
        them now with ``abandon=True``)."""
        self._grace = 0.0 if abandon else grace
        self._abandon = self._abandon or abandon
        self._stopping.set()
        if abandon:
            for job in list(self._running.values()):
                job.cancel()

    def run_forever(self) -> WorkerStats:
        """Run in a fresh event loop; the first SIGINT/SIGTERM finishes the running tasks,
        a second one abandons them."""

        async def main() -> WorkerStats:
            loop = asyncio.get_running_loop()

            def on_signal() -> None:
                self.stop(abandon=self._stopping.is_set())

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, on_signal)
            try:
                return await self.run()
            finally:
                await self.client.aclose()

        return asyncio.run(main())

    async def _slot(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            if self.max_tasks is not None and self._started >= self.max_tasks:
                self._stopping.set()
                return
            task = await self._claim()
            if task is None:
                if not self.wait_seconds:  # no long poll: don't spin on an empty queue
                    await self._pause(0.5)
                continue
            if task is False:
                await self._pause(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            assert isinstance(task, TaskOut)
            self._started += 1
            self.stats.claimed += 1
            started = time.monotonic()
            job = asyncio.create_task(self._handle(task), name=f"codeq-task-{task.id}")
            self._running[task.id] = job
            try:
                outcome, reason = await self._finish(job, task)
            finally:
                self._running.pop(task.id, None)
            log.info(
                "task %s %s %s in %.2f s%s",
                task.id,
                task.command,
                outcome,
                time.monotonic() - started,
                f": {reason}" if reason else "",
                extra={
                    "task_id": task.id,
                    "command": task.command,
                    "outcome": outcome,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )

    async def _claim(self) -> TaskOut | bool | None:
        """A task, ``None`` (nothing ready or stopping) or ``False`` (the server is not
        reachable; the slot waits and tries again)."""
        claim = asyncio.create_task(
            self.client.claim(
                self.commands, lease_seconds=self.lease_seconds, wait_seconds=self.wait_seconds
            )
        )
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({claim, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not claim.done():
            claim.cancel()  # the request goes away; the server gives back what it claimed
            with contextlib.suppress(asyncio.CancelledError, CodeQError):
                await claim
            return None
        try:
            task = claim.result()
        except RateLimited as exc:
            await self._pause(exc.retry_after)
            return None
        except (Unauthorized, Forbidden) as exc:
            self._rejections += 1
            log.warning(
                "claim refused (%s, %d of %d): %s",
                exc.code,
                self._rejections,
                self.max_rejections,
                exc.message,
            )
            if self._rejections >= self.max_rejections:
                self._rejected = exc
                self._stopping.set()
                return None
            return False
        except (Unavailable, CodeQError) as exc:
            log.warning("claim failed: %s", exc)
            return False
        self._rejections = 0
        return task

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _finish(
        self, job: asyncio.Task[tuple[Outcome, str]], task: TaskOut
    ) -> tuple[Outcome, str]:
        """Wait for the handler; on a stop, give it ``grace`` seconds, then abandon. Returns
        what became of the task, and why (a failure's reason)."""
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({job, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not job.done():
                done, _ = await asyncio.wait({job}, timeout=self._grace)
                if not done:
                    job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        finally:
            stopping.cancel()
        if job.cancelled():
            return await self._report(self.client.abandon(task), "abandoned"), ""
        return job.result()

    async def _handle(self, task: TaskOut) -> tuple[Outcome, str]:
        fn = self._handlers.get(task.command)
        job = Job(task=task, payload=_decode_payload(task))
        beats = asyncio.create_task(self._heartbeats(job))
        try:
            if fn is None:
                raise NonRetryable(f"no handler for command {task.command!r}")
            if inspect.iscoroutinefunction(fn):
                value = await fn(job)
            else:
                value = await asyncio.to_thread(fn, job)
                if inspect.isawaitable(value):
                    value = await value
        except asyncio.CancelledError:
            raise
        except self.non_retryable as exc:
            if job.lease_lost.is_set():
                return self._lost(), _reason(exc)
            return await self._report(self.client.fail(task, _reason(exc)), "failed"), _reason(exc)
        except Exception as exc:
            if job.lease_lost.is_set():
                return self._lost(), _reason(exc)
            nacked = await self._report(self.client.nack(task, reason=_reason(exc)), "nacked")
            return nacked, _reason(exc)
        finally:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
        if job.lease_lost.is_set():
            return self._lost(), ""
        return await self._report(self.client.complete(task, _result_of(value)), "completed"), ""

    def _lost(self) -> Outcome:
        self.stats.lost += 1
        return "lost"

    async def _heartbeats(self, job: Job) -> None:
        every = max(self.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(every)
            try:
                await self.client.heartbeat(job.task, extend_seconds=self.lease_seconds)
            except (NotFound, Conflict):
                log.warning("task %s: lease lost; its answer will not be sent", job.id)
                job.lease_lost.set()
                return
            except CodeQError as exc:  # a blip: the next beat (a third of the lease) retries
                log.warning("task %s: heartbeat failed: %s", job.id, exc)

    async def _report(self, call: Awaitable[Any], outcome: Outcome) -> Outcome:
        """Send an answer; what became of the task: ``outcome``, or ``lost``/``unsent``."""
        try:
            await call
        except (NotFound, Conflict) as exc:
            log.warning("answer not taken (%s): the lease was lost", exc.code)
            return self._lost()
        except CodeQError as exc:
            # The lease runs out and the sweeper retries the task: nothing is lost.
            log.error("could not send the answer: %s", exc)
            self.stats.unsent += 1
            return "unsent"
        setattr(self.stats, outcome, getattr(self.stats, outcome) + 1)
        return outcome
