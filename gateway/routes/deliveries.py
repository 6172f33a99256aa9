"""Delivery routes (spec 02 "Deliveries"): a delivery with its attempts and the request it
sent, retry now, the tenant's deliveries a page at a time with filters and their counts by
status (issue 18), an endpoint's statistics, and the admin delivery DLQ (list, replay).
Deliveries belong to a tenant: another tenant's is a 404, and never in a listing."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import Meta

from codeq.errors import InvalidRequest, NotFound
from codeq.ids import is_task_id
from codeq.listing import MAX_LIST_LIMIT, SCAN_BOUND, Cursors, newest_first, refuse_unknown
from codeq.store.protocol import Deliveries, DeliveryQuery
from deliverers import jobs, records
from deliverers.outcomes import WindowStats, endpoint_stats
from gateway.bodies import decode_body, documents
from gateway.openapi_errors import errors
from gateway.routes.lookup import tenant_endpoint
from gateway.schemas import rfc3339
from gateway.state import Gateway, gateway_for

__all__ = [
    "AdminDeliveryController",
    "DeliveryController",
    "DeliveryFilter",
    "DeliveryLister",
    "EndpointStatsController",
    "ReplayJobBody",
    "ReplayJobOut",
]

AnyRequest = Request[Any, Any, State]
#: the body a delivery's ``request`` shows, at most (UTF-8 bytes); ``bodyTruncated`` says so
MAX_BODY_SHOWN = 64 * 1024


class AttemptOut(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    at: str
    latency_ms: float
    status_code: int | None = None
    error: str | None = None
    response: str | None = None


class RequestOut(msgspec.Struct, kw_only=True, rename="camel"):
    """The request of a delivery's last attempt as it was sent: method, URL (a password in it
    redacted), every header (signatures included; credentials redacted) and the body, the
    first 64 KiB of it (``bodyTruncated`` when there was more; ``bodyBytes`` its whole size).
    Listings leave the body out (``body`` null): the delivery's own route has it."""

    method: str
    url: str
    sent_at: str
    headers: dict[str, str]
    body_bytes: int
    body_truncated: bool
    body: str | None = None

    @classmethod
    def of(cls, d: records.Delivery, sent: records.SentRequest, *, body: bool) -> RequestOut:
        raw = d.body.encode()
        shown = raw[:MAX_BODY_SHOWN].decode("utf-8", "ignore") if body else None
        return cls(
            method="POST",
            url=_safe_url(d.url),
            sent_at=rfc3339(sent.at) or "",
            headers=dict(sent.headers),
            body_bytes=len(raw),
            body_truncated=len(raw) > MAX_BODY_SHOWN,
            body=shown,
        )


