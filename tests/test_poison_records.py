"""Poison data never stops the queue (issue 15, items 1-3).

- A task record that cannot be decoded (written by an older version, by hand, by a bug) is
  quarantined on its own: the task goes to the DLQ with UNDECODABLE_RECORD, and every other task
  is still claimed, in order; nothing answers 5xx or fails a script.
- A tenant's cleanup does bounded work, finishes, touches only its tenant, and goes on from a
  cursor when other tenants' entries come first.
- A claim names at most 100 commands; a long list is refused, not worked through.
"""

from __future__ import annotations

import json
import time

import pytest

from codeq.domain import NewTask, TaskStatus
from codeq.engine import MAX_CLAIM_COMMANDS, Engine
from codeq.errors import InvalidRequest, NotFound
from codeq.store.redis_store import RedisStore
from tests.invariants import check_all

POISON = [
    "not json at all",
    "[1, 2, 3]",
    '{"id": "%(id)s"}',  # the fields every script reads are missing
    '{"id": "%(id)s", "q": "%(q)s", "tenant": "acme", "command": "job", "status": "PENDING",'
    ' "loc": "PENDING_LIST", "priority": 0, "attempts": 0, "maxAttempts": 1e20}',
    '{"id": "%(id)s", "q": "%(q)s", "tenant": "acme", "command": "job", "status": "PENDING",'
    ' "loc": "PENDING_LIST", "priority": "high", "attempts": 0, "maxAttempts": 3}',
    '{"id": "%(id)s", "q": "%(q)s", "tenant": "acme", "command": "job", "status": "WEIRD",'
    ' "loc": "PENDING_LIST", "priority": 0, "attempts": 0, "maxAttempts": 3}',
    '{"id": "other-id", "q": "%(q)s", "tenant": "acme", "command": "job", "status": "PENDING",'
    ' "loc": "PENDING_LIST", "priority": 0, "attempts": 0, "maxAttempts": 3}',
]


async def _poison(store: RedisStore, task_id: str, template: str) -> None:
    """Overwrite a task's record with ``template`` (its id and queue filled in)."""
    tasks = store.keys.partition(store.keys.partition_of(task_id)).tasks
    raw = await store.client.hget(tasks, task_id)
    assert raw is not None
    q = json.loads(raw)["q"]
    await store.client.hset(
        tasks, task_id, template % {"id": task_id, "q": q} if "%(" in template else template
    )


async def test_poison_records_in_the_ready_set_go_to_the_dlq_alone(
    engine: Engine, store: RedisStore
) -> None:
    made = [
        (await engine.create("acme", NewTask(command="job", payload=str(i)))).task.id
        for i in range(2 * len(POISON) + 1)
    ]
    bad = made[1::2]  # every other task, so good ones sit before, between and after them
    for task_id, template in zip(bad, POISON, strict=True):
        await _poison(store, task_id, template)
    other = (await engine.create("umbrella", NewTask(command="job", payload="u"))).task.id
    claimed = []
    while (task := await engine.claim("acme", "w", ["job"])) is not None:
        claimed.append(task.id)
        await engine.complete("acme", task.id, "w", result="{}", lease_id=task.lease_id)
    good = [i for i in made if i not in bad]
    if not store.cluster:
        assert claimed == good
    assert sorted(claimed) == sorted(good)
    # the other tenant never noticed
    theirs = await engine.claim("umbrella", "w", ["job"])
    assert theirs is not None and theirs.id == other
    # each poisoned task is dead-lettered on its own, readable, with the reason
    for task_id in bad:
        task = await engine.get_task("acme", task_id)
        assert task.status is TaskStatus.FAILED and task.error == "UNDECODABLE_RECORD"
    [job] = await engine.list_queues("acme")
    assert (job.ready, job.dlq) == (0, len(POISON))
    assert not await check_all(store.client, store.keys)


