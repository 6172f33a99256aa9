"""Finding deliveries (issue 18 item 4, issue 17 item 2): the tenant's deliveries a page at a
time from the listing index the delivery scripts keep (every backend: embedded, Redis, Redis
Cluster with 4 partitions, KVRocks), the counters by status, cursors bound to tenant and
filters, ``GET /v1/codeq/deliveries`` and ``/counts`` with their 400s, and what a delivery's JSON
shows of the request it sent, checked against what a real receiver on loopback got.

After each store test, :func:`check_delivery_index` checks that the index, the task index, the
counters and the retention set hold exactly what the records imply."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from codeq.client import AsyncCodeQClient, CodeQClient
from codeq.domain import TaskFilter
from codeq.errors import InvalidRequest
from codeq.ids import new_task_id
from codeq.listing import TaskLister
from codeq.store.keys import escape
from codeq.store.redis_store import RedisStore
from deliverers import records
from gateway.app import create_app
from gateway.routes.deliveries import MAX_BODY_SHOWN, DeliveryFilter, DeliveryLister, RequestOut
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store
from tests.receivers import Reply, receiver
from tests.served import TOKEN, serve
from tests.servers import RedisServer, free_port, wait_for
from tests.test_api import OTHER_TENANT, PRODUCER, WORKER, auth, make_settings

ACME, GLOBEX = "acme", "globex"
Status = records.DeliveryStatus
CODES = {"pending": "P", "retrying": "R", "succeeded": "S", "dead": "D", "gone": "G"}
LISTED = ("retrying", "dead", "gone")  # the statuses with members of their own
OUTCOME = {"retrying": "retry", "succeeded": "succeeded", "dead": "dead", "gone": "gone"}
T0 = 1_700_000_000_000  # creation times of the made deliveries start here (ms)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def check_delivery_index(store: RedisStore) -> list[str]:
    """The listing index, by_task, the counters and ``ended`` of every partition hold exactly
    what the records imply (dlv_lib.lua)."""
    problems: list[str] = []
    c = store.client
    for p in range(store.keys.partitions):
        k = store.keys.delivery(p)
        recs = {_s(a): json.loads(b) for a, b in (await c.hgetall(k.records)).items()}
        index = [_s(m) for m in await c.zrange(k.index, 0, -1)]
        by_task = {_s(m) for m in await c.zrange(k.by_task, 0, -1)}
        counts = {_s(a): int(b) for a, b in (await c.hgetall(k.counts)).items()}
        ended = {_s(m) for m in await c.zrange(k.ended, 0, -1)}
        due = {_s(m) for m in await c.zrange(k.due, 0, -1)}
        want: set[str] = set()
        want_tasks: set[str] = set()
        want_counts: Counter[str] = Counter()
        for did, rec in recs.items():
            status = rec.get("status", "pending")
            t, code = escape(rec["tenant"]), CODES[status]
            pos = f"{rec['createdAt']:013d}!{did}"
            want.add(f"{t}!a!{pos}")
            want_counts[f"{t}!s!{code}"] += 1
            if status in LISTED:
                want.add(f"{t}!s!{code}!{pos}")
            if rec.get("endpointId"):
                e = escape(rec["endpointId"])
                want.add(f"{t}!e!{e}!a!{pos}")
                want_counts[f"{t}!e!{e}!{code}"] += 1
                if status in LISTED:
                    want.add(f"{t}!e!{e}!{code}!{pos}")
            want.add(f"{t}!v!{escape(rec['eventType'])}!{pos}")
            if rec.get("taskId"):
                want_tasks.add(f"{rec['taskId']}!{pos}")
            is_ended = status in ("succeeded", "dead", "gone") and did not in due
            if is_ended != (did in ended):
                problems.append(f"{did} ({status}) in ended: {did in ended}")
        if len(index) != len(set(index)):
            problems.append(f"partition {p}: an index member twice")
        problems += [f"index lacks {m}" for m in sorted(want - set(index))]
        problems += [f"index holds {m}, which no record implies" for m in sorted(set(index) - want)]
        problems += [f"by_task lacks {m}" for m in sorted(want_tasks - by_task)]
        problems += [f"by_task holds {m}" for m in sorted(by_task - want_tasks)]
        kept = {f: n for f, n in counts.items() if not f.startswith("!!")}
        if kept != dict(want_counts):
            problems.append(f"partition {p}: counters {kept} != {dict(want_counts)}")
        problems += [f"ended holds {m}, which has no record" for m in sorted(ended - set(recs))]
    return problems


async def settled(store: RedisStore) -> RedisStore:
    """``store`` as the sweeper leaves it within a tick of the start: every partition marked
    as holding no record the index lacks (dlv_prune.lua), so the scripts apply each call's
    index changes together; the sweep lock released again."""
    for p in range(store.keys.partitions):
        reply = await store.deliveries.prune(
            p, token="settle", lock_ms=10_000, limit=10, retention_ms=10**12
        )
        assert reply is not None and not reply.more
        await store.client.delete(store.keys.delivery(p).lock)
    return store


@pytest.fixture
async def dstore(store: RedisStore) -> AsyncIterator[RedisStore]:
    """The conftest store (every backend), settled, with the delivery index checked after."""
    yield await settled(store)
    problems = await check_delivery_index(store)
    assert not problems, "delivery index broken:\n" + "\n".join(problems)


def attempt(status_code: int | None = 200, latency_ms: float = 5.0, **extra: Any) -> bytes:
    return msgspec.json.encode(
        {"at": 1, "latencyMs": latency_ms, "statusCode": status_code, **extra}
    )


@dataclass
class Mix:
    """Deliveries made through the store's scripts, and what each should be now."""

    store: RedisStore
    made: list[records.Delivery] = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    n: int = 0

    async def add(
        self,
        status: str = "pending",
        *,
        tenant: str = ACME,
        endpoint: str | None = None,
        event: str = "task.completed",
        task: str | None = None,
        partition: int | None = None,
    ) -> records.Delivery:
        self.n += 1
        p = self.n % self.store.keys.partitions if partition is None else partition
        d = records.Delivery(
            id=f"msg_{p}_{self.n:026x}",
            kind="endpoint" if endpoint else "callback",
            tenant=tenant,
            url="http://127.0.0.1:9/hook",
            body=f'{{"n":{self.n}}}',
            event_type=event,
            created_at=T0 + self.n * 10,
            schedule=[60.0, 60.0],
            task_id=task,
            endpoint_id=endpoint,
        )
        ds = self.store.deliveries
        assert await ds.enqueue(p, "callbacks", [], 60_000, [(d.id, records.encode(d))]) == [d.id]
        if status != "pending":
            replies = await ds.outcomes(p, [(d.id, OUTCOME[status], 60_000, attempt())], 5)
            assert replies[0][0] == status
        self.made.append(d)
        self.status[d.id] = status
        return d

    def want(self, keep: Callable[[records.Delivery], bool], tenant: str = ACME) -> list[str]:
        chosen = [d for d in self.made if d.tenant == tenant and keep(d)]
        return [d.id for d in sorted(chosen, key=lambda d: (d.created_at, d.id), reverse=True)]


