"""Rate limits (spec 04): token buckets in the store per scope + tenant + subject, 429 with
``Retry-After`` on the HTTP routes, put-off deliveries for the webhook scope, failing open
with a metric when the store cannot answer. Real Redis and the embedded store (plus the
cluster and KVRocks for the bucket itself)."""

from __future__ import annotations

import json
import math
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.metrics import Metrics
from codeq.rate_limits import RateGuard
from codeq.settings import RateLimit, RateLimits, Settings
from codeq.store.deliveries import DeliveryStore
from codeq.store.keys import KeySchema
from codeq.store.rate_limits import RateLimiter
from codeq.store.redis_store import RedisStore
from deliverers import records
from deliverers.runner import Deliverer
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store, new_prefix
from tests.receivers import receiver
from tests.servers import RedisServer
from tests.test_api import (
    ADMIN,
    OTHER_TENANT,
    PRODUCER,
    SUPER,
    WORKER,
    auth,
    make_settings,
    static,
)

PRODUCER_B = "producer-b-token"  # a second producer of tenant acme
BODY = {"command": "RENDER", "payload": {"n": 1}}


def limits(**scopes: tuple[int, int]) -> dict[str, Any]:
    return {
        "rateLimit": {
            scope: {"requestsPerMinute": rpm, "burstSize": burst}
            for scope, (rpm, burst) in scopes.items()
        }
    }


def settings_with(tmp: Path, prefix: str, **extra: Any) -> Settings:
    producers = {
        PRODUCER: {"sub": "prod-1", "tenantId": "acme"},
        PRODUCER_B: {"sub": "prod-b", "tenantId": "acme"},
        OTHER_TENANT: {"sub": "prod-1", "tenantId": "globex"},  # same subject, other tenant
        ADMIN: {"sub": "ops", "tenantId": "acme", "role": "ADMIN"},
        SUPER: {"sub": "root", "tenantId": "acme", "scope": "codeq:admin:all"},
    }
    return make_settings(tmp, prefix, producerAuthConfig=static(producers), **extra)


def closed_port() -> int:
    """A loopback port nobody listens on (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return None


@pytest.fixture(params=["redis", "embedded", "kvrocks"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def app_store(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    store = make_store(request, kind, "rl" + uuid.uuid4().hex[:10])
    yield store
    await store.close()


def serve(tmp: Path, store: RedisStore, **extra: Any) -> AbstractAsyncContextManager[ApiClient]:
    settings = settings_with(tmp, store.keys.prefix, **extra)
    return serve_in_process(create_app(settings, store=store, close_store=False))


async def delivered(store: RedisStore, delivery_id: str) -> records.Delivery:
    """The delivery's record once its attempt has been recorded as succeeded."""

    async def succeeded() -> records.Delivery | None:
        raw = await DeliveryStore(store).get(0, delivery_id)
        rec = None if raw is None else records.decode(raw)
        return rec if rec is not None and rec.status == "succeeded" else None

    found: records.Delivery = await eventually(succeeded)
    return found


# -- HTTP ---------------------------------------------------------------------------------


async def test_burst_then_429_with_retry_after(app_store: RedisStore, tmp_path: Path) -> None:
    async with serve(tmp_path, app_store, **limits(producer=(60, 3))) as c:
        for _ in range(3):
            r = await c.post("/v1/codeq/tasks", json=BODY, headers=auth(PRODUCER))
            assert r.status_code == 202, r.text
        r = await c.post("/v1/codeq/tasks", json=BODY, headers=auth(PRODUCER))
        assert r.status_code == 429, r.text
        assert r.headers["retry-after"] == "1"
        assert r.json() == {
            "error": "rate limit exceeded",
            "code": "rate_limited",
            "scope": "producer",
            "operation": "create",
            "retryAfterSeconds": 1,
        }
        # refused before anything was written: still three tasks
        stats = (await c.get("/v1/codeq/admin/queues/RENDER", headers=auth(ADMIN))).json()
        assert stats["ready"] == 3
        # the batch route draws on the same bucket (same scope, tenant and subject)
        r = await c.post("/v1/codeq/tasks/batch", json={"tasks": [BODY]}, headers=auth(PRODUCER))
        assert r.status_code == 429 and r.json()["operation"] == "create_batch"
        text = (await c.get("/metrics")).text
        assert (
            sample(text, "codeq_rate_limit_hits_total", scope="producer", operation="create") == 1
        )
        assert (
            sample(text, "codeq_rate_limit_hits_total", scope="producer", operation="create_batch")
            == 1
        )


