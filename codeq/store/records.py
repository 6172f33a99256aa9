"""Decoding of the records the scripts store, into domain types."""

from __future__ import annotations

import msgspec

from codeq.domain import Artifact, Location, ResultStatus, Task, TaskEvent, TaskResult, TaskStatus

__all__ = ["StoredResult", "decode_history", "decode_result", "decode_task", "encode_result"]


class _Record(msgspec.Struct, kw_only=True, rename="camel"):
    """The JSON of ``<p>:tasks`` entries, as written by the Lua scripts."""

    id: str
    command: str
    q: str
    tenant: str
    status: TaskStatus
    loc: Location = Location.NONE
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 5
    created_at: int = 0
    updated_at: int = 0
    webhook: str | None = None
    worker_id: str | None = None
    lease_id: str | None = None
    lease_until: int | None = None
    run_at: int | None = None
    error: str | None = None
    idempotency_key: str | None = None
    trace_parent: str | None = None
    trace_state: str | None = None
    completed_at: int | None = None


class StoredResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The JSON of ``<p>:results`` entries; written by Python, stored as is by the script."""

    status: ResultStatus
    result: msgspec.Raw | None = None
    error: str | None = None
    artifacts: tuple[Artifact, ...] = ()


class _ResultIn(msgspec.Struct, kw_only=True):
    status: ResultStatus
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: str | None = None
    artifacts: tuple[Artifact, ...] = ()


class _History(msgspec.Struct):
    """Only the ``hist`` of a record (lib.lua ``remember``): [type, at, field, value, ...]."""

    hist: list[list[str | int | float]] = msgspec.field(default_factory=list)


_HIST_FIELDS = {
    "workerId": "worker_id",
    "attempt": "attempt",
    "reason": "reason",
    "error": "error",
    "delayMs": "delay_ms",
    "runAt": "run_at_ms",
}
_HIST_INTS = frozenset({"attempt", "delay_ms", "run_at_ms"})

_record_decoder = msgspec.json.Decoder(_Record, strict=False)
_history_decoder = msgspec.json.Decoder(_History)
_result_decoder = msgspec.json.Decoder(_ResultIn)
_encoder = msgspec.json.Encoder()


def decode_task(raw: bytes | str, payload: bytes | str | None = None) -> Task:
    r = _record_decoder.decode(raw)
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8")
    return Task(
        id=r.id,
        command=r.command,
        tenant_id=r.tenant,
        status=r.status,
        last_known_location=r.loc,
        priority=r.priority,
        attempts=r.attempts,
        max_attempts=r.max_attempts,
        created_at_ms=r.created_at,
        updated_at_ms=r.updated_at,
        payload=payload or None,
        webhook=r.webhook,
        worker_id=r.worker_id,
        lease_id=r.lease_id,
        lease_until_ms=r.lease_until,
        run_at_ms=r.run_at,
        error=r.error,
        idempotency_key=r.idempotency_key,
        trace_parent=r.trace_parent,
        trace_state=r.trace_state,
        completed_at_ms=r.completed_at,
    )


def _history_entry(entry: list[str | int | float]) -> TaskEvent | None:
    if len(entry) < 2 or not isinstance(entry[0], str) or not isinstance(entry[1], int | float):
        return None
    fields: dict[str, str | int] = {}
    for name, value in zip(entry[2::2], entry[3::2], strict=False):
        attr = _HIST_FIELDS.get(str(name))
        if attr is None:
            continue
        if attr in _HIST_INTS:
            try:
                fields[attr] = int(value)
            except ValueError:
                continue
        else:
            fields[attr] = str(value)
    return msgspec.convert({"type": entry[0], "at_ms": int(entry[1]), **fields}, TaskEvent)


def decode_history(raw: bytes | str) -> tuple[TaskEvent, ...]:
    """A record's own history, oldest first; entries no reader can take are left out (a record
    written before histories existed has none)."""
    try:
        h = _history_decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ()
    return tuple(e for e in map(_history_entry, h.hist) if e is not None)


def encode_result(stored: StoredResult) -> bytes:
    return _encoder.encode(stored)


def decode_result(task: Task, raw: bytes | str) -> TaskResult:
    s = _result_decoder.decode(raw)
    return TaskResult(
        task_id=task.id,
        status=s.status,
        completed_at_ms=task.completed_at_ms or task.updated_at_ms,
        result=None if bytes(s.result) == b"null" else bytes(s.result).decode("utf-8"),
        error=s.error,
        artifacts=s.artifacts,
        command=task.command,
        created_at_ms=task.created_at_ms,
    )
