"""The engine: typed async operations on tasks, for the gateway, the deliverers and tests.

It validates what reaches key names, picks partitions, mints ids and lease ids, computes
backoff tables, and calls the store once per operation (per partition touched).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from codeq.backoff import delay_table_ms
from codeq.domain import (
    Artifact,
    BackoffPolicy,
    CreateOutcome,
    DlqPage,
    NackOutcome,
    NewTask,
    QueueStats,
    RateWindow,
    RequeueOutcome,
    ResultStatus,
    SweepReport,
    Task,
    TaskEvent,
    TaskFilter,
    TaskPage,
    TaskResult,
)
from codeq.errors import CodeQError, Conflict, InvalidRequest, NotFound
from codeq.ids import is_task_id, new_lease_id, new_task_id
from codeq.listing import MAX_LIST_LIMIT, TaskLister
from codeq.schemas import (
    MAX_ATTEMPTS,
    MAX_BATCH_TASKS,
    MAX_CLAIM_COMMANDS,
    MAX_DELAY_SECONDS,
)
from codeq.settings import Settings
from codeq.store.keys import queue_segment
from codeq.store.protocol import CreateItem, Store
from codeq.store.records import StoredResult, decode_result, encode_result
from codeq.webhooks import IPNetwork, allowed_networks, target_problem

__all__ = ["COMMAND_PATTERN", "CleanupOutcome", "Engine", "EngineConfig"]

COMMAND_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")  # fullmatch: "$" lets a "\n" in
MAX_IDEMPOTENCY_KEY = 256
MAX_REASON = 4096
MAX_BATCH = MAX_BATCH_TASKS


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    """The engine's part of the settings (see :mod:`codeq.settings`)."""

    default_lease_seconds: int = 300
    max_attempts_default: int = 5
    backoff_policy: BackoffPolicy = BackoffPolicy.EXP_FULL_JITTER
    backoff_base_seconds: float = 5.0
    backoff_max_seconds: float = 900.0
    requeue_inspect_limit: int = 200
    task_retention_seconds: int = 86400
    dlq_retention_seconds: int = 604800
    idempotency_ttl_seconds: int = 86400
    event_retention_seconds: int = 3600
    sweep_interval_ms: int = 500
    webhook_require_https: bool = False
    #: where task webhooks may point besides public addresses (None: no address check at create)
    webhook_allowed: tuple[IPNetwork, ...] | None = None
    #: keys the tags of task-listing cursors (codeq/listing.py): the deployment's secret
    cursor_key: bytes = b""

    @classmethod
    def from_settings(cls, settings: Settings, *, dev_mode: bool = False) -> EngineConfig:
        """``dev_mode``: the gateway runs without auth providers (loopback only), where
        webhooks to this machine are the point."""
        return cls(
            webhook_require_https=settings.webhook_require_https,
            webhook_allowed=allowed_networks(settings.webhook_allowed_cidrs, loopback=dev_mode),
            default_lease_seconds=settings.default_lease_seconds,
            max_attempts_default=settings.max_attempts_default,
            backoff_policy=settings.backoff_policy,
            backoff_base_seconds=settings.backoff_base_seconds,
            backoff_max_seconds=settings.backoff_max_seconds,
            requeue_inspect_limit=settings.requeue_inspect_limit,
            task_retention_seconds=settings.task_retention_seconds,
            dlq_retention_seconds=settings.dlq_retention_seconds,
            idempotency_ttl_seconds=settings.idempotency_ttl_seconds,
            event_retention_seconds=settings.event_retention_seconds,
            sweep_interval_ms=settings.sweep_interval_ms,
            cursor_key=(settings.webhook_hmac_secret or "").encode(),
        )


