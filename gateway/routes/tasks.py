"""Task routes (spec 02): create, batch, claim (with long poll), heartbeat, abandon, nack,
result, get task, get result; and (issue 17) the tenant's task listing, a task's deliveries,
its history, and cancel."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import re
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, QueryParameter
from litestar.types import ASGIApp

from codeq.auth import Identity
from codeq.domain import (
    Artifact,
    CreateOutcome,
    ListStatus,
    Location,
    NewTask,
    Task,
    TaskFilter,
)
from codeq.engine import MAX_REASON
from codeq.errors import CodeQError, Conflict, Forbidden, InvalidRequest, NotFound, TooLarge
from codeq.ids import is_task_id
from codeq.listing import MAX_LIST_LIMIT, refuse_unknown
from codeq.store.keys import escape
from deliverers import records
from gateway.bodies import JsonAnswer, decode_body, documents, optional_body
from gateway.errors import validation_message
from gateway.middleware import header_of, release_in_flight
from gateway.openapi_errors import errors
from gateway.routes.deliveries import DeliveriesOut, DeliveryOut
from gateway.schemas import (
    MAX_DELAY_SECONDS,
    AbandonBody,
    BatchCreateBody,
    BatchCreateOut,
    BatchError,
    CancelBody,
    ClaimBody,
    CreateTaskBody,
    HeartbeatBody,
    HeartbeatOut,
    NackBody,
    NackOut,
    ResultBody,
    ResultOut,
    StatusOut,
    TaskEventOut,
    TaskHistoryOut,
    TaskListOut,
    TaskOut,
    TaskWithResultOut,
    rfc3339,
)
from gateway.state import Gateway, gateway_for, note

__all__ = ["TaskController", "decode_body", "documents", "optional_body"]

FALLBACK_RECHECK_SECONDS = 1.0
_ARTIFACT_NAME = re.compile(r"[^A-Za-z0-9._\-]")
MAX_ARTIFACT_FILE_NAME = 128
_encoder = msgspec.json.Encoder()
_JSON_SPACES = (b" ", b"\n", b"\r", b"\t")

AnyRequest = Request[Any, Any, State]


def json_text(raw: msgspec.Raw, field: str, max_bytes: int) -> str:
    """A JSON value the client sent, as compact JSON text, without building Python objects
    from it (the decoder checked it is JSON; ``format`` only drops the whitespace): decoding a
    megabyte of small values took 50 ms to seconds of the event loop; this takes a few."""
    text = bytes(raw)
    if any(space in text for space in _JSON_SPACES):  # the usual text is compact already
        text = msgspec.json.format(text, indent=-1)
    if len(text) > max_bytes:
        raise TooLarge(f"{field}: larger than {max_bytes} bytes")
    return text.decode()


def _new_task(gw: Gateway, body: CreateTaskBody, request: AnyRequest) -> NewTask:
    payload = json_text(body.payload, "payload", gw.settings.max_payload_bytes)
    if payload == "null":
        raise InvalidRequest("payload: must be a JSON value other than null", field="payload")
    run_at_ms = None
    if body.run_at is not None:
        run_at = body.run_at if body.run_at.tzinfo else body.run_at.replace(tzinfo=UTC)
        run_at_ms = int(run_at.timestamp() * 1000)
        # The same horizon as delaySeconds; before 1970 would be a negative score.
        if not 0 <= run_at_ms <= time.time_ns() // 1_000_000 + MAX_DELAY_SECONDS * 1000:
            raise InvalidRequest(
                "runAt: must be from 1970-01-01T00:00:00Z to at most 365 days from now",
                field="runAt",
            )
    return NewTask(
        command=body.command,
        payload=payload,
        priority=body.priority,
        max_attempts=body.max_attempts,
        webhook=body.webhook,
        idempotency_key=body.idempotency_key,
        run_at_ms=run_at_ms,
        delay_seconds=body.delay_seconds,
        # With tracing on, the current span (in the caller's trace, if it sent one).
        trace_parent=gw.tracing.traceparent() or header_of(request.scope, b"traceparent"),
        trace_state=header_of(request.scope, b"tracestate"),
    )


_create_decoder = msgspec.json.Decoder(CreateTaskBody)
_batch_decoder = msgspec.json.Decoder(BatchCreateBody)
_claim_decoder = msgspec.json.Decoder(ClaimBody | None)
_result_decoder = msgspec.json.Decoder(ResultBody)
_heartbeat_decoder = msgspec.json.Decoder(HeartbeatBody | None)
_abandon_decoder = msgspec.json.Decoder(AbandonBody | None)
_cancel_decoder = msgspec.json.Decoder(CancelBody | None)
_nack_decoder = msgspec.json.Decoder(NackBody | None)


def _json(body: msgspec.Struct, status: int, replayed: bool = False) -> JsonAnswer:
    """An answer encoded here, once, with msgspec and sent as it is (Litestar's own response
    path costs more than the whole store call on the hot routes)."""
    return JsonAnswer(_encoder.encode(body), status, _REPLAYED if replayed else ())


_REPLAYED = ((b"idempotent-replay", b"true"),)
#: served by the HTTP protocol itself (gateway.direct): the handler answers with a JsonAnswer
#: and uses only what gateway.direct.DirectRequest has of the request
DIRECT = {"direct": True}


def ok(model: type[Any], description: str) -> ResponseSpec:
    return ResponseSpec(data_container=model, description=description, generate_examples=False)


def _task_id(task_id: str) -> str:
    """A path's task id, checked before any use (the artifacts folder, the store, the log):
    anything but a task id is as unknown as a missing task."""
    if not is_task_id(task_id):
        raise NotFound(f"task {task_id[:64]!r} not found")
    return task_id


#: the query parameters of the task listing; any other is a 400 naming it
_LIST_PARAMS = frozenset(
    {"status", "command", "priority", "createdAfter", "createdBefore", "idempotencyKey"}
    | {"limit", "cursor"}
)
#: deliveries one task may show (a task causes one per terminal event and subscribed endpoint)
MAX_TASK_DELIVERIES = 1000


def _ms(at: datetime | None) -> int | None:
    if at is None:
        return None
    return int((at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp() * 1000)


def _allowed(identity: Identity, commands: list[str]) -> None:
    for command in commands:
        if not identity.allows_command(command):
            raise Forbidden(f"command {command[:128]!r} is not in the token's eventTypes")


class TaskController(Controller):
    path = "/v1/codeq/tasks"
    tags = ["tasks"]  # noqa: RUF012 - Litestar reads it as a class attribute

    @post(
        "/",
        status_code=202,
        summary="Create a task (producer)",
        responses={202: ok(TaskOut, "The task"), **errors(400, 409, 413, 429)},
        dependencies=documents(CreateTaskBody),
        opt=DIRECT,
    )
    async def create(self, request: AnyRequest) -> ASGIApp:
        gw = gateway_for(request)
        identity = await gw.producer(request)  # credentials before the body is looked at
        await gw.rate.check("producer", "create", identity.tenant, identity.subject)
        data = decode_body(await request.body(), _create_decoder)
        with gw.tracing.span("codeq.create", attributes={"codeq.command": data.command[:128]}):
            out = await gw.engine.create(identity.tenant, _new_task(gw, data, request))
        note(request, task_id=out.task.id)
        _created(gw, identity.tenant, out)
        return _json(TaskOut.of(out.task), 202, out.replayed)

    @post(
        "/batch",
        status_code=202,
        summary="Create up to 1000 tasks; each item stands alone (producer)",
        responses=errors(400, 413, 429),
        dependencies=documents(BatchCreateBody),
    )
    async def create_batch(self, request: AnyRequest) -> BatchCreateOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        data: BatchCreateBody = decode_body(await request.body(), _batch_decoder)
        await gw.rate.check("producer", "create_batch", identity.tenant, identity.subject)
        for index, raw in enumerate(data.tasks):
            if not bytes(raw).startswith(b"{"):
                raise InvalidRequest(f"tasks[{index}]: must be an object", field="tasks")
        errors_out: list[BatchError] = []
        items: list[tuple[int, NewTask]] = []
        for index, raw in enumerate(data.tasks):
            try:
                body = _create_decoder.decode(raw)  # as a create
                items.append((index, _new_task(gw, body, request)))
            except msgspec.ValidationError as exc:
                errors_out.append(
                    BatchError(
                        index=index, error=validation_message(str(exc)), code="invalid_request"
                    )
                )
            except CodeQError as exc:
                errors_out.append(BatchError(index=index, error=exc.message, code=exc.code))
        results = await gw.engine.create_many(identity.tenant, [t for _, t in items])
        tasks: list[TaskOut] = []
        for (index, _), result in zip(items, results, strict=True):
            if isinstance(result, CodeQError):
                errors_out.append(BatchError(index=index, error=result.message, code=result.code))
            else:
                tasks.append(TaskOut.of(result.task))
                _created(gw, identity.tenant, result)
        errors_out.sort(key=lambda e: e.index)
        return BatchCreateOut(tasks=tasks, errors=errors_out)

    @post(
        "/claim",
        status_code=200,
        summary="Claim a task, optionally waiting up to 30 s for one (worker, codeq:claim)",
        responses={
            200: ok(TaskOut, "The claimed task, with leaseId and leaseUntil"),
            204: ResponseSpec(data_container=None, description="Nothing became available"),
            **errors(400, 403, 413, 429),
        },
        dependencies=documents(ClaimBody),
        opt=DIRECT,
    )
    async def claim(self, request: AnyRequest) -> ASGIApp:
        gw = gateway_for(request)
        identity = await gw.worker(request, "codeq:claim")
        await gw.rate.check("worker", "claim", identity.tenant, identity.subject)
        body = await optional_body(request, _claim_decoder) or ClaimBody()
        commands = body.commands or [c for c in identity.event_types if c != "*"]
        if not commands:
            raise InvalidRequest(
                "commands: required when the token allows every command", field="commands"
            )
        _allowed(identity, commands)
        started_ns = time.time_ns()
        if body.wait_seconds > 0:
            task = await _long_poll(gw, request, identity, commands, body)
        else:
            task = await gw.engine.claim(
                identity.tenant, identity.subject, commands, lease_seconds=body.lease_seconds
            )
        if task is None:
            return JsonAnswer(b"", 204)
        note(request, task_id=task.id)
        if gw.tracing.enabled:  # the transition, in the task's trace (not the poller's)
            with gw.tracing.span(
                "codeq.claim",
                parent=task.trace_parent,
                start_time=started_ns,
                attributes={"codeq.task.id": task.id, "codeq.command": task.command},
            ):
                pass
        gw.metrics.claimed(task.command)
        return _json(TaskOut.of(task), 200)

    @post(
        "/{task_id:str}/heartbeat",
        status_code=200,
        summary="Extend the lease (lease holder, codeq:heartbeat)",
        responses={200: ok(HeartbeatOut, "The new lease"), **errors(400, 403, 404, 409, 413)},
        dependencies=documents(HeartbeatBody),
        opt=DIRECT,
    )
    async def heartbeat(self, request: AnyRequest, task_id: FromPath[str]) -> ASGIApp:
        gw = gateway_for(request)
        identity = await gw.worker(request, "codeq:heartbeat")
        body = await optional_body(request, _heartbeat_decoder) or HeartbeatBody()
        task = await gw.engine.heartbeat(
            identity.tenant,
            task_id,
            identity.subject,
            lease_id=body.lease_id,
            extend_seconds=body.extend_seconds,
        )
        return _json(HeartbeatOut(ok=True, lease_until=rfc3339(task.lease_until_ms)), 200)

    @post(
        "/{task_id:str}/abandon",
        status_code=200,
        summary="Give the task back now (lease holder, codeq:abandon)",
        responses={200: ok(StatusOut, "Requeued"), **errors(400, 403, 404, 409, 413)},
        dependencies=documents(AbandonBody),
        opt=DIRECT,
    )
    async def abandon(self, request: AnyRequest, task_id: FromPath[str]) -> ASGIApp:
        gw = gateway_for(request)
        identity = await gw.worker(request, "codeq:abandon")
        body = await optional_body(request, _abandon_decoder) or AbandonBody()
        await gw.engine.abandon(identity.tenant, task_id, identity.subject, lease_id=body.lease_id)
        return _json(StatusOut(status="requeued"), 200)

    @post(
        "/{task_id:str}/cancel",
        status_code=200,
        summary="Withdraw a pending task: it becomes CANCELLED (producer of its tenant)",
        description=(
            "Only a PENDING task (ready or delayed) can be cancelled: one a worker holds, or "
            "one that has ended, is a 409 `not_cancellable`. Cancelling a cancelled task answers "
            "it again. The task is kept like a finished one (taskRetentionSeconds), its "
            "`error` is the `reason` given, and its webhook and subscribed endpoints get "
            "`task.cancelled`."
        ),
        responses={200: ok(TaskOut, "The cancelled task"), **errors(400, 403, 404, 409, 413)},
        dependencies=documents(CancelBody),
    )
    async def cancel(self, request: AnyRequest, task_id: FromPath[str]) -> ASGIApp:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        body = await optional_body(request, _cancel_decoder) or CancelBody()  # 400 before 404
        note(request, task_id=_task_id(task_id))
        task = await gw.engine.cancel(identity.tenant, task_id, reason=body.reason)
        return _json(TaskOut.of(task), 200)

    @get(
        "/{task_id:str}/history",
        summary="What happened to a task, oldest first (producer or worker of its tenant)",
        responses=errors(400, 404),
    )
    async def task_history(self, request: AnyRequest, task_id: FromPath[str]) -> TaskHistoryOut:
        gw = gateway_for(request)
        identity = await gw.anyone(request)
        note(request, task_id=_task_id(task_id))
        events = await gw.engine.task_history(identity.tenant, task_id)
        return TaskHistoryOut(events=[TaskEventOut.of(e) for e in events])

    @post(
        "/{task_id:str}/nack",
        status_code=200,
        summary="Retry later with backoff, or dead-letter on the last attempt (codeq:nack)",
        responses={
            200: ok(NackOut, "Requeued or dead-lettered"),
            **errors(400, 403, 404, 409, 413),
        },
        dependencies=documents(NackBody),
        opt=DIRECT,
    )
    async def nack(self, request: AnyRequest, task_id: FromPath[str]) -> ASGIApp:
        gw = gateway_for(request)
        identity = await gw.worker(request, "codeq:nack")
        body = await optional_body(request, _nack_decoder) or NackBody()
        out = await gw.engine.nack(
            identity.tenant,
            task_id,
            identity.subject,
            lease_id=body.lease_id,
            delay_seconds=body.delay_seconds,
            reason=body.reason,
        )
        return _json(NackOut(status=out.status, delay_seconds=round(out.delay_seconds, 3)), 200)

    @post(
        "/{task_id:str}/result",
        status_code=200,
        summary="Finish the task: COMPLETED or FAILED (lease holder, codeq:result)",
        responses={200: ok(ResultOut, "The stored result"), **errors(400, 403, 404, 409, 413)},
        dependencies=documents(ResultBody),
        opt=DIRECT,
    )
    async def result(self, request: AnyRequest, task_id: FromPath[str]) -> ASGIApp:
        gw = gateway_for(request)
        identity = await gw.worker(request, "codeq:result")
        data: ResultBody = decode_body(await request.body(), _result_decoder)
        _task_id(task_id)  # 400 for the body first, then 404 (docs/api.md's check order)
        result_text: str | None = json_text(data.result, "result", gw.settings.max_payload_bytes)
        if result_text == "null":
            result_text = None
        elif result_text is not None and not result_text.startswith("{"):
            raise InvalidRequest("result: must be a JSON object", field="result")
        if data.status == "COMPLETED" and result_text is None:
            raise InvalidRequest("result: required (a JSON object) for COMPLETED", field="result")
        if data.status == "FAILED" and not data.error:
            raise InvalidRequest("error: required (non-empty) for FAILED", field="error")
        if data.error is not None and len(data.error) > MAX_REASON:
            raise InvalidRequest(f"error: at most {MAX_REASON} characters", field="error")
        # Artifact files are written under temporary names and renamed into place only once
        # the result is accepted: a refused submit (not the owner, a second result) never
        # touches files a previous, accepted result points at.
        staged: list[tuple[Path, Path]] = []
        span = {"codeq.task.id": task_id, "codeq.result.status": data.status}
        with gw.tracing.span("codeq.result", attributes=span):
            try:
                artifacts = await _store_artifacts(gw, identity.tenant, task_id, data, staged)
                if data.status == "COMPLETED":
                    out = await gw.engine.complete(
                        identity.tenant,
                        task_id,
                        identity.subject,
                        result=result_text or "{}",
                        lease_id=data.lease_id,
                        artifacts=artifacts,
                    )
                else:
                    out = await gw.engine.fail(
                        identity.tenant,
                        task_id,
                        identity.subject,
                        error=data.error or "",
                        lease_id=data.lease_id,
                        result=result_text,
                        artifacts=artifacts,
                    )
            except BaseException:
                if staged:
                    await asyncio.to_thread(_discard, staged)
                raise
        if staged:
            await asyncio.to_thread(_commit, staged)
        gw.metrics.completed(
            out.command,
            out.status.value,
            None if out.created_at_ms is None else (out.completed_at_ms - out.created_at_ms) / 1000,
        )
        return _json(ResultOut.of(out), 200)

    @get(
        "/",
        summary="The tenant's tasks, newest first, filtered, a page at a time",
        description=(
            "Every filter given must match. `status` DEAD: in the dead-letter queue (status "
            "FAILED, lastKnownLocation DLQ_SET); FAILED lists every failed task, dead or "
            "failed by its worker. Creation times: from `createdAfter` (inclusive) to "
            "`createdBefore` (exclusive). `idempotencyKey` finds the task its key names while "
            "the key is kept (idempotencyTtlSeconds). A page may hold fewer than `limit` tasks, "
            "even none, and still have a `nextCursor`: with `priority`, or `status` together "
            "with `command`, each partition looks at a bounded number of index entries per "
            "page. `nextCursor` null: there is nothing after this page. An unknown parameter, "
            "a bad value or a cursor given out for another tenant or other filters is a 400."
        ),
        responses={200: ok(TaskListOut, "A page of tasks"), **errors(400)},
    )
    async def list_tasks(
        self,
        request: AnyRequest,
        status: Annotated[ListStatus | None, QueryParameter()] = None,
        command: Annotated[str | None, QueryParameter(min_length=1, max_length=128)] = None,
        # Litestar leaves a bound of 0 out of the OpenAPI document: it is repeated for it
        priority: Annotated[
            int | None, QueryParameter(ge=0, le=9, schema_extra={"minimum": 0, "maximum": 9})
        ] = None,
        # named as in the query: Litestar's validation errors name the parameter
        createdAfter: Annotated[datetime | None, QueryParameter()] = None,
        createdBefore: Annotated[datetime | None, QueryParameter()] = None,
        idempotencyKey: Annotated[str | None, QueryParameter(min_length=1, max_length=256)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=MAX_LIST_LIMIT)] = 50,
        cursor: Annotated[str | None, QueryParameter(min_length=1, max_length=256)] = None,
    ) -> ASGIApp:
        gw = gateway_for(request)
        identity = await gw.anyone(request)
        refuse_unknown(request.query_params, _LIST_PARAMS)
        flt = TaskFilter(
            status=status,
            command=command,
            priority=priority,
            created_from_ms=_ms(createdAfter),
            created_before_ms=_ms(createdBefore),
            idempotency_key=idempotencyKey,
        )
        page = await gw.engine.list_tasks(identity.tenant, flt, limit=limit, cursor=cursor)
        out = TaskListOut(tasks=[TaskOut.of(t) for t in page.tasks], next_cursor=page.next_cursor)
        return _json(out, 200)

    @get(
        "/{task_id:str}/deliveries",
        summary="The webhooks a task caused, with their attempts",
        responses=errors(400, 404),
    )
    async def task_deliveries(self, request: AnyRequest, task_id: FromPath[str]) -> DeliveriesOut:
        gw = gateway_for(request)
        identity = await gw.anyone(request)
        note(request, task_id=_task_id(task_id))
        p = gw.store.keys.partition_of(task_id)
        raws = await gw.store.deliveries.of_task(
            p, identity.tenant, task_id, limit=MAX_TASK_DELIVERIES
        )
        if raws is None:
            raise NotFound(f"task {task_id} not found", task_id=task_id)
        found = []
        for raw in raws:
            try:
                found.append(records.decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue  # a record no reader can take is shown by the delivery DLQ routes
        found.sort(key=lambda d: (d.created_at, d.id))
        return DeliveriesOut(deliveries=[DeliveryOut.of(d) for d in found])

    @get(
        "/{task_id:str}",
        summary="A task (producer or worker of its tenant)",
        responses=errors(400, 404),
    )
    async def get_task(self, request: AnyRequest, task_id: FromPath[str]) -> TaskOut:
        gw = gateway_for(request)
        identity = await gw.anyone(request)
        note(request, task_id=_task_id(task_id))
        return TaskOut.of(await gw.engine.get_task(identity.tenant, task_id))

    @get(
        "/{task_id:str}/result",
        summary="A task with its result (404 until there is one)",
        responses=errors(400, 404),
    )
    async def get_result(self, request: AnyRequest, task_id: FromPath[str]) -> TaskWithResultOut:
        gw = gateway_for(request)
        identity = await gw.anyone(request)
        note(request, task_id=_task_id(task_id))
        task, result = await gw.engine.get_result(identity.tenant, task_id)
        return TaskWithResultOut(task=TaskOut.of(task), result=ResultOut.of(result))


def _created(gw: Gateway, tenant: str, out: CreateOutcome) -> None:
    """What a new task means for this process: one more created, and a poll waiting here for
    its command woken at once when it is ready now (not when its event comes back)."""
    if out.replayed:
        return
    gw.metrics.created(out.task.command)
    if out.task.last_known_location == Location.PENDING_LIST:
        gw.waker.on_created(tenant, out.task.command, out.task.id)


async def _wait_for_disconnect(request: AnyRequest) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _long_poll(
    gw: Gateway, request: AnyRequest, identity: Identity, commands: list[str], body: ClaimBody
) -> Task | None:
    """Claim, and while nothing is there wait for a ``task.ready`` of these commands (or the
    fallback re-check), until the deadline. A client that goes away stops the wait; a task
    claimed for a client that went away is given back at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + body.wait_seconds
    waiter = gw.waker.register(identity.tenant, commands)
    disconnected = asyncio.ensure_future(_wait_for_disconnect(request))
    release_in_flight(request.scope)  # parked, it costs nothing: not a request being worked on
    try:
        if gw.tail is not None:
            # The event tail follows only while somebody waits: make sure it reads from
            # before this poll's first claim. A store outage bounds this by the re-check.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    gw.tail.attach(first=gw.waker.waiting() == 1),
                    timeout=min(body.wait_seconds, FALLBACK_RECHECK_SECONDS),
                )
        while True:
            waiter.event.clear()  # cleared before the claim: a wake-up after it is not lost
            task = await gw.engine.claim(
                identity.tenant, identity.subject, commands, lease_seconds=body.lease_seconds
            )
            if task is not None:
                if waiter.event.is_set():  # a wake-up came while the claim ran: not ours
                    gw.waker.pass_on(waiter)
                if disconnected.done():
                    await gw.engine.abandon(
                        identity.tenant, task.id, identity.subject, lease_id=task.lease_id
                    )
                    return None
                return task
            remaining = deadline - loop.time()
            if remaining <= 0 or disconnected.done() or gw.waker.closed:
                return None
            woken = asyncio.ensure_future(waiter.event.wait())
            await asyncio.wait(
                {woken, disconnected},
                timeout=min(remaining, FALLBACK_RECHECK_SECONDS),
                return_when=asyncio.FIRST_COMPLETED,
            )
            woken.cancel()
    finally:
        gw.waker.unregister(waiter)
        disconnected.cancel()


