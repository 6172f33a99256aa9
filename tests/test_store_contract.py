"""The store's protocols (codeq/store/protocol.py), each through the part of the
:class:`~codeq.store.protocol.Backend` that consumers get, against every backend (see
conftest.BACKENDS; the task side is tests/test_engine_contract.py). After each test the
structural invariants of every partition are checked (the ``store`` fixture).
"""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import pytest

from codeq.domain import NewTask
from codeq.engine import Engine
from codeq.errors import StoreUnavailable
from codeq.store.deliveries import DeliveryStore
from codeq.store.errors import StoreError
from codeq.store.keys import KeySchema
from codeq.store.protocol import (
    Backend,
    ConsumerGroups,
    Deliveries,
    Endpoints,
    EventStreams,
    Meters,
    RateBuckets,
    Subscriptions,
    TaskReads,
)
from codeq.store.redis_store import RedisStore
from deliverers import records
from tests.conftest import new_prefix
from tests.servers import free_port

T = "tenant-a"
HOOK = "http://127.0.0.1:9/hook"
DAY_MS = 86_400_000


async def _events_in(engine: Engine, partition: int, n: int) -> list[str]:
    """Create tasks until partition ``partition``'s stream has ``n`` more entries (one per
    create: its task.created, which is its task.ready too); their ids."""
    made: list[str] = []
    while len(made) < n:
        t = (await engine.create(T, NewTask(command="C", payload="1"))).task
        if engine.keys.partition_of(t.id) == partition:
            made.append(t.id)
    return made


def _delivery(partition: int, name: str, tenant: str = T) -> records.Delivery:
    return records.Delivery(
        id=records.delivery_id(partition, "callback", name, HOOK), kind="callback",
        tenant=tenant, url=HOOK, body="{}", event_type="task.completed", created_at=0,
        schedule=[1],
    )  # fmt: skip


def _attempt(status: int) -> bytes:
    return json.dumps({"at": 1, "latencyMs": 1.0, "statusCode": status}).encode()


# -- the backend ------------------------------------------------------------------------------


async def test_the_backend_hands_out_every_part_and_its_life_cycle(store: RedisStore) -> None:
    backend: Backend = store
    assert backend.keys is store.keys and backend.address
    assert backend.groups is backend.deliveries  # one object, two views
    assert backend.endpoints is backend.endpoints  # built once
    await backend.check()
    await backend.load_scripts()
    await backend.ping()


# -- task reads (the deliverers') ---------------------------------------------------------------


async def test_task_reads_get_a_batch_without_payloads(engine: Engine, store: RedisStore) -> None:
    tasks: TaskReads = store.tasks
    t = (await engine.create(T, NewTask(command="C", payload='{"big":1}'))).task
    p = store.keys.partition_of(t.id)
    mine, foreign, absent = await tasks.get_many(
        p, [(T, t.id, True), ("tenant-b", t.id, False), (T, "no-such-task", False)]
    )
    assert mine is not None and mine.task.id == t.id and mine.task.payload is None
    assert mine.result is None and foreign is None and absent is None
    assert await tasks.get_many(p, []) == []


# -- event streams (the long-poll tail) ---------------------------------------------------------


async def test_event_streams_read_after_a_point_and_wait_when_nothing_is_new(
    engine: Engine, store: RedisStore
) -> None:
    events: EventStreams = store.events
    key = events.keys.partition(0).events
    assert await events.stream_end(key) == "0-0"
    (task_id,) = await _events_in(engine, 0, 1)
    end = await events.stream_end(key)
    assert end != "0-0"
    read = await events.read_stream(key, "0-0", block_ms=100, count=10)
    assert [f["type"] for _, f in read] == ["task.created"]  # ready at once: one entry for both
    assert read[0][1]["depth"] == "1"
    assert all(f["id"] == task_id for _, f in read) and read[-1][0] == end
    assert await events.read_stream(key, end, block_ms=50, count=10) == []
    # whether the event lands before the read starts waiting or while it waits, the read
    # answers with it and nothing else
    waiting = asyncio.create_task(events.read_stream(key, end, block_ms=5000, count=10))
    (later,) = await _events_in(engine, 0, 1)
    woken = await asyncio.wait_for(waiting, timeout=5)
    assert woken and woken[0][1]["id"] == later


