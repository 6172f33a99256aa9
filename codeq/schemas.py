"""Request and response bodies of the HTTP API (spec 02), as msgspec Structs: the gateway
encodes and decodes them, and so does the client SDK (`codeq.client`).

Field names and status values are the original codeQ's, so its clients keep working.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from codeq.domain import QueueStats, Task, TaskResult

__all__ = [
    "AbandonBody",
    "ArtifactIn",
    "BatchCreateBody",
    "BatchCreateOut",
    "BatchError",
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
    "QueueStatsOut",
    "QueuesOut",
    "RequeueBody",
    "RequeueOut",
    "ResultBody",
    "ResultOut",
    "StatusOut",
    "TaskOut",
    "TaskWithResultOut",
    "rfc3339",
]


class _Camel(msgspec.Struct, kw_only=True, rename="camel"):
    pass


class _Out(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    pass


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def rfc3339(ms: int | None) -> str | None:
    """Milliseconds since the epoch → RFC 3339 UTC with millisecond precision and ``Z``."""
    if ms is None:
        return None
    return f"{_second(ms // 1000)}{ms % 1000:03d}Z"


# -- requests ---------------------------------------------------------------------------


class CreateTaskBody(_Camel, forbid_unknown_fields=False):
    """Create one task. ``payload`` is any JSON value except ``null``."""

    command: str
    payload: Any
    priority: int = 0
    max_attempts: int | None = None
    webhook: str | None = None
    idempotency_key: str | None = None
    run_at: datetime | None = None
    delay_seconds: int | None = None


class BatchCreateBody(_Camel):
    """Up to 1000 create bodies; each item is validated and created on its own."""

    tasks: list[dict[str, Any]]


class ClaimBody(_Camel):
    commands: list[str] | None = None
    lease_seconds: int | None = None
    wait_seconds: float = 0


class HeartbeatBody(_Camel):
    extend_seconds: int | None = None
    lease_id: str | None = None


class AbandonBody(_Camel):
    lease_id: str | None = None


class NackBody(_Camel):
    delay_seconds: float | None = None
    reason: str | None = None
    lease_id: str | None = None


class ArtifactIn(_Camel):
    name: str
    url: str | None = None
    content_base64: str | None = None
    content_type: str | None = None


class ResultBody(_Camel):
    status: Literal["COMPLETED", "FAILED"]
    result: dict[str, Any] | None = None
    error: str | None = None
    artifacts: list[ArtifactIn] = msgspec.field(default_factory=list)
    lease_id: str | None = None


class RequeueBody(_Camel):
    ids: list[str] | None = None
    all: bool = False


class CleanupBody(_Camel):
    before: datetime | None = None
    limit: int | None = None


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


class TaskWithResultOut(msgspec.Struct, kw_only=True):
    task: TaskOut
    result: ResultOut


class QueueStatsOut(_Out):
    command: str
    ready: int
    delayed: int
    in_progress: int
    dlq: int
    tenant_id: str | None = None

    @classmethod
    def of(cls, s: QueueStats, *, with_tenant: bool = False) -> QueueStatsOut:
        return cls(
            command=s.command,
            ready=s.ready,
            delayed=s.delayed,
            in_progress=s.in_progress,
            dlq=s.dlq,
            tenant_id=s.tenant_id if with_tenant else None,
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