def _safe_url(url: str) -> str:
    """``url`` with its user info, if any, redacted (a token may be the user name alone)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{records.REDACTED}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


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
    request: RequestOut | None = None  # once an attempt was made: what it sent

    @classmethod
    def of(cls, d: records.Delivery, *, body: bool = True) -> DeliveryOut:
        return cls(
            id=d.id,
            kind=d.kind,
            event_type=d.event_type,
            url=_safe_url(d.url),
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
            request=None if d.request is None else RequestOut.of(d, d.request, body=body),
        )


class DeliveriesOut(msgspec.Struct, kw_only=True):
    deliveries: list[DeliveryOut]


class DeliveryPageOut(msgspec.Struct, kw_only=True, rename="camel"):
    """A page of ``GET /v1/codeq/deliveries``, newest first; ``nextCursor`` null: nothing
    after it."""

    deliveries: list[DeliveryOut]
    next_cursor: str | None


class DeliveryCountsOut(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """How many deliveries the tenant (one endpoint of it) has, by status, and in all."""

    counts: dict[str, int]
    total: int
    endpoint_id: str | None = None


class EndpointStatsOut(msgspec.Struct, kw_only=True, rename="camel"):
    """An endpoint's attempts over the last hour and the last day: counts, success rate and
    latency percentiles (ms, from a histogram: within 19 %)."""

    endpoint_id: str
    at: str
    last_hour: WindowStats
    last_day: WindowStats


class DeliveryFilter(msgspec.Struct, frozen=True, kw_only=True):
    """What a delivery listing keeps (every field set must match); a cursor is bound to it."""

    status: records.DeliveryStatus | None = None
    endpoint_id: str | None = None
    event_type: str | None = None
    task_id: str | None = None
    created_from_ms: int | None = None
    created_before_ms: int | None = None


#: the query parameters of the delivery listing; any other is a 400 naming it
_LIST_PARAMS = frozenset(
    {"status", "endpointId", "eventType", "taskId", "createdAfter", "createdBefore"}
    | {"limit", "cursor"}
)
_COUNT_PARAMS = frozenset({"endpointId"})
_POSITION = re.compile(r"[0-9]{13}!msg_[A-Za-z0-9_]{1,80}")
_MAX_MS = 10**13  # positions hold 13 digits of ms (until the year 2286)


def _position(d: records.Delivery) -> str:
    """Where a delivery sorts (dlv_lib.lua ``dlv_pos``)."""
    at = d.created_at if 0 <= d.created_at < _MAX_MS else 0
    return f"{at:013d}!{d.id}"


def _ms(at: datetime | None, field: str) -> int | None:
    if at is None:
        return None
    ms = int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() * 1000)
    if not 0 <= ms < _MAX_MS:
        raise InvalidRequest(f"{field}: must be from 1970 to 2286", field=field)
    return ms


class DeliveryLister:
    """Pages of a tenant's deliveries: one ``dlv_search`` call per partition, concurrently,
    merged newest first behind a cursor bound to the tenant and the filters (the task
    listing's cursors, codeq/listing.py, with a purpose of their own). ``cursor_key`` keys the
    cursors' tags (the deployment's secret, as for tasks)."""

    def __init__(
        self,
        deliveries: Deliveries,
        partitions: int,
        *,
        cursor_key: bytes,
        scan_bound: int = SCAN_BOUND,
    ) -> None:
        self._deliveries = deliveries
        self._partitions = partitions
        self.scan_bound = scan_bound
        self.cursors = Cursors(
            cursor_key,
            purpose=b"codeq delivery listing cursor",
            position=lambda at: _POSITION.fullmatch(at) is not None,
        )

    @classmethod
    def of(cls, gw: Gateway) -> DeliveryLister:
        return cls(
            gw.store.deliveries, gw.store.keys.partitions, cursor_key=gw.engine.config.cursor_key
        )

    async def page(
        self, tenant: str, flt: DeliveryFilter, *, limit: int, cursor: str | None
    ) -> tuple[list[records.Delivery], str | None]:
        after = None if cursor is None else self.cursors.decode(tenant, flt, cursor)
        query = DeliveryQuery(
            tenant=tenant,
            size=limit,
            bound=self.scan_bound,
            statuses=() if flt.status is None else (flt.status.value,),
            endpoint_id=flt.endpoint_id,
            event_type=flt.event_type,
            task_id=flt.task_id,
            created_from_ms=flt.created_from_ms,
            created_before_ms=flt.created_before_ms,
            after=after,
        )
        pages = await asyncio.gather(
            *(self._deliveries.search(p, query) for p in range(self._partitions))
        )
        found, nxt = newest_first(
            ((_decodable(list(pg.records)), pg.reached) for pg in pages), _position, limit
        )
        return found, None if nxt is None else self.cursors.encode(tenant, flt, nxt)


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
    is (the dead-delivery list shows it) rather than failing a whole replay or page."""
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

    @get(
        "/",
        summary="The tenant's deliveries, newest first, filtered, a page at a time",
        description=(
            "Every filter given must match. `status`: pending, retrying, succeeded, dead or "
            "gone. Creation times: from `createdAfter` (inclusive) to `createdBefore` "
            "(exclusive); a reversed range is a 400. Each delivery comes with its attempts "
            "and the request its last attempt sent, without the body (GET the delivery for "
            "it). A page may hold fewer than `limit` deliveries, even none, and still have a "
            "`nextCursor`: what no index holds exactly (`status` pending or succeeded, event "
            "type with status or endpoint, a task's deliveries with other filters) is checked "
            "on the deliveries, looking at a bounded number of index entries per partition "
            "and page. `nextCursor` null: there is nothing after this page. An unknown "
            "parameter, a bad value or a cursor given out for another tenant or other filters "
            "is a 400."
        ),
        responses=errors(400),
    )
    async def list_deliveries(
        self,
        request: AnyRequest,
        status: Annotated[records.DeliveryStatus | None, QueryParameter()] = None,
        # named as in the query: Litestar's validation errors name the parameter
        endpointId: Annotated[str | None, QueryParameter(min_length=1, max_length=128)] = None,
        eventType: Annotated[str | None, QueryParameter(min_length=1, max_length=128)] = None,
        taskId: Annotated[str | None, QueryParameter(min_length=1, max_length=64)] = None,
        createdAfter: Annotated[datetime | None, QueryParameter()] = None,
        createdBefore: Annotated[datetime | None, QueryParameter()] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIST_LIMIT)] = 50,
        cursor: Annotated[str | None, QueryParameter(min_length=1, max_length=256)] = None,
    ) -> DeliveryPageOut:
        gw = gateway_for(request)
        identity = await gw.anyone(request)
        refuse_unknown(request.query_params, _LIST_PARAMS)
        if taskId is not None and not is_task_id(taskId):
            raise InvalidRequest("taskId: not a task id", field="taskId")
        after, before = _ms(createdAfter, "createdAfter"), _ms(createdBefore, "createdBefore")
        if after is not None and before is not None and before < after:
            raise InvalidRequest(
                "createdBefore: must not be before createdAfter", field="createdBefore"
            )
        flt = DeliveryFilter(
            status=status,
            endpoint_id=endpointId,
            event_type=eventType,
            task_id=taskId,
            created_from_ms=after,
            created_before_ms=before,
        )
        lister = DeliveryLister.of(gw)
        found, nxt = await lister.page(identity.tenant, flt, limit=limit, cursor=cursor)
        return DeliveryPageOut(
            deliveries=[DeliveryOut.of(d, body=False) for d in found], next_cursor=nxt
        )

    @get(
        "/counts",
        summary="How many deliveries the tenant (or one endpoint) has, by status",
        description=(
            "Counters the delivery scripts keep with every change of status (constant time at "
            "any number of deliveries), so they agree with the listing: pruned deliveries "
            "(`webhookDeliveryRetentionSeconds`) are no longer counted. With `endpointId`: that "
            "endpoint's (all zero for an id that is not one of the tenant's)."
        ),
        responses=errors(400),
    )
    async def counts(
        self,
        request: AnyRequest,
        endpointId: Annotated[str | None, QueryParameter(min_length=1, max_length=128)] = None,
    ) -> DeliveryCountsOut:
        gw = gateway_for(request)
        identity = await gw.anyone(request)
        refuse_unknown(request.query_params, _COUNT_PARAMS)
        ds = gw.store.deliveries
        parts = await asyncio.gather(
            *(
                ds.counts(p, identity.tenant, endpoint_id=endpointId)
                for p in range(gw.store.keys.partitions)
            )
        )
        counts = {
            s.value: sum(part.get(s.value, 0) for part in parts) for s in records.DeliveryStatus
        }
        return DeliveryCountsOut(counts=counts, total=sum(counts.values()), endpoint_id=endpointId)

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


