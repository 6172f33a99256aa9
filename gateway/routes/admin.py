"""Admin routes (admin credentials): queues, queue stats, DLQ browse and requeue, cleanup."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from codeq.errors import InvalidRequest
from gateway.bodies import documents, optional_body
from gateway.openapi_errors import errors
from gateway.schemas import (
    MAX_CLEANUP_LIMIT,
    CleanupBody,
    CleanupOut,
    DlqOut,
    QueuesOut,
    QueueStatsOut,
    RequeueBody,
    RequeueOut,
    TaskOut,
    rfc3339,
)
from gateway.state import gateway_for

__all__ = ["AdminController"]

AnyRequest = Request[Any, Any, State]
# Decoded here, strictly, as the task routes do (Litestar's own body extraction converts
# leniently: "10" would pass for 10).
_requeue_decoder = msgspec.json.Decoder(RequeueBody | None)
_cleanup_decoder = msgspec.json.Decoder(CleanupBody | None)
#: ``before`` of a cleanup: from the epoch to before the year 3000 (the store keeps times as
#: integer milliseconds; a later date would not stay an integer in its scripts).
_LATEST_BEFORE = datetime(3000, 1, 1, tzinfo=UTC)


class AdminController(Controller):
    path = "/v1/codeq/admin"
    tags = ["admin"]  # noqa: RUF012

    @get(
        "/queues",
        summary="Every queue of the caller's tenant (all tenants: super-admin)",
        responses=errors(403),
    )
    async def queues(self, request: AnyRequest) -> QueuesOut:
        gw = gateway_for(request)
        identity = await gw.admin(request)
        everyone = identity.is_super_admin
        stats = await gw.engine.list_queues(None if everyone else identity.tenant)
        return QueuesOut(queues=[QueueStatsOut.of(s, with_tenant=everyone) for s in stats])

    @get("/queues/{command:str}", summary="Depths of one queue", responses=errors(400, 403))
    async def queue(self, request: AnyRequest, command: FromPath[str]) -> QueueStatsOut:
        gw = gateway_for(request)
        identity = await gw.admin(request)
        return QueueStatsOut.of(await gw.engine.queue_stats(identity.tenant, command))

    @get(
        "/queues/{command:str}/dlq",
        summary="Browse dead tasks, oldest first",
        responses=errors(400, 403),
    )
    async def dlq(
        self,
        request: AnyRequest,
        command: FromPath[str],
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
        cursor: Annotated[str | None, QueryParameter(max_length=128)] = None,
    ) -> DlqOut:
        gw = gateway_for(request)
        identity = await gw.admin(request)
        page = await gw.engine.dlq(identity.tenant, command, limit=limit, cursor=cursor)
        return DlqOut(tasks=[TaskOut.of(t) for t in page.tasks], next_cursor=page.next_cursor)

    @post(
        "/queues/{command:str}/dlq/requeue",
        status_code=200,
        summary="Requeue dead tasks (attempts reset): by ids, or all",
        responses=errors(400, 403, 413),
        dependencies=documents(RequeueBody),
    )
    async def requeue(self, request: AnyRequest, command: FromPath[str]) -> RequeueOut:
        gw = gateway_for(request)
        identity = await gw.admin(request)
        data = await optional_body(request, _requeue_decoder) or RequeueBody()
        if data.ids is None and not data.all:
            raise InvalidRequest("ids: give ids, or all: true", field="ids")
        out = await gw.engine.requeue_dlq(
            identity.tenant, command, ids=None if data.all else data.ids
        )
        return RequeueOut(requeued=out.requeued, ids=list(out.ids))

    @post(
        "/tasks/cleanup",
        status_code=200,
        summary="Purge terminal tasks whose retention ended before `before`",
        responses=errors(400, 403, 413, 429),
        dependencies=documents(CleanupBody),
    )
    async def cleanup(self, request: AnyRequest) -> CleanupOut:
        gw = gateway_for(request)
        identity = await gw.admin(request)
        await gw.rate.check("admin", "cleanup", identity.tenant, identity.subject)
        body = await optional_body(request, _cleanup_decoder) or CleanupBody()
        before_ms = int(time.time() * 1000)
        if body.before is not None:
            before = body.before if body.before.tzinfo else body.before.replace(tzinfo=UTC)
            if not datetime(1970, 1, 1, tzinfo=UTC) <= before < _LATEST_BEFORE:
                raise InvalidRequest(
                    "before: must be from 1970-01-01T00:00:00Z to before 3000-01-01T00:00:00Z",
                    field="before",
                )
            before_ms = int(before.timestamp() * 1000)
        limit = 1000 if body.limit is None else body.limit  # the body's Meta bounds it
        assert 1 <= limit <= MAX_CLEANUP_LIMIT
        done = await gw.engine.cleanup(
            before_ms=before_ms,
            limit=limit,
            tenant=None if identity.is_super_admin else identity.tenant,
            cursor=body.cursor,
        )
        return CleanupOut(
            deleted=done.deleted, before=rfc3339(before_ms) or "", limit=limit, cursor=done.cursor
        )
