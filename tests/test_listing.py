"""Listing tasks (issue 17): ``Engine.list_tasks`` on every backend (the store fixture checks
the listing indexes after each test, tests/invariants.py), cursors, and the HTTP routes
``GET /v1/codeq/tasks`` and ``GET /v1/codeq/tasks/{id}/deliveries``."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import msgspec
import pytest

from codeq.domain import ListStatus, NewTask, Task, TaskFilter
from codeq.engine import Engine, EngineConfig
from codeq.errors import InvalidRequest
from codeq.store.redis_store import RedisStore
from deliverers import records
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import make_store
from tests.test_api import ADMIN, OTHER_TENANT, PRODUCER, WORKER, auth, make_settings

ACME, GLOBEX = "acme", "globex"


async def all_pages(engine: Engine, tenant: str, flt: TaskFilter, limit: int) -> list[Task]:
    out: list[Task] = []
    cursor: str | None = None
    for _ in range(1000):
        page = await engine.list_tasks(tenant, flt, limit=limit, cursor=cursor)
        assert len(page.tasks) <= limit
        out += page.tasks
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor
    raise AssertionError("the cursor never ended")


def newest_first(tasks: list[Task]) -> list[str]:
    return [t.id for t in sorted(tasks, key=lambda t: (t.created_at_ms, t.id), reverse=True)]


async def make_mix(engine: Engine) -> dict[str, list[Task]]:
    """Tasks of acme in every listing status, and one of globex."""
    made = [
        (await engine.create(ACME, NewTask(command=c, payload=f'{{"i":{i}}}', priority=i % 3))).task
        for i, c in enumerate(["render", "index", "render", "index", "render", "mail"] * 3)
    ]
    await engine.create(GLOBEX, NewTask(command="render", payload="{}"))
    leased = [await engine.claim(ACME, "w", ["render"]) for _ in range(4)]
    assert all(t is not None for t in leased)
    done, failed, running, dead_one = (t for t in leased if t is not None)
    await engine.complete(ACME, done.id, "w", result="{}")
    await engine.fail(ACME, failed.id, "w", error="boom")
    one = (await engine.create(ACME, NewTask(command="one", payload="{}", max_attempts=1))).task
    got = await engine.claim(ACME, "w", ["one"])
    assert got is not None and got.id == one.id
    assert (await engine.nack(ACME, one.id, "w", reason="bad")).status == "dlq"
    await engine.abandon(ACME, dead_one.id, "w")  # back to pending
    gone = (await engine.create(ACME, NewTask(command="index", payload="{}"))).task
    await engine.cancel(ACME, gone.id, reason="not needed")
    tasks = [await engine.get_task(ACME, t.id) for t in [*made, one, gone]]
    by: dict[str, list[Task]] = {s.value: [] for s in ListStatus}
    for t in tasks:
        dead = t.last_known_location.value == "DLQ_SET"
        by["DEAD" if dead else t.status.value].append(t)
        if dead:
            by["FAILED"].append(t)
    by["all"] = tasks
    assert by["IN_PROGRESS"] == [await engine.get_task(ACME, running.id)]
    return by


async def test_pages_list_every_task_of_the_tenant_newest_first(engine: Engine) -> None:
    by = await make_mix(engine)
    for limit in (1, 4, 50):
        listed = await all_pages(engine, ACME, TaskFilter(), limit)
        assert [t.id for t in listed] == newest_first(by["all"])
    first = (await engine.list_tasks(ACME, TaskFilter(), limit=1)).tasks[0]
    assert first == await engine.get_task(ACME, first.id)  # the same task, payload and all
    assert first.payload is not None
    assert [t.tenant_id for t in await all_pages(engine, GLOBEX, TaskFilter(), 10)] == [GLOBEX]


@pytest.mark.parametrize("status", list(ListStatus))
async def test_a_status_filter_lists_exactly_that_status(
    engine: Engine, status: ListStatus
) -> None:
    by = await make_mix(engine)
    assert by[status.value], "the mix has a task of every status"
    listed = await all_pages(engine, ACME, TaskFilter(status=status), 2)
    assert [t.id for t in listed] == newest_first(by[status.value])


async def test_command_priority_and_status_filters_combine(engine: Engine) -> None:
    by = await make_mix(engine)
    cases = [
        (TaskFilter(command="RENDER"), lambda t: t.command == "render"),
        (
            TaskFilter(command="render", status=ListStatus.PENDING),
            lambda t: t.command == "render" and t.status.value == "PENDING",
        ),
        (TaskFilter(priority=1), lambda t: t.priority == 1),
        (
            TaskFilter(priority=0, status=ListStatus.PENDING),
            lambda t: t.priority == 0 and t.status.value == "PENDING",
        ),
        (
            TaskFilter(command="index", priority=2),
            lambda t: t.command == "index" and t.priority == 2,
        ),
        (TaskFilter(command="nothing"), lambda t: False),
    ]
    # every status with a command: PENDING, IN_PROGRESS and DEAD are read from their status
    # range with the command checked, the others from the command's range with the status checked
    for status in ListStatus:
        for command in ("render", "index"):
            in_it = {t.id for t in by[status.value]}
            cases.append(
                (
                    TaskFilter(command=command, status=status),
                    lambda t, c=command, ids=in_it: t.command == c and t.id in ids,
                )
            )
    for flt, keep in cases:
        want = newest_first([t for t in by["all"] if keep(t)])
        assert [t.id for t in await all_pages(engine, ACME, flt, 3)] == want, flt


async def test_creation_times_bound_the_listing(engine: Engine) -> None:
    by = await make_mix(engine)
    times = sorted({t.created_at_ms for t in by["all"]})
    mid = times[len(times) // 2]
    after = await all_pages(engine, ACME, TaskFilter(created_from_ms=mid), 5)
    before = await all_pages(engine, ACME, TaskFilter(created_before_ms=mid), 5)
    assert [t.id for t in after] == newest_first([t for t in by["all"] if t.created_at_ms >= mid])
    assert [t.id for t in before] == newest_first([t for t in by["all"] if t.created_at_ms < mid])
    both = TaskFilter(created_from_ms=mid, created_before_ms=mid)
    assert (await engine.list_tasks(ACME, both)).tasks == ()


async def test_an_idempotency_key_finds_its_task_only_for_its_tenant(engine: Engine) -> None:
    made = (
        await engine.create(ACME, NewTask(command="render", payload="{}", idempotency_key="k-1"))
    ).task
    page = await engine.list_tasks(ACME, TaskFilter(idempotency_key="k-1"))
    assert [t.id for t in page.tasks] == [made.id] and page.next_cursor is None
    for tenant, flt in [
        (GLOBEX, TaskFilter(idempotency_key="k-1")),
        (ACME, TaskFilter(idempotency_key="k-2")),
        (ACME, TaskFilter(idempotency_key="k-1", command="mail")),
        (ACME, TaskFilter(idempotency_key="k-1", status=ListStatus.COMPLETED)),
    ]:
        assert (await engine.list_tasks(tenant, flt)).tasks == ()


async def test_purged_tasks_leave_the_listing(store: RedisStore) -> None:
    engine = Engine(store, EngineConfig(task_retention_seconds=0))
    kept = (await engine.create(ACME, NewTask(command="render", payload="{}"))).task
    gone = (await engine.create(ACME, NewTask(command="render", payload="{}"))).task
    leased = await engine.claim(ACME, "w", ["render"])
    assert leased is not None
    await engine.complete(ACME, leased.id, "w", result="{}")
    assert (await engine.cleanup(limit=100)).deleted == 1
    ids = {t.id for t in await all_pages(engine, ACME, TaskFilter(), 10)}
    assert ids == {kept.id, gone.id} - {leased.id}
    # (the store fixture then checks that no index entry is left without its task)


async def test_bad_filters_and_cursors_are_refused(engine: Engine) -> None:
    await make_mix(engine)
    page = await engine.list_tasks(ACME, TaskFilter(), limit=2)
    assert page.next_cursor is not None
    bad = [
        (TaskFilter(), {"limit": 0}, "limit"),
        (TaskFilter(), {"limit": 501}, "limit"),
        (TaskFilter(command="bad command"), {}, "command"),
        (TaskFilter(priority=10), {}, "priority"),
        (TaskFilter(idempotency_key=""), {}, "idempotencyKey"),
        (TaskFilter(created_from_ms=-1), {}, "createdAfter"),
        # the cursor of acme's unfiltered listing, given with another filter or tenant
        (TaskFilter(command="render"), {"cursor": page.next_cursor}, "cursor"),
        (TaskFilter(), {"cursor": page.next_cursor[:-2] + "AA"}, "cursor"),
        (TaskFilter(), {"cursor": "x" * 40}, "cursor"),
        (TaskFilter(), {"cursor": "%%%"}, "cursor"),
    ]
    for flt, kwargs, field in bad:
        with pytest.raises(InvalidRequest) as err:
            await engine.list_tasks(ACME, flt, **kwargs)  # type: ignore[arg-type]
        assert err.value.field == field, (flt, kwargs)
    with pytest.raises(InvalidRequest):
        await engine.list_tasks(GLOBEX, TaskFilter(), cursor=page.next_cursor)


async def test_a_forged_cursor_never_reaches_another_tenant(store: RedisStore) -> None:
    """Even one tagged with the right key (a deployment without a secret): every range a page
    reads starts with the caller's tenant."""
    engine = Engine(store, EngineConfig())
    await engine.create(GLOBEX, NewTask(command="render", payload="{}"))
    await engine.create(ACME, NewTask(command="render", payload="{}"))
    lister = engine.lister
    for at in ["9" * 13 + "!" + "f" * 8 + "-ffff-7fff-bfff-" + "f" * 12]:
        cursor = lister.encode_cursor(ACME, TaskFilter(), at)
        page = await engine.list_tasks(ACME, TaskFilter(), cursor=cursor)
        assert [t.tenant_id for t in page.tasks] == [ACME]


