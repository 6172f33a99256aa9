"""Inert domain types: tasks, results, statuses, events. No I/O here."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

import msgspec

__all__ = [
    "EVENT_TYPES",
    "TERMINAL_STATUSES",
    "Artifact",
    "BackoffPolicy",
    "ClaimedTask",
    "CreateOutcome",
    "DlqPage",
    "EventType",
    "ListStatus",
    "Location",
    "NackOutcome",
    "NewTask",
    "OutcomeCounts",
    "QueueStats",
    "RateWindow",
    "RequeueOutcome",
    "ResultStatus",
    "SweepReport",
    "Task",
    "TaskEvent",
    "TaskFilter",
    "TaskPage",
    "TaskResult",
    "TaskStatus",
    "makes_ready",
    "ms_to_datetime",
]


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"  # withdrawn by its producer while pending (POST /tasks/{id}/cancel)


TERMINAL_STATUSES: Final = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
)


class ListStatus(StrEnum):
    """A status to list tasks by. The first four are :class:`TaskStatus`; ``DEAD`` is a task
    in the dead-letter queue (status ``FAILED``, ``lastKnownLocation`` ``DLQ_SET``). So
    ``FAILED`` lists every failed task, dead or failed by a worker's result, and ``DEAD`` the
    dead ones only."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"


class ResultStatus(StrEnum):
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class Location(StrEnum):
    PENDING_LIST = "PENDING_LIST"
    DELAYED_ZSET = "DELAYED_ZSET"
    INPROG_SET = "INPROG_SET"
    DLQ_SET = "DLQ_SET"
    NONE = "NONE"


class BackoffPolicy(StrEnum):
    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"
    EXP_FULL_JITTER = "exp_full_jitter"
    EXP_EQUAL_JITTER = "exp_equal_jitter"


class EventType(StrEnum):
    """Every event an endpoint may receive, and so every type it may subscribe to: the API,
    the catalog (``codeq.catalog``, ``GET /v1/codeq/webhooks/event-types``), the docs and the
    scripts are checked against this one list (tests/test_webhook_targets_events.py). The
    ``task.*`` types are what the store's scripts write to the partition streams
    (``emit(...)`` in ``codeq/store/lua``); ``webhook.test`` is the one written by no script:
    it is sent to one endpoint on request (a test send).

    The operational types (:attr:`is_operational`) are about the webhooks themselves, written
    by the script that makes the change: ``endpoint.disabled`` and ``endpoint.enabled`` by the
    endpoint scripts (``ep_mark.lua``, ``ep_patch.lua``) to the ``{hooks}`` stream,
    ``delivery.exhausted`` by ``dlv_outcome.lua`` to the partition stream. An endpoint receives
    them only when it names them: ``*`` in ``eventTypes`` means every task event.
    """

    CREATED = "task.created"
    READY = "task.ready"
    CLAIMED = "task.claimed"
    NACKED = "task.nacked"
    LEASE_EXPIRED = "task.lease_expired"
    COMPLETED = "task.completed"
    FAILED = "task.failed"
    DEAD_LETTERED = "task.dead_lettered"
    ABANDONED = "task.abandoned"
    CANCELLED = "task.cancelled"
    WEBHOOK_TEST = "webhook.test"
    ENDPOINT_DISABLED = "endpoint.disabled"
    ENDPOINT_ENABLED = "endpoint.enabled"
    DELIVERY_EXHAUSTED = "delivery.exhausted"

    @property
    def is_operational(self) -> bool:
        """About the webhooks rather than a task: never included in ``*``."""
        return self in _OPERATIONAL


_OPERATIONAL: Final = frozenset(
    {EventType.ENDPOINT_DISABLED, EventType.ENDPOINT_ENABLED, EventType.DELIVERY_EXHAUSTED}
)


def makes_ready(kind: str, has_depth: bool) -> bool:
    """Whether a stream entry of type ``kind`` makes its task claimable: a ``task.ready``, or
    a ``task.created`` that carries ``depth`` (and ``wasEmpty``). A create whose task is
    visible at once writes one entry for its two events (``create.lua``); every reader of the
    streams takes such an entry for both, in order: ``task.created``, then ``task.ready``."""
    return kind == EventType.READY or (kind == EventType.CREATED and has_depth)


#: The event type names (``task.completed``, ...) as a set of plain strings.
EVENT_TYPES: Final[frozenset[str]] = frozenset(e.value for e in EventType)


def ms_to_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch → aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class NewTask(msgspec.Struct, frozen=True, kw_only=True):
    """What a producer asks for. ``payload`` is already compact JSON text."""

    command: str
    payload: str
    priority: int = 0
    max_attempts: int | None = None
    webhook: str | None = None
    idempotency_key: str | None = None
    run_at_ms: int | None = None
    delay_seconds: float | None = None
    trace_parent: str | None = None
    trace_state: str | None = None


