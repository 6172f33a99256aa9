"""PENDING is listed from two ranges of ``by_status``: P, the ready tasks, and W, the tasks
waiting in the delayed set (a delay, a retry's backoff). A task that waits long then no longer
sits in P below the deleted entries of every task claimed since it was created, which a range
read on KVRocks steps over one by one (docs/performance.md §25). Every transition in and out
of the delayed set moves the task's entry in the same script. Releases before W list delayed
tasks under P and may run beside this one in a rolling update, so a store keeps that layout
until it is switched: by a server's start on a store no release can have used, by ``codeq
serve`` on its private store, else by its operator (docs/deploy.md); the sweeper then moves
the older entries, once per partition. The ``store`` fixtures start switched, as a server's
start leaves a new store."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from codeq.cli.server import local_store
from codeq.domain import ListStatus, NewTask, TaskFilter
from codeq.engine import Engine, EngineConfig
from codeq.settings import Settings
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from codeq.store.scripts import compose
from gateway.app import create_app
from tests.asgi import serve_in_process
from tests.conftest import eventually
from tests.invariants import check_all
from tests.test_api import make_settings
from tests.test_listing import all_pages

ACME = "acme"
HOUR = 3600.0
_GUIDE = (Path(__file__).resolve().parent.parent / "docs" / "deploy.md").read_text("utf-8")


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def _codes(store: RedisStore) -> dict[str, str]:
    """task id -> the listing status code of its ``by_status`` member(s), joined."""
    codes: dict[str, str] = {}
    for p in range(store.keys.partitions):
        for member in await store.client.zrange(store.keys.partition(p).by_status, 0, -1):
            _, code, _, task_id = _s(member).split("!")
            codes[task_id] = codes.get(task_id, "") + code
    return codes


async def _listed(engine: Engine, status: ListStatus | None) -> list[str]:
    return [t.id for t in await all_pages(engine, ACME, TaskFilter(status=status), 2)]


async def _whole(store: RedisStore) -> None:
    problems = await check_all(store.client, store.keys)
    assert not problems, problems


async def test_a_waiting_task_moves_between_w_and_p_with_its_transitions(
    engine: Engine, store: RedisStore
) -> None:
    ready = (await engine.create(ACME, NewTask(command="a", payload="r"))).task
    task = (await engine.create(ACME, NewTask(command="a", payload="1", delay_seconds=0.05))).task
    assert (await _codes(store))[task.id] == "W"
    assert sorted(await _listed(engine, ListStatus.PENDING)) == sorted([ready.id, task.id])
    held = await engine.claim(ACME, "w", ["a"])
    assert held is not None and held.id == ready.id

    # due: a claim makes it ready (W -> P) and takes it (P -> R) in one call
    claimed = await eventually(lambda: engine.claim(ACME, "w", ["a"]))
    assert claimed.id == task.id
    assert (await _codes(store))[task.id] == "R"
    await _whole(store)

    await engine.nack(ACME, task.id, "w", lease_id=claimed.lease_id, delay_seconds=HOUR)
    assert (await _codes(store))[task.id] == "W"  # a retry's backoff waits under W
    assert await _listed(engine, ListStatus.PENDING) == [task.id]
    assert task.id in await _listed(engine, None)
    await _whole(store)

    await engine.cancel(ACME, task.id)
    assert (await _codes(store))[task.id] == "X"
    assert await _listed(engine, ListStatus.PENDING) == []
    await _whole(store)


async def _as_before_w(store: RedisStore, task_ids: list[str]) -> None:
    """Give these delayed tasks the entry a release before W wrote (P), and take the partitions'
    switch away: data of a store that such a release wrote (and may still be writing)."""
    for p in range(store.keys.partitions):
        k = store.keys.partition(p)
        for member in await store.client.zrange(k.by_status, 0, -1):
            tenant, code, position = _s(member).split("!", 2)
            if code == "W" and position.split("!")[1] in task_ids:
                await store.client.zrem(k.by_status, member)
                await store.client.zadd(k.by_status, {f"{tenant}!P!{position}": 0})
        await store.client.hdel(k.qstats, "!ixw", "!ixw_at")


async def _switches(store: RedisStore) -> set[str | None]:
    return {
        None if (v := await store.client.hget(store.keys.partition(p).qstats, "!ixw")) is None
        else _s(v)
        for p in range(store.keys.partitions)
    }  # fmt: skip


async def _sweep(engine: Engine, store: RedisStore) -> None:
    """One sweeper tick: each partition's steps until it has no more to do."""
    for p in range(store.keys.partitions):
        while (report := await engine.sweep_partition(p, "t")) is not None and report.more:
            pass