async def test_claim_and_cleanup_have_their_scopes(app_store: RedisStore, tmp_path: Path) -> None:
    async with serve(tmp_path, app_store, **limits(worker=(1, 1), admin=(1, 1))) as c:
        claim = {"commands": ["RENDER"]}
        r = await c.post("/v1/codeq/tasks/claim", json=claim, headers=auth(WORKER))
        assert r.status_code == 204
        r = await c.post("/v1/codeq/tasks/claim", json=claim, headers=auth(WORKER))
        assert r.status_code == 429
        body = r.json()
        assert (body["scope"], body["operation"]) == ("worker", "claim")
        # one token a minute: the next one is close to a minute away
        assert 55 <= body["retryAfterSeconds"] <= 60
        assert r.headers["retry-after"] == str(body["retryAfterSeconds"])
        # the producer scope has no limit: creates are not touched by the worker's bucket
        for _ in range(5):
            assert (
                await c.post("/v1/codeq/tasks", json=BODY, headers=auth(PRODUCER))
            ).status_code == 202
        cleanup = {"before": "2000-01-01T00:00:00Z"}
        r = await c.post("/v1/codeq/admin/tasks/cleanup", json=cleanup, headers=auth(ADMIN))
        assert r.status_code == 200
        r = await c.post("/v1/codeq/admin/tasks/cleanup", json=cleanup, headers=auth(ADMIN))
        assert r.status_code == 429
        assert (r.json()["scope"], r.json()["operation"]) == ("admin", "cleanup")


async def test_tenants_and_subjects_have_their_own_buckets(
    app_store: RedisStore, tmp_path: Path
) -> None:
    async with serve(tmp_path, app_store, **limits(producer=(1, 1))) as c:

        async def status(token: str) -> int:
            r = await c.post("/v1/codeq/tasks", json=BODY, headers=auth(token))
            return r.status_code

        assert await status(PRODUCER) == 202
        assert await status(PRODUCER) == 429
        assert await status(OTHER_TENANT) == 202  # subject prod-1 too, but tenant globex
        assert await status(PRODUCER_B) == 202  # tenant acme, subject prod-b
        assert await status(OTHER_TENANT) == 429
        assert await status(PRODUCER_B) == 429
    # one bucket per (scope, tenant, subject), named by the subject and never by the token
    found = sorted(
        k.decode() for k in await app_store.client.keys(f"{app_store.keys.prefix}:{{rl:*")
    )
    assert found == sorted(
        app_store.keys.rate_limit("producer", tenant, subject)
        for tenant, subject in (("acme", "prod-1"), ("globex", "prod-1"), ("acme", "prod-b"))
    )
    assert not any("token" in k for k in found)


