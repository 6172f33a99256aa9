"""Concurrent creates, claims and results of a partition share script calls
(codeq/store/merge.py).

Each caller still gets exactly its own answer; order, priority, idempotency, ownership and the
counters hold as if the calls had come one after the other; a batch larger than one call takes
is cut into several; a call that fails fails only the callers it carried.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import pytest

from codeq.domain import NewTask
from codeq.engine import CreateOutcome, Engine
from codeq.errors import Conflict, StoreUnavailable
from codeq.store.merge import MAX_SCRIPT_ITEMS, CallMerger
from codeq.store.redis_store import RedisStore
from tests.invariants import check_all


async def test_concurrent_creates_keep_their_order_and_their_own_answers(
    engine: Engine, store: RedisStore
) -> None:
    made = await asyncio.gather(
        *(
            engine.create("acme", NewTask(command="render", payload=f'{{"n":{i}}}'))
            for i in range(60)
        ),
        *(engine.create("umbrella", NewTask(command="render", payload=str(i))) for i in range(20)),
    )
    acme, umbrella = made[:60], made[60:]
    assert len({m.task.id for m in made}) == 80
    assert [m.task.payload for m in acme] == [f'{{"n":{i}}}' for i in range(60)]
    assert {m.task.tenant_id for m in acme} == {"acme"}
    assert {m.task.tenant_id for m in umbrella} == {"umbrella"}
    # every one is handed out once; where the calls share one connection in order (not the
    # cluster client: its calls of one instant race), in the order they were made
    claimed = []
    while (task := await engine.claim("acme", "w", ["render"])) is not None:
        claimed.append(task.id)
    assert sorted(claimed) == sorted(m.task.id for m in acme)
    if not store.cluster:
        assert claimed == [m.task.id for m in acme]
    [render] = await engine.list_queues("umbrella")
    assert (render.command, render.ready) == ("render", 20)


async def test_one_idempotency_key_in_concurrent_creates_makes_one_task(engine: Engine) -> None:
    same = NewTask(command="mail", payload='{"to":"a"}', idempotency_key="k-1")
    outcomes = await asyncio.gather(*(engine.create("acme", same) for _ in range(25)))
    assert len({o.task.id for o in outcomes}) == 1
    assert sum(not o.replayed for o in outcomes) == 1
    [mail] = await engine.list_queues("acme")
    assert mail.ready == 1
    # a different payload under a key taken in the same instant is a conflict, not a task
    other = NewTask(command="mail", payload='{"to":"b"}', idempotency_key="k-2")
    first = NewTask(command="mail", payload='{"to":"a"}', idempotency_key="k-2")
    results = await asyncio.gather(
        engine.create("acme", first), engine.create("acme", other), return_exceptions=True
    )
    assert isinstance(results[0], CreateOutcome) and not results[0].replayed
    assert isinstance(results[1], Conflict)
    assert results[1].task_id == results[0].task.id


async def test_a_batch_larger_than_one_call_is_cut_and_stays_whole(engine: Engine) -> None:
    n = MAX_SCRIPT_ITEMS * 2 + 50
    items = [
        NewTask(command="bulk", payload=str(i % (n - 10)), idempotency_key=f"k{i % (n - 10)}")
        for i in range(n)
    ]  # the last ten repeat the first ten (key and payload): one task each, one replay each
    outcomes = await engine.create_many("acme", items)
    assert all(isinstance(o, CreateOutcome) for o in outcomes)
    made = [o for o in outcomes if isinstance(o, CreateOutcome)]
    assert len({o.task.id for o in made}) == n - 10
    assert not any(o.replayed for o in made[10 : n - 10])
    for first, again in zip(made[:10], made[n - 10 :], strict=True):
        # the calls of one batch may run in either order: which of the two made the task varies
        assert first.task.id == again.task.id
        assert sorted([first.replayed, again.replayed]) == [False, True]
    delayed = await engine.create_many(
        "acme", [NewTask(command="bulk", payload="d", delay_seconds=60) for _ in range(5)]
    )
    assert len(delayed) == 5
    [bulk] = await engine.list_queues("acme")
    assert (bulk.ready, bulk.delayed) == (n - 10, 5)


async def test_creates_made_together_use_fewer_script_calls(redis_store: RedisStore) -> None:
    engine = Engine(redis_store)
    await engine.create("acme", NewTask(command="warm", payload="0"))  # scripts loaded

    async def script_calls() -> int:
        info: dict[str, Any] = await redis_store.client.info("commandstats")
        return sum(int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_fcall"))

    before = await script_calls()
    await asyncio.gather(
        *(engine.create("acme", NewTask(command="c", payload="1")) for _ in range(50))
    )
    calls = await script_calls() - before
    assert 1 <= calls <= 5, calls
    [c] = [q for q in await engine.list_queues("acme") if q.command == "c"]
    assert c.ready == 50


async def test_a_failed_call_fails_only_the_callers_it_carried() -> None:
    sent: list[list[int]] = []

    async def send(key: str, items: list[int]) -> Sequence[Any]:
        sent.append(items)
        if 13 in items:
            raise StoreUnavailable("store unavailable: ConnectionError")
        return [x * 10 for x in items]

    merger: CallMerger[str, int] = CallMerger(send, max_items=5)
    results = await asyncio.gather(
        merger.submit("p", [1, 2]),
        merger.submit("p", [3, 4, 5]),  # fills the first call
        merger.submit("p", [11, 12, 13]),  # the second call, which fails
        merger.submit("q", [7]),  # another key: its own call
        return_exceptions=True,
    )
    assert results[0] == [10, 20]
    assert results[1] == [30, 40, 50]
    assert isinstance(results[2], StoreUnavailable)
    assert results[3] == [70]
    assert sorted(sent) == [[1, 2, 3, 4, 5], [7], [11, 12, 13]]


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    gate, entered = asyncio.Event(), asyncio.Event()
    sent: list[list[int]] = []

    async def send(key: str, items: list[int]) -> Sequence[Any]:
        sent.append(items)
        entered.set()
        await gate.wait()
        return items

    merger: CallMerger[str, int] = CallMerger(send)
    first = asyncio.create_task(merger.submit("p", [1]))
    second = asyncio.create_task(merger.submit("p", [2]))
    await asyncio.wait_for(entered.wait(), 5)  # the call carrying both is under way
    assert sent == [[1, 2]]
    first.cancel()
    gate.set()
    assert await second == [2]
    with pytest.raises(asyncio.CancelledError):
        await first


@pytest.mark.parametrize("patience", [0, 1, 2])
async def test_patience_gathers_the_items_of_that_many_more_loop_turns(patience: int) -> None:
    """Items submitted in the turns after the first join its call up to ``patience`` turns
    later (creates wait one: more per call under load); later ones go in a call of their own."""
    sent: list[list[int]] = []

    async def send(key: str, items: list[int]) -> Sequence[Any]:
        sent.append(items)
        return items

    merger: CallMerger[str, int] = CallMerger(send, patience=patience)
    calls = []
    for turn in range(4):  # one item a loop turn
        calls.append(asyncio.ensure_future(merger.submit("p", [turn])))
        await asyncio.sleep(0)  # one turn of the loop (not a wait for anything)
    assert [await c for c in calls] == [[0], [1], [2], [3]]
    # each call carries the items of patience + 1 turns: [[0],[1],[2],[3]], [[0,1],[2,3]], ...
    step = patience + 1
    assert sent == [list(range(4))[i : i + step] for i in range(0, 4, step)]


async def test_concurrent_claims_take_the_best_tasks_in_order(
    engine: Engine, store: RedisStore
) -> None:
    made = {}
    for priority in (0, 5, 9, 5, 0, 9, 3):
        task = (
            await engine.create("acme", NewTask(command="job", payload="1", priority=priority))
        ).task
        made[task.id] = priority
    await engine.create("acme", NewTask(command="other", payload="1", priority=9))
    claims = await asyncio.gather(*(engine.claim("acme", f"w{i}", ["job"]) for i in range(5)))
    got = [c for c in claims if c is not None]
    assert len(got) == 5 and len({c.id for c in got}) == 5
    assert {c.worker_id for c in got} == {f"w{i}" for i in range(5)}
    rest = await asyncio.gather(*(engine.claim("acme", f"v{i}", ["job"]) for i in range(4)))
    assert sum(c is None for c in rest) == 2
    assert {c.id for c in got} | {c.id for c in rest if c is not None} == set(made)
    if not store.cluster:  # priority is per partition: with one, the first claim made gets
        # the best task, and so on
        best = sorted(made.values(), reverse=True)
        assert [made[c.id] for c in got] == best[:5]
        assert sorted(made[c.id] for c in rest if c is not None) == [0, 0]


async def test_claims_of_different_queues_share_calls_and_each_gets_its_own_queues_task(
    redis_store: RedisStore,
) -> None:
    """Claims made together that name different queues, some overlapping, are served by
    fewer script calls (in groups of the same queues); each gets a task of its own queues,
    none is handed out twice, and a queue two groups name is not emptied twice."""
    engine = Engine(redis_store)
    for command in ("a", "b", "c"):
        for i in range(6):
            await engine.create("acme", NewTask(command=command, payload=str(i)))
    await engine.create("acme", NewTask(command="d", payload="1"))  # scripts loaded, left alone
    wants = [["a"], ["b"], ["a", "b"], ["c"], ["b", "c"], ["e"]] * 4  # 24 claims, 18 tasks

    async def script_calls() -> int:
        info: dict[str, Any] = await redis_store.client.info("commandstats")
        return sum(int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_fcall"))

    before = await script_calls()
    got = await asyncio.gather(
        *(engine.claim("acme", f"w{i}", queues) for i, queues in enumerate(wants))
    )
    calls = await script_calls() - before
    assert 1 <= calls <= 4, calls  # 24 claims; up to 16 a call
    leased = [t for t in got if t is not None]
    assert len({t.id for t in leased}) == len(leased)  # none handed out twice
    for i, (queues, task) in enumerate(zip(wants, got, strict=True)):
        if task is not None:  # its own answer: a task of the queues it named, leased to it
            assert task.command in queues and task.worker_id == f"w{i}"
    counts = {q.command: (q.ready, q.in_progress) for q in await engine.list_queues("acme")}
    for command in ("a", "b", "c"):  # each task is ready or leased, once
        ready, leased_n = counts[command]
        assert ready + leased_n == 6
        assert leased_n == sum(t.command == command for t in leased)
    # as if one after the other: a claim that got nothing found its queues empty, and they
    # only emptied further
    for queues, task in zip(wants, got, strict=True):
        if task is None:
            assert all(counts.get(q, (0, 0))[0] == 0 for q in queues), (queues, counts)
    assert counts["d"] == (1, 0)


@pytest.mark.parametrize("seed", range(8))
async def test_claims_of_random_overlapping_queues_lose_and_double_nothing(
    redis_store: RedisStore, seed: int
) -> None:
    """Rounds of claims made together over random, overlapping queue lists at random
    priorities: no task is leased twice or to a claim that did not name its queue, the store's
    invariants hold after every round, and what is left is claimed one by one afterwards (the
    head marks left by the merged calls hide nothing)."""
    rnd = random.Random(seed)
    engine = Engine(redis_store)
    made: dict[str, str] = {}
    for command in ("a", "b", "c"):
        for i in range(rnd.randint(0, 8)):
            new = NewTask(command=command, payload=str(i), priority=rnd.randint(0, 9))
            made[(await engine.create("acme", new)).task.id] = command
    lists = [["a"], ["b"], ["a", "b"], ["b", "a"], ["c"], ["b", "c"], ["c", "a", "b"], ["a", "c"]]
    seen: set[str] = set()
    for _ in range(4):
        wants = [rnd.choice(lists) for _ in range(rnd.randint(1, 14))]
        got = await asyncio.gather(*(engine.claim("acme", f"w{i}", q) for i, q in enumerate(wants)))
        for queues, task in zip(wants, got, strict=True):
            if task is not None:
                assert task.id not in seen and task.command in queues
                seen.add(task.id)
        assert await check_all(redis_store.client, redis_store.keys) == []
    for command in ("a", "b", "c"):
        while (task := await engine.claim("acme", "drain", [command])) is not None:
            assert task.id not in seen
            seen.add(task.id)
    assert seen == set(made)
    counts = {q.command: (q.ready, q.in_progress) for q in await engine.list_queues("acme")}
    for command in ("a", "b", "c"):
        made_n = sum(c == command for c in made.values())
        assert counts.get(command, (0, 0)) == (0, made_n)


async def test_concurrent_results_each_get_their_own_answer(engine: Engine) -> None:
    for i in range(12):
        await engine.create("acme", NewTask(command="job", payload=str(i)))
    held = [await engine.claim("acme", f"w{i}", ["job"]) for i in range(12)]
    tasks = [t for t in held if t is not None]
    assert len(tasks) == 12

    async def finish(i: int) -> object:
        t = tasks[i % 12]
        worker = t.worker_id or ""
        if i >= 12:  # a second result for the same task in the same instant: refused
            return await engine.complete("acme", t.id, worker, result="{}", lease_id=t.lease_id)
        if i == 3:  # not the lease holder
            return await engine.complete("acme", t.id, "someone", result="{}")
        if i % 2:
            return await engine.fail("acme", t.id, worker, error="boom", lease_id=t.lease_id)
        return await engine.complete(
            "acme", t.id, worker, result=f'{{"i":{i}}}', lease_id=t.lease_id
        )

    answers = await asyncio.gather(*(finish(i) for i in range(16)), return_exceptions=True)
    assert isinstance(answers[3], Exception)
    for i in range(12):
        if i != 3:
            assert not isinstance(answers[i], BaseException), answers[i]
    # the repeats of tasks 0..3: refused, except for task 3, whose first result was refused
    assert all(isinstance(a, Exception) for a in answers[12:15])
    assert not isinstance(answers[15], BaseException)
    statuses = {t.id: (await engine.get_task("acme", t.id)).status.value for t in tasks}
    assert sorted(statuses.values()) == ["COMPLETED"] * 7 + ["FAILED"] * 5
    [job] = await engine.list_queues("acme")
    assert job.in_progress == 0
