"""What each consumer group makes of a batch of stream entries: the deliveries to write.

- ``callbacks``: the terminal event of a task with a webhook → its result callback;
- ``notifier``: ``task.ready`` (or the create's entry that is one too,
  :func:`codeq.domain.makes_ready`) → "work available" to the worker subscriptions picked for
  the queue (one ``sub_pick`` per queue that became ready in the batch: a batch is one signal);
- ``endpoints``: any event of a tenant → each of its endpoints that wants that event type and
  command; on the ``{hooks}`` stream (:meth:`Handlers.hook_events`), an endpoint's
  ``endpoint.disabled`` / ``endpoint.enabled`` → each endpoint of the tenant that names it.

A handler picks the entries it has a use for by their type before decoding anything else, and
reads the tasks of all of them in one call (``get_many``). An operational event
(``delivery.exhausted`` on a partition stream, the ``{hooks}`` stream's) carries all its body
says: no task is read for it. An entry it cannot decode is quarantined
(:class:`~deliverers.events.Handled`); the rest of the batch goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from codeq.bodies import (
    DeliveryExhaustedEvent,
    EndpointDisabledEvent,
    OperationalEvent,
    decode_operational,
    operational_body,
)
from codeq.domain import makes_ready
from codeq.metrics import Metrics
from codeq.settings import Settings
from codeq.store.protocol import GetReply, Subscriptions, TaskReads
from codeq.store.records import decode_result
from codeq.store.streams import StreamEntry, event_fields
from deliverers import bodies, records
from deliverers.endpoints import OPERATIONAL_TYPES, EndpointDirectory, endpoint_matches
from deliverers.events import Event, Handled, raw_field, text_or_none
from deliverers.records import Delivery

__all__ = [
    "CALLBACKS",
    "CALLBACK_EVENTS",
    "ENDPOINTS",
    "GROUPS",
    "NOTIFIER",
    "Handler",
    "Handlers",
]

CALLBACKS = "callbacks"
NOTIFIER = "notifier"
ENDPOINTS = "endpoints"
GROUPS = (CALLBACKS, NOTIFIER, ENDPOINTS)
TERMINAL_EVENTS = frozenset(
    {"task.completed", "task.failed", "task.dead_lettered", "task.cancelled"}
)
CALLBACK_EVENTS = TERMINAL_EVENTS
NOTIFY_SCHEDULE = [0.5, 1.5]  # notifications are advisory: one try plus two quick retries
HASH_BUCKET_SECONDS = 60

Handler = Callable[[int, list[StreamEntry]], Awaitable[Handled]]
Use = tuple[str, Event]  # (entry id, event) of an entry a handler has a use for


def _now_ms() -> int:
    return int(time.time() * 1000)


def _operational(out: Handled, entry_id: str, fields: list[Any]) -> OperationalEvent | None:
    """An operational entry's event, or None after quarantining it (the reason names the
    field, never its value)."""
    try:
        return decode_operational(event_fields(fields))
    except UnicodeDecodeError:
        out.quarantined.append((entry_id, "a field is not UTF-8 text"))
    except msgspec.ValidationError as exc:
        out.quarantined.append((entry_id, str(exc)))
    return None


def _subject(event: OperationalEvent) -> str:
    """The id an operational event is about: its endpoint's, else its delivery's."""
    if isinstance(event, DeliveryExhaustedEvent):
        return event.endpoint_id or event.delivery_id
    return event.endpoint_id


class Handlers:
    """The three groups' handlers, over the tasks, subscriptions and endpoints they read.
    ``partition_of``: the partition of an id (``KeySchema.partition_of``), where the deliveries
    of a ``{hooks}`` event are written."""

    def __init__(
        self,
        tasks: TaskReads,
        subscriptions: Subscriptions,
        endpoints: EndpointDirectory,
        settings: Settings,
        metrics: Metrics,
        *,
        partition_of: Callable[[str], int],
    ) -> None:
        self._tasks = tasks
        self._subscriptions = subscriptions
        self._endpoints = endpoints
        self._settings = settings
        self._metrics = metrics
        self._partition_of = partition_of
        self._callback_schedule = records.schedule_from(
            settings.webhook_retry_schedule,
            max_attempts=settings.result_webhook_max_attempts,
            base=settings.result_webhook_base_backoff_seconds,
            cap=settings.result_webhook_max_backoff_seconds,
        )

    def by_group(self) -> dict[str, Handler]:
        return {
            CALLBACKS: self.callbacks,
            NOTIFIER: self.notifications,
            ENDPOINTS: self.endpoint_events,
        }

    # -- event-subscription endpoints ---------------------------------------------------

    async def endpoint_events(self, partition: int, entries: list[StreamEntry]) -> Handled:
        out = Handled()
        by_tenant: dict[bytes | str | None, list[dict[str, Any]]] = {}
        wanted: list[tuple[Use, list[dict[str, Any]]]] = []
        for eid, raw in entries:
            tenant_raw = raw_field(raw, b"tenant")
            if tenant_raw not in by_tenant:  # cached: usually no store call at all
                tenant = text_or_none(tenant_raw)
                by_tenant[tenant_raw] = await self._endpoints.of(tenant) if tenant else []
            endpoints = by_tenant[tenant_raw]
            if not endpoints:  # most tenants have no endpoints: nothing to decode
                continue
            kind = out.kind(eid, raw)
            if kind is None:  # quarantined
                continue
            if kind in OPERATIONAL_TYPES:  # delivery.exhausted: no task to read
                if not any(endpoint_matches(e, kind, "") for e in endpoints):
                    continue  # nobody named it: nothing to decode
                found = _operational(out, eid, raw)
                if found is not None:
                    out.deliveries += self._operational_messages(
                        partition, "endpoint", eid, found, endpoints
                    )
                continue
            event = out.decode(eid, raw)
            if event is None:
                continue
            command = event.command.lower()
            for use in event.halves(eid):  # a create's entry may be its task.ready too
                targets = [e for e in endpoints if endpoint_matches(e, use[1].type, command)]
                if targets:
                    wanted.append((use, targets))
        if not wanted:
            return out
        # each task read once (both halves of a create's entry want the same read)
        reads = list(dict.fromkeys((ev.tenant, ev.id, ev.type in TERMINAL_EVENTS)
                                   for (_, ev), _ in wanted))  # fmt: skip
        replies = dict(zip(reads, await self._tasks.get_many(partition, reads), strict=True))
        for (eid, ev), targets in wanted:
            reply = replies[ev.tenant, ev.id, ev.type in TERMINAL_EVENTS]
            if reply is not None:  # None: purged before its event was read
                out.deliveries.extend(self._endpoint_messages(partition, eid, ev, reply, targets))
        return out

    def _endpoint_messages(
        self, partition: int, entry_id: str, event: Event, reply: GetReply,
        targets: list[dict[str, Any]],
    ) -> list[Delivery]:  # fmt: skip
        result = decode_result(reply.task, reply.result) if reply.result is not None else None
        body = bodies.encode(
            bodies.endpoint_body(event.type, event.at or _now_ms(), reply.task, result)
        )
        out = []
        for e in targets:
            did = records.delivery_id(partition, f"endpoint:{e['id']}", entry_id, e["url"])
            out.append(
                Delivery(
                    id=did,
                    kind="endpoint",
                    tenant=event.tenant,
                    url=str(e["url"]),
                    body=body,
                    event_type=event.type,
                    created_at=_now_ms(),
                    schedule=list(self._settings.webhook_retry_schedule),
                    task_id=reply.task.id,
                    command=reply.task.command,
                    endpoint_id=str(e["id"]),
                    trace_parent=reply.task.trace_parent,
                    trace_state=reply.task.trace_state,
                )
            )
        return out

    # -- operational events ---------------------------------------------------------------

    async def hook_events(self, partition: int, entries: list[StreamEntry]) -> Handled:
        """The ``{hooks}`` stream's batch (``partition`` means nothing there): each
        endpoint's ``endpoint.disabled`` / ``endpoint.enabled``, to the tenant's endpoints as
        they are now (read fresh: such events are rare, and an endpoint enabled a moment ago
        counts). The deliveries of an event go to the partition of the endpoint it is about,
        and their ids come from the entry, so a repeated entry makes the same ones."""
        out = Handled()
        endpoints: dict[str, list[dict[str, Any]]] = {}
        for eid, raw in entries:
            event = _operational(out, eid, raw)
            if event is None:
                continue
            if event.tenant not in endpoints:
                endpoints[event.tenant] = await self._endpoints.of(event.tenant, fresh=True)
            out.deliveries += self._operational_messages(
                self._partition_of(_subject(event)), "hooks:endpoint", eid, event,
                endpoints[event.tenant],
            )  # fmt: skip
        return out

    def _operational_messages(
        self, partition: int, source: str, entry_id: str, event: OperationalEvent,
        endpoints: list[dict[str, Any]],
    ) -> list[Delivery]:  # fmt: skip
        """An operational event to each endpoint that names its type (``*`` does not include
        it), signed and retried like any endpoint delivery; never to the endpoint an
        ``endpoint.disabled`` is about (it is disabled). ``source`` keeps the ids of the two
        streams' deliveries apart."""
        message = operational_body(event)
        kind = message.type
        about = event.endpoint_id if isinstance(event, EndpointDisabledEvent) else None
        targets = [e for e in endpoints if endpoint_matches(e, kind, "") and e.get("id") != about]
        if not targets:
            return []
        body = bodies.encode(message)
        now = _now_ms()
        return [
            Delivery(
                id=records.delivery_id(partition, f"{source}:{e['id']}", entry_id, e["url"]),
                kind="endpoint",
                tenant=event.tenant,
                url=str(e["url"]),
                body=body,
                event_type=kind,
                created_at=now,
                schedule=list(self._settings.webhook_retry_schedule),
                endpoint_id=str(e["id"]),
            )
            for e in targets
        ]

    # -- result callbacks ---------------------------------------------------------------

    async def callbacks(self, partition: int, entries: list[StreamEntry]) -> Handled:
        out = Handled()
        wanted: list[Use] = []
        for eid, raw in entries:
            kind = out.kind(eid, raw)
            if kind in CALLBACK_EVENTS:
                event = out.decode(eid, raw)
                if event is not None and event.webhook:  # terminal events of a task with one
                    wanted.append((eid, event))
            elif kind == "task.lease_expired":  # this group reads every event of the partition
                command = (text_or_none(raw_field(raw, b"command")) or "").lower()
                self._metrics.lease_expired.labels(command).inc()
        if not wanted:
            return out
        replies = await self._tasks.get_many(
            partition, [(ev.tenant, ev.id, True) for _, ev in wanted]
        )
        for (eid, ev), reply in zip(wanted, replies, strict=True):
            # None: purged before its event was read, nothing to say
            if reply is not None and reply.task.webhook:
                out.deliveries.append(self._callback(partition, eid, ev, reply))
        return out

    def _callback(self, partition: int, entry_id: str, event: Event, reply: GetReply) -> Delivery:
        task = reply.task
        assert task.webhook is not None
        result = decode_result(task, reply.result) if reply.result is not None else None
        return Delivery(
            id=records.delivery_id(partition, "callback", entry_id, task.webhook),
            kind="callback",
            tenant=event.tenant,
            url=task.webhook,
            body=bodies.encode(bodies.callback_body(task, result)),
            event_type=event.type,
            created_at=_now_ms(),
            schedule=self._callback_schedule,
            task_id=task.id,
            command=task.command,
            trace_parent=task.trace_parent,
            trace_state=task.trace_state,
        )

    # -- availability notifications --------------------------------------------------------

    async def notifications(self, partition: int, entries: list[StreamEntry]) -> Handled:
        """One ``sub_pick`` per queue that became ready in the batch, on behalf of its newest
        ``task.ready`` (a batch is one "work is available" signal per queue; the pick is
        rate-bounded per subscription anyway)."""
        out = Handled()
        newest: dict[tuple[str, str], Use] = {}
        for eid, raw in entries:
            kind = out.kind(eid, raw)
            if kind is not None and makes_ready(kind, raw_field(raw, b"depth") is not None):
                event = out.decode(eid, raw)
                if event is not None:
                    newest[(event.tenant, event.command.lower())] = (eid, event)
        if newest:
            found = await asyncio.gather(
                *(self._notify(partition, eid, ev) for eid, ev in newest.values())
            )
            out.deliveries = [d for ds in found for d in ds]
        return out

    async def _notify(self, partition: int, entry_id: str, event: Event) -> list[Delivery]:
        tenant, command = event.tenant, event.command
        now = _now_ms()
        bucket_key = f"{command.lower()}:{now // 1000 // HASH_BUCKET_SECONDS}"
        bucket = int.from_bytes(hashlib.sha256(bucket_key.encode()).digest()[:4], "big")
        chosen = await self._subscriptions.pick(tenant, command, bucket)
        out: list[Delivery] = []
        for raw in chosen:
            sub = msgspec.json.decode(raw)
            target = str(sub["callbackUrl"])
            did = records.delivery_id(partition, f"notify:{sub['id']}", entry_id, target)
            out.append(
                Delivery(
                    id=did,
                    kind="notification",
                    tenant=tenant,
                    url=target,
                    body=bodies.notification_body(command, event.depth or 1, now, did),
                    event_type="worker.notification",
                    created_at=now,
                    schedule=NOTIFY_SCHEDULE,
                    command=command,
                    subscription_id=str(sub["id"]),
                )
            )
        return out