async def make_mix(store: RedisStore) -> Mix:
    """Deliveries of acme in every status, of two endpoints and a callback, about two tasks
    and none, of three event types; and some of globex."""
    mix = Mix(store)
    tasks = [new_task_id(), new_task_id()]
    statuses = ["pending", "retrying", "succeeded", "dead", "gone"]
    for i in range(20):
        await mix.add(
            statuses[i % 5],
            endpoint=[None, "ep_a", "ep_b"][i % 3],
            event=["task.completed", "task.failed", "task.ready"][i % 4 % 3],
            task=[tasks[0], tasks[1], None][i % 3 if i % 7 else 2],
        )
    for i in range(4):
        await mix.add(statuses[i], tenant=GLOBEX, endpoint="ep_g", task=tasks[0])
    return mix


async def all_pages(
    lister: DeliveryLister, tenant: str, flt: DeliveryFilter, limit: int
) -> tuple[list[str], int]:
    out: list[str] = []
    cursor: str | None = None
    for pages in range(1, 1000):
        found, cursor = await lister.page(tenant, flt, limit=limit, cursor=cursor)
        assert len(found) <= limit
        out += [d.id for d in found]
        if cursor is None:
            return out, pages
    raise AssertionError("the cursor never ended")


def lister_of(store: RedisStore, scan_bound: int = 2000) -> DeliveryLister:
    return DeliveryLister(
        store.deliveries, store.keys.partitions, cursor_key=b"test key", scan_bound=scan_bound
    )


