"""The deliverer process: consumer groups on every partition stream turn events into durable
deliveries, and a scheduler attempts every delivery that is due (spec 03).

:class:`Deliverer` puts the parts together and runs them, one task per loop:

- :mod:`deliverers.consumer`: per partition and group, the read loop (a batch at a time, one
  ``dlv_enqueue`` per batch) and the consumer's liveness key; and the same on the ``{hooks}``
  stream (the endpoints' ``endpoint.disabled`` / ``endpoint.enabled``), group ``endpoints``;
- :mod:`deliverers.handlers`: what each group makes of a batch (callbacks, notifications,
  endpoint events);
- :mod:`deliverers.recovery`: taking over what dead consumers hold, retrying failed entries,
  setting poison aside;
- :mod:`deliverers.dispatch`: per partition, the scheduler of due deliveries, and each attempt;
- :mod:`deliverers.outcomes`: recording what became of each attempt.

Each takes from the store (a :class:`~codeq.store.protocol.Backend`) only the part it uses.
How the requests leave is chosen from the settings (:func:`webhook_sender`, with
:func:`deliverers.proxy.webhook_transport`): straight to the target, or through the egress proxy
of ``webhookProxyUrl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable

from codeq.errors import StoreUnavailable
from codeq.metrics import Metrics, serve_metrics
from codeq.rate_limits import RateGuard
from codeq.settings import Settings
from codeq.store.protocol import Backend, ConsumerGroups, HookEvents
from codeq.tracing import Tracing
from codeq.webhooks import signing_secret
from deliverers.consumer import GroupConsumer, HookConsumer
from deliverers.dispatch import Dispatcher
from deliverers.endpoints import EndpointDirectory
from deliverers.handlers import CALLBACK_EVENTS, CALLBACKS, ENDPOINTS, GROUPS, Handlers
from deliverers.jobs import ReplayJobs
from deliverers.outcomes import Outcomes
from deliverers.proxy import webhook_transport
from deliverers.sender import TargetPolicy, WebhookSender
from deliverers.stopping import Stopping

__all__ = ["CALLBACKS", "CALLBACK_EVENTS", "Deliverer", "webhook_sender"]

log = logging.getLogger("codeq.deliverers")


def webhook_sender(settings: Settings, *, allow_loopback: bool = False) -> WebhookSender:
    """The sender of every webhook of a process with these settings: the target policy
    (``webhookAllowedCidrs``, ``webhookRequireHttps``; ``allow_loopback`` adds loopback, for dev
    mode), ``webhookTimeoutSeconds`` and :func:`webhook_transport`. Close it with ``aclose``."""
    allowed = list(settings.webhook_allowed_cidrs)
    if allow_loopback:  # dev mode: webhooks to this machine are the point
        allowed += ["127.0.0.0/8", "::1/128"]
    return WebhookSender(
        TargetPolicy(allowed, settings.webhook_require_https),
        timeout=settings.webhook_timeout_seconds,
        transport=webhook_transport(settings),
    )


class Deliverer:
    def __init__(
        self,
        store: Backend,
        settings: Settings,
        *,
        sender: WebhookSender | None = None,
        consumer: str | None = None,
        allow_loopback: bool = False,
        block_ms: int = 1000,
        scan_interval: float = 0.5,
        metrics: Metrics | None = None,
        rate: RateGuard | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``metrics``: the sink of the process (``codeq serve`` passes the gateway's); without
        one the deliverer keeps its own and serves it on ``metricsPort`` when that is set.
        ``rate``: the rate limits (default: ``rateLimit`` of the settings, on ``store``)."""
        self.settings = settings
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.partitions = store.keys.partitions
        self.tracing = tracing if tracing is not None else Tracing(settings)
        self._owns_tracing = tracing is None
        self.sender = sender or webhook_sender(settings, allow_loopback=allow_loopback)
        self._owns_sender = sender is None
        self._owns_metrics = metrics is None
        self.metrics = metrics if metrics is not None else Metrics()
        self.rate = rate or RateGuard(settings.rate_limit, store.rate_buckets, self.metrics)
        self._metrics_server: asyncio.Server | None = None
        self._store = store
        #: the consumer groups this deliverer reads (replaceable until :meth:`start`)
        self.groups: ConsumerGroups = store.groups
        #: the ``{hooks}`` stream's (replaceable until :meth:`start`)
        self.hooks: HookEvents = store.hook_events
        self._block_ms = block_ms
        self._scan_interval = scan_interval
        self._secret = signing_secret(
            settings.webhook_hmac_secret,
            unsigned=settings.webhook_unsigned,
            data_dir=settings.data_dir,
        )
        self._stopping = Stopping()
        self._tasks: list[asyncio.Task[None]] = []
        self._dispatcher: Dispatcher | None = None

    @property
    def dstore(self) -> ConsumerGroups:
        """The older name of :attr:`groups`."""
        return self.groups

    @dstore.setter
    def dstore(self, groups: ConsumerGroups) -> None:
        self.groups = groups

    def _assemble(self) -> tuple[GroupConsumer, HookConsumer, Dispatcher]:
        """The parts, each given the part of the store it uses (see the module docstring)."""
        store, settings = self._store, self.settings
        directory = EndpointDirectory(store.endpoints)
        dispatcher = Dispatcher(
            store.deliveries,
            store.endpoints,
            directory,
            self.sender,
            Outcomes(store.deliveries, settings.delivery_attempts_kept, self.metrics),
            settings=settings,
            metrics=self.metrics,
            rate=self.rate,
            tracing=self.tracing,
            secret=self._secret,
            scan_interval=self._scan_interval,
            stopping=self._stopping,
            subscriptions=store.subscriptions,
        )
        handlers = Handlers(
            store.tasks, store.subscriptions, directory, settings, self.metrics,
            partition_of=store.keys.partition_of,
        )  # fmt: skip
        consumer = GroupConsumer(
            self.groups,
            store.deliveries,
            store.endpoints,
            handlers.by_group(),
            consumer=self.consumer,
            attempt=dispatcher.attempt_soon,
            lease_ms=dispatcher.lease_ms,
            consumer_ttl_seconds=settings.consumer_ttl_seconds,
            max_receives=settings.event_max_receives,
            metrics=self.metrics,
            block_ms=self._block_ms,
            stopping=self._stopping,
        )
        hooks = HookConsumer(
            self.hooks,
            store.deliveries,
            store.endpoints,
            {ENDPOINTS: handlers.hook_events},
            partitions=self.partitions,
            retention_seconds=settings.event_retention_seconds,
            consumer=self.consumer,
            attempt=dispatcher.attempt_soon,
            lease_ms=dispatcher.lease_ms,
            consumer_ttl_seconds=settings.consumer_ttl_seconds,
            max_receives=settings.event_max_receives,
            metrics=self.metrics,
            block_ms=self._block_ms,
            stopping=self._stopping,
        )
        return consumer, hooks, dispatcher

    async def start(self) -> None:
        port = self.settings.metrics_port
        if self._owns_metrics and port is not None:
            try:
                self._metrics_server = await serve_metrics(self.settings.host, port, self._render)
            except OSError as exc:  # metrics are not worth a crash loop
                log.warning("metricsPort not served", extra={"port": port, "error": str(exc)})
        consumer, hooks, self._dispatcher = self._assemble()
        for p in range(self.partitions):
            for group in GROUPS:
                with contextlib.suppress(StoreUnavailable):
                    await self.groups.ensure_group(p, group)
                self._spawn(consumer.run(p, group), f"codeq-dlv-{group}-{p}")
                self._spawn(consumer.keep_alive(p, group), f"codeq-dlv-alive-{group}-{p}")
            self._spawn(self._dispatcher.run_schedule(p), f"codeq-dlv-due-{p}")
        with contextlib.suppress(StoreUnavailable):
            await self.hooks.ensure_group(0, ENDPOINTS)
        self._spawn(hooks.run(0, ENDPOINTS), f"codeq-dlv-hooks-{ENDPOINTS}")
        self._spawn(hooks.keep_alive(0, ENDPOINTS), f"codeq-dlv-alive-hooks-{ENDPOINTS}")
        jobs = ReplayJobs(
            self._store.deliveries, self.partitions, self.consumer, stopping=self._stopping
        )
        self._spawn(jobs.run(), "codeq-dlv-replay-jobs")

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        self._tasks.append(asyncio.create_task(coro, name=name))  # type: ignore[arg-type]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop reading. The batch being handled finishes (its events become deliveries and
        are acknowledged) and attempts in flight finish, all within ``grace``; then this
        consumer's liveness keys go, so another deliverer takes over anything it still holds
        at once rather than after ``consumerTtlSeconds``. An attempt cut off stays leased in
        the schedule and is attempted again when its lease ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        self._stopping.set()
        if self._tasks:
            # Each loop sees the flag after its current read (block_ms) and batch.
            _, busy = await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - loop.time()))
            for task in busy:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._dispatcher is not None:
            await self._dispatcher.drain(deadline - loop.time())
        with contextlib.suppress(StoreUnavailable):
            for p in range(self.partitions):
                for group in GROUPS:
                    await self.groups.release(p, group, self.consumer)
            await self.hooks.release(0, ENDPOINTS, self.consumer)
        if self._owns_tracing:
            self.tracing.shutdown()
        if self._owns_sender:
            await self.sender.aclose()
        if self._metrics_server is not None:
            self._metrics_server.close()
            await self._metrics_server.wait_closed()
            self._metrics_server = None

    async def _render(self) -> bytes:
        return self.metrics.render()