class _NewRecord(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    id: str
    command: str
    q: str
    tenant: str
    priority: int
    max_attempts: int
    payload_hash: str = ""
    webhook: str | None = None
    idempotency_key: str | None = None
    trace_parent: str | None = None
    trace_state: str | None = None


class _QueueMeta(msgspec.Struct):
    tenant: str
    command: str


_encoder = msgspec.json.Encoder()
_sorted_encoder = msgspec.json.Encoder(order="sorted")


_QUEUE_CACHE = 4096


def validate_command(command: str, field: str = "command") -> str:
    if not isinstance(command, str) or not COMMAND_PATTERN.fullmatch(command):
        raise InvalidRequest(f"{field} must be 1-128 characters of [A-Za-z0-9_.:-]", field=field)
    return command


def _validate_url(url: str | None, field: str, config: EngineConfig) -> None:
    """A task's webhook: the one check every webhook target gets (codeq.webhooks), at create;
    the deliverers check it again, with the address pinned, when they send."""
    if url is None:
        return
    problem = target_problem(
        url, require_https=config.webhook_require_https, allowed=config.webhook_allowed
    )
    if problem is not None:
        raise InvalidRequest(f"{field}: {problem}", field=field)


def _payload_hash(payload: str) -> str:
    canonical = _sorted_encoder.encode(msgspec.json.decode(payload))
    return hashlib.sha256(canonical).hexdigest()[:32]


class Engine:
    """Task operations over a :class:`~codeq.store.protocol.Store`."""

    def __init__(
        self, store: Store, config: EngineConfig | None = None, *, rng: random.Random | None = None
    ) -> None:
        self.store = store
        self.config = config or EngineConfig()
        self.keys = store.keys
        self._rng = rng or random.Random()
        # (tenant, command) -> its queue segment and encoded registry entry: the same few
        # pairs come back on every create (bounded: tenants and commands are the callers')
        self._queues: dict[tuple[str, str], tuple[str, bytes]] = {}
        c = self.config
        self._delay_tables = [
            tuple(
                delay_table_ms(
                    c.backoff_policy,
                    base=c.backoff_base_seconds,
                    cap=c.backoff_max_seconds,
                    rng=self._rng,
                )
            )
            for _ in range(64)
        ]
        self.lister = TaskLister(store, cursor_key=c.cursor_key)

    # -- helpers ------------------------------------------------------------------------

    def _delays(self) -> tuple[int, ...]:
        """A backoff table for one script call. Tables are drawn in advance (each with its own
        jitter per attempt) and one is picked at random per call: drawing 24 values on every
        claim cost more than the claim's own Python work."""
        return self._rng.choice(self._delay_tables)

    @property
    def _dlq_retention_ms(self) -> int:
        return self.config.dlq_retention_seconds * 1000

    def _partition(self, task_id: str) -> int:
        if not is_task_id(task_id):
            raise NotFound(f"task {task_id[:64]!r} not found", task_id=task_id[:64])
        return self.keys.partition_of(task_id)

    def _queue(self, tenant: str, command: str) -> tuple[str, bytes]:
        found = self._queues.get((tenant, command))
        if found is None:
            if len(self._queues) >= _QUEUE_CACHE:
                self._queues.clear()
            meta = _encoder.encode(_QueueMeta(tenant=tenant, command=command.lower()))
            found = self._queues[(tenant, command)] = (queue_segment(tenant, command), meta)
        return found

    def _prepare(self, tenant: str, new: NewTask) -> tuple[int, CreateItem]:
        validate_command(new.command)
        if not isinstance(new.payload, str) or new.payload in ("", "null"):
            raise InvalidRequest("payload is required and must not be null", field="payload")
        _validate_url(new.webhook, "webhook", self.config)
        max_attempts = (
            self.config.max_attempts_default if new.max_attempts is None else new.max_attempts
        )
        # the API's ranges hold for every caller (SDK, CLI, embedded): a script must never see
        # a number it would write in exponent form
        if not 1 <= max_attempts <= MAX_ATTEMPTS:
            raise InvalidRequest(f"maxAttempts must be 1-{MAX_ATTEMPTS}", field="maxAttempts")
        if new.delay_seconds is not None and not 0 <= new.delay_seconds <= MAX_DELAY_SECONDS:
            raise InvalidRequest(
                f"delaySeconds must be 0-{MAX_DELAY_SECONDS}", field="delaySeconds"
            )
        if new.run_at_ms is not None and not (
            0 <= new.run_at_ms <= time.time() * 1000 + MAX_DELAY_SECONDS * 1000
        ):
            raise InvalidRequest(
                f"runAt must be after 1970 and at most {MAX_DELAY_SECONDS // 86400} days ahead",
                field="runAt",
            )
        key = new.idempotency_key
        if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            raise InvalidRequest(
                f"idempotencyKey must be 1-{MAX_IDEMPOTENCY_KEY} characters", field="idempotencyKey"
            )
        priority = min(max(int(new.priority), 0), 9)
        if key is None:
            task_id = new_task_id()
            partition = self.keys.partition_of(task_id)
            payload_hash = ""
        else:
            partition = self.keys.idempotency_partition(tenant, key)
            task_id = new_task_id()
            while self.keys.partition_of(task_id) != partition:
                task_id = new_task_id()
            payload_hash = _payload_hash(new.payload)
        queue = self._queue(tenant, new.command)
        record = _NewRecord(
            id=task_id,
            command=new.command,
            q=queue[0],
            tenant=tenant,
            priority=priority,
            max_attempts=max_attempts,
            payload_hash=payload_hash,
            webhook=new.webhook,
            idempotency_key=key,
            trace_parent=new.trace_parent,
            trace_state=new.trace_state,
        )
        delay_ms = None if new.delay_seconds is None else round(new.delay_seconds * 1000)
        item = CreateItem(
            head=_encoder.encode(record)[:-1],
            payload=new.payload,
            queue_meta=queue[1],
            id=task_id,
            q=queue[0],
            command=new.command,
            priority=priority,
            payload_hash=payload_hash,
            run_at_ms=None if new.run_at_ms is None else int(new.run_at_ms),
            delay_ms=delay_ms,
            idempotency_key=key,
            tenant=tenant,
        )
        return partition, item

    # -- producers ----------------------------------------------------------------------

    async def create(self, tenant: str, new: NewTask) -> CreateOutcome:
        """Create one task (idempotent per tenant when ``idempotency_key`` is set)."""
        partition, item = self._prepare(tenant, new)
        (reply,) = await self.store.create(
            partition, [item], idempotency_ttl_ms=self.config.idempotency_ttl_seconds * 1000
        )
        if reply.outcome == "conflict" or reply.task is None:
            raise Conflict(
                "idempotencyKey was used for a different command or payload",
                code="idempotency_conflict",
                task_id=reply.existing_id,
            )
        return CreateOutcome(task=reply.task, replayed=reply.outcome == "replayed")

    async def create_many(
        self, tenant: str, items: Sequence[NewTask]
    ) -> list[CreateOutcome | CodeQError]:
        """Create many tasks, one round trip per partition; each item stands alone."""
        if len(items) > MAX_BATCH:
            raise InvalidRequest(f"at most {MAX_BATCH} tasks per batch", field="tasks")
        results: list[CreateOutcome | CodeQError | None] = [None] * len(items)
        by_partition: dict[int, list[tuple[int, CreateItem]]] = {}
        for index, new in enumerate(items):
            try:
                partition, item = self._prepare(tenant, new)
            except CodeQError as exc:
                results[index] = exc
                continue
            by_partition.setdefault(partition, []).append((index, item))

        ttl = self.config.idempotency_ttl_seconds * 1000

        async def run(partition: int, group: list[tuple[int, CreateItem]]) -> None:
            replies = await self.store.create(
                partition, [item for _, item in group], idempotency_ttl_ms=ttl
            )
            for (index, _), reply in zip(group, replies, strict=True):
                if reply.task is None:
                    results[index] = Conflict(
                        "idempotencyKey was used for a different command or payload",
                        code="idempotency_conflict",
                        task_id=reply.existing_id,
                    )
                else:
                    results[index] = CreateOutcome(
                        task=reply.task, replayed=reply.outcome == "replayed"
                    )

        await asyncio.gather(*(run(p, g) for p, g in by_partition.items()))
        return [r for r in results if r is not None]

    # -- workers ------------------------------------------------------------------------

    async def claim(
        self,
        tenant: str,
        worker_id: str,
        commands: Sequence[str],
        *,
        lease_seconds: int | None = None,
    ) -> Task | None:
        """Lease the best ready task among ``commands`` (in priority, then request order)."""
        if not commands:
            raise InvalidRequest("commands must name at least one command", field="commands")
        if len(commands) > MAX_CLAIM_COMMANDS:
            raise InvalidRequest(
                f"commands: at most {MAX_CLAIM_COMMANDS} per claim", field="commands"
            )
        # request order, each queue once (a dict keeps order; a list made this quadratic)
        queues = list(
            dict.fromkeys(queue_segment(tenant, validate_command(c, "commands")) for c in commands)
        )
        lease = self.config.default_lease_seconds if lease_seconds is None else lease_seconds
        if not 1 <= lease <= 86400:
            raise InvalidRequest("leaseSeconds must be between 1 and 86400", field="leaseSeconds")
        n = self.keys.partitions
        start = self._rng.randrange(n) if n > 1 else 0
        delays = self._delays()
        for i in range(n):
            task = await self.store.claim(
                (start + i) % n,
                queues,
                worker_id=worker_id,
                lease_id=new_lease_id(),
                lease_ms=lease * 1000,
                repair_limit=self.config.requeue_inspect_limit,
                delays_ms=delays,
                dlq_retention_ms=self._dlq_retention_ms,
            )
            if task is not None:
                return task
        return None

    async def heartbeat(
        self,
        tenant: str,
        task_id: str,
        worker_id: str,
        *,
        lease_id: str | None = None,
        extend_seconds: int | None = None,
    ) -> Task:
        extend = self.config.default_lease_seconds if extend_seconds is None else extend_seconds
        if not 1 <= extend <= 86400:
            raise InvalidRequest("extendSeconds must be between 1 and 86400", field="extendSeconds")
        return await self.store.heartbeat(
            self._partition(task_id),
            tenant,
            task_id,
            worker_id=worker_id,
            lease_id=lease_id,
            extend_ms=extend * 1000,
        )

    async def abandon(
        self, tenant: str, task_id: str, worker_id: str, *, lease_id: str | None = None
    ) -> Task:
        return await self.store.abandon(
            self._partition(task_id), tenant, task_id, worker_id=worker_id, lease_id=lease_id
        )

    async def nack(
        self,
        tenant: str,
        task_id: str,
        worker_id: str,
        *,
        lease_id: str | None = None,
        delay_seconds: float | None = None,
        reason: str | None = None,
    ) -> NackOutcome:
        if delay_seconds is not None and delay_seconds < 0:
            raise InvalidRequest("delaySeconds must be >= 0", field="delaySeconds")
        if reason is not None and len(reason) > MAX_REASON:
            raise InvalidRequest(f"reason must be at most {MAX_REASON} characters", field="reason")
        override = None
        if delay_seconds is not None:
            override = round(min(delay_seconds, self.config.backoff_max_seconds) * 1000)
        reply = await self.store.nack(
            self._partition(task_id),
            tenant,
            task_id,
            worker_id=worker_id,
            lease_id=lease_id,
            delay_override_ms=override,
            reason=reason,
            delays_ms=self._delays(),
            dlq_retention_ms=self._dlq_retention_ms,
        )
        if reply.dead_lettered:
            return NackOutcome(status="dlq", delay_seconds=0)
        return NackOutcome(status="requeued", delay_seconds=reply.delay_ms / 1000)

    async def _finish(
        self,
        tenant: str,
        task_id: str,
        worker_id: str,
        stored: StoredResult,
        lease_id: str | None,
    ) -> TaskResult:
        task = await self.store.result(
            self._partition(task_id),
            tenant,
            task_id,
            worker_id=worker_id,
            lease_id=lease_id,
            status=stored.status.value,
            result=encode_result(stored),
            error=stored.error,
            retention_ms=self.config.task_retention_seconds * 1000,
        )
        return decode_result(task, encode_result(stored))

    async def complete(
        self,
        tenant: str,
        task_id: str,
        worker_id: str,
        *,
        result: str,
        lease_id: str | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> TaskResult:
        """Finish a leased task as COMPLETED; ``result`` is the JSON text of an object."""
        if not result.startswith("{"):
            raise InvalidRequest("result must be a JSON object", field="result")
        stored = StoredResult(
            status=ResultStatus.COMPLETED,
            result=msgspec.Raw(result.encode()),
            artifacts=tuple(artifacts),
        )
        return await self._finish(tenant, task_id, worker_id, stored, lease_id)

    async def fail(
        self,
        tenant: str,
        task_id: str,
        worker_id: str,
        *,
        error: str,
        lease_id: str | None = None,
        result: str | None = None,
        artifacts: Sequence[Artifact] = (),
    ) -> TaskResult:
        """Finish a leased task as FAILED (terminal; the worker decided, no DLQ)."""
        if not error or len(error) > MAX_REASON:
            raise InvalidRequest(f"error must be 1-{MAX_REASON} characters", field="error")
        stored = StoredResult(
            status=ResultStatus.FAILED,
            result=msgspec.Raw(result.encode()) if result else None,
            error=error,
            artifacts=tuple(artifacts),
        )
        return await self._finish(tenant, task_id, worker_id, stored, lease_id)

    # -- reads --------------------------------------------------------------------------

    async def get_task(self, tenant: str, task_id: str) -> Task:
        reply = await self.store.get(self._partition(task_id), tenant, task_id)
        return reply.task

    async def task_history(self, tenant: str, task_id: str) -> tuple[TaskEvent, ...]:
        """What happened to the task, oldest first: its own record of its events (the newest
        32, and always its creation)."""
        return await self.store.history(self._partition(task_id), tenant, task_id)

    async def cancel(self, tenant: str, task_id: str, *, reason: str | None = None) -> Task:
        """Withdraw a task nobody holds yet: PENDING (ready or delayed) becomes CANCELLED, kept
        like a finished task (taskRetentionSeconds), its webhook told (task.cancelled).
        Cancelling a cancelled task answers it again; any other status is a Conflict
        not_cancellable (a worker holds it, or it has ended)."""
        if reason is not None and len(reason) > MAX_REASON:
            raise InvalidRequest(f"reason must be at most {MAX_REASON} characters", field="reason")
        return await self.store.cancel(
            self._partition(task_id),
            tenant,
            task_id,
            retention_ms=self.config.task_retention_seconds * 1000,
            reason=reason or None,
        )

    async def get_result(self, tenant: str, task_id: str) -> tuple[Task, TaskResult]:
        reply = await self.store.get(
            self._partition(task_id), tenant, task_id, with_payload=True, with_result=True
        )
        if reply.result is None:
            raise NotFound(f"task {task_id} has no result yet", task_id=task_id)
        return reply.task, decode_result(reply.task, reply.result)

    async def list_tasks(
        self, tenant: str, flt: TaskFilter, *, limit: int = 50, cursor: str | None = None
    ) -> TaskPage:
        """A page of the tenant's tasks that match ``flt``, newest first (codeq/listing.py):
        one script call per partition, from the listing indexes."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"limit must be 1-{MAX_LIST_LIMIT}", field="limit")
        if flt.command is not None:
            validate_command(flt.command)
        if flt.priority is not None and not 0 <= flt.priority <= 9:
            raise InvalidRequest("priority must be 0-9", field="priority")
        key = flt.idempotency_key
        if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
            raise InvalidRequest(
                f"idempotencyKey must be 1-{MAX_IDEMPOTENCY_KEY} characters", field="idempotencyKey"
            )
        for name, ms in (
            ("createdAfter", flt.created_from_ms),
            ("createdBefore", flt.created_before_ms),
        ):
            if ms is not None and not 0 <= ms < 10**13:
                raise InvalidRequest(f"{name} must be from 1970 to 2286", field=name)
        return await self.lister.page(tenant, flt, limit=limit, cursor=cursor)

    # -- admin --------------------------------------------------------------------------

    async def _fan_out_stats(
        self, *, tenant: str | None, queues: Sequence[str] = ()
    ) -> list[QueueStats]:
        parts = await asyncio.gather(
            *(
                self.store.stats(p, tenant=tenant, queues=queues)
                for p in range(self.keys.partitions)
            )
        )
        merged: dict[tuple[str, str], QueueStats] = {}
        for part in parts:
            for s in part:
                key = (s.tenant_id, s.command)
                old = merged.get(key)
                if old is None:
                    merged[key] = s
                else:
                    merged[key] = QueueStats(
                        tenant_id=s.tenant_id,
                        command=s.command,
                        ready=old.ready + s.ready,
                        delayed=old.delayed + s.delayed,
                        in_progress=old.in_progress + s.in_progress,
                        dlq=old.dlq + s.dlq,
                        totals=old.totals + s.totals,
                        windows=_merge_windows(old.windows, s.windows),
                    )
        return sorted(merged.values(), key=lambda s: (s.tenant_id, s.command))

    async def queue_stats(self, tenant: str, command: str) -> QueueStats:
        validate_command(command)
        found = await self._fan_out_stats(tenant=None, queues=[queue_segment(tenant, command)])
        if found:
            return found[0]
        return QueueStats(tenant_id=tenant, command=command.lower())

    async def list_queues(self, tenant: str | None) -> list[QueueStats]:
        """Every queue of a tenant (``None``: of every tenant), from the queue registry."""
        return await self._fan_out_stats(tenant=tenant)

    async def dlq(
        self, tenant: str, command: str, *, limit: int = 50, cursor: str | None = None
    ) -> DlqPage:
        """Browse a queue's dead tasks, oldest first. The cursor is opaque."""
        validate_command(command)
        if not 1 <= limit <= 1000:
            raise InvalidRequest("limit must be between 1 and 1000", field="limit")
        q = queue_segment(tenant, command)
        partition, inner = 0, None
        if cursor:
            head, _, inner = cursor.partition(":")
            if not head.isdigit() or int(head) >= self.keys.partitions:
                raise InvalidRequest("cursor is not valid", field="cursor")
            partition = int(head)
        tasks: list[Task] = []
        while partition < self.keys.partitions and len(tasks) < limit:
            page, nxt = await self.store.dlq_page(
                partition, q, cursor=inner or None, size=limit - len(tasks)
            )
            tasks.extend(page)
            if nxt is not None:
                return DlqPage(tasks=tuple(tasks), next_cursor=f"{partition}:{nxt}")
            partition, inner = partition + 1, None
        more = partition < self.keys.partitions
        return DlqPage(tasks=tuple(tasks), next_cursor=f"{partition}:" if more else None)

    async def requeue_dlq(
        self, tenant: str, command: str, *, ids: Sequence[str] | None = None, limit: int = 1000
    ) -> RequeueOutcome:
        """Move dead tasks back to ready with attempts reset (``ids=None``: all, up to limit)."""
        validate_command(command)
        q = queue_segment(tenant, command)
        done: list[str] = []
        if ids is not None:
            by_partition: dict[int, list[str]] = {}
            for task_id in ids:
                if is_task_id(task_id):
                    by_partition.setdefault(self.keys.partition_of(task_id), []).append(task_id)
            for partition, group in by_partition.items():
                done += await self.store.requeue_dlq(partition, tenant, q, group, limit=len(group))
        else:
            for partition in range(self.keys.partitions):
                if len(done) >= limit:
                    break
                done += await self.store.requeue_dlq(
                    partition, tenant, q, [], limit=min(limit - len(done), 1000)
                )
        return RequeueOutcome(requeued=len(done), ids=tuple(done))

    async def cleanup(
        self,
        *,
        before_ms: int | None = None,
        limit: int = 1000,
        tenant: str | None = None,
        cursor: str | None = None,
    ) -> CleanupOutcome:
        """Purge terminal tasks whose retention ended before ``before_ms`` (default: now);
        with ``tenant``, only that tenant's. Pending and in-progress tasks are never touched.

        Bounded: one call looks at no more than ``limit`` entries of the partitions' expiry
        sets (other tenants' entries count too, and stay), and answers with a ``cursor`` when
        it stopped at that bound; a call with that cursor goes on after the last entry looked
        at. ``cursor`` None in the answer: everything due by ``before_ms`` was looked at."""
        if not 1 <= limit <= 100_000:
            raise InvalidRequest("limit must be between 1 and 100000", field="limit")
        first, after = _decode_cleanup_cursor(cursor, self.keys.partitions)
        deleted = looked = 0
        for partition in range(first, self.keys.partitions):
            if partition != first:
                after = None
            while True:
                if looked >= limit:
                    return CleanupOutcome(
                        deleted=deleted, cursor=_encode_cleanup_cursor(partition, after)
                    )
                step = await self.store.purge(
                    partition,
                    before_ms=before_ms,
                    limit=min(limit - looked, 1000),
                    tenant=tenant,
                    after=after,
                )
                deleted += step.purged
                looked += step.looked
                after = step.last or after
                if not step.more:
                    break
        return CleanupOutcome(deleted=deleted)

    # -- background ---------------------------------------------------------------------

    async def sweep_partition(self, partition: int, token: str) -> SweepReport | None:
        """One bounded sweep step of one partition; ``None`` when another process holds it."""
        lock_ms = max(self.config.sweep_interval_ms * 4, 2000)
        return await self.store.sweep(
            partition,
            token=token,
            lock_ms=lock_ms,
            limit=self.config.requeue_inspect_limit,
            delays_ms=self._delays(),
            dlq_retention_ms=self._dlq_retention_ms,
        )

    async def trim_events(self) -> int:
        floor = int(time.time() * 1000) - self.config.event_retention_seconds * 1000
        removed = 0
        for partition in range(self.keys.partitions):
            removed += await self.store.trim_events(partition, floor_ms=floor)
        return removed


def _merge_windows(a: tuple[RateWindow, ...], b: tuple[RateWindow, ...]) -> tuple[RateWindow, ...]:
    """One queue's windows from two partitions: those starting in the same minute are one (each
    partition's sweeper snapshots once a minute, at its own moment in it)."""
    by_minute: dict[int, RateWindow] = {}
    for w in (*a, *b):
        m = w.start_ms // 60_000
        old = by_minute.get(m)
        by_minute[m] = (
            w
            if old is None
            else RateWindow(
                start_ms=min(old.start_ms, w.start_ms),
                end_ms=max(old.end_ms, w.end_ms),
                counts=old.counts + w.counts,
            )
        )
    return tuple(by_minute[m] for m in sorted(by_minute))


class CleanupOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What one bounded cleanup call did: ``cursor`` says where the next one goes on (None:
    nothing left to look at)."""

    deleted: int
    cursor: str | None = None


def _encode_cleanup_cursor(partition: int, after: tuple[int, str] | None) -> str:
    score, member = after if after is not None else (-1, "")
    text = f"{partition}:{score}:{member}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cleanup_cursor(
    cursor: str | None, partitions: int
) -> tuple[int, tuple[int, str] | None]:
    if cursor is None:
        return 0, None
    bad = InvalidRequest("cursor: not a cursor this service gave out", field="cursor")
    if len(cursor) > 512:
        raise bad
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        partition_text, score_text, member = text.split(":", 2)
        partition, score = int(partition_text), int(score_text)
    except (ValueError, UnicodeDecodeError):
        raise bad from None
    if not 0 <= partition < partitions:
        raise bad
    if score < 0:
        return partition, None
    if not member or not is_task_id(member):
        raise bad
    return partition, (score, member)
