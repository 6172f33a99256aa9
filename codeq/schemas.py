"""Request and response bodies of the HTTP API (spec 02), as msgspec Structs: the gateway
encodes and decodes them, and so does the client SDK (`codeq.client`).

Field names and status values are the original codeQ's, so its clients keep working.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec

from codeq.domain import OutcomeCounts, QueueStats, RateWindow, Task, TaskEvent, TaskResult
from codeq.errors import InvalidRequest
from codeq.webhooks import MAX_URL_LENGTH

__all__ = [
    "COMMAND_REGEX",
    "MAX_ARTIFACTS",
    "MAX_ARTIFACT_NAME",
    "MAX_ATTEMPTS",
    "MAX_BATCH_TASKS",
    "MAX_CLAIM_COMMANDS",
    "MAX_CLEANUP_LIMIT",
    "MAX_DELAY_SECONDS",
    "MAX_LEASE_SECONDS",
    "MAX_REQUEUE_IDS",
    "MAX_WAIT_SECONDS",
    "PRIORITY_RANGE",
    "AbandonBody",
    "ArtifactIn",
    "BatchCreateBody",
    "BatchCreateOut",
    "BatchError",
    "CancelBody",
    "ClaimBody",
    "CleanupBody",
    "CleanupOut",
    "CreateTaskBody",
    "DlqOut",
    "ErrorOut",
    "HeartbeatBody",
    "HeartbeatOut",
    "NackBody",
    "NackOut",
    "OutcomeCountsOut",
    "QueueStatsOut",
    "QueuesOut",
    "RateWindowOut",
    "RequeueBody",
    "RequeueOut",
    "ResultBody",
    "ResultOut",
    "StatusOut",
    "TaskEventOut",
    "TaskHistoryOut",
    "TaskListOut",
    "TaskOut",
    "TaskWithResultOut",
    "between",
    "check_items",
    "items_matching",
    "rfc3339",
]


class _Camel(msgspec.Struct, kw_only=True, rename="camel"):
    pass


class _Out(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    pass


@functools.lru_cache(maxsize=4096)
@functools.lru_cache(maxsize=64)  # a task's times, and the tasks of one moment, share seconds
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def rfc3339(ms: int | None) -> str | None:
    """Milliseconds since the epoch → RFC 3339 UTC with millisecond precision and ``Z``."""
    if ms is None:
        return None
    return f"{_second(ms // 1000)}{ms % 1000:03d}Z"


# -- requests ---------------------------------------------------------------------------
#
# Every number, string and list a client sends has a range here, as msgspec constraints: the
# decoder refuses anything outside it (400 naming the field) before any store call, and the
# OpenAPI document shows the same bounds. The ranges are listed in docs/api.md ("Limits").

#: Attempts a task may have: 1..1000 (a Lua script must never see a float here).
MAX_ATTEMPTS = 1000
#: The furthest a task can be scheduled ahead: ``delaySeconds`` and ``runAt`` (365 days).
MAX_DELAY_SECONDS = 365 * 86400
#: Lease and heartbeat extension, seconds.
MAX_LEASE_SECONDS = 86400
#: Long-poll wait of a claim, seconds.
MAX_WAIT_SECONDS = 30
#: Commands one claim may name.
MAX_CLAIM_COMMANDS = 100
#: Tasks of one batch create.
MAX_BATCH_TASKS = 1000
#: Artifacts of one result, and the length of an artifact name as sent.
MAX_ARTIFACTS = 100
MAX_ARTIFACT_NAME = 255
#: Ids of one DLQ requeue.
MAX_REQUEUE_IDS = 1000
#: Tasks one cleanup call may purge.
MAX_CLEANUP_LIMIT = 100_000
#: Priorities outside 0..9 are clamped (as the original did); the wire accepts an int32.
PRIORITY_RANGE = (-(2**31), 2**31 - 1)

#: A command name. ``(?!\\n)``: in Python a ``$`` also matches before a final newline, and
#: msgspec checks patterns with Python's ``re``; the lookahead keeps ``"RENDER\\n"`` out. (It is
#: valid and harmless in the ECMA dialect the OpenAPI document's readers use.)
COMMAND_REGEX = "^[A-Za-z0-9_.:\\-]{1,128}$(?!\\n)"
_COMMAND = re.compile(COMMAND_REGEX)
_MAX_TEXT = 4096  # reasons and error messages


def between(ge: int, le: int, description: str | None = None) -> msgspec.Meta:
    """``ge <= value <= le``, for a number of any request body. The bounds are repeated for
    the OpenAPI document: Litestar drops a bound of 0 on an optional field when it reads the
    constraint itself."""
    return msgspec.Meta(
        ge=ge,
        le=le,
        description=description,
        extra_json_schema={"extra": {"minimum": ge, "maximum": le}},
    )


def items_matching(
    pattern: str,
    *,
    max_items: int,
    min_items: int = 0,
    max_length: int = 128,
    description: str | None = None,
) -> msgspec.Meta:
    """A list of strings that must each match ``pattern``: the list's own bounds, and the
    items' schema (pattern included) for the OpenAPI document. The decoder checks only the
    items' length (their type says ``min_length=1, max_length=...``); the pattern is checked
    by the Struct after decoding, with :func:`check_items`. A pattern per item made msgspec
    match every item before it looked at the list's length: a 1 MiB body of 250,000
    one-letter names held the event loop ~160 ms for a list that is refused anyway."""
    item: dict[str, Any] = {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "pattern": pattern,
    }
    if description is not None:
        item["description"] = description
    return msgspec.Meta(
        min_length=min_items or None,
        max_length=max_items,
        extra_json_schema={"extra": {"items": item}},
    )


def check_items(values: Sequence[str] | None, pattern: re.Pattern[str], field: str) -> None:
    """400 naming ``field`` (and the item) unless every value matches ``pattern``: the
    message msgspec gives for a pattern it checks itself. Call it only on a list whose length
    is already checked (it is linear, at most a few hundred matches)."""
    for i, value in enumerate(values or ()):
        if pattern.search(value) is None:
            raise InvalidRequest(
                f"{field}[{i}]: Expected `str` matching regex {pattern.pattern!r}", field=field
            )


Command = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        pattern=COMMAND_REGEX,
        description="1-128 characters of [A-Za-z0-9_.:-]; queues ignore case",
    ),
]
#: A command in a list: the pattern is checked after decoding (see :func:`items_matching`).
ListedCommand = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Url = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_URL_LENGTH)]
Text = Annotated[str, msgspec.Meta(max_length=_MAX_TEXT)]
LeaseId = Annotated[str, msgspec.Meta(max_length=64, description="as the claim returned it")]
TaskId = Annotated[str, msgspec.Meta(max_length=64)]


class CreateTaskBody(_Camel, forbid_unknown_fields=False):
    """Create one task. ``payload`` is any JSON value except ``null``: kept as the JSON text it
    came as (checked and compacted, never turned into Python objects: a megabyte of small
    values would cost the event loop tens of milliseconds or more)."""

    command: Command
    payload: msgspec.Raw
    priority: Annotated[
        int,
        between(*PRIORITY_RANGE, "0-9, higher first; other values are clamped into 0-9"),
    ] = 0
    max_attempts: Annotated[int, between(1, MAX_ATTEMPTS)] | None = None
    webhook: Url | None = None
    idempotency_key: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    run_at: (
        Annotated[
            datetime,
            msgspec.Meta(description="RFC 3339; from 1970 to at most 365 days from now"),
        ]
        | None
    ) = None
    delay_seconds: Annotated[int, between(0, MAX_DELAY_SECONDS)] | None = None


class BatchCreateBody(_Camel):
    """Up to 1000 create bodies; each item is validated and created on its own."""

    tasks: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=MAX_BATCH_TASKS)]


class ClaimBody(_Camel):
    commands: (
        Annotated[
            list[ListedCommand],
            items_matching(
                COMMAND_REGEX,
                min_items=1,
                max_items=MAX_CLAIM_COMMANDS,
                description="1-128 characters of [A-Za-z0-9_.:-]; queues ignore case",
            ),
        ]
        | None
    ) = None
    lease_seconds: Annotated[int, between(1, MAX_LEASE_SECONDS)] | None = None
    wait_seconds: Annotated[float, between(0, MAX_WAIT_SECONDS)] = 0

    def __post_init__(self) -> None:
        check_items(self.commands, _COMMAND, "commands")


class HeartbeatBody(_Camel):
    extend_seconds: Annotated[int, between(1, MAX_LEASE_SECONDS)] | None = None
    lease_id: LeaseId | None = None


class AbandonBody(_Camel):
    lease_id: LeaseId | None = None


class NackBody(_Camel):
    delay_seconds: (
        Annotated[float, between(0, MAX_DELAY_SECONDS, "capped at backoffMaxSeconds")] | None
    ) = None
    reason: Text | None = None
    lease_id: LeaseId | None = None


class ArtifactIn(_Camel):
    name: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_ARTIFACT_NAME,
            description="reduced to a safe basename of at most 128 characters; unique per "
            "result (ignoring case)",
        ),
    ]
    url: Url | None = None
    content_base64: str | None = None
    content_type: Annotated[str, msgspec.Meta(max_length=255)] | None = None


class ResultBody(_Camel):
    """``result``: a JSON object (or ``null``), kept as its JSON text like a payload."""

    status: Literal["COMPLETED", "FAILED"]
    # absent or null: no result (a factory: Litestar's schema cannot hash a Raw default)
    result: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))
    error: Text | None = None
    artifacts: Annotated[list[ArtifactIn], msgspec.Meta(max_length=MAX_ARTIFACTS)] = msgspec.field(
        default_factory=list
    )
    lease_id: LeaseId | None = None


class CancelBody(_Camel):
    reason: Text | None = None


class RequeueBody(_Camel):
    ids: Annotated[list[TaskId], msgspec.Meta(max_length=MAX_REQUEUE_IDS)] | None = None
    all: bool = False


class CleanupBody(_Camel):
    before: (
        Annotated[datetime, msgspec.Meta(description="RFC 3339, from 1970 to before 3000")] | None
    ) = None
    limit: Annotated[int, between(1, MAX_CLEANUP_LIMIT)] | None = None
    #: where the previous call stopped (its answer's ``cursor``)
    cursor: Annotated[str, msgspec.Meta(min_length=1, max_length=512)] | None = None


# -- responses --------------------------------------------------------------------------


class ErrorOut(msgspec.Struct, kw_only=True):
    """Every error: a human message and a machine code. ``outcomeUnknown`` (503 only): the
    store got the call and its answer did not come back, so the change may have been made."""

    error: str
    code: str
    outcome_unknown: bool | None = msgspec.field(default=None, name="outcomeUnknown")


class TaskOut(_Out):
    id: str
    command: str
    status: str
    last_known_location: str
    tenant_id: str
    priority: int
    attempts: int
    max_attempts: int
    created_at: str
    updated_at: str
    payload: str | None = None
    webhook: str | None = None
    worker_id: str | None = None
    lease_id: str | None = None
    lease_until: str | None = None
    run_at: str | None = None
    error: str | None = None
    idempotency_key: str | None = None
    trace_parent: str | None = None
    trace_state: str | None = None

    @classmethod
    def of(cls, t: Task) -> TaskOut:
        return cls(
            id=t.id,
            command=t.command,
            status=t.status.value,
            last_known_location=t.last_known_location.value,
            tenant_id=t.tenant_id,
            priority=t.priority,
            attempts=t.attempts,
            max_attempts=t.max_attempts,
            created_at=rfc3339(t.created_at_ms) or "",
            updated_at=rfc3339(t.updated_at_ms) or "",
            payload=t.payload,
            webhook=t.webhook,
            worker_id=t.worker_id,
            lease_id=t.lease_id,
            lease_until=rfc3339(t.lease_until_ms),
            run_at=rfc3339(t.run_at_ms),
            error=t.error,
            idempotency_key=t.idempotency_key,
            trace_parent=t.trace_parent,
            trace_state=t.trace_state,
        )


class BatchError(_Out):
    index: int
    error: str
    code: str


class BatchCreateOut(_Out):
    tasks: list[TaskOut]
    errors: list[BatchError]


class HeartbeatOut(_Out):
    ok: bool
    lease_until: str | None


class StatusOut(_Out):
    status: str


class NackOut(msgspec.Struct, kw_only=True, rename="camel"):
    status: str
    delay_seconds: float


class ArtifactOut(_Out):
    name: str
    url: str | None = None
    content_type: str | None = None
    size: int | None = None


class ResultOut(msgspec.Struct, kw_only=True, rename="camel"):
    task_id: str
    status: str
    result: Any = None
    error: str | None = None
    artifacts: list[ArtifactOut] = msgspec.field(default_factory=list)
    completed_at: str | None = None

    @classmethod
    def of(cls, r: TaskResult) -> ResultOut:
        return cls(
            task_id=r.task_id,
            status=r.status.value,
            result=msgspec.Raw(r.result.encode()) if r.result is not None else None,
            error=r.error,
            artifacts=[
                ArtifactOut(name=a.name, url=a.url, content_type=a.content_type, size=a.size)
                for a in r.artifacts
            ],
            completed_at=rfc3339(r.completed_at_ms),
        )


class TaskListOut(_Camel):
    """A page of ``GET /v1/codeq/tasks``, newest first; ``nextCursor`` null: nothing after."""

    tasks: list[TaskOut]
    next_cursor: str | None


class TaskWithResultOut(msgspec.Struct, kw_only=True):
    task: TaskOut
    result: ResultOut


class TaskEventOut(_Out):
    """One event of a task's history: its type, when, and what it says (the worker, the
    attempt, a reason or error, a delay, when a delayed task runs)."""

    type: str
    at: str
    worker_id: str | None = None
    attempt: int | None = None
    reason: str | None = None
    error: str | None = None
    delay_ms: int | None = None
    run_at: str | None = None

    @classmethod
    def of(cls, e: TaskEvent) -> TaskEventOut:
        return cls(
            type=e.type,
            at=rfc3339(e.at_ms) or "",
            worker_id=e.worker_id,
            attempt=e.attempt,
            reason=e.reason,
            error=e.error,
            delay_ms=e.delay_ms,
            run_at=rfc3339(e.run_at_ms),
        )


class TaskHistoryOut(msgspec.Struct, kw_only=True):
    """``GET /v1/codeq/tasks/{id}/history``: oldest first; the newest 32 events and always the
    task's creation (the task keeps this record itself, for as long as it is kept)."""

    events: list[TaskEventOut]