# -- consumer groups (the deliverers' loop, recovery, liveness) -----------------------------------


async def test_consumer_groups_read_hold_hand_over_and_set_aside(
    engine: Engine, store: RedisStore
) -> None:
    groups: ConsumerGroups = store.groups
    p = store.keys.partitions - 1
    assert not await groups.group_exists(p, "g")
    assert await groups.read_group(p, "g", "c1", count=10, block_ms=10) == []  # no group yet
    assert await groups.ensure_group(p, "g") is True
    assert await groups.ensure_group(p, "g") is False
    assert await groups.group_exists(p, "g")
    await _events_in(engine, p, 4)  # four entries: a create ready at once writes one
    read = await groups.read_group(p, "g", "c1", count=3, block_ms=100)
    assert len(read) == 3 and all(isinstance(fields, list) for _, fields in read)
    ids = [entry_id for entry_id, _ in read]
    assert [i for i, _ in await groups.pending_of(p, "g", "c1")] == ids
    assert dict(await groups.consumers(p, "g"))["c1"] == 3

    await groups.heartbeat(p, "g", "c1", 60)
    assert await groups.alive(p, "g", "c1")
    await groups.release(p, "g", "c1")
    assert not await groups.alive(p, "g", "c1")

    taken = [e for i in ids[:2] for e in await groups.take_over(p, "g", "c2", [i])]
    assert [i for i, _ in taken] == ids[:2]
    assert [i for i, _ in await groups.pending_of(p, "g", "c2")] == ids[:2]
    # (times received: 1 on Redis, 0 on KVRocks and fakeredis, whose count starts at 0)
    assert [i for i, _ in await groups.pending_of(p, "g", "c1")] == [ids[2]]
    await groups.poison(p, "g", ids[2], 1, "because")
    assert await groups.pending_of(p, "g", "c1") == []
    assert dict(await groups.consumers(p, "g"))["c1"] == 0  # (KVRocks: one XCLAIM per entry)
    (aside,) = await DeliveryStore(store).set_aside(p)  # (not a protocol's: tests look)
    assert aside["entry"] == ids[2] and aside["reason"] == "because"
    await groups.forget_consumer(p, "g", "c1")
    assert "c1" not in dict(await groups.consumers(p, "g"))
    rest = await groups.read_group(p, "g", "c2", count=10, block_ms=100)
    assert len(rest) == 1  # the fourth entry: nothing is read twice
    assert await groups.read_group(p, "g", "c2", count=10, block_ms=10) == []
    assert dict(await groups.consumers(p, "missing-group")) == {}


# -- deliveries (the schedule) --------------------------------------------------------------------


async def test_deliveries_are_written_once_attempted_recorded_and_replayed(
    store: RedisStore,
) -> None:
    deliveries: Deliveries = store.deliveries
    p = store.keys.partitions - 1
    await store.groups.ensure_group(p, "g")
    made = [_delivery(p, n) for n in ("ok", "again", "dead", "other")]
    made[3] = _delivery(p, "other", tenant="tenant-b")
    pairs = [(d.id, records.encode(d)) for d in made]
    assert await deliveries.enqueue(p, "g", [], 0, pairs) == [d.id for d in made]
    assert await deliveries.enqueue(p, "g", [], 0, pairs[:1]) == []  # written once
    raw = await deliveries.get(p, made[0].id)
    assert raw is not None and records.decode(raw).tenant == T
    assert await deliveries.get(p, "msg_none") is None

    due = [records.decode(r).id for r in await deliveries.claim_due(p, lease_ms=60_000, limit=10)]
    assert sorted(due) == sorted(d.id for d in made)
    assert await deliveries.claim_due(p, lease_ms=60_000, limit=10) == []  # leased now
    assert await deliveries.defer(p, made[1].id, delay_ms=60_000)
    assert not await deliveries.defer(p, "msg_none", delay_ms=1)

    items = [
        (made[0].id, "succeeded", 0, _attempt(200)),
        (made[1].id, "retry", 60_000, _attempt(500)),
        (made[2].id, "dead", 0, _attempt(404)),
        (made[3].id, "dead", 0, _attempt(404)),
        ("msg_none", "succeeded", 0, _attempt(200)),
    ]
    assert await deliveries.outcomes(p, items, 5) == [
        ("succeeded", 1), ("retrying", 1), ("dead", 1), ("dead", 1), ("MISSING", 0),
    ]  # fmt: skip
    dead = {records.decode(r).id for r in await deliveries.dead_page(p, limit=10)}
    assert dead == {made[2].id, made[3].id}
    assert await deliveries.replay(p, tenant="tenant-c", ids=[made[2].id]) == []  # not its own
    assert await deliveries.replay(p, tenant=T) == [made[2].id]  # the tenant's dead ones
    assert await deliveries.replay(p, tenant=None, ids=[made[3].id]) == [made[3].id]
    assert await deliveries.dead_page(p, limit=10) == []
    again = {records.decode(r).id for r in await deliveries.claim_due(p, lease_ms=1, limit=10)}
    assert again == {made[2].id, made[3].id}


