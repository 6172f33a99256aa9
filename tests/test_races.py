"""Races and crashes, against the real redis-server: many concurrent clients, invariants.

Concurrency comes from many asyncio clients sharing one connection pool; every operation is a
separate round trip to the server, so interleavings are real server-side interleavings.

The original codeQ's known bugs (spec 01, "Known bugs") and the tests that keep them out:

- completed tasks re-delivered (completion cleared the wrong in-progress key):
  ``test_a_vanished_lease_is_never_reported_as_success`` (claim after complete finds nothing)
  and the 2,000-task test (each task completed exactly once);
- duplicate queue entries from concurrent delayed moves:
  ``test_concurrent_sweeps_and_claims_never_duplicate_entries``;
- a freshly claimed task without a lease: ``test_claim_sets_a_complete_lease`` (contract
  suite) and the invariant check after every test (IN_PROGRESS ⇒ in the leased set, deadline
  and leaseId set);
- attempts counted twice: the 2,000-task test (attempts == claims seen, with nacks and
  abandons mixed in) and ``test_nack_retries_with_backoff_then_dead_letters``;
- idempotency keys deleted by a racing duplicate:
  ``test_fifty_concurrent_creates_with_one_key_make_one_task``;
- heartbeat reporting success on a vanished lease:
  ``test_a_vanished_lease_is_never_reported_as_success`` and, in the contract suite,
  ``test_cleanup_purges_only_terminal_tasks`` (404 after purge) and the expired-lease test.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from codeq.domain import NewTask, TaskStatus
from codeq.engine import Engine, EngineConfig
from codeq.errors import Conflict, Forbidden
from codeq.store.keys import queue_segment
from codeq.store.redis_store import RedisStore

T = "race-tenant"
FAST = EngineConfig(backoff_base_seconds=0.05, backoff_max_seconds=0.2, requeue_inspect_limit=500)


async def test_twenty_workers_complete_two_thousand_tasks_exactly_once(
    redis_store: RedisStore,
) -> None:
    engine = Engine(redis_store, FAST)
    total = 2000
    for start in range(0, total, 500):
        out = await engine.create_many(
            T, [NewTask(command="JOB", payload=str(i)) for i in range(start, start + 500)]
        )
        assert all(not isinstance(o, Exception) for o in out)
    holders: dict[str, str] = {}  # task id -> worker holding a live lease (as we saw it)
    double_leases: list[str] = []
    completed: Counter[str] = Counter()
    claims: Counter[str] = Counter()
    rng = random.Random(7)

    async def worker(name: str) -> None:
        idle = 0
        while idle < 3:
            task = await engine.claim(T, name, ["JOB"], lease_seconds=60)
            if task is None:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            claims[task.id] += 1
            if task.id in holders:
                double_leases.append(task.id)
            holders[task.id] = name
            await asyncio.sleep(0)  # let other workers interleave while we hold it
            roll = rng.random()
            if roll < 0.05:
                del holders[task.id]
                await engine.abandon(T, task.id, name, lease_id=task.lease_id)
            elif roll < 0.10:
                del holders[task.id]
                await engine.nack(T, task.id, name, lease_id=task.lease_id, delay_seconds=0)
            else:
                del holders[task.id]
                await engine.complete(T, task.id, name, result="{}", lease_id=task.lease_id)
                completed[task.id] += 1

    await asyncio.gather(*(worker(f"w{i}") for i in range(20)))
    assert double_leases == []
    assert len(completed) == total and set(completed.values()) == {1}
    stats = await engine.queue_stats(T, "JOB")
    assert (stats.ready, stats.delayed, stats.in_progress, stats.dlq) == (0, 0, 0, 0)
    sample = rng.sample(sorted(completed), 50)
    for task_id in sample:
        t = await engine.get_task(T, task_id)
        assert t.status is TaskStatus.COMPLETED and t.attempts == claims[task_id]


async def test_expired_leases_are_redelivered_and_counted(redis_store: RedisStore) -> None:
    """Half the first claims 'crash' (never answer); their leases expire and others finish."""
    engine = Engine(redis_store, FAST)
    n = 200
    await engine.create_many(T, [NewTask(command="JOB", payload=str(i)) for i in range(n)])
    queue = queue_segment(T, "JOB")
    crashed: set[str] = set()
    for i in range(n // 2):
        t = await redis_store.claim(
            0,
            [queue],
            worker_id=f"doomed{i}",
            lease_id=f"l{i}",
            lease_ms=150,
            repair_limit=500,
            delays_ms=[0],
            dlq_retention_ms=0,
        )
        assert t is not None
        crashed.add(t.id)
    done: Counter[str] = Counter()

    async def worker(name: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while len(done) < n and loop.time() < deadline:
            task = await engine.claim(T, name, ["JOB"], lease_seconds=60)
            if task is None:
                await asyncio.sleep(0.02)
                continue
            await engine.complete(T, task.id, name, result="{}", lease_id=task.lease_id)
            done[task.id] += 1

    sweeper_stop = asyncio.Event()

    async def sweeper() -> None:
        while not sweeper_stop.is_set():
            await engine.sweep_partition(0, "race-sweeper")
            await asyncio.sleep(0.05)

    sweeping = asyncio.create_task(sweeper())
    await asyncio.gather(*(worker(f"w{i}") for i in range(10)))
    sweeper_stop.set()
    await sweeping
    assert len(done) == n and set(done.values()) == {1}
    events = await redis_store.client.xrange(redis_store.keys.partition(0).events)
    expired = [f for _, f in events if f[b"type"] == b"task.lease_expired"]
    assert len(expired) == len(crashed)
    assert {f[b"id"].decode() for f in expired} == crashed
    for task_id in list(crashed)[:20]:
        t = await engine.get_task(T, task_id)
        assert t.attempts == 2 and t.status is TaskStatus.COMPLETED


async def test_fifty_concurrent_creates_with_one_key_make_one_task(
    redis_store: RedisStore,
) -> None:
    engine = Engine(redis_store, FAST)
    outs = await asyncio.gather(
        *(
            engine.create(T, NewTask(command="PAY", payload='{"o":1}', idempotency_key="once"))
            for _ in range(50)
        )
    )
    assert len({o.task.id for o in outs}) == 1
    assert sum(not o.replayed for o in outs) == 1
    assert (await engine.queue_stats(T, "PAY")).ready == 1
    # the key still points at the task: a later repeat replays it (no racing delete)
    again = await engine.create(
        T, NewTask(command="PAY", payload='{"o":1}', idempotency_key="once")
    )
    assert again.replayed and again.task.id == outs[0].task.id


async def test_racing_result_submissions_have_one_winner(redis_store: RedisStore) -> None:
    engine = Engine(redis_store, FAST)
    await engine.create_many(T, [NewTask(command="JOB", payload=str(i)) for i in range(50)])
    for _ in range(50):
        t = await engine.claim(T, "w", ["JOB"])
        assert t is not None

        async def submit(t_id: str = t.id, lease: str | None = t.lease_id) -> str:
            try:
                await engine.complete(T, t_id, "w", result="{}", lease_id=lease)
                return "ok"
            except Conflict:
                return "conflict"

        outcomes = Counter(await asyncio.gather(*(submit() for _ in range(8))))
        assert outcomes == Counter({"ok": 1, "conflict": 7})


async def test_concurrent_sweeps_and_claims_never_duplicate_entries(
    redis_store: RedisStore,
) -> None:
    """Regression (original bug): concurrent delayed moves duplicated queue entries."""
    engine = Engine(redis_store, FAST)
    n = 300
    await engine.create_many(
        T, [NewTask(command="JOB", payload=str(i), delay_seconds=0.1) for i in range(n)]
    )
    got: Counter[str] = Counter()

    async def claimer() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while sum(got.values()) < n and loop.time() < deadline:
            t = await engine.claim(T, "w", ["JOB"])
            if t is None:
                await asyncio.sleep(0.01)
            else:
                got[t.id] += 1

    async def sweeper(token: str) -> None:
        for _ in range(40):
            await engine.sweep_partition(0, token)
            await asyncio.sleep(0.005)

    await asyncio.gather(*(claimer() for _ in range(8)), *(sweeper(f"s{i}") for i in range(4)))
    assert len(got) == n and set(got.values()) == {1}


@pytest.mark.parametrize("op", ["heartbeat", "abandon", "nack", "complete"])
async def test_a_vanished_lease_is_never_reported_as_success(
    redis_store: RedisStore, op: str
) -> None:
    """Regression (original bug): heartbeat reported success on a vanished lease."""
    engine = Engine(redis_store, FAST)
    await engine.create(T, NewTask(command="JOB", payload="1"))
    t = await engine.claim(T, "w", ["JOB"])
    assert t is not None
    await engine.complete(T, t.id, "w", result="{}", lease_id=t.lease_id)
    call = {
        "heartbeat": lambda: engine.heartbeat(T, t.id, "w", lease_id=t.lease_id),
        "abandon": lambda: engine.abandon(T, t.id, "w", lease_id=t.lease_id),
        "nack": lambda: engine.nack(T, t.id, "w", lease_id=t.lease_id),
        "complete": lambda: engine.complete(T, t.id, "w", result="{}", lease_id=t.lease_id),
    }[op]
    with pytest.raises(Conflict):
        await call()
    with pytest.raises(Forbidden):
        await engine.heartbeat(T, t.id, "someone-else")
    assert await engine.claim(T, "w", ["JOB"]) is None  # a completed task is never redelivered
