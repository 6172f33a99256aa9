"""The bodies of the three kinds of webhook (spec 03), built from the API's own output Structs.

One encoder for everything that leaves the service: a result callback *is* the API's result
(:class:`codeq.schemas.ResultOut`, artifacts as :class:`codeq.schemas.ArtifactOut`) plus
``eventType``; an event subscription's ``data`` *is* the API's task
(:class:`codeq.schemas.TaskOut`) plus the result of a terminal task. So the field names
(``contentType``, ``completedAt``, ...) and the time format are the API's by construction, and
a change to the API's Structs changes the webhooks with them.
"""

from __future__ import annotations

from typing import Any

import msgspec

from codeq.domain import Task, TaskResult
from codeq.schemas import ArtifactOut, ResultOut, TaskOut, rfc3339

__all__ = [
    "CallbackBody",
    "EndpointBody",
    "EndpointTask",
    "NotificationBody",
    "callback_body",
    "encode",
    "endpoint_body",
    "notification_body",
]

_encoder = msgspec.json.Encoder()


class CallbackBody(ResultOut, kw_only=True):
    """A result callback: the API's result of the task, and ``eventType`` (its command)."""

    event_type: str


class EndpointTask(TaskOut, kw_only=True):
    """An event subscription's ``data``: the API's task, with the result once it has one."""

    result: msgspec.Raw | None = None


class EndpointBody(msgspec.Struct, kw_only=True):
    type: str
    timestamp: str
    data: EndpointTask


class NotificationBody(msgspec.Struct, kw_only=True, rename="camel"):
    event_type: str
    available: bool
    queue_depth: int
    claim_url: str
    sent_at: str
    notification_id: str


def encode(body: msgspec.Struct) -> str:
    return _encoder.encode(body).decode()


def _raw(r: TaskResult) -> msgspec.Raw | None:
    """The worker's result JSON as stored, embedded without decoding it."""
    return msgspec.Raw(r.result.encode()) if r.result is not None else None


def callback_body(task: Task, result: TaskResult | None) -> CallbackBody:
    """What the task's ``webhook`` gets when it ends: a dead-lettered task (no result) has
    the status it was left in and its last error."""
    if result is None:
        return CallbackBody(
            task_id=task.id,
            status=task.status.value,
            error=task.error,
            completed_at=rfc3339(task.updated_at_ms),
            event_type=task.command,
        )
    return CallbackBody(
        task_id=task.id,
        status=task.status.value,
        result=_raw(result),
        error=result.error,
        artifacts=[
            ArtifactOut(name=a.name, url=a.url, content_type=a.content_type, size=a.size)
            for a in result.artifacts
        ],
        completed_at=rfc3339(result.completed_at_ms),
        event_type=task.command,
    )


# Not sent to subscribers: the payload (the producer's data, possibly large), the webhook URL
# (it may carry credentials) and the lease id (it lets its holder finish the task).
_WITHHELD = {"payload": None, "webhook": None, "lease_id": None}


def endpoint_body(kind: str, at_ms: int, task: Task, result: TaskResult | None) -> EndpointBody:
    fields: dict[str, Any] = msgspec.structs.asdict(TaskOut.of(task))
    fields.update(_WITHHELD)
    data = EndpointTask(**fields, result=_raw(result) if result is not None else None)
    return EndpointBody(type=kind, timestamp=rfc3339(at_ms) or "", data=data)


def notification_body(command: str, depth: int, sent_ms: int, notification_id: str) -> str:
    return encode(
        NotificationBody(
            event_type=command,
            available=True,
            queue_depth=depth,
            claim_url="/v1/codeq/tasks/claim",
            sent_at=rfc3339(sent_ms) or "",
            notification_id=notification_id,
        )
    )
