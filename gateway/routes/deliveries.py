"""Delivery routes (spec 02 "Deliveries"): a delivery with its attempts, retry now, and the
admin delivery DLQ (list, replay). Deliveries belong to a tenant: another tenant's is a 404."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import Meta

from codeq.errors import InvalidRequest, NotFound
from deliverers import records
from gateway.openapi_errors import errors
from gateway.schemas import rfc3339
from gateway.state import gateway_for

__all__ = ["AdminDeliveryController", "DeliveryController"]

AnyRequest = Request[Any, Any, State]


class AttemptOut(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    at: str
    latency_ms: float
    status_code: int | None = None
    error: str | None = None
    response: str | None = None


class DeliveryOut(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    id: str
    kind: str
    event_type: str
    url: str
    status: str
    attempts: int
    max_attempts: int
    created_at: str
    task_id: str | None = None
    endpoint_id: str | None = None
    next_attempt_at: str | None = None
    dead_at: str | None = None
    attempt_log: list[AttemptOut] = msgspec.field(default_factory=list)

    @classmethod
    def of(cls, d: records.Delivery) -> DeliveryOut:
        return cls(
            id=d.id,
            kind=d.kind,
            event_type=d.event_type,
            url=d.url,
            status=d.status,
            attempts=d.attempts,
            max_attempts=d.max_attempts,
            created_at=rfc3339(d.created_at) or "",
            task_id=d.task_id,
            endpoint_id=d.endpoint_id,
            next_attempt_at=rfc3339(d.next_at),
            dead_at=rfc3339(d.dead_at),
            attempt_log=[
                AttemptOut(
                    at=rfc3339(a.at) or "",
                    latency_ms=a.latency_ms,
                    status_code=a.status_code,
                    error=a.error,
                    response=a.response,
                )
                for a in d.log
            ],
        )


class DeliveriesOut(msgspec.Struct, kw_only=True):
    deliveries: list[DeliveryOut]


MAX_REPLAY = 10_000


class ReplayBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """Which dead deliveries to attempt again: the named ones (``ids``), or the oldest up to
    ``limit`` — of one endpoint (``endpointId``) and/or dead within [``since``, ``until``).
    A field this route does not know is a 400, never a filter silently left out."""

    ids: Annotated[list[str], Meta(max_length=MAX_REPLAY)] | None = None
    limit: Annotated[int, Meta(ge=1, le=MAX_REPLAY)] = 100
    endpoint_id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    since: Annotated[datetime, Meta(tz=True)] | None = None
    until: Annotated[datetime, Meta(tz=True)] | None = None

    @property
    def filtered(self) -> bool:
        return self.endpoint_id is not None or self.since is not None or self.until is not None

    def matches(self, d: records.Delivery) -> bool:
        if self.endpoint_id is not None and d.endpoint_id != self.endpoint_id:
            return False
        dead = d.dead_at or 0
        if self.since is not None and dead < self.since.timestamp() * 1000:
            return False
        return self.until is None or dead <= self.until.timestamp() * 1000


class ReplayOut(msgspec.Struct, kw_only=True):
    replayed: int
    ids: list[str]


def _decodable(raws: list[bytes]) -> list[records.Delivery]:
    """The records that decode: one written by hand or by an older version is left where it
    is (the dead-delivery list shows it) rather than failing the whole replay."""
    out = []
    for raw in raws:
        try:
            out.append(records.decode(raw))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
    return out


async def _load(request: AnyRequest, delivery_id: str, tenant: str) -> tuple[int, records.Delivery]:
    """(partition, delivery) of one of the tenant's deliveries; 404 for anything else."""
    gw = gateway_for(request)
    p = records.partition_of(delivery_id, gw.store.keys.partitions)
    raw = None if p is None else await gw.store.deliveries.get(p, delivery_id)
    d = None if raw is None else records.decode(raw)
    if p is None or d is None or d.tenant != tenant:
        raise NotFound(f"delivery {delivery_id[:64]} not found")
    return p, d


class DeliveryController(Controller):
    path = "/v1/codeq/deliveries"
    tags = ["deliveries"]  # noqa: RUF012

    @get("/{delivery_id:str}", summary="A delivery with its attempts", responses=errors(400, 404))
    async def get_delivery(self, request: AnyRequest, delivery_id: FromPath[str]) -> DeliveryOut:
        gw = gateway_for(request)
        identity = await gw.anyone(request)
        _, d = await _load(request, delivery_id, identity.tenant)
        return DeliveryOut.of(d)

    @post(
        "/{delivery_id:str}/retry",
        status_code=202,
        summary="Attempt the delivery again now",
        responses=errors(400, 404),
    )
    async def retry(self, request: AnyRequest, delivery_id: FromPath[str]) -> ReplayOut:
        gw = gateway_for(request)
        identity = await gw.anyone(request)
        p, d = await _load(request, delivery_id, identity.tenant)
        ids = await gw.store.deliveries.replay(p, tenant=identity.tenant, ids=[d.id])
        return ReplayOut(replayed=len(ids), ids=ids)


class AdminDeliveryController(Controller):
    path = "/v1/codeq/admin/deliveries/dlq"
    tags = ["admin"]  # noqa: RUF012

    @get("/", summary="Dead deliveries of the tenant, oldest first", responses=errors(400, 403))
    async def dead(
        self,
        request: AnyRequest,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> DeliveriesOut:
        gw = gateway_for(request)
        identity = await gw.admin(request)
        ds = gw.store.deliveries
        out: list[DeliveryOut] = []
        for p in range(gw.store.keys.partitions):
            for raw in await ds.dead_page(p, limit=limit):
                d = records.decode(raw)
                if identity.is_super_admin or d.tenant == identity.tenant:
                    out.append(DeliveryOut.of(d))
        out.sort(key=lambda d: d.dead_at or "")
        return DeliveriesOut(deliveries=out[:limit])

    @post(
        "/replay",
        status_code=200,
        summary="Attempt dead deliveries again: the named ones, or the oldest up to limit "
        "(of one endpoint, dead between since and until)",
        responses=errors(400, 403, 413),
    )
    async def replay(
        self, request: AnyRequest, data: JSONBody[ReplayBody | None] = None
    ) -> ReplayOut:
        gw = gateway_for(request)
        identity = await gw.admin(request)
        body = data or ReplayBody()
        if body.ids is not None and body.filtered:
            raise InvalidRequest(
                "ids: name deliveries or filter them (endpointId, since, until), not both",
                field="ids",
            )
        tenant = None if identity.is_super_admin else identity.tenant
        ds = gw.store.deliveries
        done: list[str] = []
        n = gw.store.keys.partitions
        if body.filtered:
            for part in range(n):
                # The oldest MAX_REPLAY dead deliveries of each partition are looked at.
                chosen = [
                    d.id
                    for d in _decodable(await ds.dead_page(part, limit=MAX_REPLAY))
                    if (tenant is None or d.tenant == tenant) and body.matches(d)
                ][: body.limit - len(done)]
                if chosen:
                    done += await ds.replay(part, tenant=tenant, ids=chosen)
                if len(done) >= body.limit:
                    break
        elif body.ids:
            by_partition: dict[int, list[str]] = {}
            for i in body.ids:
                p = records.partition_of(i, n)
                if p is not None:
                    by_partition.setdefault(p, []).append(i)
            for p, ids in by_partition.items():
                done += await ds.replay(p, tenant=tenant, ids=ids)
        else:
            for p in range(n):
                done += await ds.replay(p, tenant=tenant, limit=body.limit - len(done))
                if len(done) >= body.limit:
                    break
        return ReplayOut(replayed=len(done), ids=done)