async def test_pages_list_every_delivery_of_the_tenant_newest_first(dstore: RedisStore) -> None:
    mix = await make_mix(dstore)
    lister = lister_of(dstore)
    for limit in (1, 3, 50):
        got, _ = await all_pages(lister, ACME, DeliveryFilter(), limit)
        assert got == mix.want(lambda d: True), limit
    got, _ = await all_pages(lister, GLOBEX, DeliveryFilter(), 2)
    assert got == mix.want(lambda d: True, tenant=GLOBEX)
    found, _ = await lister.page(ACME, DeliveryFilter(), limit=1, cursor=None)
    raw = await dstore.deliveries.get(int(found[0].id.split("_")[1]), found[0].id)
    assert raw is not None and found[0] == records.decode(raw)  # the whole record


async def test_each_filter_lists_exactly_its_deliveries(dstore: RedisStore) -> None:
    mix = await make_mix(dstore)
    lister = lister_of(dstore)
    task = next(d.task_id for d in mix.made if d.task_id)
    times = sorted(d.created_at for d in mix.made)
    mid = times[len(times) // 2]
    cases: list[tuple[DeliveryFilter, Callable[[records.Delivery], bool]]] = [
        (DeliveryFilter(endpoint_id="ep_a"), lambda d: d.endpoint_id == "ep_a"),
        (DeliveryFilter(event_type="task.failed"), lambda d: d.event_type == "task.failed"),
        (DeliveryFilter(task_id=task), lambda d: d.task_id == task),
        (DeliveryFilter(endpoint_id="ep_none"), lambda d: False),
        (DeliveryFilter(event_type="task.none"), lambda d: False),
        (DeliveryFilter(task_id=new_task_id()), lambda d: False),
        (DeliveryFilter(created_from_ms=mid), lambda d: d.created_at >= mid),
        (DeliveryFilter(created_before_ms=mid), lambda d: d.created_at < mid),
        (
            DeliveryFilter(endpoint_id="ep_b", event_type="task.completed", created_from_ms=mid),
            lambda d: (
                d.endpoint_id == "ep_b" and d.event_type == "task.completed" and d.created_at >= mid
            ),
        ),
    ]
    for status in Status:
        cases += [
            (DeliveryFilter(status=status), lambda d, s=status: mix.status[d.id] == s),
            (
                DeliveryFilter(status=status, endpoint_id="ep_a"),
                lambda d, s=status: mix.status[d.id] == s and d.endpoint_id == "ep_a",
            ),
            (
                DeliveryFilter(status=status, event_type="task.completed"),
                lambda d, s=status: mix.status[d.id] == s and d.event_type == "task.completed",
            ),
            (
                DeliveryFilter(status=status, task_id=task),
                lambda d, s=status: mix.status[d.id] == s and d.task_id == task,
            ),
        ]
    for flt, keep in cases:
        want = mix.want(keep)
        got, _ = await all_pages(lister, ACME, flt, 2)
        assert got == want, flt
    # globex's deliveries of the same task and filters never show
    got, _ = await all_pages(lister, GLOBEX, DeliveryFilter(task_id=task), 10)
    assert got == mix.want(lambda d: d.task_id == task, tenant=GLOBEX)


async def test_a_combination_no_index_holds_is_bounded_and_complete(dstore: RedisStore) -> None:
    """Event type with a status that is not `succeeded` reads the status's range and checks the
    type on the records: each page looks at a bounded number of entries and says where to go
    on; following the cursors still finds every match, in order."""
    mix = await make_mix(dstore)
    for _ in range(12):
        await mix.add("dead", event="task.ready")
    await mix.add("dead", event="worker.notification")
    lister = lister_of(dstore, scan_bound=3)
    flt = DeliveryFilter(status=Status.DEAD, event_type="worker.notification")
    got, pages = await all_pages(lister, ACME, flt, 10)
    assert got == mix.want(lambda d: d.event_type == "worker.notification")
    assert pages >= 16 // (3 * dstore.keys.partitions)


async def test_counts_are_counters_that_follow_every_change(dstore: RedisStore) -> None:
    mix = await make_mix(dstore)
    ds = dstore.deliveries
    parts = range(dstore.keys.partitions)

    async def counts(tenant: str, endpoint: str | None = None) -> dict[str, int]:
        total: Counter[str] = Counter()
        for p in parts:
            total.update(await ds.counts(p, tenant, endpoint_id=endpoint))
        return {s.value: total[s.value] for s in Status}

    def truth(tenant: str, endpoint: str | None = None) -> dict[str, int]:
        got = Counter(
            mix.status[d.id]
            for d in mix.made
            if d.tenant == tenant and (endpoint is None or d.endpoint_id == endpoint)
        )
        return {s.value: got[s.value] for s in Status}

    for tenant, endpoint in [(ACME, None), (ACME, "ep_a"), (GLOBEX, None), (GLOBEX, "ep_a")]:
        assert await counts(tenant, endpoint) == truth(tenant, endpoint)
    assert sum((await counts(ACME)).values()) == 20
    # a replay moves dead (and named succeeded) ones to pending; an outcome moves them on
    for d in mix.made:
        if d.tenant == ACME and mix.status[d.id] in ("dead", "succeeded"):
            p = int(d.id.split("_")[1])
            assert await ds.replay(p, tenant=ACME, ids=[d.id]) == [d.id]
            mix.status[d.id] = "pending"
    first = next(d for d in mix.made if d.endpoint_id == "ep_a" and mix.status[d.id] == "pending")
    p = int(first.id.split("_")[1])
    ((status, _),) = await ds.outcomes(p, [(first.id, "gone", 0, attempt(410))], 5)
    assert status == "gone"
    mix.status[first.id] = "gone"
    for tenant, endpoint in [(ACME, None), (ACME, "ep_a"), (ACME, "ep_b")]:
        assert await counts(tenant, endpoint) == truth(tenant, endpoint)


async def test_segments_are_escaped_as_key_segments(dstore: RedisStore) -> None:
    """The scripts escape tenants, endpoints and event types byte for byte as
    codeq.store.keys.escape does (the listing asks for ranges with Python's escape); a tenant
    whose name starts like another's never sees the other's deliveries."""
    mix = Mix(dstore)
    odd_tenant, odd_endpoint, odd_type = "a!b/ç %{x}", "ep/1!é", "task.x!y"
    mine = await mix.add("dead", tenant=odd_tenant, endpoint=odd_endpoint, event=odd_type)
    theirs = await mix.add("dead", tenant="a", endpoint=odd_endpoint, event=odd_type)
    p = int(mine.id.split("_")[1])
    members = [_s(m) for m in await dstore.client.zrange(dstore.keys.delivery(p).index, 0, -1)]
    assert f"{escape(odd_tenant)}!e!{escape(odd_endpoint)}!D!{T0 + 10:013d}!{mine.id}" in members
    lister = lister_of(dstore)
    for flt in (
        DeliveryFilter(),
        DeliveryFilter(endpoint_id=odd_endpoint),
        DeliveryFilter(event_type=odd_type),
        DeliveryFilter(status=Status.DEAD, event_type=odd_type),
    ):
        assert (await all_pages(lister, odd_tenant, flt, 5))[0] == [mine.id], flt
        assert (await all_pages(lister, "a", flt, 5))[0] == [theirs.id], flt
    assert (await all_pages(lister, "a!b", DeliveryFilter(), 5))[0] == []


async def test_cursors_are_bound_to_tenant_filters_and_listing(dstore: RedisStore) -> None:
    await make_mix(dstore)
    lister = lister_of(dstore)
    flt = DeliveryFilter(status=Status.PENDING)
    _, cursor = await lister.page(ACME, flt, limit=1, cursor=None)
    assert cursor is not None
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    tampered = base64.urlsafe_b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode().rstrip("=")
    tasks = TaskLister(dstore, cursor_key=b"test key")
    task_cursor = tasks.encode_cursor(ACME, TaskFilter(), f"{T0:013d}!{new_task_id()}")
    for tenant, f, c in [
        (GLOBEX, flt, cursor),  # another tenant's
        (ACME, DeliveryFilter(status=Status.DEAD), cursor),  # other filters
        (ACME, flt, tampered),
        (ACME, flt, "x" * 40),
        (ACME, flt, "%%%"),
        (ACME, DeliveryFilter(), task_cursor),  # the task listing's, same key
    ]:
        with pytest.raises(InvalidRequest) as err:
            await lister.page(tenant, f, limit=1, cursor=c)
        assert err.value.field == "cursor"


async def test_a_forged_cursor_never_reaches_another_tenant(dstore: RedisStore) -> None:
    """Even one tagged with the right key (a deployment without a secret): every range a page
    reads starts with the caller's tenant, and a task's range is checked record by record."""
    mix = await make_mix(dstore)
    lister = lister_of(dstore)
    task = next(d.task_id for d in mix.made if d.task_id)
    for flt in (DeliveryFilter(), DeliveryFilter(task_id=task)):
        cursor = lister.cursors.encode(ACME, flt, "9" * 13 + "!msg_" + "z" * 10)
        got, _ = await lister.page(ACME, flt, limit=500, cursor=cursor)
        assert got and {d.tenant for d in got} == {ACME}


# -- HTTP -------------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "embedded"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "dls" + uuid.uuid4().hex[:10]
    store = make_store(request, request.param, prefix)
    app = create_app(make_settings(tmp_path, prefix), store=store, close_store=True)
    async with serve_in_process(app) as c:
        c.store = store  # type: ignore[attr-defined]
        yield c


async def _list(c: httpx.AsyncClient, token: str = PRODUCER, **params: Any) -> httpx.Response:
    return await c.get("/v1/codeq/deliveries", params=params, headers=auth(token))


async def test_http_listing_pages_filters_and_counts(client: ApiClient) -> None:
    store: RedisStore = client.store  # type: ignore[attr-defined]
    mix = await make_mix(store)
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        r = await _list(client, **params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"deliveries", "nextCursor"}
        seen += body["deliveries"]
        if body["nextCursor"] is None:
            break
        params["cursor"] = body["nextCursor"]
    assert [d["id"] for d in seen] == mix.want(lambda d: True)
    # each with its attempts and the request its last attempt sent (none was: made by hand)
    one = (await client.get(f"/v1/codeq/deliveries/{seen[0]['id']}", headers=auth(PRODUCER))).json()
    assert seen[0] == one
    retrying = mix.want(lambda d: mix.status[d.id] == "retrying" and d.endpoint_id == "ep_a")
    r = await _list(client, WORKER, status="retrying", endpointId="ep_a")
    assert [d["id"] for d in r.json()["deliveries"]] == retrying
    assert all(len(d["attemptLog"]) == 1 for d in r.json()["deliveries"])
    r = await client.get("/v1/codeq/deliveries/counts", headers=auth(PRODUCER))
    assert r.json() == {
        "counts": {"pending": 4, "retrying": 4, "succeeded": 4, "dead": 4, "gone": 4},
        "total": 20,
    }
    r = await client.get("/v1/codeq/deliveries/counts?endpointId=ep_g", headers=auth(OTHER_TENANT))
    assert r.json()["total"] == 4 and r.json()["endpointId"] == "ep_g"
    r = await client.get("/v1/codeq/deliveries/counts?endpointId=ep_g", headers=auth(PRODUCER))
    assert r.json()["total"] == 0  # globex's endpoint: nothing of acme's
    assert [d["id"] for d in (await _list(client, OTHER_TENANT)).json()["deliveries"]] == (
        mix.want(lambda d: True, tenant=GLOBEX)
    )


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=dead", "state"),
        ("endpoint=ep_a", "endpoint"),
        ("status=failed", "status"),
        ("status=DEAD", "status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("createdAfter=yesterday", "createdAfter"),
        ("createdAfter=2026-01-02T00:00:00Z&createdBefore=2026-01-01T00:00:00Z", "createdBefore"),
        ("createdAfter=1900-01-01T00:00:00Z", "createdAfter"),
        ("taskId=not-a-task", "taskId"),
        ("endpointId=", "endpointId"),
        ("cursor=Zm9yZ2VkLWN1cnNvci12YWx1ZQ", "cursor"),
    ],
)
async def test_http_bad_input_is_400_naming_the_field(
    client: ApiClient, query: str, field: str
) -> None:
    r = await client.get(f"/v1/codeq/deliveries?{query}", headers=auth(PRODUCER))
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error", "code"} and field in body["error"], body


