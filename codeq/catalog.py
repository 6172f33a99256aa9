"""The event-type catalog: for every :class:`~codeq.domain.EventType`, when it is sent, the JSON
schema of the body an endpoint receives for it, and an example of that body.

It is served by ``GET /v1/codeq/webhooks/event-types`` (:mod:`gateway.routes.catalog`) and
rendered into docs/webhooks.md (:func:`codeq.reference.event_types_markdown`), so the API and
the docs say the same thing. Nothing in it is written twice:

- the list is ``EventType`` itself; :data:`DESCRIPTIONS` is keyed by it (a test fails when a
  type has no description);
- each schema is msgspec's JSON schema of the Struct that is sent (:data:`BODIES`, from
  :mod:`codeq.bodies`: :class:`~codeq.bodies.EndpointBody` for the ``task.*`` events), with
  only its ``type`` narrowed to the event's name;
- each example is such a Struct built by the builder the deliverers send with
  (:func:`codeq.bodies.endpoint_body` from a sample task, :func:`codeq.bodies.operational_body`
  from a sample stream entry, :func:`codeq.bodies.webhook_test_body`), encoded as it is sent.

The catalog imports nothing of the deliverers (``codeq`` never does).
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Final

import msgspec

from codeq import bodies
from codeq.domain import EventType, Location, ResultStatus, Task, TaskResult, TaskStatus

__all__ = [
    "BODIES",
    "DESCRIPTIONS",
    "EventTypeCatalog",
    "EventTypeInfo",
    "catalog",
    "entry",
]

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

#: When each event type is sent: one line each, in the order of ``EventType``.
DESCRIPTIONS: Final[dict[EventType, str]] = {
    EventType.CREATED: "a task is created (ready now or delayed)",
    EventType.READY: "a task becomes claimable: created ready, a delayed task or a retry due, "
    "a requeue",
    EventType.CLAIMED: "a worker claims a task (its lease starts)",
    EventType.NACKED: "a worker gives a task back for a retry later (or it goes to the DLQ)",
    EventType.LEASE_EXPIRED: "a lease ran out without a heartbeat or a result",
    EventType.COMPLETED: "a worker submits a `COMPLETED` result",
    EventType.FAILED: "a worker submits a `FAILED` result",
    EventType.DEAD_LETTERED: "a task lands in the DLQ (out of attempts)",
    EventType.ABANDONED: "a worker gives a task back to be claimed again now",
    EventType.CANCELLED: "a producer cancels a task that was still waiting (it never runs)",
    EventType.WEBHOOK_TEST: "someone asks for a test send to one endpoint, to check that it "
    "receives and verifies webhooks; no task causes it",
    EventType.ENDPOINT_DISABLED: "operational: an endpoint of the tenant is disabled, by codeQ "
    "(it answered 410, or failed for `endpointDisableAfterHours`) or by a `PATCH`",
    EventType.ENDPOINT_ENABLED: "operational: a disabled endpoint of the tenant is enabled "
    "again (a `PATCH`)",
    EventType.DELIVERY_EXHAUSTED: "operational: a delivery of the tenant (to an endpoint, or a "
    "result callback) ran out of attempts and is in the delivery DLQ",
}


#: The Struct an endpoint receives for each event type.
BODIES: Final[dict[EventType, type[msgspec.Struct]]] = {
    **{e: bodies.EndpointBody for e in EventType if e.value.startswith("task.")},
    EventType.WEBHOOK_TEST: bodies.WebhookTestBody,
    EventType.ENDPOINT_DISABLED: bodies.EndpointDisabledBody,
    EventType.ENDPOINT_ENABLED: bodies.EndpointEnabledBody,
    EventType.DELIVERY_EXHAUSTED: bodies.DeliveryExhaustedBody,
}


class EventTypeInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One event type: its name (the body's ``type`` and ``X-CodeQ-Event``), when it is sent,
    the JSON schema (draft 2020-12) of the body an endpoint receives, and an example body."""

    type: str
    description: str
    schema: dict[str, Any]
    example: dict[str, Any]