async def test_unlimited_scopes_never_touch_the_store(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """No limit configured: no rate-limit script runs at all (the hot routes stay at one
    script call each; tests/test_api_store.py counts them)."""
    store = RedisStore.from_url(redis_server.url, KeySchema(new_prefix()))
    # limits for the other scopes only: producer traffic must not look at a bucket
    async with serve(tmp_path, store, **limits(worker=(60, 5), admin=(60, 5))) as c:
        await c.post("/v1/codeq/tasks", json=BODY, headers=auth(PRODUCER))
        assert await store.client.keys(f"{store.keys.prefix}:{{rl:*") == []
        await c.post("/v1/codeq/tasks/claim", json={"commands": ["RENDER"]}, headers=auth(WORKER))
        assert len(await store.client.keys(f"{store.keys.prefix}:{{rl:*")) == 1
    await store.close()


async def test_store_down_fails_open_with_a_metric(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The buckets live on a store that refuses connections; the tasks' store is fine. Every
    create goes through (burst 1 would refuse the second) and each is counted as failed open."""
    store = RedisStore.from_url(redis_server.url, KeySchema(new_prefix()))
    gone = RedisStore.from_url(
        f"redis://127.0.0.1:{closed_port()}/0", KeySchema(store.keys.prefix), connect_timeout=0.5
    )
    settings = settings_with(tmp_path, store.keys.prefix, **limits(producer=(1, 1)))
    app = create_app(settings, store=store, close_store=True, rate_limiter=RateLimiter(gone))
    try:
        async with serve_in_process(app) as c:
            for _ in range(3):
                r = await c.post("/v1/codeq/tasks", json=BODY, headers=auth(PRODUCER))
                assert r.status_code == 202, r.text
            text = (await c.get("/metrics")).text
            assert sample(text, "codeq_rate_limit_fail_open_total", scope="producer") == 3
            assert (
                sample(text, "codeq_rate_limit_hits_total", scope="producer", operation="create")
                is None
            )
    finally:
        await gone.close()


async def test_guard_fails_open_when_its_server_stops() -> None:
    server = RedisServer.start()
    store = RedisStore.from_url(server.url, KeySchema(new_prefix()), connect_timeout=0.5)
    metrics = Metrics()
    guard = RateGuard(
        RateLimits(webhook=RateLimit(requests_per_minute=1, burst_size=1)),
        RateLimiter(store),
        metrics,
    )
    try:
        assert await guard.wait("webhook", "callback", "acme", "example.com") == 0.0
        assert await guard.wait("webhook", "callback", "acme", "example.com") > 50
        server.stop()
        assert await guard.wait("webhook", "callback", "acme", "example.com") == 0.0
        value = metrics.registry.get_sample_value
        assert value("codeq_rate_limit_fail_open_total", {"scope": "webhook"}) == 1
        assert (
            value("codeq_rate_limit_hits_total", {"scope": "webhook", "operation": "callback"}) == 1
        )
    finally:
        await store.close()
        server.close()


# -- the bucket ---------------------------------------------------------------------------


async def test_bucket_refills_by_server_time(store: RedisStore) -> None:
    limiter = RateLimiter(store)
    take = lambda: limiter.take(  # noqa: E731
        "worker", "acme", "w1", requests_per_minute=600, burst=1
    )  # one token every 100 ms
    first = await take()
    assert first.allowed and first.remaining == 0
    refused = await take()
    assert not refused.allowed and 0 < refused.retry_after_ms <= 100

    async def allowed_again() -> bool:
        return (await take()).allowed

    await eventually(allowed_again, timeout=5)
    key = store.keys.rate_limit("worker", "acme", "w1")
    # the state expires once a full bucket would be back: within a token's refill time
    ttl = await store.client.pttl(key)
    assert 0 < ttl <= 100


async def test_burst_is_the_capacity(store: RedisStore) -> None:
    limiter = RateLimiter(store)
    decisions = [
        await limiter.take("producer", "acme", "p", requests_per_minute=1, burst=5)
        for _ in range(7)
    ]
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 2
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    # one token a minute, none left: the next whole token is up to a minute away
    assert all(55_000 < d.retry_after_ms <= 60_000 for d in decisions[5:])


# -- webhooks -----------------------------------------------------------------------------


async def test_webhook_target_over_its_limit_is_put_off_without_an_attempt(
    app_store: RedisStore,
) -> None:
    """Two callbacks to one host with a bucket of one token every 3 s: the second waits for
    the token, is not counted as a failed attempt, and arrives once it is there."""
    s = Settings.from_mapping(
        {
            "webhookAllowedCidrs": ["127.0.0.0/8"],
            "webhookRetrySchedule": [0.2, 0.2],
            "webhookTimeoutSeconds": 2,
            **limits(webhook=(20, 1)),
        }
    )
    engine = Engine(app_store, EngineConfig.from_settings(s))
    d = Deliverer(app_store, s, block_ms=100, scan_interval=0.05)
    await d.start()
    try:
        with receiver() as r:
            for _ in range(2):
                t = (await engine.create("acme", NewTask(command="render", payload="1",
                                                         webhook=r.url))).task  # fmt: skip
                claimed = await engine.claim("acme", "w1", ["render"])
                assert claimed is not None and claimed.id == t.id
                await engine.complete("acme", t.id, "w1", result="{}", lease_id=claimed.lease_id)

            async def both() -> bool:
                return r.count() == 2

            await eventually(both, timeout=15)
            first, second = r.received
            assert first.headers["webhook-id"] != second.headers["webhook-id"]
            sent = []
            for got in (first, second):
                assert json.loads(got.body)["status"] == "COMPLETED"
                rec = await delivered(app_store, got.headers["webhook-id"])
                # put off is not an attempt: one attempt each, and one log entry
                assert rec.attempts == 1 and len(rec.log) == 1
                sent.append(rec.log[0].at)
            # the host's next token, 3 s after the first, on the wall clock the buckets keep (the
            # store's) and the attempts' times are read from; not on the receiver's monotonic
            # clock (this machine's wall clock has been seen to step by seconds against it)
            assert sent[1] - sent[0] >= 2500
        value = d.metrics.registry.get_sample_value
        hits = value("codeq_rate_limit_hits_total", {"scope": "webhook", "operation": "callback"})
        assert hits is not None and hits >= 1
        done = {"kind": "callback", "command": "render", "outcome": "succeeded"}
        assert value("codeq_webhook_deliveries_total", done) == 2
    finally:
        await d.stop()


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    from codeq.errors import RateLimited
    from gateway.errors import handle_codeq_error

    for retry_after, header in ((0.001, "1"), (0.999, "1"), (1.0, "1"), (1.2, "2"), (59.01, "60")):
        response = handle_codeq_error(
            None,  # type: ignore[arg-type]
            RateLimited("rate limit exceeded", retry_after=retry_after, scope="worker",
                        operation="claim"),
        )  # fmt: skip
        assert response.status_code == 429
        assert response.headers["Retry-After"] == header
        assert (
            response.content["retryAfterSeconds"] == int(header) == max(1, math.ceil(retry_after))
        )