_JOB_ID = re.compile(r"rpl_[0-9a-f]{24}")
#: statuses a replay job may be asked for (a pending delivery is due already)
ReplayStatus = Literal["dead", "gone", "retrying", "succeeded"]
#: what an endpoint missed (recover): deliveries that died, whether after their attempts or at
#: once because the endpoint was disabled or deleted (dispatch records those dead without an
#: attempt), and those the receiver answered 410 Gone (which disables the endpoint)
MISSED = ("dead", "gone")
RECENT_JOBS = 50


class ReplayJobBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    """Which deliveries a replay job attempts again: those created in [``createdAfter``,
    ``createdBefore``) (required from; to: now; at most the delivery retention apart), in
    ``status`` (default dead; succeeded ones are sent again only when asked for by name), of one
    endpoint and/or event type. A field this route does not know is a 400."""

    created_after: Annotated[datetime, Meta(tz=True)]
    created_before: Annotated[datetime, Meta(tz=True)] | None = None
    status: ReplayStatus = "dead"
    endpoint_id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    event_type: Annotated[str, Meta(min_length=1, max_length=128)] | None = None


class RecoverBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What an endpoint missed from ``since`` (to ``until``, default now)."""

    since: Annotated[datetime, Meta(tz=True)]
    until: Annotated[datetime, Meta(tz=True)] | None = None


_replay_job_decoder = msgspec.json.Decoder(ReplayJobBody)
_recover_decoder = msgspec.json.Decoder(RecoverBody)


class ReplayFilterOut(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    statuses: list[str]
    created_after: str
    created_before: str
    endpoint_id: str | None = None
    event_type: str | None = None


class ReplayJobOut(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """A replay job: ``status`` queued, running, done, failed or cancelled; deliveries
    ``replayed`` (scheduled again) and ``skipped`` (matched when read, but replayed, retried
    or pruned by the time their step ran) so far."""

    id: str
    kind: str
    status: str
    filter: ReplayFilterOut
    replayed: int
    skipped: int
    created_at: str
    updated_at: str
    finished_at: str | None = None
    error: str | None = None

    @classmethod
    def of(cls, parts: list[jobs.ReplayPart]) -> ReplayJobOut:
        first = parts[0]
        ended = [p.finished_at for p in parts if p.finished_at is not None]
        status = jobs.merge_status([p.status for p in parts])
        return cls(
            id=first.id,
            kind=first.kind,
            status=status,
            filter=ReplayFilterOut(
                statuses=first.statuses,
                created_after=rfc3339(first.created_from_ms) or "",
                created_before=rfc3339(first.created_before_ms) or "",
                endpoint_id=first.endpoint_id,
                event_type=first.event_type,
            ),
            replayed=sum(p.replayed for p in parts),
            skipped=sum(p.skipped for p in parts),
            created_at=rfc3339(first.created_at) or "",
            updated_at=rfc3339(max(p.updated_at for p in parts)) or "",
            finished_at=rfc3339(max(ended)) if ended and status in _ENDED else None,
            error=next((p.error for p in parts if p.error), None),
        )


class ReplayJobsOut(msgspec.Struct, kw_only=True):
    jobs: list[ReplayJobOut]


_ENDED = frozenset({"done", "failed", "cancelled"})


def _range(
    gw: Gateway, after: datetime, before: datetime | None, fields: tuple[str, str]
) -> tuple[int, int]:
    """[from, to) in ms of a job: ordered, and no wider than the delivery retention (what is
    older is pruned); ``to`` defaults to now."""
    lo = _ms(after, fields[0])
    hi = _ms(before, fields[1]) if before is not None else int(time.time() * 1000)
    assert lo is not None and hi is not None  # both given
    if hi < lo:
        raise InvalidRequest(f"{fields[1]}: must not be before {fields[0]}", field=fields[1])
    span = gw.settings.webhook_delivery_retention_seconds
    if hi - lo > span * 1000:
        raise InvalidRequest(
            f"{fields[0]}: at most {span} s (the delivery retention) before {fields[1]}",
            field=fields[0],
        )
    return lo, hi


async def _start(gw: Gateway, part: jobs.ReplayPart) -> ReplayJobOut:
    """Write the job's part into every partition (one script call each, concurrently)."""
    part.id = f"rpl_{secrets.token_hex(12)}"
    raw = msgspec.json.encode(part)
    ds = gw.store.deliveries
    await asyncio.gather(
        *(ds.create_job(p, part.id, part.tenant, raw) for p in range(gw.store.keys.partitions))
    )
    return await _job(gw, part.tenant, part.id)


