"""Replay jobs (issue 18 item 3): many deliveries attempted again by filter as one asynchronous
job the deliverers work through a page at a time, and what an endpoint missed (``recover``), on
Redis, the embedded store and KVRocks, with real receivers on loopback: the counts, each
delivery sent once, progress mid-way, two deliverers on one job, a dead deliverer's lease
running out, the filters, the 400s and 404s, and tenant isolation.

After each test :func:`check_delivery_index` checks the index and counters the steps move."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from codeq.auth.providers import DEV_TENANT
from codeq.client import CodeQClient
from codeq.settings import Settings
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from deliverers import jobs, records
from deliverers.runner import Deliverer
from deliverers.stopping import Stopping
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store
from tests.receivers import receiver
from tests.served import TOKEN, serve
from tests.servers import RedisServer
from tests.test_api import OTHER_TENANT, PRODUCER, auth, make_settings
from tests.test_delivery_search import check_delivery_index, settled

REPLAYS = "/v1/codeq/webhooks/replays"
ENDPOINTS = "/v1/codeq/webhooks/endpoints"
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOUR_MS = 3_600_000
NOWHERE = "http://127.0.0.1:9/hook"  # no deliverer sends in the tests that use it


def settings_of(tmp: Path, prefix: str) -> Settings:
    return make_settings(
        tmp,
        prefix,
        webhookHmacSecret=SECRET,
        webhookRetrySchedule=[0.2, 0.2],
        webhookTimeoutSeconds=5,
    )


@pytest.fixture(params=["redis", "embedded", "kvrocks"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "rpj" + uuid.uuid4().hex[:10]
    store = await settled(make_store(request, request.param, prefix, pool_size=64))
    app = create_app(settings_of(tmp_path, prefix), store=store, close_store=True)
    async with serve_in_process(app) as c:
        c.store = store  # type: ignore[attr-defined]
        c.settings = settings_of(tmp_path, prefix)  # type: ignore[attr-defined]
        yield c
        problems = await check_delivery_index(store)
        assert not problems, "delivery index broken:\n" + "\n".join(problems)


def store_of(api: ApiClient) -> RedisStore:
    s: RedisStore = api.store  # type: ignore[attr-defined]
    return s


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def now_ms() -> int:
    return int(time.time() * 1000)


async def make(
    store: RedisStore, n: int, *, url: str = NOWHERE, status: str = "dead", tenant: str = "acme",
    endpoint: str | None = None, event: str = "task.completed", at: int | None = None,
) -> list[str]:  # fmt: skip
    """``n`` deliveries made through the store's scripts, in ``status``, created at ``at``
    (default now) and a ms apart before it."""
    top = now_ms() if at is None else at
    ds = store.deliveries
    made: list[str] = []
    attempt = msgspec.json.encode({"at": 1, "latencyMs": 1.0, "statusCode": 500})
    outcome = {"dead": "dead", "gone": "gone", "succeeded": "succeeded"}[status]
    for start in range(0, n, 300):
        batch = [
            records.Delivery(
                id=f"msg_{uuid.uuid4().hex}",
                kind="endpoint" if endpoint else "callback",
                tenant=tenant,
                url=url,
                body=json.dumps({"i": i}),
                event_type=event,
                created_at=top - i,
                # quick retries: a connection the loaded receiver drops is attempted again
                schedule=[0.1, 0.2, 0.5, 1.0],
                endpoint_id=endpoint,
            )
            for i in range(start, min(n, start + 300))
        ]
        await ds.enqueue(0, "callbacks", [], 60_000, [(d.id, records.encode(d)) for d in batch])
        replies = await ds.outcomes(0, [(d.id, outcome, 0, attempt) for d in batch], 5)
        assert {r[0] for r in replies} == {status}
        made += [d.id for d in batch]
    return made


async def statuses(store: RedisStore, ids: list[str]) -> dict[str, str]:
    raws = await store.client.hmget(store.keys.delivery(0).records, ids)
    return {i: json.loads(r)["status"] for i, r in zip(ids, raws, strict=True)}


async def replays_of(store: RedisStore, ids: list[str]) -> Counter[int]:
    raws = await store.client.hmget(store.keys.delivery(0).records, ids)
    return Counter(int(json.loads(r).get("replays", 0)) for r in raws)


async def start(api: ApiClient, token: str = PRODUCER, **body: Any) -> dict[str, Any]:
    r = await api.post(REPLAYS, json=body, headers=auth(token))
    assert r.status_code == 202, r.text
    job: dict[str, Any] = r.json()
    return job


async def job_of(api: ApiClient, job_id: str, token: str = PRODUCER) -> dict[str, Any]:
    r = await api.get(f"{REPLAYS}/{job_id}", headers=auth(token))
    assert r.status_code == 200, r.text
    job: dict[str, Any] = r.json()
    return job


def runner(api: ApiClient, owner: str, **options: Any) -> jobs.ReplayJobs:
    store = store_of(api)
    return jobs.ReplayJobs(
        store.deliveries, store.keys.partitions, owner, stopping=Stopping(), **options
    )


async def endpoint(api: ApiClient, url: str = NOWHERE, token: str = PRODUCER) -> str:
    r = await api.post(ENDPOINTS, json={"url": url, "eventTypes": ["*"]}, headers=auth(token))
    assert r.status_code == 201, r.text
    eid: str = r.json()["id"]
    return eid


async def test_a_job_replays_1200_dead_deliveries_each_sent_once_by_two_deliverers(
    api: ApiClient,
) -> None:
    store = store_of(api)
    with receiver() as r:
        ids = await make(store, 1200, url=r.url)
        others = await make(store, 3, url=r.url, tenant="globex")
        done_before = await make(store, 4, url=r.url, status="succeeded")
        job = await start(api, createdAfter=iso(now_ms() - HOUR_MS))
        assert job["status"] == "queued" and job["replayed"] == 0 and job["kind"] == "replay"
        assert job["filter"]["statuses"] == ["dead"]
        sender = Deliverer(store, api.settings, block_ms=100, scan_interval=0.05)  # type: ignore[attr-defined]
        a, b = runner(api, "a", step=100, interval=0.02), runner(api, "b", step=100, interval=0.02)
        await sender.start()
        loops = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        try:

            async def finished() -> dict[str, Any] | None:
                got = await api.get(f"{REPLAYS}/{job['id']}", headers=auth(PRODUCER))
                if got.status_code == 503:  # the embedded store's pool, busy sending: later
                    return None
                assert got.status_code == 200, got.text
                j: dict[str, Any] = got.json()
                return j if j["status"] == "done" else None

            final = await eventually(finished, timeout=60, interval=0.2)
            assert final["replayed"] == 1200 and final["skipped"] == 0
            assert final["finishedAt"] and final["updatedAt"] >= final["createdAt"]

            async def all_sent() -> bool:
                c = await api.get("/v1/codeq/deliveries/counts", headers=auth(PRODUCER))
                return c.status_code == 200 and c.json()["counts"]["succeeded"] == 1204

            await eventually(all_sent, timeout=60, interval=0.2)
        finally:
            for stopper in (a, b):
                stopper._stopping.set()
            await asyncio.gather(*loops)
            await sender.stop()
        # every one replayed once and received, nothing else sent; a second arrival is only
        # ever a retry of the replayed delivery's own schedule (an answer slower than the
        # timeout from the loaded receiver: at least once), never a second replay
        assert await replays_of(store, ids) == Counter({1: 1200})
        sent = Counter(got.headers["webhook-id"] for got in r.received)
        assert set(sent) == set(ids)
        raws = await store.client.hmget(store.keys.delivery(0).records, ids)
        attempts = {i: json.loads(raw)["attempts"] for i, raw in zip(ids, raws, strict=True)}
        assert all(sent[i] <= attempts[i] - 1 for i in ids), "a delivery sent more than tried"
        assert set((await statuses(store, others)).values()) == {"dead"}
        assert await replays_of(store, done_before) == Counter({0: 4})


async def test_progress_is_visible_and_a_dead_deliverers_lease_runs_out(api: ApiClient) -> None:
    store = store_of(api)
    ids = await make(store, 1200)
    job = await start(api, createdAfter=iso(now_ms() - HOUR_MS))
    a = runner(api, "a", step=500, lease_ms=1500)
    b = runner(api, "b", step=500, lease_ms=300)
    assert await a.run_part(0, steps=1)  # a steps once, then dies holding its lease
    mid = await job_of(api, job["id"])
    assert (mid["status"], mid["replayed"], mid["skipped"]) == ("running", 500, 0)
    assert "finishedAt" not in mid
    assert not await b.run_part(0)  # a's lease still holds: nobody else takes the job
    stale = jobs.decode_part(await store.deliveries.job(0, job["id"]) or b"")
    assert stale.owner == "a"
    # b takes over once the lease runs out, steps once
    await eventually(lambda: b.run_part(0, steps=1), timeout=10)
    assert (await job_of(api, job["id"]))["replayed"] == 1000
    # a comes back with the page it read before it died: refused, nothing replayed twice
    page = await store.deliveries.search(0, stale.query(size=500, bound=2000))
    late = await store.deliveries.job_step(
        0, job["id"], "a", lease_ms=1500, cursor=stale.cursor, reached=page.reached,
        statuses=["dead"], ids=[msgspec.json.decode(x)["id"] for x in page.records],
    )  # fmt: skip
    assert (late.outcome, late.replayed) == ("LOST", 0)
    await eventually(lambda: b.run_part(0), timeout=10)
    final = await job_of(api, job["id"])
    assert (final["status"], final["replayed"], final["skipped"]) == ("done", 1200, 0)
    assert await replays_of(store, ids) == Counter({1: 1200})
    assert not await b.run_part(0)  # nothing left to run


async def test_filters_choose_by_endpoint_event_type_time_and_status(api: ApiClient) -> None:
    store = store_of(api)
    ep_a, ep_b = await endpoint(api), await endpoint(api)
    now = now_ms()
    of_a = await make(store, 10, endpoint=ep_a)
    of_b = await make(store, 10, endpoint=ep_b, event="task.failed")
    old = await make(store, 10, at=now - 2 * HOUR_MS)
    ok_a = await make(store, 5, endpoint=ep_a, status="succeeded")
    theirs = await make(store, 5, tenant="globex")
    run = runner(api, "a")

    async def replay(**body: Any) -> dict[str, Any]:
        job = await start(api, **body)
        assert await run.run_part(0)
        return await job_of(api, job["id"])

    hour_ago = iso(now - HOUR_MS)
    j = await replay(createdAfter=hour_ago, endpointId=ep_a)
    assert (j["status"], j["replayed"], j["filter"]["endpointId"]) == ("done", 10, ep_a)
    assert set((await statuses(store, of_a)).values()) == {"pending"}
    assert set((await statuses(store, of_b + old)).values()) == {"dead"}
    j = await replay(createdAfter=hour_ago, eventType="task.failed")
    assert (j["replayed"], j["filter"]["eventType"]) == (10, "task.failed")
    assert set((await statuses(store, of_b)).values()) == {"pending"}
    assert set((await statuses(store, old)).values()) == {"dead"}
    j = await replay(createdAfter=iso(now - 3 * HOUR_MS), createdBefore=hour_ago)
    assert j["replayed"] == 10 and set((await statuses(store, old)).values()) == {"pending"}
    # delivered ones are sent again only when asked for by status
    assert set((await statuses(store, ok_a)).values()) == {"succeeded"}
    j = await replay(createdAfter=hour_ago, endpointId=ep_a, status="succeeded")
    assert j["replayed"] == 5 and set((await statuses(store, ok_a)).values()) == {"pending"}
    assert set((await statuses(store, theirs)).values()) == {"dead"}  # another tenant's


async def test_recover_replays_what_an_endpoint_missed_since_a_time(api: ApiClient) -> None:
    store = store_of(api)
    eid = await endpoint(api)
    now = now_ms()
    before = await make(store, 3, endpoint=eid, at=now - 2 * HOUR_MS)
    dead = await make(store, 4, endpoint=eid)
    gone = await make(store, 2, endpoint=eid, status="gone")
    ok = await make(store, 2, endpoint=eid, status="succeeded")
    other = await make(store, 2, endpoint=await endpoint(api))
    r = await api.post(
        f"{ENDPOINTS}/{eid}/recover", json={"since": iso(now - HOUR_MS)}, headers=auth(PRODUCER)
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "recover" and job["filter"]["statuses"] == ["dead", "gone"]
    assert await runner(api, "a").run_part(0)
    final = await job_of(api, job["id"])
    assert (final["status"], final["replayed"]) == ("done", 6)
    got = await statuses(store, before + dead + gone + ok + other)
    assert [got[i] for i in dead + gone] == ["pending"] * 6
    assert {got[i] for i in before + other} == {"dead"} and {got[i] for i in ok} == {"succeeded"}
    e = (await api.get(f"{ENDPOINTS}/{eid}", headers=auth(PRODUCER))).json()
    assert e["enabled"] is True  # recover changes no endpoint
    r = await api.post(
        f"{ENDPOINTS}/{eid}/recover", json={"since": iso(now)}, headers=auth(OTHER_TENANT)
    )
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"createdAfter": "2026-01-01T00:00:00Z", "state": "dead"}, "state"),
        ({"status": "dead"}, "createdAfter"),  # unbounded
        ({"createdAfter": "2026-01-02T00:00:00Z", "createdBefore": "2026-01-01T00:00:00Z"},
         "createdBefore"),
        ({"createdAfter": "2026-01-01T00:00:00Z", "createdBefore": "2026-03-01T00:00:00Z"},
         "createdAfter"),  # wider than the retention
        ({"createdAfter": "2026-01-01T00:00:00Z", "status": "pending"}, "status"),
        ({"createdAfter": "yesterday"}, "createdAfter"),
        ({"createdAfter": "2026-01-01T00:00:00Z", "eventType": ""}, "eventType"),
    ],
)  # fmt: skip
async def test_bad_input_is_400_naming_the_field(
    api: ApiClient, body: dict[str, Any], field: str
) -> None:
    r = await api.post(REPLAYS, json=body, headers=auth(PRODUCER))
    assert r.status_code == 400, r.text
    assert field in r.json()["error"], r.json()
    assert (await api.get(REPLAYS, headers=auth(PRODUCER))).json() == {"jobs": []}


async def test_bad_recover_and_another_tenants_endpoint(api: ApiClient) -> None:
    eid = await endpoint(api)
    for body, field in (
        ({}, "since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00Z", "enable": True}, "enable"),
    ):
        r = await api.post(f"{ENDPOINTS}/{eid}/recover", json=body, headers=auth(PRODUCER))
        assert r.status_code == 400 and field in r.json()["error"], r.text
    theirs = await endpoint(api, token=OTHER_TENANT)
    body = {"createdAfter": iso(now_ms() - HOUR_MS), "endpointId": theirs}
    r = await api.post(REPLAYS, json=body, headers=auth(PRODUCER))
    assert r.status_code == 404, r.text
    r = await api.post(f"{ENDPOINTS}/{theirs}/recover", json={"since": body["createdAfter"]},
                       headers=auth(PRODUCER))  # fmt: skip
    assert r.status_code == 404
    assert (await api.get(REPLAYS, headers=auth(PRODUCER))).json() == {"jobs": []}


async def test_jobs_are_the_tenants_own_and_a_cancelled_one_never_runs(api: ApiClient) -> None:
    store = store_of(api)
    ids = await make(store, 5)
    first = await start(api, createdAfter=iso(now_ms() - HOUR_MS))
    second = await start(api, createdAfter=iso(now_ms() - HOUR_MS), status="gone")
    theirs = await start(api, OTHER_TENANT, createdAfter=iso(now_ms() - HOUR_MS))
    listed = (await api.get(REPLAYS, headers=auth(PRODUCER))).json()["jobs"]
    assert [j["id"] for j in listed] == [second["id"], first["id"]]  # newest first
    assert [
        j["id"] for j in (await api.get(REPLAYS, headers=auth(OTHER_TENANT))).json()["jobs"]
    ] == [theirs["id"]]
    for path in (f"{REPLAYS}/{first['id']}", f"{REPLAYS}/rpl_{'0' * 24}", f"{REPLAYS}/nope"):
        assert (await api.get(path, headers=auth(OTHER_TENANT))).status_code == 404
    # a cancelled job (the store's cancel: the route waits on the API's no-body POST list)
    assert await store.deliveries.cancel_job(0, first["id"], "globex") == "missing"
    assert await store.deliveries.cancel_job(0, first["id"], "acme") == "cancelled"
    cancelled = await job_of(api, first["id"])
    assert cancelled["status"] == "cancelled" and cancelled["finishedAt"]
    run = runner(api, "a")
    while await run.run_part(0):  # the others run; the cancelled one never does
        pass
    assert set((await statuses(store, ids)).values()) == {"dead"}
    assert (await job_of(api, first["id"]))["replayed"] == 0
    assert (await job_of(api, second["id"]))["status"] == "done"
    assert (await job_of(api, theirs["id"], OTHER_TENANT))["status"] == "done"


def test_the_cli_follows_a_replay_job_and_a_recovery_with_a_progress_bar(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """``codeq deliveries replay --since`` and ``codeq deliveries recover`` against a live
    gateway, while a deliverer's job loop (this process) works through the jobs."""
    prefix = f"rpcli{uuid.uuid4().hex[:8]}"
    env = {"REDIS_ADDR": f"127.0.0.1:{redis_server.port}", "KEY_PREFIX": prefix}
    cli_env = {**os.environ, "CODEQ_CONFIG_DIR": str(tmp_path)}
    with serve(env, command="gateway") as served, CodeQClient(served.base, token=TOKEN) as sdk:
        cli_env |= {"CODEQ_BASE_URL": served.base, "CODEQ_TOKEN": TOKEN}
        eid = sdk.create_endpoint(NOWHERE, ["task.completed"])["id"]

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "codeq.cli", "deliveries", *args],
                capture_output=True, text=True, env=cli_env, timeout=60, check=False,
            )  # fmt: skip

        async def scenario() -> tuple[subprocess.CompletedProcess[str], ...]:
            store = RedisStore.from_url(f"redis://127.0.0.1:{redis_server.port}", KeySchema(prefix))
            try:
                await make(store, 30, tenant=DEV_TENANT)
                await make(store, 7, tenant=DEV_TENANT, endpoint=eid)
                stop = Stopping()
                loop = jobs.ReplayJobs(store.deliveries, 1, "t", stopping=stop, step=10)
                running = asyncio.create_task(loop.run())
                try:
                    since = iso(now_ms() - HOUR_MS)
                    bad = await asyncio.to_thread(cli, "replay", "--status", "dead")
                    replay = await asyncio.to_thread(cli, "replay", "--since", since, "--json")
                    recover = await asyncio.to_thread(cli, "recover", eid, "--since", since)
                finally:
                    stop.set()
                    await running
                return bad, replay, recover
            finally:
                await store.close()

        bad, replay, recover = asyncio.run(scenario())
    assert bad.returncode != 0 and "--since" in bad.stderr
    assert replay.returncode == 0, replay.stderr
    job = json.loads(replay.stdout)
    assert (job["status"], job["replayed"], job["skipped"]) == ("done", 37, 0)
    assert "replaying" in replay.stderr and "37/37" in replay.stderr  # the bar's last state
    assert recover.returncode == 0, recover.stderr
    assert "recovering" in recover.stderr and "replayed 0" in recover.stdout  # none dead now