def _artifact_name(raw: str, index: int) -> str:
    """A safe basename: no folders, no leading dots, only ``[A-Za-z0-9._-]``, at most 128."""
    name = _ARTIFACT_NAME.sub("_", raw.replace("\\", "/").rsplit("/", 1)[-1]).lstrip(".")
    return name[:MAX_ARTIFACT_FILE_NAME] or f"artifact-{index}"


def _folder_segment(text: str) -> str:
    """One folder name for a tenant or task id: escaped, and never ``.`` or ``..``."""
    segment = escape(text)
    if segment in ("", ".", ".."):  # escape() keeps dots; these would leave the folder
        return "".join(f"%{b:02X}" for b in text.encode()) or "%00"
    return segment


async def _store_artifacts(
    gw: Gateway, tenant: str, task_id: str, body: ResultBody, staged: list[tuple[Path, Path]]
) -> list[Artifact]:
    """Check every artifact, then write the inline ones (under temporary names, see
    :func:`_write`). Names are unique per result, compared after sanitising and ignoring case
    (``a/B.png`` and ``b.png`` are one file): a repeat is a 409, never an overwrite."""
    out: list[Artifact] = []
    contents: list[tuple[int, str, bytes]] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(body.artifacts):
        name = _artifact_name(item.name, i)
        first = seen.setdefault(name.lower(), i)
        if first != i:
            raise Conflict(
                f"artifacts[{i}].name: {name!r} is already the name of artifacts[{first}]",
                code="artifact_name_conflict",
            )
        if item.content_base64 is None:
            if not item.url:
                raise InvalidRequest(
                    f"artifacts[{i}]: needs a url or contentBase64", field=f"artifacts[{i}]"
                )
            out.append(Artifact(name=name, url=item.url, content_type=item.content_type))
            continue
        try:
            content = base64.b64decode(item.content_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(
                f"artifacts[{i}].contentBase64: not valid base64", field=f"artifacts[{i}]"
            ) from exc
        if len(content) > gw.settings.max_artifact_bytes:
            raise TooLarge(f"artifacts[{i}]: larger than {gw.settings.max_artifact_bytes} bytes")
        contents.append((len(out), name, content))
        out.append(Artifact(name=name, content_type=item.content_type))
    if not contents:
        return out
    segments = (_folder_segment(tenant), _folder_segment(_task_id(task_id)))
    for index, name, content in contents:
        temp, path = await asyncio.to_thread(
            _write, gw.settings.local_artifacts_dir, segments, name, content
        )
        staged.append((temp, path))
        out[index] = msgspec.structs.replace(out[index], url=path.as_uri(), size=len(content))
    return out


def _write(
    root_dir: str, segments: tuple[str, str], name: str, content: bytes
) -> tuple[Path, Path]:
    """Write ``root/tenant/task/name`` under a temporary name beside the final one; returns
    (temporary, final)."""
    root = Path(root_dir).resolve()
    folder = root.joinpath(*segments)
    if folder.parent.parent != root or not folder.resolve().is_relative_to(root):
        raise NotFound("task not found")  # unreachable by construction: the last guard
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{name}.{secrets.token_hex(8)}.partial"
    temp.write_bytes(content)
    return temp, folder / name


def _commit(staged: list[tuple[Path, Path]]) -> None:
    for temp, path in staged:
        temp.replace(path)


def _discard(staged: list[tuple[Path, Path]]) -> None:
    for temp, path in staged:
        with contextlib.suppress(OSError):
            temp.unlink()
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only when empty: a refused first submit leaves no folder