async def test_poison_in_the_delayed_and_leased_sets_is_quarantined_by_the_sweep(
    engine: Engine, store: RedisStore
) -> None:
    later = await engine.create("acme", NewTask(command="job", payload="d", delay_seconds=1))
    held = (await engine.create("acme", NewTask(command="job", payload="l"))).task.id
    leased = await engine.claim("acme", "w", ["job"], lease_seconds=1)
    assert leased is not None and leased.id == held
    # what is left of each names its queue (a record with no readable queue at all lands under
    # "~unknown", and the delayed/leased counter of its real queue cannot be corrected)
    await _poison(store, later.task.id, POISON[4])
    await _poison(store, held, POISON[3])
    good = (await engine.create("acme", NewTask(command="job", payload="g"))).task.id
    p = store.keys.partition_of(later.task.id)
    # push both due (their scores are what decides), then let claims and the sweeper repair
    k = store.keys.partition(p)
    await store.client.zadd(k.delayed, {later.task.id: 1})
    await store.client.zadd(store.keys.partition(store.keys.partition_of(held)).leased, {held: 1})
    for part in range(store.keys.partitions):
        report = await engine.sweep_partition(part, "poison")
        assert report is not None
    claimed = await engine.claim("acme", "w2", ["job"])
    assert claimed is not None and claimed.id == good
    for task_id in (later.task.id, held):
        task = await engine.get_task("acme", task_id)
        assert task.status is TaskStatus.FAILED and task.error == "UNDECODABLE_RECORD"
        # the counter that went down is the one the unreadable text names: the partition's
        # delayed and leased counters are not known exact any more, and listings stop
        # capping their reads by them (list_tasks.lua)
        qstats = store.keys.partition(store.keys.partition_of(task_id)).qstats
        assert await store.client.hget(qstats, "!uncertain") in (b"1", "1")
    assert not await check_all(store.client, store.keys)


async def test_a_poison_record_answers_no_error_to_its_worker_or_reader(
    engine: Engine, store: RedisStore
) -> None:
    task = (await engine.create("acme", NewTask(command="job", payload="x"))).task
    claimed = await engine.claim("acme", "w", ["job"])
    assert claimed is not None
    await _poison(store, task.id, POISON[5])
    with pytest.raises(NotFound):  # unreadable: as good as absent, never a 500
        await engine.get_task("acme", task.id)
    with pytest.raises(NotFound):
        await engine.complete("acme", task.id, "w", result="{}", lease_id=claimed.lease_id)
    # the sweep finds its lease and quarantines it, and the counters stay right
    await store.client.zadd(
        store.keys.partition(store.keys.partition_of(task.id)).leased, {task.id: 1}
    )
    for part in range(store.keys.partitions):
        await engine.sweep_partition(part, "poison")
    assert (await engine.get_task("acme", task.id)).error == "UNDECODABLE_RECORD"
    assert not await check_all(store.client, store.keys)


async def test_tenant_cleanup_is_bounded_and_goes_on_from_a_cursor(engine: Engine) -> None:
    async def finish(tenant: str, n: int) -> list[str]:
        ids = []
        for i in range(n):
            await engine.create(tenant, NewTask(command="job", payload=str(i)))
            t = await engine.claim(tenant, "w", ["job"])
            assert t is not None
            await engine.complete(tenant, t.id, "w", result="{}", lease_id=t.lease_id)
            ids.append(t.id)
        return ids

    theirs = await finish("other", 30)  # expire first: they come first in the expiry order
    ours = await finish("acme", 5)
    future = int(time.time() * 1000) + 30 * 86_400_000
    deleted, cursor, calls = 0, None, 0
    while True:
        calls += 1
        assert calls <= 20, "cleanup never finished"
        done = await engine.cleanup(before_ms=future, limit=7, tenant="acme", cursor=cursor)
        deleted += done.deleted
        if done.cursor is None:
            break
        cursor = done.cursor
    assert deleted == 5
    assert calls >= 35 // 7  # each call looked at no more than its limit
    for task_id in ours:
        with pytest.raises(NotFound):
            await engine.get_task("acme", task_id)
    for task_id in theirs:
        assert (await engine.get_task("other", task_id)).status is TaskStatus.COMPLETED


@pytest.mark.parametrize("cursor", ["", "!!!", "x" * 600, "MDo5OTk5OTk5OjxzY3JpcHQ-"])
async def test_a_cursor_not_given_out_is_400(engine: Engine, cursor: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        await engine.cleanup(tenant="acme", cursor=cursor)
    assert raised.value.field == "cursor"


async def test_a_claim_names_at_most_100_commands(engine: Engine) -> None:
    await engine.create("acme", NewTask(command="c99", payload="1"))
    many = [f"c{i}" for i in range(MAX_CLAIM_COMMANDS)]
    for too_many in ([*many, "c0"], [f"c{i}" for i in range(60_000)]):  # repeats count too
        with pytest.raises(InvalidRequest) as raised:
            await engine.claim("acme", "w", too_many)
        assert raised.value.field == "commands"
    task = await engine.claim("acme", "w", many)
    assert task is not None and task.command == "c99"
