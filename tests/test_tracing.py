"""Tracing (issue E): with an in-memory exporter, one task's create, claim, result and result
callback share one trace id, and the callback request carries it to the receiver; every route
has a server span named by its template that continues the caller's ``traceparent``."""

from __future__ import annotations

import asyncio
import uuid

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from codeq.client import AsyncCodeQClient
from codeq.settings import Settings
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from codeq.tracing import Tracing
from gateway.app import create_app
from tests.asgi import serve_in_process
from tests.receivers import receiver
from tests.servers import wait_for

TOKEN = "trace-token"


def trace_id(traceparent: str) -> str:
    version, trace, _span, _flags = traceparent.split("-")
    assert version == "00" and len(trace) == 32
    return trace


async def test_one_task_is_one_trace() -> None:
    exporter = InMemorySpanExporter()
    settings = Settings(webhook_hmac_secret="whsec_dHJhY2luZy10cmFjaW5nLXRyYWNpbmctdHJhY2luZw==")
    store = RedisStore.embedded(KeySchema("trace"))
    app = create_app(
        settings,
        store=store,
        run_deliverers=True,
        environ={"CODEQ_DEV_TOKEN": TOKEN},
        tracing=Tracing(settings, exporter=exporter),
    )
    assert app.state.direct is None  # with tracing on, the middleware serves every route
    with receiver() as hooks:
        # over HTTP through the gateway's protocol: the hot routes too get their spans
        async with (
            serve_in_process(app, http=True) as served,
            AsyncCodeQClient(str(served.base_url), token=TOKEN) as cq,
        ):
            task = await cq.create_task("TRACED", {"n": 1}, webhook=hooks.url)
            assert task.trace_parent is not None  # the create request's span
            claimed = await cq.claim(["TRACED"])
            assert claimed is not None and claimed.trace_parent == task.trace_parent
            await cq.heartbeat(claimed)
            await cq.complete(claimed, {"ok": True})
            # In a thread: the deliverer runs on this event loop.
            await asyncio.to_thread(
                wait_for, lambda: hooks.count() >= 1, timeout=10, message="no callback"
            )

    trace = trace_id(task.trace_parent)
    callback = hooks.received[0]
    assert trace_id(callback.headers["traceparent"]) == trace  # the receiver joins the trace

    spans = exporter.get_finished_spans()
    in_trace = {s.name for s in spans if f"{s.context.trace_id:032x}" == trace}
    for name in (
        "POST /v1/codeq/tasks",  # the create request
        "codeq.create",
        "codeq.claim",  # the claim transition (its request has the worker's own trace)
        "POST /v1/codeq/tasks/{task_id}/heartbeat",  # the SDK sends the task's traceparent
        "POST /v1/codeq/tasks/{task_id}/result",
        "codeq.result",
        "codeq.deliver",
    ):
        assert name in in_trace, f"{name} not in the task's trace: {sorted(in_trace)}"
    deliver = next(s for s in spans if s.name == "codeq.deliver")
    assert (
        deliver.attributes is not None and deliver.attributes["codeq.delivery.kind"] == "callback"
    )


async def test_tracing_off_costs_nothing_and_stores_the_callers_context() -> None:
    settings = Settings()
    tracing = Tracing(settings)
    assert tracing.enabled is False and tracing.traceparent() is None
    with tracing.span("x") as span:
        assert span is None
    store = RedisStore.embedded(KeySchema("notrace"))
    app = create_app(settings, store=store, environ={"CODEQ_DEV_TOKEN": TOKEN})
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with serve_in_process(app) as c:
        r = await c.post(
            "/v1/codeq/tasks",
            json={"command": "PLAIN", "payload": 1},
            headers={"Authorization": f"Bearer {TOKEN}", "traceparent": parent},
        )
        assert r.status_code == 202 and r.json()["traceParent"] == parent


async def test_every_route_has_a_server_span_in_the_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    settings = Settings()
    store = RedisStore.embedded(KeySchema("spans"))
    app = create_app(
        settings,
        store=store,
        environ={"CODEQ_DEV_TOKEN": TOKEN},
        tracing=Tracing(settings, exporter=exporter),
    )
    trace, caller = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    headers = {"Authorization": f"Bearer {TOKEN}", "traceparent": f"00-{trace}-{caller}-01"}
    async with serve_in_process(app) as c:
        created = await c.post(
            "/v1/codeq/tasks", json={"command": "SPANNED", "payload": 1}, headers=headers
        )
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]
        assert (await c.get(f"/v1/codeq/tasks/{task_id}", headers=headers)).status_code == 200
        missing = await c.get(f"/v1/codeq/tasks/{uuid.uuid4()}", headers=headers)
        assert missing.status_code == 404
        assert (await c.get("/v1/codeq/admin/queues", headers=headers)).status_code == 200
        assert (await c.get("/healthz")).status_code == 200  # no traceparent: a trace of its own
        assert (await c.get("/v1/codeq/nowhere", headers=headers)).status_code == 404

    server = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    seen = [
        (s.name, dict(s.attributes or {}), s.parent and f"{s.parent.span_id:016x}") for s in server
    ]
    get_task = "/v1/codeq/tasks/{task_id}"  # the template, never the id: bounded names
    expected = [
        ("POST", "/v1/codeq/tasks", 202, caller),  # one of the routes the hot path used to serve
        ("GET", get_task, 200, caller),
        ("GET", get_task, 404, caller),
        ("GET", "/v1/codeq/admin/queues", 200, caller),
        ("GET", "/healthz", 200, None),
        ("GET", "unmatched", 404, caller),  # what the router answers itself is a span too
    ]
    assert seen == [
        (
            f"{method} {route}",
            {
                "http.request.method": method,
                "http.route": route,
                "http.response.status_code": status,
            },
            parent,
        )
        for method, route, status, parent in expected
    ]
    for span in server[:4]:
        assert f"{span.context.trace_id:032x}" == trace
    assert f"{server[4].context.trace_id:032x}" != trace
    # What the handlers do happens inside the request's span.
    create = next(s for s in exporter.get_finished_spans() if s.name == "codeq.create")
    assert create.parent is not None and create.parent.span_id == server[0].context.span_id