class EventTypeCatalog(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Every event type an endpoint may receive, in a stable order."""

    event_types: list[EventTypeInfo]


# -- examples -----------------------------------------------------------------------------

_AT: Final = 1795881731532  # 2026-11-28T16:02:11.532Z: docs/webhooks.md is generated, so fixed
_SECOND: Final = 1000
_TASK_ID: Final = "0193a6f0-6c1e-7d2a-9c1b-2f7d1c3e4a5b"
_ENDPOINT_ID: Final = "ep_5f1c2a9be0d34c7a8e61f0b2"
_DELIVERY_ID: Final = "msg_0_4f0c2d9e7b1a6c3f8e5d2b0a91"

# The stream entries the operational examples are built from, as the scripts write them.
_OPERATIONAL: Final[dict[EventType, bodies.OperationalEvent]] = {
    EventType.ENDPOINT_DISABLED: bodies.EndpointDisabledEvent(
        tenant="acme",
        at=_AT,
        endpoint_id=_ENDPOINT_ID,
        trigger="automatic",
        reason="failing",
        failing_since=_AT - 72 * 3600 * _SECOND,
    ),
    EventType.ENDPOINT_ENABLED: bodies.EndpointEnabledEvent(
        tenant="acme", at=_AT, endpoint_id=_ENDPOINT_ID
    ),
    EventType.DELIVERY_EXHAUSTED: bodies.DeliveryExhaustedEvent(
        tenant="acme",
        at=_AT,
        delivery_id=_DELIVERY_ID,
        kind="endpoint",
        event_type=EventType.COMPLETED.value,
        attempts=9,
        endpoint_id=_ENDPOINT_ID,
        task_id=_TASK_ID,
        last_status_code=503,
        last_error="HTTP 503",
    ),
}

# The task as each event leaves it (the fields the scripts change), on top of _BASE.
_STATES: Final[dict[EventType, dict[str, Any]]] = {
    EventType.CREATED: {},
    EventType.READY: {},
    EventType.CLAIMED: {
        "status": TaskStatus.IN_PROGRESS,
        "last_known_location": Location.INPROG_SET,
        "attempts": 1,
        "worker_id": "worker-7",
        "lease_until_ms": _AT + 300 * _SECOND,
    },
    EventType.NACKED: {
        "attempts": 1,
        "last_known_location": Location.DELAYED_ZSET,
        "run_at_ms": _AT + 30 * _SECOND,
        "error": "renderer busy",
    },
    EventType.LEASE_EXPIRED: {
        "attempts": 1,
        "last_known_location": Location.DELAYED_ZSET,
        "run_at_ms": _AT + 5 * _SECOND,
    },
    EventType.COMPLETED: {
        "status": TaskStatus.COMPLETED,
        "last_known_location": Location.NONE,
        "attempts": 1,
        "worker_id": "worker-7",
        "completed_at_ms": _AT,
    },
    EventType.FAILED: {
        "status": TaskStatus.FAILED,
        "last_known_location": Location.NONE,
        "attempts": 1,
        "worker_id": "worker-7",
        "error": "unsupported format",
        "completed_at_ms": _AT,
    },
    EventType.DEAD_LETTERED: {
        "status": TaskStatus.FAILED,
        "last_known_location": Location.DLQ_SET,
        "attempts": 5,
        "error": "lease expired",
    },
    EventType.ABANDONED: {"attempts": 1},
    EventType.CANCELLED: {
        "status": TaskStatus.CANCELLED,
        "last_known_location": Location.NONE,
    },
}

_RESULTS: Final[dict[EventType, TaskResult]] = {
    EventType.COMPLETED: TaskResult(
        task_id=_TASK_ID,
        status=ResultStatus.COMPLETED,
        completed_at_ms=_AT,
        result='{"pages":3}',
        command="render",
    ),
    EventType.FAILED: TaskResult(
        task_id=_TASK_ID,
        status=ResultStatus.FAILED,
        completed_at_ms=_AT,
        error="unsupported format",
        command="render",
    ),
}


def _sample_task(event: EventType) -> Task:
    fields: dict[str, Any] = {
        "id": _TASK_ID,
        "command": "render",
        "tenant_id": "acme",
        "status": TaskStatus.PENDING,
        "last_known_location": Location.PENDING_LIST,
        "priority": 0,
        "attempts": 0,
        "max_attempts": 5,
        "created_at_ms": _AT - 60 * _SECOND,
        "updated_at_ms": _AT,
        # Never sent to endpoints (codeq.bodies.endpoint_body withholds them): here so the example
        # shows that it does.
        "payload": '{"doc":"cat.pdf"}',
        "webhook": "https://producer.example.com/done",
    }
    fields.update(_STATES[event])
    return Task(**fields)


def _example(event: EventType) -> msgspec.Struct:
    if event is EventType.WEBHOOK_TEST:
        return bodies.webhook_test_body(_ENDPOINT_ID, _AT)
    if event.is_operational:
        return bodies.operational_body(_OPERATIONAL[event])
    return bodies.endpoint_body(event.value, _AT, _sample_task(event), _RESULTS.get(event))


def _schema(event: EventType) -> dict[str, Any]:
    """The JSON schema of the body Struct, its ``type`` narrowed to this event's name."""
    schema = copy.deepcopy(msgspec.json.schema(BODIES[event]))
    name = schema["$ref"].rsplit("/", 1)[-1]
    schema["$defs"][name]["properties"]["type"] = {"const": event.value}
    return {"$schema": JSON_SCHEMA_DIALECT, "title": event.value, **schema}


@functools.cache
def catalog() -> EventTypeCatalog:
    """The whole catalog, built once per process."""
    return EventTypeCatalog(
        event_types=[
            EventTypeInfo(
                type=event.value,
                description=DESCRIPTIONS[event],
                schema=_schema(event),
                example=msgspec.json.decode(bodies.encode(_example(event))),
            )
            for event in EventType
        ]
    )


def entry(event: str) -> EventTypeInfo:
    """The catalog's entry of one event type; KeyError for a name outside ``EventType``."""
    for info in catalog().event_types:
        if info.type == event:
            return info
    raise KeyError(event)
