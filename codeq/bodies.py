"""What every webhook carries (spec 03): the body Structs, and the pure builders the event-type
catalog (:mod:`codeq.catalog`) makes its examples with. No I/O here.

The bodies are built from the API's own output Structs: a result callback *is* the API's
result (:class:`codeq.schemas.ResultOut`) plus ``eventType``; an event's ``data`` *is* the
API's task (:class:`codeq.schemas.TaskOut`) plus the result of a terminal task. So the field
names (``contentType``, ``completedAt``, ...) and the time format are the API's by
construction. The deliverers (:mod:`deliverers.bodies`) build callbacks and notifications
from these Structs, and every endpoint event with the builders below.

Every endpoint event is the envelope ``{"type", "timestamp", "data"}``:

- a ``task.*`` event: :class:`EndpointBody`, built by :func:`endpoint_body`;
- ``webhook.test``: :class:`WebhookTestBody` (:func:`webhook_test_body`);
- the operational events (``endpoint.disabled``, ``endpoint.enabled``,
  ``delivery.exhausted``): the script that makes the change writes an entry to a stream
  (:data:`OperationalEvent`, decoded from its fields by :func:`decode_operational`), and
  :func:`operational_body` turns it into the body.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from codeq.domain import EventType, Task, TaskResult
from codeq.schemas import ResultOut, TaskOut, rfc3339

__all__ = [
    "TEST_MESSAGE",
    "CallbackBody",
    "DeliveryExhaustedBody",
    "DeliveryExhaustedData",
    "DeliveryExhaustedEvent",
    "EndpointBody",
    "EndpointDisabledBody",
    "EndpointDisabledData",
    "EndpointDisabledEvent",
    "EndpointEnabledBody",
    "EndpointEnabledData",
    "EndpointEnabledEvent",
    "EndpointTask",
    "NotificationBody",
    "OperationalBody",
    "OperationalEvent",
    "WebhookTestBody",
    "WebhookTestData",
    "decode_operational",
    "encode",
    "endpoint_body",
    "operational_body",
    "raw_result",
    "webhook_test_body",
]

_encoder = msgspec.json.Encoder()


def encode(body: msgspec.Struct) -> str:
    """A body as the bytes every attempt sends (as text: a delivery record keeps it so)."""
    return _encoder.encode(body).decode()


# -- result callbacks and notifications ------------------------------------------------------


class CallbackBody(ResultOut, kw_only=True):
    """A result callback: the API's result of the task, and ``eventType`` (its command)."""

    event_type: str


class NotificationBody(msgspec.Struct, kw_only=True, rename="camel"):
    """A worker availability notification: "claim now", never a task."""

    event_type: str
    available: bool
    queue_depth: int
    claim_url: str
    sent_at: str
    notification_id: str


# -- task events -------------------------------------------------------------------------------


class EndpointTask(TaskOut, kw_only=True):
    """A task event's ``data``: the API's task, with the result once it has one."""

    result: msgspec.Raw | None = None


class EndpointBody(msgspec.Struct, kw_only=True):
    type: str
    timestamp: str
    data: EndpointTask


# Not sent to subscribers: the payload (the producer's data, possibly large), the webhook URL
# (it may carry credentials) and the lease id (it lets its holder finish the task).
_WITHHELD: Final = {"payload": None, "webhook": None, "lease_id": None}


def raw_result(r: TaskResult) -> msgspec.Raw | None:
    """The worker's result JSON as stored, embedded without decoding it."""
    return msgspec.Raw(r.result.encode()) if r.result is not None else None


def endpoint_body(kind: str, at_ms: int, task: Task, result: TaskResult | None) -> EndpointBody:
    """The body of the ``task.*`` event ``kind`` of ``task`` (written at ``at_ms``)."""
    fields: dict[str, Any] = msgspec.structs.asdict(TaskOut.of(task))
    fields.update(_WITHHELD)
    data = EndpointTask(**fields, result=raw_result(result) if result is not None else None)
    return EndpointBody(type=kind, timestamp=rfc3339(at_ms) or "", data=data)


# -- the test send -----------------------------------------------------------------------------


class WebhookTestData(msgspec.Struct, kw_only=True, rename="camel"):
    """``data`` of a ``webhook.test`` event: the endpoint it was sent to."""

    endpoint_id: str
    message: str


class WebhookTestBody(msgspec.Struct, kw_only=True):
    """A ``webhook.test`` event: the envelope of every endpoint event (``type``,
    ``timestamp``, ``data``), with no task in it."""

    type: str
    timestamp: str
    data: WebhookTestData


TEST_MESSAGE: Final = "A test event from codeQ: this endpoint receives its webhooks."


def webhook_test_body(endpoint_id: str, at_ms: int) -> WebhookTestBody:
    """The body a test send delivers to ``endpoint_id``."""
    return WebhookTestBody(
        type=EventType.WEBHOOK_TEST.value,
        timestamp=rfc3339(at_ms) or "",
        data=WebhookTestData(endpoint_id=endpoint_id, message=TEST_MESSAGE),
    )


# -- operational events ------------------------------------------------------------------------
#
# The stream entries, as the scripts write them (every value as text: decoded with
# strict=False). Each names its tenant and when it happened (``at``, ms); the other fields are
# the ones its body carries.