async def test_a_servers_start_switches_only_a_store_no_release_has_used() -> None:
    """Only a store of its own (the embedded one: nothing else on its server) is known here to
    have seen no other release: on a shared server, another test's libraries may be there."""
    store = RedisStore.embedded(KeySchema("lw" + uuid.uuid4().hex[:8], 3))
    try:
        engine = Engine(store)
        await store.load_scripts()
        assert await _switches(store) == {None}
        assert await store.list_waiting_apart(if_empty=True) == [False] * 3
        made = await engine.create(ACME, NewTask(command="a", payload="1", delay_seconds=HOUR))
        assert (await _codes(store))[made.task.id] == "W"
        await _sweep(engine, store)
        assert await _switches(store) == {"1"}

        await _as_before_w(store, [made.task.id])  # a store with data: its operator switches it
        assert await store.list_waiting_apart(if_empty=True) is None
        assert await _switches(store) == {None}
        await _whole(store)
    finally:
        await store.close()


async def test_a_servers_start_leaves_a_store_another_release_has_used() -> None:
    store = RedisStore.embedded(KeySchema("lw" + uuid.uuid4().hex[:8]))
    try:
        await store.load_scripts()
        # a library of another release (the same script, named by another text's digest)
        other = compose("create", "return 1")
        await store.client.execute_command("FUNCTION", "LOAD", other.source)
        assert await store.list_waiting_apart(if_empty=True) is None
        assert await _switches(store) == {None}
        assert await store.list_waiting_apart() == [False]  # the operator's word is enough
    finally:
        await store.close()


async def test_a_server_starting_on_an_empty_store_switches_it(tmp_path: Path) -> None:
    prefix = "lw" + uuid.uuid4().hex[:10]
    store = RedisStore.embedded(KeySchema(prefix))
    app = create_app(make_settings(tmp_path, prefix), store=store, close_store=True)
    async with serve_in_process(app, http=False):
        assert await _switches(store) == {"0"}


async def test_delayed_tasks_stay_under_p_where_an_older_release_may_write_them(
    engine: Engine, store: RedisStore
) -> None:
    """A store with data is switched by the operator: until then every script lists delayed
    tasks where releases before W do, so those can run beside this one (a rolling update); then
    the older entries are listed until the sweeper has moved them, and every transition out of
    the delayed set takes them along."""
    # the older ones wait: under P they lie below the ready ones, past where a cap of the
    # ready count alone would end the range
    waiting = [
        (await engine.create(ACME, NewTask(command="a", payload=str(i), delay_seconds=HOUR))).task
        for i in range(3)
    ]
    due = (await engine.create(ACME, NewTask(command="b", payload="d", delay_seconds=0.05))).task
    ready = [
        (await engine.create(ACME, NewTask(command="a", payload=f"r{i}"))).task for i in range(2)
    ]
    await _as_before_w(store, [t.id for t in [*waiting, due]])
    more = (await engine.create(ACME, NewTask(command="a", payload="m", delay_seconds=HOUR))).task
    waiting.append(more)
    old = [t.id for t in [*waiting, due]]
    assert {(await _codes(store))[i] for i in old} == {"P"}  # written as an older release does
    await _sweep(engine, store)
    holding = {store.keys.partition_of(i) for i in old}
    for p in holding:  # a partition with data waits for the operator
        assert await store.client.hget(store.keys.partition(p).qstats, "!ixw") is None
    pending = sorted([*old, *(t.id for t in ready)])
    assert sorted(await _listed(engine, ListStatus.PENDING)) == pending
    assert sorted(await _listed(engine, None)) == pending
    await _whole(store)

    assert await store.list_waiting_apart() == [False] * store.keys.partitions  # the operator's
    newer = (await engine.create(ACME, NewTask(command="a", payload="n", delay_seconds=HOUR))).task
    assert (await _codes(store))[newer.id] == "W"
    pending = sorted([*pending, newer.id])
    assert sorted(await _listed(engine, ListStatus.PENDING)) == pending
    assert sorted(await _listed(engine, None)) == pending
    await _whole(store)

    # leaving the delayed set takes the older entry with it: made ready, and cancelled
    claimed = await eventually(lambda: engine.claim(ACME, "w", ["b"]))
    assert claimed.id == due.id and (await _codes(store))[due.id] == "R"
    await engine.cancel(ACME, waiting[0].id)
    assert (await _codes(store))[waiting[0].id] == "X"
    await _whole(store)

    # the sweeper moves the rest under W, and ends the switch
    await _sweep(engine, store)
    assert await _switches(store) == {"1"}
    assert {(await _codes(store))[t.id] for t in waiting[1:]} == {"W"}
    still = sorted([*(t.id for t in waiting[1:]), newer.id, *(t.id for t in ready)])
    assert sorted(await _listed(engine, ListStatus.PENDING)) == still
    await _whole(store)