async def test_http_counts_refuse_unknown_parameters(client: ApiClient) -> None:
    r = await client.get("/v1/codeq/deliveries/counts?status=dead", headers=auth(PRODUCER))
    assert r.status_code == 400 and "status" in r.json()["error"]


async def test_http_another_tenants_cursor_is_400(client: ApiClient) -> None:
    await make_mix(client.store)  # type: ignore[attr-defined]
    cursor = (await _list(client, limit=1)).json()["nextCursor"]
    assert cursor
    r = await _list(client, OTHER_TENANT, limit=1, cursor=cursor)
    assert r.status_code == 400 and "cursor" in r.json()["error"]
    r = await _list(client, limit=1, cursor=cursor, status="dead")
    assert r.status_code == 400 and "cursor" in r.json()["error"]
    assert (await _list(client, limit=1, cursor=cursor)).status_code == 200


# -- what was sent ----------------------------------------------------------------------------


def test_a_request_shows_the_first_64_kib_of_the_body_and_says_when_it_is_cut() -> None:
    body = "é" * (MAX_BODY_SHOWN // 2 + 10)  # two bytes each: past 64 KiB
    d = records.Delivery(
        id="msg_0_x", kind="callback", tenant=ACME, url="http://u:secret@h.example/x?q=1",
        body=body, event_type="task.completed", created_at=T0,
    )  # fmt: skip
    sent = records.SentRequest(at=T0, headers=[("Host", "h.example")])
    out = RequestOut.of(d, sent, body=True)
    assert out.body_truncated and out.body_bytes == len(body.encode())
    assert out.body is not None and len(out.body.encode()) <= MAX_BODY_SHOWN
    assert body.startswith(out.body) and len(out.body) == MAX_BODY_SHOWN // 2
    assert out.url == "http://[redacted]@h.example/x?q=1"
    assert RequestOut.of(d, sent, body=False).body is None
    small = RequestOut.of(msgspec.structs.replace(d, body="{}"), sent, body=True)
    assert (small.body, small.body_truncated, small.body_bytes) == ("{}", False, 2)


def test_credentials_are_redacted_and_signatures_kept() -> None:
    kept = records.redacted(
        [
            ("Authorization", "Basic dTpw"),
            ("X-Custom", "Bearer abc.def"),
            ("Cookie", "a=b"),
            ("webhook-signature", "v1,abc="),
            ("X-Long", "x" * 10_000),
        ]
    )
    assert kept[:4] == [
        ("Authorization", "[redacted]"),
        ("X-Custom", "[redacted]"),
        ("Cookie", "[redacted]"),
        ("webhook-signature", "v1,abc="),
    ]
    assert len(kept[4][1]) == records.MAX_HEADER_VALUE_KEPT
    assert len(records.redacted([("h", "v")] * 500)) == records.MAX_HEADERS_KEPT


@pytest.fixture(params=["redis", "embedded", "kvrocks"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "dsent" + uuid.uuid4().hex[:10]
    store = make_store(request, request.param, prefix)
    settings = make_settings(
        tmp_path, prefix, webhookHmacSecret="whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        webhookRetrySchedule=[0.1, 0.1, 0.1],
    )  # fmt: skip
    app = create_app(settings, store=store, close_store=True, run_deliverers=True)
    async with serve_in_process(app) as c:
        yield c


async def finish_task(api: ApiClient, **body: Any) -> str:
    r = await api.post("/v1/codeq/tasks", json={"command": "RENDER", "payload": {"n": 1}, **body},
                       headers=auth(PRODUCER))  # fmt: skip
    assert r.status_code == 202, r.text
    task_id: str = r.json()["id"]
    r = await api.post("/v1/codeq/tasks/claim", json={"commands": ["RENDER"]}, headers=auth(WORKER))
    lease = r.json()["leaseId"]
    r = await api.post(f"/v1/codeq/tasks/{task_id}/result",
                       json={"status": "COMPLETED", "result": {"ok": 1}, "leaseId": lease},
                       headers=auth(WORKER))  # fmt: skip
    assert r.status_code == 200, r.text
    return task_id


async def test_a_delivery_shows_the_request_as_the_receiver_got_it(api: ApiClient) -> None:
    """Every header the receiver got, signatures included, and the body, byte for byte: from
    the record's last attempt (a 500, then a 200: the second attempt's)."""
    with receiver() as r:
        r.script = [Reply(500)]
        hook = r.url.replace("http://", "http://hook-user:hook-pass@")
        task_id = await finish_task(api, webhook=hook)

        async def done() -> list[dict[str, Any]]:
            got = (await api.get("/v1/codeq/deliveries", params={"taskId": task_id},
                                 headers=auth(PRODUCER))).json()["deliveries"]  # fmt: skip
            return [d for d in got if d["status"] == "succeeded"]

        (listed,) = await eventually(done, timeout=15)
        d = (await api.get(f"/v1/codeq/deliveries/{listed['id']}", headers=auth(PRODUCER))).json()
        assert r.count() == 2
        last = r.received[-1]
        sent = d["request"]
        assert sent["method"] == "POST" and sent["body"] == last.body.decode()
        assert sent["url"] == r.url.replace("http://", "http://[redacted]@")
        assert d["url"] == sent["url"]  # the password never shows
        assert (sent["bodyBytes"], sent["bodyTruncated"]) == (len(last.body), False)
        headers = {k.lower(): v for k, v in sent["headers"].items()}
        got = dict(last.headers)
        assert got["authorization"].startswith("Basic ")  # the URL's user info, sent...
        assert headers.pop("authorization") == "[redacted]"  # ...never kept
        got.pop("authorization")
        assert headers == got  # every other header, as the receiver got it
        assert headers["webhook-id"] == d["id"] and headers["x-codeq-delivery-attempt"] == "2"
        assert headers["webhook-signature"].startswith("v1,")
        # the attempts: their codes, latencies and the first bytes of the answers
        assert [a["statusCode"] for a in d["attemptLog"]] == [500, 200]
        assert all(a["latencyMs"] > 0 and a["response"] == "ok" for a in d["attemptLog"])
        # the listing has the same, without the body
        assert listed["request"] == {**sent, "body": None}


# -- the SDK and the CLI, against a live `codeq serve` ----------------------------------------


def test_the_sdk_and_the_cli_find_deliveries(redis_server: RedisServer, tmp_path: Path) -> None:
    env = {"REDIS_ADDR": f"127.0.0.1:{redis_server.port}", "KEY_PREFIX": f"dcli{free_port()}",
           "WEBHOOK_RETRY_SCHEDULE": "0.05,0.05"}  # fmt: skip
    with serve(env) as served, receiver() as r, CodeQClient(served.base, token=TOKEN) as sdk:
        r.script = [Reply(500)]
        ep = sdk.create_endpoint(r.url, ["task.completed"])
        for _ in range(3):
            task = sdk.create_task("CLI_FIND", {})
            assert sdk.claim(["CLI_FIND"]) is not None
            sdk.complete(task.id, {})
        wait_for(
            lambda: sdk.delivery_counts(endpoint_id=ep["id"])["counts"]["succeeded"] == 3,
            timeout=20,
            message="the deliveries did not succeed",
        )
        listed = list(sdk.iter_deliveries(endpoint_id=ep["id"], limit=1))
        assert len(listed) == 3 and listed[0]["taskId"] == task.id  # the newest first
        assert sdk.list_deliveries(task_id=task.id)["deliveries"][0]["taskId"] == task.id
        assert sdk.endpoint_stats(ep["id"])["lastHour"]["attempts"] == 4

        async def async_sdk() -> tuple[list[Any], Any, Any]:
            async with AsyncCodeQClient(served.base, token=TOKEN) as a:
                found = [d async for d in a.iter_deliveries(status="succeeded", limit=2)]
                return found, await a.delivery_counts(), await a.endpoint_stats(ep["id"])

        found, counts, stats = asyncio.run(async_sdk())
        assert [d["id"] for d in found] == [d["id"] for d in listed]
        assert counts["total"] == 3 and stats["lastDay"]["succeeded"] == 3
        with pytest.raises(InvalidRequest):
            sdk.list_deliveries(status="lost")

        cli_env = {**os.environ, "CODEQ_BASE_URL": served.base, "CODEQ_TOKEN": TOKEN,
                   "CODEQ_CONFIG_DIR": str(tmp_path)}  # fmt: skip

        def cli(*args: str) -> Any:
            done = subprocess.run(
                [sys.executable, "-m", "codeq.cli", "--json", "deliveries", *args],
                capture_output=True, text=True, env=cli_env, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        page = cli("list", "--endpoint", ep["id"], "--limit", "2")
        assert [d["id"] for d in page["deliveries"]] == [d["id"] for d in listed[:2]]
        assert (
            cli("list", "--all", "--limit", "1", "--task", task.id)["deliveries"][0]["id"]
            == (listed[0]["id"])
        )
        assert cli("counts", "--endpoint", ep["id"])["counts"]["succeeded"] == 3
        assert cli("stats", ep["id"])["lastHour"]["failed"] == 1