async def test_ended_jobs_are_pruned_with_the_deliveries_retention(api: ApiClient) -> None:
    """A job that ended (done or cancelled) goes in the sweeper's retention step, from its
    record, the tenant's listing and the ended index; a queued one stays."""
    store = store_of(api)
    await make(store, 3)
    since = iso(now_ms() - HOUR_MS)
    cancelled, done = await start(api, createdAfter=since), await start(api, createdAfter=since)
    assert await store.deliveries.cancel_job(0, cancelled["id"], "acme") == "cancelled"
    run = runner(api, "a")
    while await run.run_part(0):
        pass
    assert (await job_of(api, done["id"]))["status"] == "done"
    queued = await start(api, createdAfter=since, status="gone")

    async def listed() -> list[str]:
        return [j["id"] for j in (await api.get(REPLAYS, headers=auth(PRODUCER))).json()["jobs"]]

    assert set(await listed()) == {cancelled["id"], done["id"], queued["id"]}
    for p in range(store.keys.partitions):  # a week's retention: nothing has ended that long
        await store.deliveries.prune(
            p, token="t", lock_ms=10_000, limit=100, retention_ms=7 * 86_400_000
        )
    assert set(await listed()) == {cancelled["id"], done["id"], queued["id"]}
    for p in range(store.keys.partitions):
        reply = await store.deliveries.prune(
            p, token="t", lock_ms=10_000, limit=100, retention_ms=0
        )
        assert reply is not None and not reply.more
    assert await listed() == [queued["id"]]
    for gone in (cancelled, done):
        r = await api.get(f"{REPLAYS}/{gone['id']}", headers=auth(PRODUCER))
        assert r.status_code == 404
    for p in range(store.keys.partitions):
        jobs_key, _, _, ended = store.keys.replay_jobs(p)
        assert await store.client.zcard(ended) == 0
        assert set(await store.client.hkeys(jobs_key)) <= {queued["id"].encode(), queued["id"]}


