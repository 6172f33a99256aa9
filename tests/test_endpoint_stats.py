"""Endpoint statistics (issue 18 item 5): ``dlv_outcome`` counts every attempt to an endpoint
in a minute bucket and an hour bucket with a latency histogram (rings, so nothing grows), and
``GET /v1/codeq/webhooks/endpoints/{id}/stats`` sums the last hour and day and reads p50, p90
and p99 off the histogram; against a real receiver on loopback, on Redis, KVRocks and the
embedded store."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from codeq.store.deliveries import LATENCY_BUCKETS
from codeq.store.protocol import EndpointBuckets, StatsBucket
from codeq.store.redis_store import RedisStore
from deliverers.outcomes import endpoint_stats, latency_bound_ms, percentile, summarize
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store
from tests.receivers import Reply, receiver
from tests.test_api import ADMIN, OTHER_TENANT, PRODUCER, WORKER, auth, make_settings
from tests.test_delivery_search import Mix

BASE = "/v1/codeq/webhooks/endpoints"


def made_attempt(latency_ms: float, status_code: int | None = 200) -> bytes:
    """An attempt as the dispatcher records it: with the request it sent."""
    entry: dict[str, object] = {"at": 1, "latencyMs": latency_ms, "request": {"at": 1,
                                "headers": [["Host", "127.0.0.1"]]}}  # fmt: skip
    if status_code is not None:
        entry["statusCode"] = status_code
    return msgspec.json.encode(entry)


# -- the histogram --------------------------------------------------------------------------


def test_percentiles_come_from_the_histogram_within_a_bucket() -> None:
    hist = [0] * LATENCY_BUCKETS
    assert percentile(hist, 0.5) is None
    hist[0] = 1  # at most 1 ms
    assert percentile(hist, 0.5) == 1.0
    hist = [0] * LATENCY_BUCKETS
    hist[27] = 98  # (90.5, 107.6] ms
    hist[40] = 2  # (776, 1024] ms
    for q in (0.5, 0.9):
        p = percentile(hist, q)
        assert p is not None and latency_bound_ms(26) < p <= latency_bound_ms(27)
    p99 = percentile(hist, 0.99)
    assert p99 is not None and latency_bound_ms(39) < p99 <= latency_bound_ms(40)
    # each bucket is 2^(1/4) wider than the one before: a percentile is within 19 %
    assert math.isclose(latency_bound_ms(4), 2.0) and latency_bound_ms(1) / 1 < 1.19


def test_windows_sum_the_buckets_of_the_last_hour_and_day() -> None:
    now = 1_700_000_000_000
    minute, hour = now // 60_000, now // 3_600_000

    def bucket(epoch: int, ok: int, failed: int) -> StatsBucket:
        latency = [0] * LATENCY_BUCKETS
        latency[10] = ok + failed
        return StatsBucket(epoch=epoch, ok=ok, failed=failed, latency=tuple(latency))

    parts = [
        EndpointBuckets(
            minutes=(bucket(minute, 3, 1), bucket(minute - 59, 1, 0), bucket(minute - 60, 50, 50)),
            hours=(bucket(hour, 4, 1), bucket(hour - 23, 2, 0), bucket(hour - 24, 50, 50)),
        ),
        EndpointBuckets(minutes=(bucket(minute - 1, 0, 2),), hours=(bucket(hour - 1, 0, 2),)),
    ]
    stats = endpoint_stats(parts, now)
    assert (stats.last_hour.succeeded, stats.last_hour.failed) == (4, 3)
    assert (stats.last_day.succeeded, stats.last_day.failed) == (6, 3)
    assert stats.last_hour.success_rate == round(4 / 7, 4)
    empty = summarize([])
    assert (empty.attempts, empty.success_rate, empty.p50_ms) == (0, None, None)


# -- kept by dlv_outcome --------------------------------------------------------------------


@pytest.fixture(params=["redis", "embedded", "cluster", "kvrocks"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    s = make_store(request, request.param)
    yield s
    await s.close()


async def test_each_attempt_counts_once_in_its_buckets(store: RedisStore) -> None:
    mix = Mix(store)
    latencies = [0.5, 3.0, 40.0, 40.0, 900.0, 70_000.0]
    for n, latency in enumerate(latencies):
        d = await mix.add(endpoint="ep_1", partition=n % store.keys.partitions)
        outcome, code = ("succeeded", 200) if n % 2 else ("retry", 500)
        await store.deliveries.outcomes(
            n % store.keys.partitions, [(d.id, outcome, 60_000, made_attempt(latency, code))], 5
        )
    # not counted: an attempt to no endpoint, one given up without a request (no attempt
    # made), and a refused one counts as failed without a latency
    cb = await mix.add(partition=0)
    await store.deliveries.outcomes(0, [(cb.id, "succeeded", 0, made_attempt(1.0))], 5)
    gave_up = await mix.add(endpoint="ep_1", partition=0)
    given_up = msgspec.json.encode({"at": 1, "latencyMs": 0.0, "error": "endpoint deleted"})
    await store.deliveries.outcomes(0, [(gave_up.id, "dead", 0, given_up)], 5)
    refused = await mix.add(endpoint="ep_1", partition=0)
    await store.deliveries.outcomes(0, [(refused.id, "dead", 0, made_attempt(0.0, None))], 5)

    parts = [
        await store.deliveries.endpoint_buckets(p, "ep_1") for p in range(store.keys.partitions)
    ]
    assert [
        await store.deliveries.endpoint_buckets(p, "ep_2") for p in range(store.keys.partitions)
    ] == [EndpointBuckets()] * store.keys.partitions
    stats = endpoint_stats(parts, int(time.time() * 1000))
    for window in (stats.last_hour, stats.last_day):
        assert (window.attempts, window.succeeded, window.failed) == (7, 3, 4)
        hist_total = sum(sum(b.latency) for p in parts for b in p.minutes)
        assert hist_total == len(latencies)  # the refused attempt has no latency
        assert window.p50_ms is not None and latency_bound_ms(21) < window.p50_ms <= 40.0 * 1.19
        assert window.p99_ms == pytest.approx(latency_bound_ms(LATENCY_BUCKETS - 1), rel=0.2)
    # a minute field and an hour field per partition that saw an attempt (two, if the minute
    # turned during the test): slots of rings, never one field per attempt
    for p in range(store.keys.partitions):
        fields = {f.decode() for f in await store.client.hkeys(store.keys.delivery(p).stats)}
        assert fields and {f.rsplit("!", 2)[0] for f in fields} == {"ep_1"}
        assert {f.split("!")[1] for f in fields} == {"m", "h"} and len(fields) <= 4


# -- the route, against a real receiver -----------------------------------------------------


@pytest.fixture(params=["redis", "embedded", "kvrocks"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "est" + uuid.uuid4().hex[:10]
    store = make_store(request, request.param, prefix)
    settings = make_settings(
        tmp_path, prefix, webhookHmacSecret="global-secret", webhookRetrySchedule=[0.05] * 3,
    )  # fmt: skip
    app = create_app(settings, store=store, close_store=True, run_deliverers=True)
    async with serve_in_process(app) as c:
        yield c


async def run_task(api: ApiClient) -> None:
    r = await api.post("/v1/codeq/tasks", json={"command": "RENDER", "payload": {}},
                       headers=auth(PRODUCER))  # fmt: skip
    task_id = r.json()["id"]
    r = await api.post("/v1/codeq/tasks/claim", json={"commands": ["RENDER"]}, headers=auth(WORKER))
    r = await api.post(f"/v1/codeq/tasks/{task_id}/result",
                       json={"status": "COMPLETED", "result": {}, "leaseId": r.json()["leaseId"]},
                       headers=auth(WORKER))  # fmt: skip
    assert r.status_code == 200


async def test_stats_count_what_the_receiver_saw(api: ApiClient) -> None:
    with receiver() as r:
        r.script = [Reply(500), Reply(503), Reply(200, delay=0.05)]
        body = {"url": r.url, "eventTypes": ["task.completed"]}
        ep = (await api.post(BASE, json=body, headers=auth(PRODUCER))).json()
        empty = await api.get(f"{BASE}/{ep['id']}/stats", headers=auth(PRODUCER))
        assert empty.status_code == 200
        assert empty.json()["lastHour"] == {
            "attempts": 0, "succeeded": 0, "failed": 0, "successRate": None,
            "p50Ms": None, "p90Ms": None, "p99Ms": None,
        }  # fmt: skip
        for _ in range(3):
            await run_task(api)

        async def recorded() -> dict[str, object] | None:
            counts = (await api.get("/v1/codeq/deliveries/counts", headers=auth(PRODUCER))).json()
            if counts["counts"]["succeeded"] < 3:
                return None
            stats: dict[str, object] = (
                await api.get(f"{BASE}/{ep['id']}/stats", headers=auth(PRODUCER))
            ).json()
            return stats

        stats = await eventually(recorded, timeout=15)
        assert r.count() == 5  # two failed attempts, then three successes
        assert stats["endpointId"] == ep["id"]
        for key in ("lastHour", "lastDay"):
            window = stats[key]
            assert isinstance(window, dict)
            assert (window["attempts"], window["succeeded"], window["failed"]) == (5, 3, 2)
            assert window["successRate"] == 0.6
            assert 0 < window["p50Ms"] <= window["p90Ms"] <= window["p99Ms"]
            assert window["p99Ms"] >= 50 / 1.19  # the slow answer (50 ms) is the slowest
        # the endpoint's deliveries by status agree
        counts = (
            await api.get(f"/v1/codeq/deliveries/counts?endpointId={ep['id']}",
                          headers=auth(PRODUCER))
        ).json()  # fmt: skip
        assert counts["counts"]["succeeded"] == 3 and counts["total"] == 3


async def test_stats_of_another_tenants_or_an_unknown_endpoint_are_404(api: ApiClient) -> None:
    ep = (
        await api.post(BASE, json={"url": "http://127.0.0.1:9/x", "eventTypes": ["*"]},
                       headers=auth(PRODUCER))
    ).json()  # fmt: skip
    assert (await api.get(f"{BASE}/{ep['id']}/stats", headers=auth(ADMIN))).status_code == 200
    for token, endpoint in ((OTHER_TENANT, ep["id"]), (PRODUCER, "ep_unknown")):
        r = await api.get(f"{BASE}/{endpoint}/stats", headers=auth(token))
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert (await api.get(f"{BASE}/{ep['id']}/stats")).status_code == 401