_Text = Annotated[str, msgspec.Meta(min_length=1)]
_Ms = Annotated[int, msgspec.Meta(ge=0, le=2**53)]

Trigger = Literal["automatic", "manual"]
DisableReason = Literal["gone", "failing"]
ExhaustedKind = Literal["endpoint", "callback"]


class EndpointDisabledEvent(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", tag_field="type",
    tag=EventType.ENDPOINT_DISABLED.value,
):  # fmt: skip
    """``ep_mark.lua`` (``automatic``: a 410, or failing for ``endpointDisableAfterHours``)
    or ``ep_patch.lua`` (``manual``: ``enabled: false``) disabled an endpoint."""

    tenant: _Text
    at: _Ms
    endpoint_id: _Text
    trigger: Trigger
    reason: DisableReason | None = None
    failing_since: _Ms | None = None


class EndpointEnabledEvent(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", tag_field="type",
    tag=EventType.ENDPOINT_ENABLED.value,
):  # fmt: skip
    """``ep_patch.lua`` enabled a disabled endpoint (``enabled: true``)."""

    tenant: _Text
    at: _Ms
    endpoint_id: _Text


class DeliveryExhaustedEvent(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", tag_field="type",
    tag=EventType.DELIVERY_EXHAUSTED.value,
):  # fmt: skip
    """``dlv_outcome.lua`` moved a delivery to the delivery DLQ (its last attempt failed,
    or it was given up)."""

    tenant: _Text
    at: _Ms
    delivery_id: _Text
    kind: ExhaustedKind
    event_type: _Text
    attempts: _Ms
    endpoint_id: str | None = None
    task_id: str | None = None
    last_status_code: int | None = None
    last_error: str | None = None


OperationalEvent = EndpointDisabledEvent | EndpointEnabledEvent | DeliveryExhaustedEvent


def decode_operational(fields: dict[str, str]) -> OperationalEvent:
    """An operational stream entry's fields (as text) → its event; ``msgspec.ValidationError``
    naming the field (never its value) for one that is not what the scripts write."""
    event: OperationalEvent = msgspec.convert(fields, OperationalEvent, strict=False)
    return event


class EndpointDisabledData(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """``data`` of ``endpoint.disabled``: which endpoint; ``trigger`` ``automatic`` (codeQ
    disabled it: ``reason`` ``gone``, it answered 410, or ``failing``, every delivery failed
    since ``failingSince`` for ``endpointDisableAfterHours``) or ``manual`` (a ``PATCH``)."""

    endpoint_id: str
    trigger: Trigger
    reason: DisableReason | None = None
    failing_since: str | None = None


class EndpointDisabledBody(msgspec.Struct, kw_only=True):
    type: str
    timestamp: str
    data: EndpointDisabledData


class EndpointEnabledData(msgspec.Struct, kw_only=True, rename="camel"):
    """``data`` of ``endpoint.enabled``: the endpoint a ``PATCH`` enabled again."""

    endpoint_id: str


class EndpointEnabledBody(msgspec.Struct, kw_only=True):
    type: str
    timestamp: str
    data: EndpointEnabledData


class DeliveryExhaustedData(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """``data`` of ``delivery.exhausted``: the delivery now in the delivery DLQ (replayable),
    what it was (``kind`` ``endpoint``: to ``endpointId``; ``callback``: a task's result
    callback), its ``eventType``, the attempts made and how the last one ended
    (``lastStatusCode`` when the receiver answered, ``lastError`` what went wrong)."""

    delivery_id: str
    kind: ExhaustedKind
    event_type: str
    attempts: int
    endpoint_id: str | None = None
    task_id: str | None = None
    last_status_code: int | None = None
    last_error: str | None = None


class DeliveryExhaustedBody(msgspec.Struct, kw_only=True):
    type: str
    timestamp: str
    data: DeliveryExhaustedData


OperationalBody = EndpointDisabledBody | EndpointEnabledBody | DeliveryExhaustedBody


def operational_body(event: OperationalEvent) -> OperationalBody:
    """The body an endpoint receives for an operational event."""
    timestamp = rfc3339(event.at) or ""
    if isinstance(event, EndpointDisabledEvent):
        return EndpointDisabledBody(
            type=EventType.ENDPOINT_DISABLED.value,
            timestamp=timestamp,
            data=EndpointDisabledData(
                endpoint_id=event.endpoint_id,
                trigger=event.trigger,
                reason=event.reason,
                failing_since=rfc3339(event.failing_since),
            ),
        )
    if isinstance(event, EndpointEnabledEvent):
        return EndpointEnabledBody(
            type=EventType.ENDPOINT_ENABLED.value,
            timestamp=timestamp,
            data=EndpointEnabledData(endpoint_id=event.endpoint_id),
        )
    return DeliveryExhaustedBody(
        type=EventType.DELIVERY_EXHAUSTED.value,
        timestamp=timestamp,
        data=DeliveryExhaustedData(
            delivery_id=event.delivery_id,
            kind=event.kind,
            event_type=event.event_type,
            attempts=event.attempts,
            endpoint_id=event.endpoint_id,
            task_id=event.task_id,
            last_status_code=event.last_status_code,
            last_error=event.last_error,
        ),
    )
