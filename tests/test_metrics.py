"""``/metrics`` (spec 05): exact values after a scripted workload over HTTP, store gauges read
at scrape time (and left out, not failed, when the store is down), a bounded scrape with
10,000 queues, the deliverers' series, ``metricsPort``, and the Grafana dashboard's queries
against a real scrape."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.settings import Settings
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from codeq.sweeper import Sweeper
from deliverers.runner import Deliverer
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store, new_prefix
from tests.receivers import Reply, receiver
from tests.servers import RedisServer, free_port
from tests.test_api import PRODUCER, WORKER, auth, make_settings

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


#: The Prometheus text format's content type, exactly (one charset).
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """Family names with their types, and every sample of a scrape by (name, labels)."""
    families: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture(params=["redis", "embedded", "kvrocks"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "mx" + uuid.uuid4().hex[:10]
    store = make_store(request, request.param, prefix)
    app = create_app(make_settings(tmp_path, prefix), store=store, close_store=True)
    async with serve_in_process(app) as c:
        yield c


async def workload(c: ApiClient) -> None:
    """5 RENDER tasks (3 claimed: 2 completed, 1 failed), 1 EMAIL task nacked into the DLQ
    on its only attempt, one look at a task, one worker subscription."""
    ids = []
    for i in range(5):
        body = {"command": "RENDER", "payload": {"n": i}}
        r = await c.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    body = {"command": "Email", "payload": {}, "maxAttempts": 1}
    assert (await c.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))).status_code == 202
    for result in (
        {"status": "COMPLETED", "result": {"ok": 1}},
        {"status": "COMPLETED", "result": {"ok": 2}},
        {"status": "FAILED", "error": "boom"},
    ):
        claimed = await c.post(
            "/v1/codeq/tasks/claim", json={"commands": ["RENDER"]}, headers=auth(WORKER)
        )
        assert claimed.status_code == 200, claimed.text
        r = await c.post(
            f"/v1/codeq/tasks/{claimed.json()['id']}/result", json=result, headers=auth(WORKER)
        )
        assert r.status_code == 200, r.text
    claimed = await c.post(
        "/v1/codeq/tasks/claim", json={"commands": ["EMAIL"]}, headers=auth(WORKER)
    )
    r = await c.post(
        f"/v1/codeq/tasks/{claimed.json()['id']}/nack", json={"reason": "x"}, headers=auth(WORKER)
    )
    assert r.json()["status"] == "dlq"
    assert (await c.get(f"/v1/codeq/tasks/{ids[0]}", headers=auth(PRODUCER))).status_code == 200
    r = await c.post(
        "/v1/codeq/workers/subscriptions",
        json={"callbackUrl": "http://127.0.0.1:9/hook", "eventTypes": ["RENDER"]},
        headers=auth(WORKER),
    )
    assert r.status_code == 200, r.text


async def test_scrape_after_a_workload_has_exact_values(client: ApiClient) -> None:
    await workload(client)
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers.get_list("content-type") == [PROMETHEUS_TEXT]  # one header, one charset
    _, s = parse(r.text)
    assert value(s, "codeq_task_created_total", command="render") == 5
    assert value(s, "codeq_task_created_total", command="email") == 1
    assert value(s, "codeq_task_claimed_total", command="render") == 3
    assert value(s, "codeq_task_claimed_total", command="email") == 1
    assert value(s, "codeq_task_completed_total", command="render", status="COMPLETED") == 2
    assert value(s, "codeq_task_completed_total", command="render", status="FAILED") == 1
    assert value(s, "codeq_task_completed_total", command="email", status="FAILED") is None
    latency = "codeq_task_processing_latency_seconds_count"
    assert value(s, latency, command="render", status="COMPLETED") == 2
    assert value(s, latency, command="render", status="FAILED") == 1
    # store gauges, read at scrape time
    assert value(s, "codeq_queue_depth", command="render", queue="ready") == 2
    assert value(s, "codeq_queue_depth", command="render", queue="in_progress") == 0
    assert value(s, "codeq_queue_depth", command="render", queue="delayed") == 0
    assert value(s, "codeq_queue_depth", command="render", queue="dlq") == 0
    assert value(s, "codeq_queue_depth", command="email", queue="ready") == 0
    assert value(s, "codeq_queue_depth", command="email", queue="dlq") == 1
    assert value(s, "codeq_dlq_depth", command="email") == 1
    assert value(s, "codeq_dlq_depth", command="render") == 0
    assert value(s, "codeq_subscriptions_active") == 1
    assert value(s, "codeq_webhook_retry_scheduled") == 0
    assert value(s, "codeq_delivery_dlq_depth") == 0
    # HTTP durations by route template, hot path and Litestar routes alike
    http = "codeq_http_request_duration_seconds_count"
    assert value(s, http, method="POST", route="/v1/codeq/tasks", status="202") == 6
    assert value(s, http, method="POST", route="/v1/codeq/tasks/claim", status="200") == 4
    result_route = "/v1/codeq/tasks/{task_id}/result"
    assert value(s, http, method="POST", route=result_route, status="200") == 3
    nack_route = "/v1/codeq/tasks/{task_id}/nack"
    assert value(s, http, method="POST", route=nack_route, status="200") == 1
    assert value(s, http, method="GET", route="/v1/codeq/tasks/{task_id}", status="200") == 1
    routes = {dict(labels)["route"] for (name, labels) in s if name == http}
    assert not any(re.search(r"[0-9a-f]{8}-[0-9a-f]{4}", route) for route in routes), routes
    assert value(s, "codeq_metrics_scrape_errors_total") == 0


async def test_scrape_survives_a_store_outage(tmp_path: Path) -> None:
    server = RedisServer.start()
    prefix = new_prefix()
    store = RedisStore.from_url(server.url, KeySchema(prefix), connect_timeout=0.5)
    try:
        app = create_app(make_settings(tmp_path, prefix), store=store, close_store=True)
        async with serve_in_process(app) as c:
            r = await c.post(
                "/v1/codeq/tasks", json={"command": "A", "payload": 1}, headers=auth(PRODUCER)
            )
            assert r.status_code == 202
            families, s = parse((await c.get("/metrics")).text)
            assert value(s, "codeq_queue_depth", command="a", queue="ready") == 1
            server.stop()
            r = await c.get("/metrics")
            assert r.status_code == 200
            families, s = parse(r.text)
            assert "codeq_queue_depth" not in families  # left out, not made up
            assert value(s, "codeq_task_created_total", command="a") == 1
            assert value(s, "codeq_metrics_scrape_errors_total") == 1
            server.restart()  # empty: nothing was persisted

            async def back() -> bool:
                families, _ = parse((await c.get("/metrics")).text)
                return "codeq_queue_depth" in families

            await eventually(back, timeout=10)
    finally:
        server.close()


async def test_scrape_with_10000_queues_is_under_a_second(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = new_prefix()
    store = RedisStore.from_url(redis_server.url, KeySchema(prefix))
    app = create_app(make_settings(tmp_path, prefix), store=store, close_store=True)
    async with serve_in_process(app) as c:
        for start in range(0, 10_000, 1000):  # 1000 queues per script call
            made = await c.gw.engine.create_many(
                "acme",
                [NewTask(command=f"q{i:05d}", payload="1") for i in range(start, start + 1000)],
            )
            assert len(made) == 1000
        assert len(await store.client.hkeys(store.keys.partition(0).queues)) == 10_000
        started = time.perf_counter()
        r = await c.get("/metrics")
        elapsed = time.perf_counter() - started
        assert r.status_code == 200
        print(f"scrape with 10,000 queues: {elapsed * 1000:.0f} ms, {len(r.content)} bytes")
        assert elapsed < 1.0
        _, s = parse(r.text)
        ready = [v for (name, labels), v in s.items() if ("queue", "ready") in labels]
        assert len(ready) == 10_000 and set(ready) == {1.0}
        assert value(s, "codeq_dlq_depth", command="q09999") == 0


async def test_deliverer_counts_attempts_latency_and_expired_leases(
    redis_server: RedisServer,
) -> None:
    store = RedisStore.from_url(redis_server.url, KeySchema(new_prefix()))
    settings = Settings.from_mapping(
        {
            "webhookAllowedCidrs": ["127.0.0.0/8"],
            "webhookRetrySchedule": [0.1, 0.1],
            "webhookTimeoutSeconds": 2,
        }
    )
    engine = Engine(store, EngineConfig.from_settings(settings))
    d = Deliverer(store, settings, block_ms=100, scan_interval=0.05)
    sample = d.metrics.registry.get_sample_value
    await d.start()
    try:
        with receiver() as r:
            r.script = [Reply(500)]
            new = NewTask(command="Render", payload="1", webhook=r.url)
            t = (await engine.create("acme", new)).task
            claimed = await engine.claim("acme", "w1", ["render"])
            assert claimed is not None
            await engine.complete("acme", t.id, "w1", result="{}", lease_id=claimed.lease_id)

            async def succeeded() -> bool:
                labels = {"kind": "callback", "command": "render", "outcome": "succeeded"}
                return sample("codeq_webhook_deliveries_total", labels) == 1

            await eventually(succeeded, timeout=10)
            retry = {"kind": "callback", "command": "render", "outcome": "retry"}
            assert sample("codeq_webhook_deliveries_total", retry) == 1
            count = "codeq_webhook_delivery_latency_seconds_count"
            assert sample(count, {"kind": "callback"}) == 2
            assert r.count() == 2
        # a lease that runs out: the sweeper expires it, the deliverer counts its event
        await engine.create("acme", NewTask(command="Crunch", payload="1"))
        assert await engine.claim("acme", "w1", ["crunch"], lease_seconds=1) is not None
        sweeper = Sweeper(engine)

        async def expired() -> bool:
            await sweeper.run_once()
            return sample("codeq_lease_expired_total", {"command": "crunch"}) == 1

        await eventually(expired, timeout=10)
    finally:
        await d.stop()
        await store.close()


async def test_metrics_port_serves_the_same_scrape(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = new_prefix()
    port = free_port()
    store = RedisStore.from_url(redis_server.url, KeySchema(prefix))
    app = create_app(
        make_settings(tmp_path, prefix, metricsPort=port), store=store, close_store=True
    )
    async with serve_in_process(app) as c, httpx.AsyncClient() as direct:
        body = {"command": "A", "payload": 1}
        assert (
            await c.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))
        ).status_code == 202
        r = await direct.get(f"http://127.0.0.1:{port}/metrics")
        assert r.status_code == 200 and r.headers.get_list("content-type") == [PROMETHEUS_TEXT]
        _, s = parse(r.text)
        assert value(s, "codeq_task_created_total", command="a") == 1
        assert value(s, "codeq_queue_depth", command="a", queue="ready") == 1
        assert (await direct.get(f"http://127.0.0.1:{port}/other")).status_code == 404
        # the main port keeps /metrics too, with the same type
        main = await c.get("/metrics")
        assert main.status_code == 200 and main.headers.get_list("content-type") == [
            PROMETHEUS_TEXT
        ]


async def test_deliver_alone_serves_its_own_metrics_on_the_metrics_port(
    redis_server: RedisServer,
) -> None:
    port = free_port()
    store = RedisStore.from_url(redis_server.url, KeySchema(new_prefix()))
    settings = Settings.from_mapping({"metricsPort": port})
    d = Deliverer(store, settings, block_ms=100)
    await d.start()
    try:
        async with httpx.AsyncClient() as direct:
            r = await direct.get(f"http://127.0.0.1:{port}/metrics")
        assert r.status_code == 200
        families, _ = parse(r.text)
        assert {"codeq_webhook_deliveries", "codeq_lease_expired"} <= set(families)
    finally:
        await d.stop()
        await store.close()


def dashboard_metrics() -> set[str]:
    """Every series name the dashboard's queries use."""
    doc = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k in ("expr", "query") and isinstance(v, str):
                    exprs.append(v)
                else:
                    walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(doc)
    assert exprs, "the dashboard has no queries"
    return {m for e in exprs for m in re.findall(r"\bcodeq_[a-z_]+", e)}