class Task(msgspec.Struct, frozen=True, kw_only=True):
    """A task as stored. Times are milliseconds since the epoch (UTC)."""

    id: str
    command: str
    tenant_id: str
    status: TaskStatus
    last_known_location: Location
    priority: int
    attempts: int
    max_attempts: int
    created_at_ms: int
    updated_at_ms: int
    payload: str | None = None
    webhook: str | None = None
    worker_id: str | None = None
    lease_id: str | None = None
    lease_until_ms: int | None = None
    run_at_ms: int | None = None
    error: str | None = None
    idempotency_key: str | None = None
    trace_parent: str | None = None
    trace_state: str | None = None
    completed_at_ms: int | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class TaskEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a task's own history (``GET /tasks/{id}/history``): an event the scripts
    wrote for it, with the fields that say what happened."""

    type: str
    at_ms: int
    worker_id: str | None = None
    attempt: int | None = None
    reason: str | None = None
    error: str | None = None
    delay_ms: int | None = None
    run_at_ms: int | None = None


class ClaimedTask(msgspec.Struct, frozen=True, kw_only=True):
    """A claim's answer: the task (with its payload) and the lease it holds."""

    task: Task
    lease_id: str
    lease_until_ms: int


class Artifact(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    name: str
    url: str | None = None
    content_type: str | None = None
    size: int | None = None


class TaskResult(msgspec.Struct, frozen=True, kw_only=True):
    """A worker's result, stored beside its task."""

    task_id: str
    status: ResultStatus
    completed_at_ms: int
    result: str | None = None  # compact JSON text of the result object
    error: str | None = None
    artifacts: tuple[Artifact, ...] = ()
    command: str = ""  # the task's, as the producer spelled it
    created_at_ms: int | None = None  # the task's creation (server clock, like completed_at_ms)


class CreateOutcome(msgspec.Struct, frozen=True, kw_only=True):
    task: Task
    replayed: bool = False


class NackOutcome(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # "requeued" or "dlq"
    delay_seconds: float


class OutcomeCounts(msgspec.Struct, frozen=True, kw_only=True):
    """How many tasks of a queue were created, completed, failed (by their worker), dead-lettered
    and cancelled: totals since the queue began, or within a :class:`RateWindow`."""

    created: int = 0
    completed: int = 0
    failed: int = 0
    dead: int = 0
    cancelled: int = 0

    def __add__(self, other: OutcomeCounts) -> OutcomeCounts:
        return OutcomeCounts(
            created=self.created + other.created,
            completed=self.completed + other.completed,
            failed=self.failed + other.failed,
            dead=self.dead + other.dead,
            cancelled=self.cancelled + other.cancelled,
        )

    def __sub__(self, other: OutcomeCounts) -> OutcomeCounts:
        return OutcomeCounts(
            created=self.created - other.created,
            completed=self.completed - other.completed,
            failed=self.failed - other.failed,
            dead=self.dead - other.dead,
            cancelled=self.cancelled - other.cancelled,
        )


class RateWindow(msgspec.Struct, frozen=True, kw_only=True):
    """What happened to a queue from ``start_ms`` to ``end_ms`` (about a minute; the newest
    window ends now and is still running)."""

    start_ms: int
    end_ms: int
    counts: OutcomeCounts


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    tenant_id: str
    command: str
    ready: int = 0
    delayed: int = 0
    in_progress: int = 0
    dlq: int = 0
    totals: OutcomeCounts = OutcomeCounts()
    #: the last ~15 minutes, oldest first (from the sweeper's once-a-minute snapshots)
    windows: tuple[RateWindow, ...] = ()


class DlqPage(msgspec.Struct, frozen=True, kw_only=True):
    tasks: tuple[Task, ...]
    next_cursor: str | None = None


class RequeueOutcome(msgspec.Struct, frozen=True, kw_only=True):
    requeued: int
    ids: tuple[str, ...] = ()


class SweepReport(msgspec.Struct, frozen=True, kw_only=True):
    promoted: int = 0
    expired: int = 0
    purged: int = 0
    more: bool = False
    skipped_partitions: int = 0


class TaskFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What a task listing keeps: every field set must match. Creation times are ms, from
    ``created_from_ms`` (inclusive) to ``created_before_ms`` (exclusive)."""

    status: ListStatus | None = None
    command: str | None = None
    priority: int | None = None
    created_from_ms: int | None = None
    created_before_ms: int | None = None
    idempotency_key: str | None = None


class TaskPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a listing, newest first; ``next_cursor`` None: there is nothing after it.
    A page may hold fewer tasks than asked for, even none, and still have a cursor (a filter
    without an index of its own looks at a bounded number of entries per page)."""

    tasks: tuple[Task, ...]
    next_cursor: str | None = None
