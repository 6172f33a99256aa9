"""The bodies of the three kinds of webhook (spec 03), as the deliverers build them.

The Structs, and the builders of the endpoint events the event-type catalog shows
(:func:`endpoint_body`, :func:`operational_body`, the ``webhook.test`` body), are in
:mod:`codeq.bodies`: the core package builds its catalog with them and never imports the
deliverers. Here are the builders of the other two kinds: a result callback *is* the API's
result of the task (:class:`codeq.schemas.ResultOut`) plus ``eventType``; a notification says
"claim now" and never carries a task. ``encode`` and ``endpoint_body`` are
:mod:`codeq.bodies`' own, named here too so the deliverers build every body from one module.
"""

from __future__ import annotations

from codeq.bodies import CallbackBody, NotificationBody, encode, endpoint_body, raw_result
from codeq.domain import Task, TaskResult
from codeq.schemas import ArtifactOut, rfc3339

__all__ = ["callback_body", "encode", "endpoint_body", "notification_body"]


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
        result=raw_result(result),
        error=result.error,
        artifacts=[
            ArtifactOut(name=a.name, url=a.url, content_type=a.content_type, size=a.size)
            for a in result.artifacts
        ],
        completed_at=rfc3339(result.completed_at_ms),
        event_type=task.command,
    )


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