async def test_dashboard_uses_only_series_a_scrape_has(client: ApiClient) -> None:
    await workload(client)
    families, samples = parse((await client.get("/metrics")).text)
    # a family without samples yet (no delivery in this process) still names its series
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    known = {name for name, _ in samples} | set(families)
    known |= {f + x for f, kind in families.items() for x in suffixes.get(kind, ())}
    used = dashboard_metrics()
    missing = sorted(m for m in used if m not in known)
    assert missing == [], f"the dashboard queries series no scrape has: {missing}"
    # and it shows the spec's series
    for series in (
        "codeq_task_created_total",
        "codeq_task_completed_total",
        "codeq_queue_depth",
        "codeq_dlq_depth",
        "codeq_webhook_deliveries_total",
        "codeq_rate_limit_hits_total",
        "codeq_http_request_duration_seconds_bucket",
        "codeq_consumer_group_lag",
    ):
        assert series in used, series


def test_every_series_is_documented_in_operations_md() -> None:
    """docs/operations.md lists every series the service exports: the in-process ones (the
    Metrics registry) and the store gauges rendered at scrape time."""
    import inspect

    from codeq.metrics import Metrics
    from gateway import metrics as gateway_metrics

    names = {
        family.name.removesuffix("_total")
        for family in Metrics().registry.collect()
        if family.name.startswith("codeq_")
    }
    names |= set(re.findall(r'"(codeq_[a-z_]+)', inspect.getsource(gateway_metrics)))
    documented = set(
        re.findall(
            r"`(codeq_[a-z_]+)`",
            (Path(__file__).parent.parent / "docs" / "operations.md").read_text(),
        )
    )
    documented = {d.removesuffix("_total") for d in documented}
    assert names, "no series found"
    assert sorted(names - documented) == []