async def test_a_page_without_an_index_of_its_own_is_bounded(store: RedisStore) -> None:
    """priority has no index: each page looks at a bounded number of entries and says where
    to go on; following the cursors still finds every match, in order."""
    engine = Engine(store, EngineConfig())
    engine.lister.scan_bound = 5
    made = [
        (await engine.create(ACME, NewTask(command="c", payload="{}", priority=p))).task
        for p in [3] * 12 + [7] + [3] * 12 + [7]
    ]
    want = newest_first([t for t in made if t.priority == 7])
    pages = 0
    found: list[Task] = []
    cursor = None
    while True:
        page = await engine.list_tasks(ACME, TaskFilter(priority=7), limit=10, cursor=cursor)
        pages += 1
        found += page.tasks
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [t.id for t in found] == want
    assert pages >= 26 // (5 * store.keys.partitions)


# -- HTTP ---------------------------------------------------------------------------------


@pytest.fixture(params=["redis", "embedded"])
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "lst" + uuid.uuid4().hex[:10]
    store = make_store(request, request.param, prefix)
    app = create_app(make_settings(tmp_path, prefix), store=store, close_store=True)
    async with serve_in_process(app) as c:
        c.store = store  # type: ignore[attr-defined]
        yield c


async def _create(c: httpx.AsyncClient, token: str = PRODUCER, **body: object) -> str:
    body = {"command": "RENDER", "payload": {"n": 1}, **body}
    r = await c.post("/v1/codeq/tasks", json=body, headers=auth(token))
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def test_http_listing_pages_and_filters(client: httpx.AsyncClient) -> None:
    ids = [await _create(client, priority=i % 2) for i in range(5)]
    await _create(client, OTHER_TENANT)
    seen: list[dict[str, object]] = []
    params: dict[str, str | int] = {"limit": 2}
    while True:
        r = await client.get("/v1/codeq/tasks", params=params, headers=auth(PRODUCER))
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"tasks", "nextCursor"}
        seen += body["tasks"]
        if body["nextCursor"] is None:
            break
        params["cursor"] = body["nextCursor"]
    assert sorted(str(t["id"]) for t in seen) == sorted(ids)
    one = (await client.get(f"/v1/codeq/tasks/{ids[0]}", headers=auth(PRODUCER))).json()
    assert next(t for t in seen if t["id"] == ids[0]) == one
    r = await client.get(
        "/v1/codeq/tasks",
        params={"status": "PENDING", "command": "render", "priority": 1},
        headers=auth(ADMIN),
    )
    assert r.status_code == 200
    assert sorted(t["id"] for t in r.json()["tasks"]) == sorted(ids[1::2])
    r = await client.get("/v1/codeq/tasks", headers=auth(WORKER))
    assert r.status_code == 200  # the same rule as GET /tasks/{id}: any token of the tenant


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("state=PENDING", "state"),
        ("status=ZOMBIE", "status"),
        ("priority=high", "priority"),
        ("priority=10", "priority"),
        ("limit=501", "limit"),
        ("limit=0", "limit"),
        ("createdAfter=yesterday", "createdAfter"),
        ("command=a%20b", "command"),
        ("cursor=Zm9yZ2VkLWN1cnNvci12YWx1ZQ", "cursor"),
    ],
)
async def test_http_bad_filters_are_400_naming_the_field(
    client: httpx.AsyncClient, query: str, field: str
) -> None:
    r = await client.get(f"/v1/codeq/tasks?{query}", headers=auth(PRODUCER))
    assert r.status_code == 400, r.text
    body = r.json()
    assert set(body) == {"error", "code"} and field in body["error"], body