async def test_jobs_that_ended_before_the_ended_index_are_indexed_then_pruned(
    api: ApiClient,
) -> None:
    """A part that ended under an earlier version is not in the ended index: the retention
    step indexes such parts first (bounded, by when they ended), then prunes them alike."""
    store = store_of(api)
    await make(store, 2)
    done = await start(api, createdAfter=iso(now_ms() - HOUR_MS))
    run = runner(api, "a")
    while await run.run_part(0):
        pass
    for p in range(store.keys.partitions):  # as an earlier version left the store
        await store.client.delete(store.keys.replay_jobs(p)[3])
        await store.client.hdel(store.keys.delivery(p).counts, "!!jobs_indexed")

    async def prune(retention_ms: int) -> None:
        for p in range(store.keys.partitions):
            while True:
                reply = await store.deliveries.prune(
                    p, token="t", lock_ms=10_000, limit=100, retention_ms=retention_ms
                )
                assert reply is not None
                if not reply.more:
                    break

    await prune(7 * 86_400_000)  # indexed, not yet old enough
    assert (await job_of(api, done["id"]))["status"] == "done"
    assert await store.client.zscore(store.keys.replay_jobs(0)[3], done["id"]) is not None
    await prune(0)
    assert (await api.get(f"{REPLAYS}/{done['id']}", headers=auth(PRODUCER))).status_code == 404
