"""Retention of deliveries (issue 18 item 4): the sweeper prunes deliveries that ended more
than ``webhookDeliveryRetentionSeconds`` ago in bounded steps under the partition's sweep lock,
with every index entry naming them (listing index and counters, the task's index, the
endpoint's recent list, the DLQ); a delivery still due is never pruned. Records written before
the listing index are indexed by the same steps first. On every backend; the new scripts keep
to their declared keys (tests/strict_keys.py)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator

import msgspec
import pytest

from codeq.engine import Engine, EngineConfig
from codeq.ids import new_task_id
from codeq.settings import Settings, SettingsError
from codeq.store.keys import KeySchema
from codeq.store.protocol import DeliveryQuery
from codeq.store.redis_store import RedisStore
from codeq.sweeper import MAX_PRUNE_STEPS, PRUNE_BATCH, Sweeper
from deliverers import records
from tests.conftest import new_prefix, server_url
from tests.strict_keys import StrictRun
from tests.test_delivery_search import (
    ACME,
    GLOBEX,
    Mix,
    attempt,
    check_delivery_index,
    settled,
)

DAY_MS = 86_400_000


@pytest.fixture
async def dstore(store: RedisStore) -> AsyncIterator[RedisStore]:
    yield await settled(store)
    problems = await check_delivery_index(store)
    assert not problems, "delivery index broken:\n" + "\n".join(problems)


async def as_before_the_index(store: RedisStore) -> None:
    """The store as an earlier version left it: no partition marked as wholly indexed."""
    for p in range(store.keys.partitions):
        await store.client.hdel(store.keys.delivery(p).counts, "!!indexed")


def part(d: records.Delivery) -> int:
    return int(d.id.split("_")[1])


async def prune_all(store: RedisStore, retention_ms: int, *, limit: int = 100) -> int:
    pruned = 0
    for p in range(store.keys.partitions):
        while True:
            reply = await store.deliveries.prune(
                p, token="t", lock_ms=10_000, limit=limit, retention_ms=retention_ms
            )
            assert reply is not None
            pruned += reply.pruned
            if not reply.more:
                break
    return pruned


async def ids_of(store: RedisStore, tenant: str = ACME, **filters: object) -> set[str]:
    out: set[str] = set()
    for p in range(store.keys.partitions):
        page = await store.deliveries.search(
            p,
            DeliveryQuery(tenant=tenant, size=500, bound=5000, **filters),  # type: ignore[arg-type]
        )
        out |= {records.decode(r).id for r in page.records}
    return out


async def test_ended_deliveries_go_with_every_entry_naming_them(dstore: RedisStore) -> None:
    mix = Mix(dstore)
    task = new_task_id()
    kept, gone = [], []
    for status in ("pending", "retrying", "succeeded", "dead", "gone") * 2:
        d = await mix.add(status, endpoint="ep_r", task=task)
        await dstore.endpoints.remember("ep_r", d.id)
        (kept if status in ("pending", "retrying") else gone).append(d.id)
    other = await mix.add("succeeded", tenant=GLOBEX, endpoint="ep_g")
    assert await prune_all(dstore, retention_ms=DAY_MS) == 0  # none ended a day ago
    assert await prune_all(dstore, retention_ms=0) == len(gone) + 1
    for did in [*gone, other.id]:
        d = next(x for x in mix.made if x.id == did)
        assert await dstore.deliveries.get(part(d), did) is None
    assert await ids_of(dstore) == set(kept)
    assert await ids_of(dstore, task_id=task) == set(kept)
    assert await ids_of(dstore, endpoint_id="ep_r") == set(kept)
    assert set(await dstore.endpoints.recent("ep_r", 100)) == set(kept)
    for p in range(dstore.keys.partitions):
        assert await dstore.deliveries.dead_page(p, limit=100) == []
        task_page = await dstore.deliveries.of_task(p, ACME, task, limit=100)
        assert task_page is None or {records.decode(r).id for r in task_page} <= set(kept)
    counts: Counter[str] = Counter()
    for p in range(dstore.keys.partitions):
        counts.update(await dstore.deliveries.counts(p, ACME, endpoint_id="ep_r"))
    assert +counts == Counter({"pending": 2, "retrying": 2})
    # (the dstore fixture then checks that no index entry or counter is left behind)


async def test_a_step_is_bounded_and_never_looks_at_an_entry_twice(dstore: RedisStore) -> None:
    mix = Mix(dstore)
    for _ in range(25):
        await mix.add("succeeded", partition=0)
    replayed = await mix.add("dead", partition=0)
    assert await dstore.deliveries.replay(0, tenant=ACME, ids=[replayed.id]) == [replayed.id]
    steps = []
    while True:
        reply = await dstore.deliveries.prune(
            0, token="t", lock_ms=10_000, limit=10, retention_ms=0
        )
        assert reply is not None
        steps.append((reply.pruned, reply.more))
        if not reply.more:
            break
    assert steps == [(10, True), (10, True), (5, False)]
    # due again (replayed): never pruned, whatever its age
    assert await ids_of(dstore) == {replayed.id}
    assert records.decode(await dstore.deliveries.get(0, replayed.id) or b"").status == "pending"


async def test_a_delivery_that_is_due_is_never_pruned(dstore: RedisStore) -> None:
    """A dead delivery replayed is due again; it ends again only with its next outcome, and
    only then can retention take it."""
    mix = Mix(dstore)
    d = await mix.add("dead", partition=0)
    await dstore.deliveries.replay(0, tenant=ACME, ids=[d.id])
    assert await prune_all(dstore, retention_ms=0) == 0
    (raw,) = await dstore.deliveries.claim_due(0, lease_ms=60_000, limit=10)
    assert records.decode(raw).id == d.id
    assert await dstore.deliveries.outcomes(0, [(d.id, "retry", 60_000, attempt(503))], 5) == [
        ("retrying", 2)
    ]
    assert await prune_all(dstore, retention_ms=0) == 0
    assert await dstore.deliveries.outcomes(0, [(d.id, "succeeded", 0, attempt())], 5) == [
        ("succeeded", 3)
    ]
    assert await prune_all(dstore, retention_ms=0) == 1


async def test_records_written_before_the_index_are_indexed_then_pruned(
    dstore: RedisStore,
) -> None:
    """Records as an earlier version wrote them (no index entries, no counters, the task index
    without creation times): the prune steps index them first, so search, counts and
    retention see them too."""
    await as_before_the_index(dstore)
    task = new_task_id()
    k = dstore.keys.delivery(0)
    old = []
    for n, status in enumerate(["succeeded", "dead", "retrying"] * 4):
        d = records.Delivery(
            id=f"msg_0_old{n:02d}", kind="endpoint", tenant=ACME, url="http://127.0.0.1:9/x",
            body="{}", event_type="task.completed", created_at=1_600_000_000_000 + n,
            task_id=task, endpoint_id="ep_old", status=status, updated_at=1_600_000_000_000 + n,
        )  # fmt: skip
        await dstore.client.hset(k.records, d.id, records.encode(d))
        await dstore.client.zadd(k.by_task, {f"{task}!{d.id}": 0})
        if status == "retrying":
            await dstore.client.zadd(k.due, {d.id: 1_600_000_000_000})
        if status == "dead":
            await dstore.client.zadd(k.dead, {d.id: 1_600_000_000_000})
        old.append(d)
    assert await ids_of(dstore) == set()  # not indexed yet
    indexed = 0
    while True:  # long retention: only the indexing runs, HSCAN ... COUNT 5 at a time
        reply = await dstore.deliveries.prune(
            0, token="t", lock_ms=10_000, limit=5, retention_ms=100 * 365 * DAY_MS
        )
        assert reply is not None and reply.pruned == 0
        indexed += reply.indexed
        if not reply.more:
            break
    assert indexed == len(old)
    assert await ids_of(dstore) == {d.id for d in old}
    assert await ids_of(dstore, task_id=task, statuses=("dead",)) == {
        d.id for d in old if d.status == "dead"
    }
    assert await dstore.deliveries.counts(0, ACME, endpoint_id="ep_old") == {
        "pending": 0, "retrying": 4, "succeeded": 4, "dead": 4, "gone": 0,
    }  # fmt: skip
    raw_task_index = [m.decode() for m in await dstore.client.zrange(k.by_task, 0, -1)]
    assert all(m.count("!") == 2 for m in raw_task_index)  # "<task>!<createdAt>!<id>" only
    # they ended long ago: a day's retention prunes the ended ones, never the due ones
    assert await prune_all(dstore, retention_ms=DAY_MS) == 8
    assert await ids_of(dstore) == {d.id for d in old if d.status == "retrying"}


async def test_changes_before_every_record_is_indexed_are_counted_exactly(
    dstore: RedisStore,
) -> None:
    """Until the prune steps have indexed every record of an earlier version, the scripts
    move index entries one by one and count a change only with an entry that was there: an
    old record changed meanwhile is indexed by its change, and nothing is counted twice."""
    await as_before_the_index(dstore)
    k = dstore.keys.delivery(0)
    old = []
    for n, status in enumerate(["pending", "retrying", "dead", "succeeded"]):
        d = records.Delivery(
            id=f"msg_0_before{n}", kind="endpoint", tenant=ACME, url="http://127.0.0.1:9/x",
            body="{}", event_type="task.failed", created_at=1_600_000_000_000 + n,
            endpoint_id="ep_b", status=status,
        )  # fmt: skip
        await dstore.client.hset(k.records, d.id, records.encode(d))
        old.append(d)
    mix = Mix(dstore)
    new = await mix.add("retrying", endpoint="ep_b", partition=0)
    ds = dstore.deliveries
    items = [(old[0].id, "succeeded", 0, attempt()), (old[1].id, "dead", 0, attempt(500)),
             (new.id, "succeeded", 0, attempt())]  # fmt: skip
    assert [s for s, _ in await ds.outcomes(0, items, 5)] == ["succeeded", "dead", "succeeded"]
    assert await ds.replay(0, tenant=ACME, ids=[old[2].id]) == [old[2].id]
    assert await ds.counts(0, ACME, endpoint_id="ep_b") == {
        "pending": 1, "retrying": 0, "succeeded": 2, "dead": 1, "gone": 0,
    }  # fmt: skip
    assert await prune_all(dstore, retention_ms=100 * 365 * DAY_MS) == 0  # indexes the rest
    assert await ds.counts(0, ACME, endpoint_id="ep_b") == {
        "pending": 1, "retrying": 0, "succeeded": 3, "dead": 1, "gone": 0,
    }  # fmt: skip
    # (the dstore fixture then checks every entry and counter against the records)


async def test_the_sweeper_prunes_under_the_partition_lock(dstore: RedisStore) -> None:
    mix = Mix(dstore)
    for n in range(6):
        await mix.add("succeeded", partition=n % dstore.keys.partitions)
    engine = Engine(dstore, EngineConfig())
    idle = Sweeper(engine, token="one")
    assert await idle.prune_deliveries() == 0  # no deliveries given: no pruning
    keeping = Sweeper(engine, deliveries=dstore.deliveries, delivery_retention_seconds=3600)
    assert await keeping.prune_deliveries() == 0
    one = Sweeper(engine, deliveries=dstore.deliveries, delivery_retention_seconds=0, token="one")
    other = Sweeper(
        engine, deliveries=dstore.deliveries, delivery_retention_seconds=0, token="other"
    )
    # "keeping" holds every partition's lock now: nobody else prunes until it lapses
    assert await one.prune_deliveries() == 0 and await other.prune_deliveries() == 0
    for p in range(dstore.keys.partitions):
        await dstore.client.delete(dstore.keys.delivery(p).lock)
    assert await one.prune_deliveries() == 6
    assert one.pruned == 6 and await ids_of(dstore) == set()
    # a whole pass of the sweeper (tasks, then deliveries) prunes too
    await mix.add("gone", partition=0)
    report = await one.run_once()
    assert report.skipped_partitions == 0 and one.pruned == 7


def test_a_pass_is_bounded() -> None:
    """A tick looks at no more than this many deliveries per partition."""
    assert PRUNE_BATCH * MAX_PRUNE_STEPS <= 2000


@pytest.mark.parametrize("value", [0, 59, 31_536_001, "a month"])
def test_the_retention_setting_has_a_range(value: object) -> None:
    with pytest.raises(SettingsError, match="webhookDeliveryRetentionSeconds"):
        Settings.from_mapping({"webhookDeliveryRetentionSeconds": value})
    assert Settings().webhook_delivery_retention_seconds == 30 * 86400
    assert (
        Settings.from_mapping(
            {"webhookDeliveryRetentionSeconds": 3600}
        ).webhook_delivery_retention_seconds
        == 3600
    )


@pytest.mark.parametrize("partitions", [1, 4])
async def test_the_new_scripts_keep_to_their_declared_keys(
    request: pytest.FixtureRequest, partitions: int
) -> None:
    """Enqueue, outcomes (with a request, to an endpoint: the statistics), replay, search in
    every plan, counts, prune (indexing an old record, pruning), and outcomes and replay again
    once every record is indexed, under the strict-keys checker of tests/strict_keys.py, on a
    real redis-server."""
    store = RedisStore.from_url(server_url(request, "redis"), KeySchema(new_prefix(), partitions))
    try:
        run = StrictRun(store)
        mix = Mix(store)
        task = new_task_id()
        sent = json.loads(attempt())
        sent["request"] = {"at": 1, "headers": [["Host", "h"]]}
        for status in ("pending", "retrying", "succeeded", "dead", "gone"):
            d = await mix.add(status, endpoint="ep_s", task=task, partition=0)
            if status == "retrying":
                await store.deliveries.outcomes(
                    0, [(d.id, "succeeded", 0, msgspec.json.encode(sent))], 5
                )
        await store.deliveries.replay(0, tenant=ACME)
        queries = [
            DeliveryQuery(tenant=ACME, size=2, bound=10),
            DeliveryQuery(tenant=ACME, size=2, bound=10, statuses=("dead",), event_type="x"),
            DeliveryQuery(tenant=ACME, size=2, bound=10, event_type="task.completed"),
            DeliveryQuery(tenant=ACME, size=2, bound=10, endpoint_id="ep_s", after="9" * 13),
            DeliveryQuery(tenant=ACME, size=2, bound=10, task_id=task, created_from_ms=1),
        ]
        for q in queries:
            await store.deliveries.search(0, q)
        await store.deliveries.counts(0, ACME)
        await store.deliveries.endpoint_buckets(0, "ep_s")
        old = msgspec.structs.replace(mix.made[0], id="msg_0_old", status="gone")
        await store.client.hset(store.keys.delivery(0).records, old.id, records.encode(old))
        assert await prune_all(store, retention_ms=0) >= 2
        # every record indexed now: outcomes and replays apply their changes together
        for status in ("dead", "gone"):
            d = await mix.add(status, endpoint="ep_s", task=task, partition=0)
        await store.deliveries.outcomes(0, [(d.id, "succeeded", 0, msgspec.json.encode(sent))], 5)
        await store.deliveries.replay(0, tenant=ACME)
        assert run.violations == []
        for name in ("dlv_enqueue", "dlv_outcome", "dlv_replay", "dlv_search", "dlv_prune"):
            assert run.ran[name], name
        mine = {
            "dlv_lib.lua",
            "dlv_outcome.lua",
            "dlv_replay.lua",
            "dlv_search.lua",
            "dlv_prune.lua",
        }
        unproven = [u for u in await run.unproven() if u.split(":")[0] in mine]
        assert unproven == [], "\n".join(unproven)
        assert await check_delivery_index(store) == []
    finally:
        await store.close()