async def _job(gw: Gateway, tenant: str, job_id: str) -> ReplayJobOut:
    """A tenant's job from its parts; 404 for another tenant's or an unknown one."""
    if not _JOB_ID.fullmatch(job_id):
        raise NotFound(f"replay job {job_id[:64]} not found")
    ds = gw.store.deliveries
    raws = await asyncio.gather(*(ds.job(p, job_id) for p in range(gw.store.keys.partitions)))
    parts = [jobs.decode_part(r) for r in raws if r is not None]
    if not parts or any(p.tenant != tenant for p in parts):
        raise NotFound(f"replay job {job_id[:64]} not found")
    return ReplayJobOut.of(parts)


class EndpointStatsController(Controller):
    """Routes under ``/v1/codeq/webhooks`` about deliveries: an endpoint's statistics and what
    it missed (``recover``), and replay jobs (beside the endpoint routes' own controller)."""

    path = "/v1/codeq/webhooks"
    tags = ["webhook endpoints"]  # noqa: RUF012

    @get(
        "/endpoints/{endpoint_id:str}/stats",
        summary="Attempts, success rate and latency percentiles over the last hour and day",
        description=(
            "Kept by the delivery scripts as each attempt is recorded: per minute for the last "
            "hour, per hour for the last day (the current hour counts, the oldest one partly), "
            "each with a latency histogram of 64 log-spaced buckets; p50/p90/p99 are read off "
            "it (within 19 %) and null without a measured attempt. An attempt that could not "
            "be sent (a refused target) counts as failed without a latency. 404 for an "
            "endpoint that is not the tenant's (producer)."
        ),
        responses=errors(400, 404),
    )
    async def stats(self, request: AnyRequest, endpoint_id: FromPath[str]) -> EndpointStatsOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        await tenant_endpoint(gw, identity.tenant, endpoint_id)
        ds = gw.store.deliveries
        parts = await asyncio.gather(
            *(ds.endpoint_buckets(p, endpoint_id) for p in range(gw.store.keys.partitions))
        )
        now = int(time.time() * 1000)
        stats = endpoint_stats(parts, now)
        return EndpointStatsOut(
            endpoint_id=endpoint_id,
            at=rfc3339(now) or "",
            last_hour=stats.last_hour,
            last_day=stats.last_day,
        )

    @post(
        "/endpoints/{endpoint_id:str}/recover",
        status_code=202,
        summary="Replay what an endpoint missed since a time, as a replay job",
        description=(
            "Every delivery to the endpoint created from `since` to `until` (default now; at "
            "most the delivery retention apart) that did not succeed: dead (after its "
            "attempts, or at once because the endpoint was disabled or deleted) or gone (410). "
            "The endpoint is not re-enabled by this (PATCH it): while it is disabled the "
            "replayed deliveries die again at once. 404 for an endpoint that is not the "
            "tenant's (producer)."
        ),
        responses=errors(400, 404, 413),
        dependencies=documents(RecoverBody),
    )
    async def recover(self, request: AnyRequest, endpoint_id: FromPath[str]) -> ReplayJobOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        data: RecoverBody = decode_body(await request.body(), _recover_decoder)
        await tenant_endpoint(gw, identity.tenant, endpoint_id)
        lo, hi = _range(gw, data.since, data.until, ("since", "until"))
        part = jobs.ReplayPart(
            kind="recover", tenant=identity.tenant, statuses=list(MISSED),
            endpoint_id=endpoint_id, created_from_ms=lo, created_before_ms=hi,
        )  # fmt: skip
        return await _start(gw, part)

    @post(
        "/replays",
        status_code=202,
        summary="Replay the deliveries a filter matches, as an asynchronous job",
        description=(
            "The tenant's deliveries created in [`createdAfter`, `createdBefore`) (`createdAfter` "
            "required; `createdBefore` default now; at most the delivery retention apart) in "
            "`status` (dead by default; gone, retrying, or succeeded — sent again — when asked "
            "for), of `endpointId` and/or `eventType`, each attempted again with a fresh "
            "schedule (same delivery id and body). The deliverers work through the job a page "
            "at a time; GET it for its progress. An unknown field, a bad value or a reversed "
            "or too wide range is a 400 naming the field; another tenant's endpoint a 404."
        ),
        tags=["deliveries"],
        responses=errors(400, 404, 413),
        dependencies=documents(ReplayJobBody),
    )
    async def create_replay(self, request: AnyRequest) -> ReplayJobOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        data: ReplayJobBody = decode_body(await request.body(), _replay_job_decoder)
        if data.endpoint_id is not None:
            await tenant_endpoint(gw, identity.tenant, data.endpoint_id)
        lo, hi = _range(gw, data.created_after, data.created_before, _TIME_FIELDS)
        part = jobs.ReplayPart(
            tenant=identity.tenant, statuses=[data.status], endpoint_id=data.endpoint_id,
            event_type=data.event_type, created_from_ms=lo, created_before_ms=hi,
        )  # fmt: skip
        return await _start(gw, part)

    @get(
        "/replays",
        summary="The tenant's recent replay jobs, newest first",
        tags=["deliveries"],
        responses=errors(400),
    )
    async def replay_jobs(self, request: AnyRequest) -> ReplayJobsOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        recent = await gw.store.deliveries.recent_jobs(0, identity.tenant, limit=RECENT_JOBS)
        ids = [jobs.decode_part(raw).id for raw in recent]
        found = await asyncio.gather(
            *(_job(gw, identity.tenant, i) for i in ids), return_exceptions=True
        )
        for job in found:  # a job pruned since its id was read is left out
            if isinstance(job, BaseException) and not isinstance(job, NotFound):
                raise job
        return ReplayJobsOut(jobs=[j for j in found if isinstance(j, ReplayJobOut)])

    @get(
        "/replays/{job_id:str}",
        summary="A replay job and its progress",
        tags=["deliveries"],
        responses=errors(400, 404),
    )
    async def replay_job(self, request: AnyRequest, job_id: FromPath[str]) -> ReplayJobOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        return await _job(gw, identity.tenant, job_id)

    @post(
        "/replays/{job_id:str}/cancel",
        status_code=200,
        summary="Cancel a replay job (what it replayed stays replayed)",
        tags=["deliveries"],
        responses=errors(400, 404),
    )
    async def cancel_replay(self, request: AnyRequest, job_id: FromPath[str]) -> ReplayJobOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        await _job(gw, identity.tenant, job_id)  # 404 unless the tenant's
        ds = gw.store.deliveries
        await asyncio.gather(
            *(ds.cancel_job(p, job_id, identity.tenant) for p in range(gw.store.keys.partitions))
        )
        return await _job(gw, identity.tenant, job_id)


_TIME_FIELDS = ("createdAfter", "createdBefore")