def test_the_lock_free_counters_and_histograms_scrape_as_prometheus_clients_own() -> None:
    """codeq.metrics keeps counters and histograms as plain numbers (no lock per update); a
    scrape of them is what prometheus_client's own classes give for the same updates: names,
    help, types, labels, buckets (bounds included), counts, sums and `_created` series (their
    times masked), with and without labels."""
    import prometheus_client as pc
    from prometheus_client import CollectorRegistry, generate_latest

    from codeq import metrics as ours

    buckets = (0.001, 0.01, 0.5, 1, 30)
    texts = []
    for counter, histogram in ((pc.Counter, pc.Histogram), (ours.Counter, ours.Histogram)):
        r = CollectorRegistry(auto_describe=True)
        plain = counter("t_plain_total", "a counter without labels", registry=r)
        labelled = counter("t_labelled", "a counter with labels", ["a", "b"], registry=r)
        hist = histogram("t_seconds", "a histogram", ["k"], buckets=buckets, registry=r)
        bare = histogram("t_bare_seconds", "no labels", buckets=buckets, registry=r)
        unused = counter("t_unused_total", "labels never used", ["x"], registry=r)
        assert unused is not None
        plain.inc()
        plain.inc(2.5)
        labelled.labels("x", "y").inc()
        labelled.labels("x", "z").inc(3)
        labelled.labels("x", "y").inc()
        for v in (0.0, 0.001, 0.0010001, 0.2, 1, 29.9, 30, 31, 1e9):
            hist.labels("one").observe(v)
        hist.labels("two").observe(0.5)
        bare.observe(0.02)
        with pytest.raises(ValueError, match=r"(?i)label"):
            bare.labels()
        with pytest.raises(ValueError, match="non-negative"):
            labelled.labels("x", "y").inc(-1)
        with pytest.raises(ValueError, match=r"(?i)label"):
            labelled.labels("only-one")
        text = generate_latest(r).decode()
        texts.append(re.sub(r"(_created(\{[^}]*\})?) [0-9.e+]+\n", r"\1 T\n", text))
    assert texts[0] == texts[1], "\n".join(texts)
    assert 't_seconds_bucket{k="one",le="+Inf"} 9.0' in texts[1]