class OutcomeCountsOut(_Camel):
    created: int
    completed: int
    failed: int
    dead: int
    cancelled: int

    @classmethod
    def of(cls, c: OutcomeCounts) -> OutcomeCountsOut:
        return cls(
            created=c.created,
            completed=c.completed,
            failed=c.failed,
            dead=c.dead,
            cancelled=c.cancelled,
        )


class RateWindowOut(OutcomeCountsOut):
    """What happened in a queue from ``start`` to ``end`` (about a minute; the last window
    ends now and is still running)."""

    start: str
    end: str

    @classmethod
    def of_window(cls, w: RateWindow) -> RateWindowOut:
        c = w.counts
        return cls(
            start=rfc3339(w.start_ms) or "",
            end=rfc3339(w.end_ms) or "",
            created=c.created,
            completed=c.completed,
            failed=c.failed,
            dead=c.dead,
            cancelled=c.cancelled,
        )


class QueueStatsOut(_Out):
    """A queue's depths, its outcome totals since it began (``failed``: by a worker's result;
    ``dead``: dead-lettered), and ``windows``: about one a minute over the last 15 minutes,
    oldest first, from the sweeper's once-a-minute snapshots (none until it has taken one)."""

    command: str
    ready: int
    delayed: int
    in_progress: int
    dlq: int
    tenant_id: str | None = None
    totals: OutcomeCountsOut | None = None
    windows: list[RateWindowOut] = msgspec.field(default_factory=list)

    @classmethod
    def of(cls, s: QueueStats, *, with_tenant: bool = False) -> QueueStatsOut:
        return cls(
            command=s.command,
            ready=s.ready,
            delayed=s.delayed,
            in_progress=s.in_progress,
            dlq=s.dlq,
            tenant_id=s.tenant_id if with_tenant else None,
            totals=OutcomeCountsOut.of(s.totals),
            windows=[RateWindowOut.of_window(w) for w in s.windows],
        )


class QueuesOut(msgspec.Struct, kw_only=True):
    queues: list[QueueStatsOut]


class DlqOut(msgspec.Struct, kw_only=True, rename="camel"):
    tasks: list[TaskOut]
    next_cursor: str | None = None


class RequeueOut(msgspec.Struct, kw_only=True):
    requeued: int
    ids: list[str]


class CleanupOut(msgspec.Struct, kw_only=True):
    deleted: int
    before: str
    limit: int
    #: set when the call stopped at its limit: send it back to go on (null: all looked at)
    cursor: str | None = None
