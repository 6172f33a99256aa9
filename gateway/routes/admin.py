"""Admin routes (admin credentials): queues, queue stats, DLQ browse and requeue, cleanup."""

from __future__ import annotations

import time
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from codeq.errors import InvalidRequest
from gateway.openapi_errors import errors
from gateway.schemas import (
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
        cursor: FromQuery[str | None] = None,
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
    )
    async def requeue(
        self,
        request: AnyRequest,
        command: FromPath[str],
        data: JSONBody[RequeueBody],
    ) -> RequeueOut:
        gw = gateway_for(request)
        identity = await gw.admin(request)
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
    )
    async def cleanup(
        self,
        request: AnyRequest,
        data: JSONBody[CleanupBody | None] = None,
    ) -> CleanupOut:
        gw = gateway_for(request)
        identity = await gw.admin(request)
        await gw.rate.check("admin", "cleanup", identity.tenant, identity.subject)
        body = data or CleanupBody()
        before_ms = int(body.before.timestamp() * 1000) if body.before else int(time.time() * 1000)
        limit = 1000 if body.limit is None else body.limit
        if not 1 <= limit <= 100_000:
            raise InvalidRequest("limit: must be between 1 and 100000", field="limit")
        done = await gw.engine.cleanup(
            before_ms=before_ms,
            limit=limit,
            tenant=None if identity.is_super_admin else identity.tenant,
        )
        return CleanupOut(deleted=done.deleted, before=rfc3339(before_ms) or "", limit=limit)