async def test_http_another_tenants_cursor_is_400(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await _create(client)
    r = await client.get("/v1/codeq/tasks?limit=1", headers=auth(PRODUCER))
    cursor = r.json()["nextCursor"]
    assert cursor
    r = await client.get(f"/v1/codeq/tasks?limit=1&cursor={cursor}", headers=auth(OTHER_TENANT))
    assert r.status_code == 400 and "cursor" in r.json()["error"]
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    tampered = base64.urlsafe_b64encode(raw[:-1] + bytes([raw[-1] ^ 1])).decode().rstrip("=")
    r = await client.get(f"/v1/codeq/tasks?limit=1&cursor={tampered}", headers=auth(PRODUCER))
    assert r.status_code == 400


async def test_http_deliveries_of_a_task(client: httpx.AsyncClient) -> None:
    task_id = await _create(client)
    r = await client.get(f"/v1/codeq/tasks/{task_id}/deliveries", headers=auth(PRODUCER))
    assert r.status_code == 200 and r.json() == {"deliveries": []}
    # a delivery about this task, written as the deliverers write one (dlv_enqueue)
    store: RedisStore = client.store  # type: ignore[attr-defined]
    p = store.keys.partition_of(task_id)
    rec = records.Delivery(
        id=f"msg_{p}_abc",
        kind="callback",
        event_type="task.completed",
        url="http://127.0.0.1:9/cb",
        created_at=1,
        tenant="acme",
        task_id=task_id,
        body="{}",
    )
    await store.deliveries.enqueue(p, "callbacks", [], 1000, [(rec.id, records.encode(rec))])
    r = await client.get(f"/v1/codeq/tasks/{task_id}/deliveries", headers=auth(PRODUCER))
    assert r.status_code == 200
    (d,) = r.json()["deliveries"]
    same = await client.get(f"/v1/codeq/deliveries/{rec.id}", headers=auth(PRODUCER))
    assert d == same.json() and d["taskId"] == task_id
    for path, token in [
        (f"/v1/codeq/tasks/{task_id}/deliveries", OTHER_TENANT),
        (f"/v1/codeq/tasks/{uuid.uuid4()}/deliveries", PRODUCER),
        ("/v1/codeq/tasks/not-an-id/deliveries", PRODUCER),
    ]:
        r = await client.get(path, headers=auth(token))
        assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_the_listing_status_names_are_the_api_ones() -> None:
    assert msgspec.json.encode(list(ListStatus)) == (
        b'["PENDING","IN_PROGRESS","COMPLETED","FAILED","DEAD","CANCELLED"]'
    )
