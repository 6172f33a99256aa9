"""The store contract: every transition, against every backend (see conftest.BACKENDS). The
other protocols of the store are tests/test_store_contract.py's."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from codeq.domain import Location, NewTask, TaskStatus, makes_ready
from codeq.engine import Engine
from codeq.errors import Conflict, Forbidden, InvalidRequest, NotFound
from codeq.store.keys import queue_segment
from codeq.store.redis_store import RedisStore
from tests.conftest import eventually

T = "tenant-a"


def new(command: str = "RENDER", payload: str = '{"n":1}', **kw: Any) -> NewTask:
    return NewTask(command=command, payload=payload, **kw)


async def entries_of(store: RedisStore, task_id: str) -> list[dict[str, str]]:
    """The stream entries of a task, as written."""
    p = store.keys.partition_of(task_id)
    out = []
    for _, fields in await store.client.xrange(store.keys.partition(p).events):
        e = {k.decode(): v.decode() for k, v in fields.items()}
        if e["id"] == task_id:
            out.append(e)
    return out


async def events_of(store: RedisStore, task_id: str) -> list[dict[str, str]]:
    """The events of a task as every reader takes them: a create's entry that makes the task
    ready is its ``task.created`` and then its ``task.ready`` (codeq.domain.makes_ready)."""
    out = []
    for e in await entries_of(store, task_id):
        out.append(e)
        if e["type"] == "task.created" and makes_ready(e["type"], "depth" in e):
            out.append({**e, "type": "task.ready"})
    return out


async def all_events(store: RedisStore) -> list[dict[str, str]]:
    out = []
    for p in range(store.keys.partitions):
        for _, fields in await store.client.xrange(store.keys.partition(p).events):
            out.append({k.decode(): v.decode() for k, v in fields.items()})
    return out


# -- create -----------------------------------------------------------------------------


async def test_create_immediate_is_ready_and_readable(engine: Engine, store: RedisStore) -> None:
    out = await engine.create(T, new(priority=4, webhook="http://127.0.0.1:9/cb"))
    t = out.task
    assert not out.replayed
    assert t.status is TaskStatus.PENDING and t.last_known_location is Location.PENDING_LIST
    assert (t.attempts, t.max_attempts, t.priority) == (0, 5, 4)
    assert t.payload == '{"n":1}' and t.tenant_id == T and t.command == "RENDER"
    got = await engine.get_task(T, t.id)
    assert got.id == t.id and got.payload == '{"n":1}' and got.webhook == "http://127.0.0.1:9/cb"
    evs = await events_of(store, t.id)
    assert [e["type"] for e in evs] == ["task.created", "task.ready"]
    assert evs[0]["priority"] == "4" and evs[0]["tenant"] == T and evs[0]["command"] == "RENDER"
    assert evs[1]["depth"] == "1" and evs[1]["wasEmpty"] == "1"
    # written as one entry: the task.created that carries its task.ready's fields
    assert [e["type"] for e in await entries_of(store, t.id)] == ["task.created"]


async def test_priority_is_clamped_and_max_attempts_defaults(engine: Engine) -> None:
    hi = await engine.create(T, new(priority=42))
    lo = await engine.create(T, new(priority=-3, max_attempts=2))
    assert hi.task.priority == 9 and lo.task.priority == 0 and lo.task.max_attempts == 2


@pytest.mark.parametrize(
    ("task", "field"),
    [
        (new(command="bad command"), "command"),
        (new(command="x" * 129), "command"),
        (new(payload="null"), "payload"),
        (new(webhook="ftp://example.invalid/x"), "webhook"),
        (new(webhook="http://a..b.example/x"), "webhook"),  # an empty DNS label
        (new(webhook="http://:8080/x"), "webhook"),
        (new(webhook="http://example.test:0/x"), "webhook"),
        (new(webhook="http://example.test:99999/x"), "webhook"),
        (new(max_attempts=-1), "maxAttempts"),
        (new(delay_seconds=-1), "delaySeconds"),
        (new(idempotency_key="k" * 257), "idempotencyKey"),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    engine: Engine, store: RedisStore, task: NewTask, field: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        await engine.create(T, task)
    assert info.value.field == field
    assert await engine.list_queues(None) == []
    assert await all_events(store) == []


async def test_delayed_task_is_invisible_until_due(engine: Engine, store: RedisStore) -> None:
    t = (await engine.create(T, new(delay_seconds=0.3))).task
    assert t.last_known_location is Location.DELAYED_ZSET and t.run_at_ms is not None
    assert await engine.claim(T, "w", ["RENDER"]) is None
    stats = await engine.queue_stats(T, "RENDER")
    assert (stats.ready, stats.delayed) == (0, 1)
    claimed = await eventually(lambda: engine.claim(T, "w", ["RENDER"]))
    assert claimed.id == t.id and claimed.attempts == 1
    assert time.time() * 1000 >= t.run_at_ms
    types = [e["type"] for e in await events_of(store, t.id)]
    assert types == ["task.created", "task.ready", "task.claimed"]


async def test_run_at_in_the_past_means_now_and_wins_over_delay(engine: Engine) -> None:
    past = int(time.time() * 1000) - 60_000
    t = (await engine.create(T, new(run_at_ms=past, delay_seconds=3600))).task
    assert t.last_known_location is Location.PENDING_LIST
    assert (await engine.claim(T, "w", ["render"])) is not None


async def test_idempotent_repeat_returns_the_same_task(engine: Engine, store: RedisStore) -> None:
    a = await engine.create(T, new(payload='{"a":1,"b":2}', idempotency_key="order-7"))
    b = await engine.create(T, new(payload='{"b":2,"a":1}', idempotency_key="order-7"))
    assert b.replayed and b.task.id == a.task.id and b.task.payload == '{"a":1,"b":2}'
    with pytest.raises(Conflict) as info:
        await engine.create(T, new(payload='{"a":2}', idempotency_key="order-7"))
    assert info.value.code == "idempotency_conflict"
    with pytest.raises(Conflict):
        await engine.create(
            T, new(command="OTHER", payload='{"a":1,"b":2}', idempotency_key="order-7")
        )
    other_tenant = await engine.create(
        "tenant-b", new(payload='{"a":1,"b":2}', idempotency_key="order-7")
    )
    assert not other_tenant.replayed and other_tenant.task.id != a.task.id
    assert (await engine.queue_stats(T, "RENDER")).ready == 1
    created = [e for e in await all_events(store) if e["type"] == "task.created"]
    assert len(created) == 2


async def test_batch_create_items_stand_alone(engine: Engine, store: RedisStore) -> None:
    items = [new(payload=f'{{"i":{i}}}') for i in range(30)]
    items[3] = new(command="no spaces allowed")
    items[7] = new(idempotency_key="dup")
    items[8] = new(idempotency_key="dup")
    out = await engine.create_many(T, items)
    assert len(out) == 30
    assert isinstance(out[3], InvalidRequest)
    created = [o for o in out if not isinstance(o, Exception)]
    assert len(created) == 29
    assert out[8].replayed and out[8].task.id == out[7].task.id  # type: ignore[union-attr]
    assert (await engine.queue_stats(T, "RENDER")).ready == 28


# -- claim order ------------------------------------------------------------------------


async def test_claim_takes_highest_priority_then_fifo(engine: Engine) -> None:
    ids = {}
    for name, prio in [("a0", 0), ("b9", 9), ("c5", 5), ("d9", 9), ("e0", 0)]:
        ids[(await engine.create(T, new(payload=f'"{name}"', priority=prio))).task.id] = name
    order = []
    for _ in range(5):
        t = await engine.claim(T, "w", ["RENDER"])
        assert t is not None
        order.append(ids[t.id])
    if engine.keys.partitions == 1:
        assert order == ["b9", "d9", "c5", "a0", "e0"]
    else:  # order holds within a partition; a claim probes partitions from a random start
        assert sorted(order) == ["a0", "b9", "c5", "d9", "e0"]
    assert await engine.claim(T, "w", ["RENDER"]) is None


async def test_claim_across_commands_priority_then_request_order(engine: Engine) -> None:
    a = (await engine.create(T, new(command="A", priority=3))).task
    b = (await engine.create(T, new(command="B", priority=3))).task
    c = (await engine.create(T, new(command="C", priority=7))).task
    first = await engine.claim(T, "w", ["A", "B", "C"])
    second = await engine.claim(T, "w", ["B", "A", "C"])
    third = await engine.claim(T, "w", ["B", "A", "C"])
    got = [first.id, second.id, third.id]  # type: ignore[union-attr]
    if engine.keys.partitions == 1:
        assert got == [c.id, b.id, a.id]
    else:
        assert sorted(got) == sorted([a.id, b.id, c.id])


async def test_routing_is_case_insensitive_and_tenant_scoped(engine: Engine) -> None:
    t = (await engine.create(T, new(command="Render.Video"))).task
    assert await engine.claim("tenant-b", "w", ["render.video"]) is None
    got = await engine.claim(T, "w", ["RENDER.VIDEO"])
    assert got is not None and got.id == t.id and got.command == "Render.Video"


async def test_queue_names_that_share_a_prefix_stay_apart(engine: Engine) -> None:
    await engine.create(T, new(command="job-long"))
    assert await engine.claim(T, "w", ["job"]) is None
    await engine.create("ten", new(command="x"))
    assert await engine.claim("te", "w", ["nx"]) is None
    assert await engine.claim(T, "w", ["job-long"]) is not None


# -- lease holder operations ------------------------------------------------------------


async def test_claim_sets_a_complete_lease(engine: Engine, store: RedisStore) -> None:
    created = (await engine.create(T, new())).task
    t = await engine.claim(T, "worker-1", ["RENDER"], lease_seconds=60)
    assert t is not None and t.id == created.id
    assert t.status is TaskStatus.IN_PROGRESS and t.last_known_location is Location.INPROG_SET
    assert t.worker_id == "worker-1" and t.lease_id and t.attempts == 1
    assert t.lease_until_ms is not None
    assert 59_000 <= t.lease_until_ms - t.updated_at_ms <= 60_000
    ev = (await events_of(store, t.id))[-1]
    assert ev["type"] == "task.claimed" and ev["workerId"] == "worker-1" and ev["attempt"] == "1"


async def test_heartbeat_extends_only_for_the_holder(engine: Engine) -> None:
    await engine.create(T, new())
    t = await engine.claim(T, "w1", ["RENDER"], lease_seconds=10)
    assert t is not None and t.lease_until_ms is not None
    hb = await engine.heartbeat(T, t.id, "w1", lease_id=t.lease_id, extend_seconds=120)
    assert hb.lease_until_ms is not None and hb.lease_until_ms > t.lease_until_ms + 100_000
    with pytest.raises(Forbidden) as forbidden:
        await engine.heartbeat(T, t.id, "w2")
    assert forbidden.value.code == "not_owner"
    with pytest.raises(Conflict) as mismatch:
        await engine.heartbeat(T, t.id, "w1", lease_id="0" * 32)
    assert mismatch.value.code == "lease_mismatch"
    with pytest.raises(NotFound):
        await engine.heartbeat("tenant-b", t.id, "w1")
    with pytest.raises(NotFound):
        await engine.heartbeat(T, "not-a-task-id", "w1")
    with pytest.raises(NotFound):
        await engine.heartbeat(T, "01890000-0000-7000-8000-000000000000", "w1")


async def test_abandon_goes_to_the_back_with_attempts_kept(
    engine: Engine, store: RedisStore
) -> None:
    a = (await engine.create(T, new())).task
    b = (await engine.create(T, new())).task
    t = await engine.claim(T, "w", ["RENDER"])
    assert t is not None and t.id in (a.id, b.id)
    if engine.keys.partitions == 1:
        assert t.id == a.id  # FIFO inside one partition
    first, second = (a, b) if t.id == a.id else (b, a)
    back = await engine.abandon(T, t.id, "w", lease_id=t.lease_id)
    assert back.status is TaskStatus.PENDING and back.attempts == 1 and back.worker_id is None
    nxt = await engine.claim(T, "w", ["RENDER"])
    again = await engine.claim(T, "w", ["RENDER"])
    assert nxt is not None and again is not None
    if engine.keys.partitions == 1:
        assert nxt.id == second.id and again.id == first.id  # the abandoned one went to the back
    assert {nxt.id, again.id} == {first.id, second.id}
    assert (await engine.get_task(T, first.id)).attempts == 2
    types = [e["type"] for e in await events_of(store, first.id)]
    assert types == [
        "task.created",
        "task.ready",
        "task.claimed",
        "task.abandoned",
        "task.ready",
        "task.claimed",
    ]


async def test_nack_retries_with_backoff_then_dead_letters(
    engine: Engine, store: RedisStore
) -> None:
    t0 = (await engine.create(T, new(max_attempts=2))).task
    t = await engine.claim(T, "w", ["RENDER"])
    assert t is not None
    out = await engine.nack(T, t.id, "w", lease_id=t.lease_id, reason="flaky")
    assert out.status == "requeued" and 0 <= out.delay_seconds <= 0.2
    got = await engine.get_task(T, t.id)
    assert got.attempts == 1 and got.error == "flaky"
    assert got.last_known_location in (Location.DELAYED_ZSET, Location.PENDING_LIST)
    t = await eventually(lambda: engine.claim(T, "w", ["RENDER"]), timeout=8)
    assert t.attempts == 2
    out = await engine.nack(T, t.id, "w", lease_id=t.lease_id, reason="still broken")
    assert out.status == "dlq" and out.delay_seconds == 0
    dead = await engine.get_task(T, t0.id)
    assert dead.status is TaskStatus.FAILED and dead.last_known_location is Location.DLQ_SET
    assert dead.error == "still broken" and dead.attempts == 2
    stats = await engine.queue_stats(T, "RENDER")
    assert (stats.ready, stats.delayed, stats.in_progress, stats.dlq) == (0, 0, 0, 1)
    ev = await events_of(store, t0.id)
    assert [e["type"] for e in ev][-2:] == ["task.nacked", "task.dead_lettered"]
    assert ev[-1]["error"] == "still broken"


async def test_abandon_on_the_last_attempt_never_exceeds_max_attempts(
    engine: Engine, store: RedisStore
) -> None:
    created = (await engine.create(T, new(max_attempts=2))).task
    for _ in range(2):
        t = await engine.claim(T, "w", ["RENDER"])
        assert t is not None
        await engine.abandon(T, t.id, "w", lease_id=t.lease_id)
    assert await engine.claim(T, "w", ["RENDER"]) is None  # handed out twice: no third time
    dead = await engine.get_task(T, created.id)
    assert dead.status is TaskStatus.FAILED and dead.error == "MAX_ATTEMPTS"
    assert dead.attempts == 2 and dead.last_known_location is Location.DLQ_SET
    types = [e["type"] for e in await events_of(store, created.id)]
    assert types.count("task.claimed") == 2 and types[-1] == "task.dead_lettered"


async def test_completion_clears_an_earlier_nack_reason(engine: Engine) -> None:
    await engine.create(T, new())
    t = await engine.claim(T, "w", ["RENDER"])
    assert t is not None
    await engine.nack(T, t.id, "w", delay_seconds=0, reason="transient")
    t = await engine.claim(T, "w", ["RENDER"])
    assert t is not None and t.error == "transient"
    await engine.complete(T, t.id, "w", result="{}")
    assert (await engine.get_task(T, t.id)).error is None


async def test_nack_override_delay_and_dlq_reason_default(engine: Engine) -> None:
    await engine.create(T, new(command="ONCE", max_attempts=1))
    await engine.create(T, new())
    a = await engine.claim(T, "w", ["ONCE"])
    assert a is not None
    out = await engine.nack(T, a.id, "w")
    assert out.status == "dlq"
    assert (await engine.get_task(T, a.id)).error == "MAX_ATTEMPTS"
    b = await engine.claim(T, "w", ["RENDER"])
    assert b is not None
    out = await engine.nack(T, b.id, "w", delay_seconds=10_000)
    assert out.status == "requeued" and out.delay_seconds == 900  # capped at backoffMaxSeconds
    assert (await engine.queue_stats(T, "RENDER")).delayed == 1


async def test_complete_is_terminal_and_stores_the_result(
    engine: Engine, store: RedisStore
) -> None:
    created = (await engine.create(T, new(webhook="http://127.0.0.1:9/cb"))).task
    t = await engine.claim(T, "w", ["RENDER"])
    assert t is not None
    res = await engine.complete(T, t.id, "w", result='{"url":"s3://x"}', lease_id=t.lease_id)
    assert res.status == "COMPLETED" and res.result == '{"url":"s3://x"}'
    task, stored = await engine.get_result(T, created.id)
    assert task.status is TaskStatus.COMPLETED and task.last_known_location is Location.NONE
    assert stored.result == '{"url":"s3://x"}' and stored.completed_at_ms == task.completed_at_ms
    with pytest.raises(Conflict) as again:
        await engine.complete(T, t.id, "w", result="{}", lease_id=t.lease_id)
    assert again.value.code == "not_in_progress"
    with pytest.raises(NotFound):
        await engine.get_result("tenant-b", created.id)
    ev = (await events_of(store, t.id))[-1]
    assert ev["type"] == "task.completed" and ev["webhook"] == "http://127.0.0.1:9/cb"
    assert await engine.claim(T, "w", ["RENDER"]) is None


async def test_get_many_reads_a_batch_of_one_tenants_tasks_with_results(
    engine: Engine, store: RedisStore
) -> None:
    done = (await engine.create(T, new(command="GM", webhook="http://127.0.0.1:9/cb"))).task
    waiting = (await engine.create(T, new(command="GM2"))).task
    t = await engine.claim(T, "w", ["GM"])
    assert t is not None and t.id == done.id
    await engine.complete(T, t.id, "w", result='{"n":2}', lease_id=t.lease_id)
    p = store.keys.partition_of(done.id)
    got = await store.get_many(
        p,
        [
            (T, done.id, True),
            (T, done.id, False),
            ("tenant-b", done.id, True),  # another tenant's task reads as absent
            (T, "no-such-task", True),
        ],
    )
    assert len(got) == 4
    first, second, foreign, absent = got
    assert first is not None and first.task.status is TaskStatus.COMPLETED
    assert first.result is not None and b'"n":2' in first.result
    assert first.task.payload is None  # payloads are not read
    assert second is not None and second.result is None and second.task.id == done.id
    assert foreign is None and absent is None
    (pending,) = await store.get_many(store.keys.partition_of(waiting.id), [(T, waiting.id, True)])
    assert pending is not None and pending.task.id == waiting.id and pending.result is None
    assert pending.task.status is TaskStatus.PENDING
    assert await store.get_many(p, []) == []


async def test_fail_is_terminal_and_not_dead_lettered(engine: Engine, store: RedisStore) -> None:
    await engine.create(T, new())
    t = await engine.claim(T, "w", ["RENDER"])
    res = await engine.fail(T, t.id, "w", error="bad input file")  # type: ignore[union-attr]
    assert res.status == "FAILED" and res.error == "bad input file"
    got = await engine.get_task(T, t.id)  # type: ignore[union-attr]
    assert got.status is TaskStatus.FAILED and got.last_known_location is Location.NONE
    assert (await engine.queue_stats(T, "RENDER")).dlq == 0
    assert (await events_of(store, got.id))[-1]["type"] == "task.failed"


async def test_result_on_a_pending_task_is_a_conflict(engine: Engine) -> None:
    t = (await engine.create(T, new())).task
    with pytest.raises(Conflict) as info:
        await engine.complete(T, t.id, "w", result="{}")
    assert info.value.code == "not_in_progress"
    with pytest.raises(InvalidRequest):
        await engine.complete(T, t.id, "w", result="[1]")


# -- lease expiry and fencing -----------------------------------------------------------


async def _claim_short(store: RedisStore, engine: Engine, worker: str, lease_ms: int) -> Any:
    queue = queue_segment(T, "RENDER")
    for p in range(store.keys.partitions):
        t = await store.claim(
            p,
            [queue],
            worker_id=worker,
            lease_id=f"lease-{worker}-{time.monotonic_ns()}",
            lease_ms=lease_ms,
            repair_limit=100,
            delays_ms=[0],
            dlq_retention_ms=60_000,
        )
        if t is not None:
            return t
    return None


async def _sweep(engine: Engine) -> int:
    total = 0
    for p in range(engine.keys.partitions):
        report = await engine.sweep_partition(p, "test-sweeper")
        assert report is not None
        total += report.expired
    return total


async def test_expired_lease_is_redelivered_and_fenced(engine: Engine, store: RedisStore) -> None:
    created = (await engine.create(T, new(max_attempts=3))).task
    old = await _claim_short(store, engine, "w1", 100)
    assert old is not None and old.id == created.id
    await eventually(lambda: _past(old.lease_until_ms + 5), timeout=3)
    with pytest.raises(Conflict):  # the lease ran out; nobody swept yet: too late to renew
        await engine.heartbeat(T, old.id, "w1", lease_id=old.lease_id, extend_seconds=30)
    assert await eventually(lambda: _sweep(engine), timeout=3) == 1
    expired = await engine.get_task(T, created.id)
    assert expired.error == "LEASE_EXPIRED" and expired.worker_id is None
    new_claim = await eventually(lambda: engine.claim(T, "w2", ["RENDER"]), timeout=3)
    assert new_claim.attempts == 2
    with pytest.raises(Forbidden):
        await engine.complete(T, old.id, "w1", result="{}", lease_id=old.lease_id)
    await engine.complete(T, new_claim.id, "w2", result="{}", lease_id=new_claim.lease_id)
    types = [e["type"] for e in await events_of(store, created.id)]
    assert types.count("task.lease_expired") == 1 and types.count("task.claimed") == 2


async def _past(ms: int) -> bool:
    return time.time() * 1000 > ms


async def test_same_worker_with_a_stale_lease_id_is_fenced(
    engine: Engine, store: RedisStore
) -> None:
    await engine.create(T, new())
    old = await _claim_short(store, engine, "w", 50)
    fresh = await eventually(lambda: _claim_short(store, engine, "w", 60_000), timeout=3)
    assert fresh.id == old.id and fresh.lease_id != old.lease_id and fresh.attempts == 2
    with pytest.raises(Conflict) as info:
        await engine.complete(T, old.id, "w", result="{}", lease_id=old.lease_id)
    assert info.value.code == "lease_mismatch"
    await engine.complete(T, fresh.id, "w", result="{}", lease_id=fresh.lease_id)


async def test_lease_expiry_on_last_attempt_dead_letters(engine: Engine, store: RedisStore) -> None:
    created = (await engine.create(T, new(max_attempts=1, webhook="http://127.0.0.1:9/x"))).task
    assert await _claim_short(store, engine, "w", 50) is not None
    await eventually(lambda: _sweep(engine), timeout=3)
    dead = await engine.get_task(T, created.id)
    assert dead.status is TaskStatus.FAILED and dead.error == "LEASE_EXPIRED"
    assert dead.last_known_location is Location.DLQ_SET
    ev = await events_of(store, created.id)
    assert [e["type"] for e in ev][-2:] == ["task.lease_expired", "task.dead_lettered"]
    assert ev[-1]["webhook"] == "http://127.0.0.1:9/x"


async def test_claim_repairs_expired_leases_without_the_sweeper(
    engine: Engine, store: RedisStore
) -> None:
    created = (await engine.create(T, new())).task
    assert await _claim_short(store, engine, "w1", 50) is not None
    again = await eventually(lambda: _claim_short(store, engine, "w2", 60_000), timeout=3)
    assert again.id == created.id and again.attempts == 2 and again.worker_id == "w2"


async def test_a_claims_repair_waits_the_backoff_its_table_gives_the_attempt(
    engine: Engine, store: RedisStore
) -> None:
    """A lease a claim finds run out goes back after the delay the claim's backoff table gives
    that attempt (the table travels as text and is read only when a lease has run out)."""
    created = (await engine.create(T, new(max_attempts=5))).task
    first = await _claim_short(store, engine, "w1", 50)
    assert first is not None and first.id == created.id and first.attempts == 1
    await eventually(lambda: _past(first.lease_until_ms + 5), timeout=3)
    again = await store.claim(
        store.keys.partition_of(created.id),
        [queue_segment(T, "RENDER")],
        worker_id="w2",
        lease_id="lease-w2",
        lease_ms=60_000,
        repair_limit=100,
        delays_ms=[70_000, 90_000],
        dlq_retention_ms=60_000,
    )
    assert again is None  # repaired, and waiting out its backoff
    task = await engine.get_task(T, created.id)
    assert task.status is TaskStatus.PENDING and task.error == "LEASE_EXPIRED"
    assert task.last_known_location is Location.DELAYED_ZSET
    assert task.run_at_ms is not None and task.run_at_ms - task.updated_at_ms == 70_000


# -- DLQ --------------------------------------------------------------------------------


async def _dead(engine: Engine, n: int, command: str = "RENDER") -> list[str]:
    ids = []
    for i in range(n):
        await engine.create(T, new(command=command, payload=f"{i}", max_attempts=1))
        t = await engine.claim(T, "w", [command])
        await engine.nack(T, t.id, "w", reason=f"r{i}")  # type: ignore[union-attr]
        ids.append(t.id)  # type: ignore[union-attr]
    return ids


async def test_dlq_browse_pages_in_death_order(engine: Engine) -> None:
    ids = await _dead(engine, 5)
    await _dead(engine, 2, command="OTHER")
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await engine.dlq(T, "render", limit=2, cursor=cursor)
        seen += [t.id for t in page.tasks]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    if engine.keys.partitions == 1:
        assert seen == ids
    assert (await engine.dlq("tenant-b", "render")).tasks == ()


async def test_dlq_requeue_by_ids_and_all(engine: Engine, store: RedisStore) -> None:
    ids = await _dead(engine, 4)
    out = await engine.requeue_dlq(T, "RENDER", ids=[ids[0], "bogus", ids[1]])
    assert out.requeued == 2 and set(out.ids) == {ids[0], ids[1]}
    back = await engine.get_task(T, ids[0])
    assert back.status is TaskStatus.PENDING and back.attempts == 0 and back.error is None
    assert (await engine.requeue_dlq("tenant-b", "RENDER")).requeued == 0
    rest = await engine.requeue_dlq(T, "RENDER")
    assert rest.requeued == 2
    stats = await engine.queue_stats(T, "RENDER")
    assert (stats.ready, stats.dlq) == (4, 0)
    assert [e["type"] for e in await events_of(store, ids[3])][-1] == "task.ready"


# -- stats, cleanup ---------------------------------------------------------------------


async def test_stats_count_every_structure(engine: Engine) -> None:
    await _dead(engine, 1)
    for _ in range(3):
        await engine.create(T, new())
    await engine.create(T, new(delay_seconds=3600))
    await engine.claim(T, "w", ["RENDER"])
    await engine.create("tenant-b", new(command="X"))
    s = await engine.queue_stats(T, "render")
    assert (s.ready, s.delayed, s.in_progress, s.dlq) == (2, 1, 1, 1)
    mine = await engine.list_queues(T)
    assert [(q.tenant_id, q.command) for q in mine] == [(T, "render")]
    everyone = await engine.list_queues(None)
    assert {(q.tenant_id, q.command) for q in everyone} == {(T, "render"), ("tenant-b", "x")}
    empty = await engine.queue_stats(T, "never-created")
    assert (empty.ready, empty.dlq) == (0, 0)


async def test_cleanup_purges_only_terminal_tasks(engine: Engine, store: RedisStore) -> None:
    done = (await engine.create(T, new())).task
    t = await engine.claim(T, "w", ["RENDER"])
    await engine.complete(T, t.id, "w", result="{}")  # type: ignore[union-attr]
    await engine.create(T, new())
    running = await engine.claim(T, "w", ["RENDER"])
    pending = (await engine.create(T, new())).task
    future = int(time.time() * 1000) + 10 * 86_400_000
    assert (await engine.cleanup(before_ms=int(time.time() * 1000))).deleted == 0  # not over
    assert (await engine.cleanup(before_ms=future)).deleted == 1
    with pytest.raises(NotFound):
        await engine.get_task(T, done.id)
    assert (await engine.get_task(T, pending.id)).status is TaskStatus.PENDING
    assert (await engine.get_task(T, running.id)).status is TaskStatus.IN_PROGRESS  # type: ignore[union-attr]
    with pytest.raises(NotFound):  # a vanished task's lease cannot be renewed
        await engine.heartbeat(T, done.id, "w")


async def test_sweeper_lock_keeps_two_sweepers_apart(engine: Engine) -> None:
    assert await engine.sweep_partition(0, "one") is not None
    assert await engine.sweep_partition(0, "two") is None
    assert await engine.sweep_partition(0, "one") is not None


async def test_event_trimming_never_passes_a_group(engine: Engine, store: RedisStore) -> None:
    key = store.keys.partition(0).events
    while await store.client.xlen(key) < 10:  # tasks spread over partitions on a cluster
        await engine.create(T, new())
    await store.client.xtrim(key, maxlen=10, approximate=False)
    await store.client.xgroup_create(key, "g1", id="0")
    first = await store.client.xreadgroup("g1", "c1", {key: ">"}, count=2)
    entries = first[0][1] if isinstance(first, list) else first[key.encode()][0]
    assert len(entries) == 2
    await store.client.xack(key, "g1", entries[1][0])  # the oldest stays pending
    removed = await store.trim_events(0, floor_ms=int(time.time() * 1000) + 60_000)
    assert removed == 0
    await store.client.xack(key, "g1", entries[0][0])
    removed = await store.trim_events(0, floor_ms=int(time.time() * 1000) + 60_000)
    remaining = await store.client.xlen(key)
    assert removed == 1 and remaining == 9  # up to the group's last delivered entry


async def test_concurrent_claims_never_share_a_task(engine: Engine) -> None:
    await engine.create_many(T, [new(payload=str(i)) for i in range(60)])
    claims = await asyncio.gather(*(engine.claim(T, f"w{i}", ["RENDER"]) for i in range(80)))
    got = [c.id for c in claims if c is not None]
    assert len(got) == 60 and len(set(got)) == 60


async def test_tenant_cleanup_leaves_other_tenants_alone(engine: Engine) -> None:
    ids = {}
    for tenant in (T, "tenant-b"):
        await engine.create(tenant, new())
        t = await engine.claim(tenant, "w", ["RENDER"])
        assert t is not None
        await engine.complete(tenant, t.id, "w", result="{}")
        ids[tenant] = t.id
    future = int(time.time() * 1000) + 10 * 86_400_000
    assert (await engine.cleanup(before_ms=future, tenant="tenant-b")).deleted == 1
    with pytest.raises(NotFound):
        await engine.get_task("tenant-b", ids["tenant-b"])
    assert (await engine.get_task(T, ids[T])).status is TaskStatus.COMPLETED
    assert (await engine.cleanup(before_ms=future)).deleted == 1