# -- endpoints ------------------------------------------------------------------------------------


async def test_endpoints_are_kept_per_tenant_changed_in_place_and_index_deliveries(
    store: RedisStore,
) -> None:
    endpoints: Endpoints = store.endpoints
    record = {"id": "ep_1", "tenant": T, "url": HOOK, "enabled": True, "eventTypes": ["*"],
              "secrets": [{"secret": "whsec_a"}]}  # fmt: skip
    await endpoints.create("ep_1", T, msgspec.json.encode(record))
    (listed,) = await endpoints.all_of(T)
    assert json.loads(listed)["url"] == HOOK and await endpoints.all_of("tenant-b") == []
    patched = await endpoints.patch("ep_1", T, {"description": "d"})
    assert patched is not None and json.loads(patched)["description"] == "d"
    assert await endpoints.patch("ep_1", "tenant-b", {"enabled": False}) is None
    expires = await endpoints.rotate("ep_1", T, "whsec_b", DAY_MS)
    assert expires is not None and expires > time.time() * 1000
    assert await endpoints.rotate("ep_2", T, "whsec_c", DAY_MS) is None
    secrets = [s["secret"] for s in json.loads((await endpoints.all_of(T))[0])["secrets"]]
    assert set(secrets) == {"whsec_a", "whsec_b"}
    await endpoints.mark("ep_1", T, "gone", DAY_MS)
    assert json.loads((await endpoints.all_of(T))[0])["enabled"] is False
    for n in range(3):
        await endpoints.remember("ep_1", f"msg_{n}", keep=2)
    assert await endpoints.recent("ep_1", 10) == ["msg_2", "msg_1"]
    assert not await endpoints.delete("ep_1", "tenant-b")
    assert await endpoints.delete("ep_1", T)
    assert await endpoints.all_of(T) == []


# -- subscriptions --------------------------------------------------------------------------------


async def test_subscriptions_are_put_renewed_picked_and_deleted(store: RedisStore) -> None:
    subs: Subscriptions = store.subscriptions

    def record(sub_id: str) -> bytes:
        return msgspec.json.encode(
            {"id": sub_id, "tenant": T, "callbackUrl": HOOK, "eventTypes": ["c"],
             "deliveryMode": "fanout", "minIntervalSeconds": 0, "expiresAt": 0}
        )  # fmt: skip

    now = int(time.time() * 1000)
    first = await subs.put("s1", T, record("s1"), 60_000)
    assert first is not None and first >= now + 60_000
    assert await subs.put("s1", T, b"", 120_000) is not None  # renewed
    assert await subs.put("s_none", T, b"", 60_000) is None
    await subs.put("s2", T, record("s2"), 60_000)
    assert {json.loads(r)["id"] for r in await subs.live(T)} == {"s1", "s2"}
    assert await subs.live("tenant-b") == []
    picked = {json.loads(r)["id"] for r in await subs.pick(T, "C", 7)}
    assert picked == {"s1", "s2"} and await subs.pick(T, "other", 7) == []
    assert not await subs.delete("s1", "tenant-b")
    assert await subs.delete("s1", T) and not await subs.delete("s1", T)
    assert [json.loads(r)["id"] for r in await subs.live(T)] == ["s2"]