async def _written_before_w(engine: Engine, store: RedisStore, items: list[NewTask]) -> list[str]:
    """These tasks created as a release before W wrote them, then the store switched."""
    created = []
    for out in await engine.create_many(ACME, items):
        assert not isinstance(out, Exception)
        created.append(out.task.id)
    await _as_before_w(store, created)
    await store.list_waiting_apart()
    return created


async def test_the_sweeper_moves_a_large_set_in_bounded_steps(
    store: RedisStore, config: EngineConfig
) -> None:
    """More delayed tasks than one step looks at, a long run of one score among them: each step
    looks at no more than its bound, and every task is moved, even when tasks the walk has
    passed leave the run meanwhile."""
    engine = Engine(store, dataclasses.replace(config, requeue_inspect_limit=5))
    run_at = int(time.time() * 1000) + 86_400_000  # a day ahead: one score for most of them
    items = [
        NewTask(command="a", payload=str(i), run_at_ms=run_at + i if i % 3 == 1 else run_at)
        for i in range(120)
    ]
    created = await _written_before_w(engine, store, items)

    async def under_p() -> int:
        return list((await _codes(store)).values()).count("P")

    left, steps, cancelled = await under_p(), 0, []
    while await _switches(store) != {"1"}:
        for p in range(store.keys.partitions):
            await engine.sweep_partition(p, "t")
        steps += 1
        now_left = await under_p()
        assert left - now_left <= 5 * store.keys.partitions  # a step moves at most its bound
        left = now_left
        if steps == 2:  # the first of the run, passed by now, leaves it
            for p in range(store.keys.partitions):
                k = store.keys.partition(p)
                first = await store.client.zrangebyscore(k.delayed, run_at, run_at, 0, 1)
                await engine.cancel(ACME, _s(first[0]))
                cancelled.append(_s(first[0]))
        assert steps < 200, "the sweeper's walk does not end"
    assert steps >= len(created) // (5 * store.keys.partitions)
    codes = await _codes(store)
    assert {codes[i] for i in cancelled} == {"X"}
    assert {c for i, c in codes.items() if i not in cancelled} == {"W"}
    assert sorted(await _listed(engine, ListStatus.PENDING)) == sorted(
        set(created) - set(cancelled)
    )
    await _whole(store)


async def test_the_deploy_guides_switch_moves_a_store_with_data(redis_store: RedisStore) -> None:
    """deploy.md's command, run here as it runs in the image, on a store an older release wrote."""
    engine = Engine(redis_store)
    task = (await engine.create(ACME, NewTask(command="a", payload="1", delay_seconds=HOUR))).task
    await _as_before_w(redis_store, [task.id])
    (line,) = [x for x in _GUIDE.splitlines() if x.startswith("kubectl") and "waiting" in x]
    command = line.split(" -- ", 1)[1].split()
    assert command[0] == "python"
    server = redis_store.client.connection_pool.connection_kwargs
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CODEQ_"))},
        "REDIS_URL": f"redis://{server['host']}:{server['port']}",
        "KEY_PREFIX": redis_store.keys.prefix,
        "PARTITIONS": str(redis_store.keys.partitions),
    }
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, *command[1:]],
        capture_output=True, text=True, check=True, timeout=60, env=env,
    )  # fmt: skip
    partitions = range(redis_store.keys.partitions)
    assert out.stdout.split("\n")[:-1] == [f"{p} moving" for p in partitions]
    assert (await _codes(redis_store))[task.id] == "P"  # the sweeper moves it
    await _sweep(engine, redis_store)
    assert (await _codes(redis_store))[task.id] == "W"
    assert await _switches(redis_store) == {"1"}
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, *command[1:]],
        capture_output=True, text=True, check=True, timeout=60, env=env,
    )  # fmt: skip
    assert out.stdout.split("\n")[:-1] == [f"{p} done" for p in partitions]