# -- rate limits ----------------------------------------------------------------------------------


async def test_rate_limits_take_from_a_bucket_per_subject(store: RedisStore) -> None:
    limits: RateBuckets = store.rate_buckets
    takes = [await limits.take("api", T, "me", requests_per_minute=60, burst=2) for _ in range(3)]
    assert [t.allowed for t in takes] == [True, True, False]
    assert takes[0].remaining == 1 and 0 < takes[2].retry_after_ms <= 1000
    other = await limits.take("api", T, "you", requests_per_minute=60, burst=2)
    assert other.allowed


# -- meters (/metrics) ----------------------------------------------------------------------------


async def test_meters_read_depths_schedules_groups_and_live_subscriptions(
    engine: Engine, store: RedisStore
) -> None:
    meters: Meters = store.meters
    p = store.keys.partitions - 1
    await _events_in(engine, p, 2)
    await store.groups.ensure_group(p, "g")
    d = _delivery(p, "x")
    await store.deliveries.enqueue(p, "g", [], 60_000, [(d.id, records.encode(d))])
    g = await meters.gauges(p)
    assert g.scheduled_deliveries == 1 and g.dead_deliveries == 0
    assert [c.command for c in g.commands] == ["c"] and g.commands[0].ready == 2
    (group,) = g.groups
    assert group.group == "g" and group.pending == 0 and group.lag in (None, 2)
    now = int(time.time() * 1000)
    assert await meters.active_subscriptions(now) == 0
    sub = {"id": "s", "tenant": T, "callbackUrl": HOOK, "eventTypes": ["c"], "expiresAt": 0}
    await store.subscriptions.put("s", T, msgspec.json.encode(sub), 60_000)
    assert await meters.active_subscriptions(now) == 1
    assert await meters.active_subscriptions(now + 120_000) == 0


@pytest.mark.parametrize("part", ["tail", "groups", "deliveries", "endpoints", "meters"])
async def test_parts_answer_a_store_outage_with_store_unavailable(part: str) -> None:
    """Nothing above the store sees a redis exception: a server that is away is a 503."""
    gone = RedisStore.from_url(f"redis://127.0.0.1:{free_port()}/0", KeySchema(new_prefix()),
                               connect_timeout=0.2)  # fmt: skip
    calls = {
        "tail": lambda: gone.events.stream_end(gone.keys.partition(0).events),
        "groups": lambda: gone.groups.pending_of(0, "g", "c"),
        "deliveries": lambda: gone.deliveries.get(0, "msg_x"),
        "endpoints": lambda: gone.endpoints.recent("ep", 1),
        "meters": lambda: gone.meters.active_subscriptions(0),
    }
    try:
        with pytest.raises(StoreUnavailable):
            await calls[part]()
    finally:
        await gone.close()


async def test_a_create_call_with_an_item_the_script_cannot_take_writes_nothing(
    engine: Engine, store: RedisStore
) -> None:
    """The engine clamps a priority to 0-9; a caller of the store that does not is refused
    whole, before the script writes anything: no task, no event, no sequence number, no queue."""
    partition, good = engine._prepare(T, NewTask(command="ODD", payload="1"))
    _, other = engine._prepare(T, NewTask(command="ODD", payload="2"))
    bad = msgspec.structs.replace(other, priority=10)
    keys = store.keys.partition(partition)
    before = [await store.client.exists(k) for k in keys.all]
    with pytest.raises(StoreError, match="priority must be one digit 0-9"):
        await store.create(partition, [good, bad], idempotency_ttl_ms=DAY_MS)
    assert [await store.client.exists(k) for k in keys.all] == before
    assert await store.client.hget(keys.tasks, good.id) is None
    (ok,) = await store.create(partition, [good], idempotency_ttl_ms=DAY_MS)
    assert ok.outcome == "created" and ok.task is not None and ok.task.priority == good.priority