def test_codeq_serve_switches_its_private_store_even_with_tasks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The private store's lock keeps every other service off it: no older release can run
    beside this one there, so ``codeq serve`` switches it at every start."""
    for name in ("REDIS_URL", "REDIS_ADDR", "REDIS_PASSWORD", "KVROCKS_PASSWORD",
                 "PERSISTENCE_PROVIDER", "PERSISTENCE_CONFIG"):  # fmt: skip
        monkeypatch.setenv(name, "")  # local_store() sets some: restored after the test
    settings = Settings.load(environ={"DATA_DIR": str(tmp_path)})
    assert settings.store_kind == "local"

    async def look(url: str, older: bool) -> set[str | None]:
        store = RedisStore.from_url(url, KeySchema(settings.key_prefix, settings.partitions))
        try:
            if older:  # as a release before W left it, with a task
                await Engine(store).create(ACME, NewTask(command="a", payload="1"))
                await _as_before_w(store, [])
            return await _switches(store)
        finally:
            await store.close()

    with local_store(settings) as running:  # the data an older release's service left
        url = running.redis_url()
        assert url is not None
        asyncio.run(look(url, older=True))
    with local_store(settings) as running:  # this release's start on it
        url = running.redis_url()
        assert url is not None
        assert asyncio.run(look(url, older=False)) == {"0"}


async def test_the_walk_finds_its_place_when_the_run_changes_around_it(
    store: RedisStore, config: EngineConfig
) -> None:
    """Inside a long run of one score: the member the walk stopped at leaves, more members than
    a step join before it, the place it wrote is garbled, and the run falls due and is made
    ready while the walk is inside it. Every task ends with its one right entry."""
    engine = Engine(store, dataclasses.replace(config, requeue_inspect_limit=5))
    run_at = int(time.time() * 1000) + 5000
    # enough that each partition of four holds a run of more than three steps
    items = [NewTask(command="a", payload=str(i), run_at_ms=run_at) for i in range(240)]
    created = await _written_before_w(engine, store, items)
    parts = [store.keys.partition(p) for p in range(store.keys.partitions)]

    async def step() -> None:
        for p in range(store.keys.partitions):
            await engine.sweep_partition(p, "t")

    await step()
    await step()
    places = [_s(await store.client.hget(k.qstats, "!ixw_at") or b"") for k in parts]
    assert all(place.count("!") == 2 for place in places), places  # inside the run
    cancelled = [place.rsplit("!", 1)[1] for place in places]
    for task_id in cancelled:  # the member each walk stopped at leaves
        await engine.cancel(ACME, task_id)
    fake = [f"00000000-0000-7000-8000-{i:012d}" for i in range(8)]  # 8 join before it
    for k in parts:
        await store.client.zadd(k.delayed, dict.fromkeys(fake, run_at))
    await step()
    for k in parts:
        await store.client.zrem(k.delayed, *fake)
    await store.client.hset(parts[0].qstats, "!ixw_at", "not a place")
    await step()

    async def due() -> bool:
        sec, usec = await store.client.time()
        return bool(sec * 1000 + usec // 1000 > run_at)

    assert await _switches(store) == {"0"}  # the walks are still inside the run
    await eventually(due, timeout=10, interval=0.05)
    while await _switches(store) != {"1"}:  # it is due: made ready from its front as it goes
        await step()
    codes = await _codes(store)
    assert {codes[i] for i in cancelled} == {"X"}
    for task_id in set(created) - set(cancelled):
        task = await engine.get_task(ACME, task_id)
        assert codes[task_id] == ("W" if task.last_known_location == "DELAYED_ZSET" else "P")
    assert sorted(await _listed(engine, ListStatus.PENDING)) == sorted(
        set(created) - set(cancelled)
    )
    await _whole(store)

    async def all_ready() -> bool:
        await step()
        return set((await _codes(store)).values()) == {"P", "X"}

    await eventually(all_ready, timeout=10)
    await _whole(store)
