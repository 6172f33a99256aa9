"""Strict keys (issue 13): every script of the store declares every key it touches, so it runs
under KVRocks' ``lua-strict-key-accessing yes``.

The proof: every script in ``SCRIPT_NAMES`` runs, through the store's public methods and on a
real redis-server, under the checker of :mod:`tests.strict_keys`, which fails on any key that
is not in KEYS (key positions from the server's ``COMMAND GETKEYS``). The branches that touch
keys of their own (idempotency keys, delayed tasks, lease expiry, DLQ, webhooks, delivery
outcomes, subscription modes, expired records) are driven too, with one and four partitions.
Negative tests show the checker does fail, and that a call it could not see is refused.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from importlib import resources

import msgspec
import pytest

from codeq.domain import ListStatus, NewTask, TaskFilter, TaskStatus
from codeq.engine import Engine, EngineConfig
from codeq.errors import Conflict, Forbidden
from codeq.store.deliveries import DeliveryStore
from codeq.store.endpoints import EndpointStore
from codeq.store.hook_events import HookEventStore
from codeq.store.keys import KeySchema, queue_segment
from codeq.store.protocol import DeliveryQuery
from codeq.store.rate_limits import RateLimiter
from codeq.store.redis_store import RedisStore, StoreError
from codeq.store.scripts import SCRIPT_NAMES, Script, compose, load_scripts
from codeq.store.subscriptions import SubscriptionStore
from deliverers import records
from tests.conftest import eventually, new_prefix, server_url
from tests.invariants import check_all
from tests.strict_keys import (
    UNDECLARED,
    StrictRun,
    UncheckedScript,
    call_sites,
    code_only,
    instrument,
    prologue,
)

ACME, GLOBEX = "acme", "globex"
HOOK = "http://127.0.0.1:9/hook"
DAY_MS = 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


async def open_store(request: pytest.FixtureRequest, partitions: int) -> RedisStore:
    return RedisStore.from_url(server_url(request, "redis"), KeySchema(new_prefix(), partitions))


@pytest.fixture
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    s = await open_store(request, 1)
    yield s
    await s.close()


# -- the rewrite sees every call ---------------------------------------------------------------


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_every_call_site_of_a_script_is_checked(name: str) -> None:
    shipped = load_scripts()[name]
    checked = instrument(shipped)
    head = f"#!lua name={checked.function}\n{prologue(name)}"
    assert checked.source.startswith(head)
    body = checked.source[len(head) :]
    sites = call_sites(shipped)
    assert sites
    for site in sites:  # each site is numbered, and found where its file says
        assert f"__strict_call({site.number}, " in body or f"__strict_pcall({site.number}, " in body
        text = lua_file(site.file)
        assert text.startswith("redis.", site.offset), site
        assert text.count("\n", 0, site.offset) + 1 == site.line, site
    assert not re.search(r"\bredis\s*\.\s*p?call\b", code_only(body))
    assert head.count("\n") == 1  # shipped line numbers are kept in error positions
    assert checked.source.count("\n") == shipped.source.count("\n")
    # a function of its own, whose first step takes the call's keys
    assert checked.name == name and checked.function.startswith(f"checked_{name}_")
    assert "local function __codeq(KEYS, ARGV) __strict_begin(KEYS)" in body
    assert body.count(f"'{checked.function}'") == 2 and shipped.function not in body


def lua_file(name: str) -> str:
    return resources.files("codeq.store").joinpath("lua", name).read_text("utf-8")


@pytest.mark.parametrize(("file", "table"), [("lib.lua", "K"), ("dlv_lib.lua", "D")])
def test_the_key_tables_of_the_libraries_hold_only_declared_keys(file: str, table: str) -> None:
    """A site on ``K.x`` / ``D.x`` counts as a fixed key (StrictRun.unproven): so every field
    of those tables is a KEYS entry (bound by the library's ``begin``, from the keys it is
    handed: the function's KEYS), and nothing else assigns to one."""
    text = code_only(lua_file(file))
    assert re.search(rf"^local {table} = {{}}$", text, re.MULTILINE)
    begin = re.search(r"^local function begin\(keys\)\n(.*?)^end$", text, re.DOTALL | re.MULTILINE)
    assert begin is not None
    bound = re.findall(rf"^  {table}\.(\w+) = keys\[(\d+)\]$", begin.group(1), re.MULTILINE)
    assert [int(i) for _, i in bound] == list(range(1, len(bound) + 1)), bound
    for lua in resources.files("codeq.store").joinpath("lua").iterdir():
        code = code_only(lua.read_text("utf-8"))
        if lua.name == file:
            code = code.replace(begin.group(0), "")
        assert not re.search(rf"\b{table}(?:\.\w+|\[[^]]*\])\s*=(?!=)", code), lua.name
        if lua.name != file:  # and no other file makes a table of that name
            assert not re.search(rf"\b{table}\s*=[^=]|\blocal\s+(function\s+)?{table}\b", code)
    users = [
        s for s in load_scripts().values() if s.source.split("\n", 1)[1].startswith(lua_file(file))
    ]
    assert users
    for script in users:  # and every function of that library starts with `begin(KEYS)`
        assert "\nlocal function __codeq(KEYS, ARGV) begin(KEYS)\n" in script.source


@pytest.mark.parametrize(
    "source",
    [
        "local call = redis.call\nreturn call('GET', KEYS[1])",
        "return redis['call']('GET', KEYS[1])",
        "return redis .pcall ('GET', 'elsewhere') and redis.call",
        "local ok, v = pcall(function() return redis.call('GET', 'x') end)\nreturn v",
        "return _G.redis.call('GET', 'x')",
        "local r = rawget(_G, 'redis')\nreturn r.call('GET', 'x')",
        "redis.register_function('other', function() return redis.call('GET', 'x') end)",
    ],
)
def test_a_call_the_rewrite_cannot_see_is_refused(source: str) -> None:
    with pytest.raises(UncheckedScript):
        instrument(compose("probe", source))


def test_calls_named_in_comments_and_strings_are_not_calls() -> None:
    source = (
        "-- redis.call in a comment\n--[[ redis.call(\n]] local s = 'redis.call(' .. [[pcall]]\n"
        "redis.log(redis.LOG_NOTICE, s)\nreturn redis.call('GET', KEYS[1])"
    )
    probe = compose("probe", source)
    checked = instrument(probe).source
    body = checked.split("-- ==== probe.lua ====\n")[1].split("\nend\nif redis.REDIS_VERSION")[0]
    assert body == source.replace("redis.call('GET'", "__strict_call(1, 'GET'")
    (site,) = call_sites(probe)
    assert (site.file, site.line, site.args) == ("probe.lua", 5, ("'GET'", "KEYS[1]"))


# -- the checker fails on an undeclared key, and only then ------------------------------------


async def run_probe(
    store: RedisStore, source: str, keys: tuple[str, ...], args: tuple[str, ...] = ()
) -> object:
    return await store._eval(instrument(compose("probe", source)), keys, args)


@pytest.mark.parametrize(
    ("source", "command"),
    [
        ("return redis.call('GET', ARGV[1])", "GET"),
        ("redis.call('SET', KEYS[1], 1)\nreturn redis.pcall('HSET', ARGV[1], 'f', 1)", "HSET"),
        # keys found by the server's key specs: movable keys, keyword search, a subcommand
        ("return redis.call('ZUNIONSTORE', KEYS[1], 2, KEYS[1], ARGV[1])", "ZUNIONSTORE"),
        ("return redis.call('ZUNIONSTORE', ARGV[1], 1, KEYS[1])", "ZUNIONSTORE"),
        ("return redis.call('XREAD', 'COUNT', 1, 'STREAMS', KEYS[1], ARGV[1], 0, 0)", "XREAD"),
        ("return redis.call('XINFO', 'GROUPS', ARGV[1])", "XINFO"),
        # inside a helper, with the command built at run time (as lib.lua's emit does)
        (
            "local function put(...) return redis.call(unpack({...})) end\n"
            "return put('XADD', ARGV[1], '*', 'a', 'b')",
            "XADD",
        ),
    ],
)
async def test_the_checker_fails_on_an_undeclared_key(
    store: RedisStore, source: str, command: str
) -> None:
    declared = store.keys.partition(0).tasks
    stray = f"{store.keys.tag(0)}:stray"
    with pytest.raises(StoreError) as caught:
        await run_probe(store, source, (declared,), (stray,))
    assert f"{UNDECLARED} {stray} touched by {command} in probe" in str(caught.value)
    assert not await store.client.exists(stray)  # refused before it ran


async def test_the_checker_passes_what_keeps_to_its_keys(store: RedisStore) -> None:
    k = store.keys.partition(0)
    source = (
        "redis.call('SET', KEYS[1], 'v', 'PX', 60000)\n"
        "redis.call('ZUNIONSTORE', KEYS[2], 1, KEYS[3])\n"
        "redis.call('XADD', KEYS[3] .. '', '*', 'a', 'b')\n"  # the same key, built at run time
        "local t = redis.call('TIME')\n"  # no keys at all
        "redis.call('PING')\n"
        "return {redis.call('GET', KEYS[1]), redis.call('XLEN', KEYS[3]), #t}"
    )
    reply = await run_probe(store, source, (k.seq, k.ready, k.events))
    assert reply == [b"v", 1, 2]


async def test_a_shipped_script_that_strays_is_caught_through_the_store(
    store: RedisStore,
) -> None:
    """The whole path the proof relies on: a store method, the checked script, the recorder."""
    run = StrictRun(store)
    shipped = load_scripts()["get"]
    straying = shipped.source.replace(
        "local rec, raw = load_rec(ARGV[2])",
        "redis.call('HGET', K.tasks .. ':shadow', ARGV[2])\nlocal rec, raw = load_rec(ARGV[2])",
    )
    assert straying != shipped.source
    run.scripts["get"] = instrument(Script("get", straying, shipped.function), coverage=True)
    engine = Engine(store)
    task = (await engine.create(ACME, NewTask(command="render", payload="{}"))).task
    with pytest.raises(StoreError, match="touched by HGET in get"):
        await engine.get_task(ACME, task.id)
    assert len(run.violations) == 1 and ":tasks:shadow" in run.violations[0]
    assert run.ran["create"] == 1 and run.ran["get"] == 1


async def test_a_script_cached_before_the_swap_does_not_run_unchecked(store: RedisStore) -> None:
    limiter = RateLimiter(store)  # holds the shipped rate_limit script
    run = StrictRun(store)
    with pytest.raises(AssertionError, match="without the strict-keys checker"):
        await limiter.take("api", ACME, "me", requests_per_minute=60, burst=1)
    assert run.violations and not run.ran


async def test_a_site_that_never_ran_is_unproven_unless_its_keys_are_fixed(
    store: RedisStore,
) -> None:
    source = "\n".join(
        (
            "if ARGV[1] == 'never' then",
            "  redis.call('DEL', KEYS[1])",
            "  redis.call('GET', KEYS[1] .. ':x')",
            "  redis.call('GET', 'literal')",
            "  redis.call(unpack(ARGV))",
            "  redis.call('TIME')",
            "  redis.call('ZUNIONSTORE', KEYS[1], ARGV[2], KEYS[1])",
            "  redis.call('HSET', KEYS[1], ARGV[2], 1)",
            "end",
            "return redis.call('GET', KEYS[1] .. '')",
        )
    )
    store._scripts = {"probe": compose("probe", source)}
    run = StrictRun(store)
    await store._eval(run.scripts["probe"], (store.keys.partition(0).tasks,), ("now",))
    assert [site.line for site in await run.unreached()] == [2, 3, 4, 5, 6, 7, 8]
    unproven = await run.unproven()
    assert [u.split(" ", 1)[0] for u in unproven] == [
        "probe.lua:3",
        "probe.lua:4",
        "probe.lua:5",
        "probe.lua:7",
    ]
    assert "its key KEYS[1] .. ':x' is computed" in unproven[0]
    assert "literal key 'literal'" in unproven[1]
    assert "built at run time" in unproven[2]
    assert "cannot tell its keys" in unproven[3]


# -- every script of the store, under the checker ---------------------------------------------


@pytest.mark.parametrize("partitions", [1, 4])
async def test_every_script_keeps_to_its_declared_keys(
    request: pytest.FixtureRequest, partitions: int
) -> None:
    store = await open_store(request, partitions)
    try:
        run = StrictRun(store)
        engine = Engine(store, EngineConfig(backoff_base_seconds=0.2, backoff_max_seconds=900))
        await exercise_tasks(engine, store)
        await exercise_expiry(engine, store)
        await exercise_deliveries(engine, store)
        await exercise_replay_jobs(store)
        await exercise_subscriptions(store)
        await exercise_endpoints(store)
        await exercise_rate_limits(store)
        await exercise_cleanup(engine)
        assert run.violations == []
        assert run.missing() == [], "scripts never run under the strict-keys checker"
        # what did not run is cleanup of stale entries, on fixed keys the rest has proven
        assert await run.unproven() == [], "call sites with computed keys never checked"
        assert await check_all(store.client, store.keys) == []
    finally:
        await store.close()


async def exercise_tasks(engine: Engine, store: RedisStore) -> None:
    """create (idempotency: new, replay, conflict; delayed; run at; batch), claim, heartbeat,
    nack (ready, delayed, DLQ), abandon, complete, fail, get, get_many, stats, DLQ pages and
    requeue (named ids and the oldest)."""
    hooked = (
        await engine.create(
            ACME, NewTask(command="hooked", payload='{"n":1}', priority=5, webhook=HOOK)
        )
    ).task
    first = await engine.create(
        ACME, NewTask(command="render", payload='{"n":2}', idempotency_key="k1")
    )
    again = await engine.create(
        ACME, NewTask(command="render", payload='{"n": 2}', idempotency_key="k1")
    )
    assert again.replayed and again.task.id == first.task.id
    with pytest.raises(Conflict):
        await engine.create(
            ACME, NewTask(command="render", payload='{"n":3}', idempotency_key="k1")
        )
    await engine.create(ACME, NewTask(command="render", payload="{}", delay_seconds=3600))
    await engine.create(ACME, NewTask(command="later", payload="{}", run_at_ms=now_ms() + DAY_MS))
    batch = await engine.create_many(
        GLOBEX,
        [
            NewTask(command="batch", payload=f'{{"i":{i}}}', idempotency_key=f"b{i % 3}")
            for i in range(6)
        ],
    )
    assert len(batch) == 6

    # the priority-5 task: heartbeat, nack at once, nack for later
    leased = await engine.claim(ACME, "w1", ["hooked"])
    assert leased is not None and leased.id == hooked.id
    await engine.heartbeat(ACME, leased.id, "w1", lease_id=leased.lease_id)
    with pytest.raises(Forbidden):
        await engine.heartbeat(ACME, leased.id, "intruder")
    await engine.nack(ACME, leased.id, "w1", lease_id=leased.lease_id, delay_seconds=0)
    leased = await engine.claim(ACME, "w1", ["hooked"])
    assert leased is not None and leased.id == hooked.id and leased.attempts == 2
    nacked = await engine.nack(ACME, leased.id, "w1", delay_seconds=600, reason="later")
    assert nacked.status == "requeued" and nacked.delay_seconds == 600
    # completed and failed, with and without a webhook
    done = (
        await engine.create(ACME, NewTask(command="done", payload="{}", priority=9, webhook=HOOK))
    ).task
    for expected, commands in ((done.id, ["later", "done"]), (first.task.id, ["render"])):
        leased = await engine.claim(ACME, "w2", commands)
        assert leased is not None and leased.id == expected
        await engine.complete(ACME, leased.id, "w2", result='{"ok":1}', lease_id=leased.lease_id)
    failed = (await engine.create(ACME, NewTask(command="broken", payload="{}"))).task
    leased = await engine.claim(ACME, "w2", ["broken"])
    assert leased is not None and leased.id == failed.id
    await engine.fail(ACME, failed.id, "w2", error="boom")
    _, result = await engine.get_result(ACME, done.id)
    assert result.status == "COMPLETED"
    p = store.keys.partition_of(done.id)
    many = await store.get_many(p, [(ACME, done.id, True), (GLOBEX, done.id, False)])
    assert many[0] is not None and many[0].result is not None and many[1] is None
    # listing (list_tasks): by status, by command with a status, by priority, by idempotency key
    for flt in (
        TaskFilter(),
        TaskFilter(command="render", status=ListStatus.PENDING),
        TaskFilter(priority=5),
        TaskFilter(idempotency_key="k1"),
    ):
        await engine.list_tasks(ACME, flt, limit=2)
    assert (await engine.list_tasks(ACME, TaskFilter(idempotency_key="k1"))).tasks

    # the DLQ: abandoned on the last attempt (claim dead-letters it), nacked on the last
    for webhook, abandon in ((None, True), (HOOK, False), (None, False)):
        task = (
            await engine.create(
                ACME, NewTask(command="one", payload="{}", max_attempts=1, webhook=webhook)
            )
        ).task
        leased = await engine.claim(ACME, "w3", ["one"])
        assert leased is not None and leased.id == task.id
        if abandon:
            await engine.abandon(ACME, task.id, "w3", lease_id=leased.lease_id)
            assert await engine.claim(ACME, "w3", ["one"]) is None
        else:
            assert (await engine.nack(ACME, task.id, "w3", reason="bad")).status == "dlq"
        assert (await engine.get_task(ACME, task.id)).status == TaskStatus.FAILED
    dead: list[str] = []
    cursor: str | None = None
    while True:
        page = await engine.dlq(ACME, "one", limit=1, cursor=cursor)
        dead += [t.id for t in page.tasks]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(dead) == 3
    assert (await engine.requeue_dlq(ACME, "one", ids=[dead[0]])).requeued == 1
    assert (await engine.requeue_dlq(ACME, "one")).requeued == 2

    assert (await engine.queue_stats(ACME, "hooked")).delayed == 1
    assert (await engine.queue_stats(ACME, "render")).delayed == 1
    assert {q.command for q in await engine.list_queues(ACME)} >= {"render", "one", "broken"}
    assert {q.tenant_id for q in await engine.list_queues(None)} == {ACME, GLOBEX}


async def exercise_expiry(engine: Engine, store: RedisStore) -> None:
    """Leases that run out (back to the queue, or to the DLQ on the last attempt) and a delayed
    task that comes due, repaired by sweep and claim; a sweep lock held by another."""
    q = queue_segment(ACME, "exp")
    retry = (await engine.create(ACME, NewTask(command="exp", payload="{}", max_attempts=2))).task
    last = (await engine.create(ACME, NewTask(command="exp", payload="{}", max_attempts=1))).task
    for task in (retry, last):
        claimed = await store.claim(
            store.keys.partition_of(task.id), [q], worker_id="w4", lease_id="L",
            lease_ms=1, repair_limit=100, delays_ms=(60_000,), dlq_retention_ms=7 * DAY_MS,
        )  # fmt: skip
        assert claimed is not None and claimed.id == task.id
        with contextlib.suppress(Conflict):  # LEASE_EXPIRED once the 1 ms has passed
            await store.heartbeat(
                store.keys.partition_of(task.id), ACME, task.id, worker_id="w4", lease_id="L",
                extend_ms=1,
            )  # fmt: skip
    soon = (
        await engine.create(ACME, NewTask(command="soon", payload="{}", delay_seconds=0.001))
    ).task

    async def repaired() -> bool:
        for p in range(store.keys.partitions):
            await engine.sweep_partition(p, "sweeper")
        r = await engine.get_task(ACME, retry.id)
        return (
            r.status == TaskStatus.PENDING
            and (await engine.get_task(ACME, last.id)).status == TaskStatus.FAILED
            and (await engine.queue_stats(ACME, "soon")).ready == 1
        )

    await eventually(repaired)
    assert await engine.sweep_partition(0, "another sweeper") is None  # the lock is held
    leased = await engine.claim(ACME, "w4", ["soon"])
    assert leased is not None and leased.id == soon.id
    await engine.abandon(ACME, soon.id, "w4")
    # cancel: a ready task (twice: the second answers the first), a delayed one, a refused one;
    # and a history read
    await engine.cancel(ACME, soon.id, reason="withdrawn")
    await engine.cancel(ACME, soon.id)
    later = (
        await engine.create(ACME, NewTask(command="soon", payload="{}", delay_seconds=60))
    ).task
    await engine.cancel(ACME, later.id)
    assert len(await engine.task_history(ACME, soon.id)) >= 3


async def exercise_deliveries(engine: Engine, store: RedisStore) -> None:
    """Consumer groups with pending entries (trim_events, gauges), then every delivery script:
    enqueue (new, repeated, with and without entries), claim, outcomes of every kind, defer
    (OK, DONE, MISSING), replay (named, foreign, oldest dead) and poison."""
    ds = DeliveryStore(store)
    entries: list[str] = []
    for p in range(store.keys.partitions):
        await ds.ensure_group(p, "callbacks")
        await ds.ensure_group(p, "idle", start="$")
        read = await ds.read_group(p, "callbacks", "c1", count=2, block_ms=1)
        if p == 0:
            entries = [entry_id for entry_id, _ in read]
    await engine.trim_events()
    for p in range(store.keys.partitions):
        gauges = await store.gauges(p)
        assert {g.group for g in gauges.groups} == {"callbacks", "idle"}

    def delivery(name: str) -> records.Delivery:
        return records.Delivery(
            id=f"msg_{name}", kind="callback", tenant=ACME, url=HOOK, body="{}",
            event_type="task.completed", created_at=0, schedule=[1],
        )  # fmt: skip

    kinds = ("succeeded", "retry", "dead", "gone")
    made = [delivery(kind) for kind in kinds]
    task_id = ""
    while not task_id or store.keys.partition_of(task_id) != 0:  # deliveries of partition 0
        task_id = (await engine.create(ACME, NewTask(command="cb", payload="{}"))).task.id
    made[0] = msgspec.structs.replace(made[0], task_id=task_id)
    pairs = [(d.id, records.encode(d)) for d in made]
    # lease 0: due at once (an entry id that is not pending is acknowledged all the same)
    assert await ds.enqueue(0, "callbacks", entries or ["0-1"], 0, pairs) == [d.id for d in made]
    assert await ds.enqueue(0, "callbacks", [], 0, pairs[:1]) == []  # exists already
    assert len(await ds.claim_due(0, lease_ms=60_000, limit=10)) == 4
    found = await ds.of_task(0, ACME, task_id, limit=10)
    assert found is not None and [records.decode(r).id for r in found] == [made[0].id]
    assert await ds.of_task(0, GLOBEX, task_id, limit=10) is None
    attempt = json.dumps({"at": 1, "latencyMs": 1.0, "statusCode": 500}).encode()
    items = [(d.id, kind, 60_000, attempt) for d, kind in zip(made, kinds, strict=True)]
    replies = await ds.outcomes(0, [*items, ("msg_none", "succeeded", 0, attempt)], kept=1)
    assert replies == [("succeeded", 1), ("retrying", 1), ("dead", 1), ("gone", 1), ("MISSING", 0)]
    assert await ds.defer(0, "msg_retry", delay_ms=1000)
    assert not await ds.defer(0, "msg_succeeded", delay_ms=1000)  # no longer scheduled
    assert not await ds.defer(0, "msg_none", delay_ms=1000)  # gone
    assert await ds.replay(0, tenant=GLOBEX, ids=["msg_dead"]) == []
    assert await ds.replay(0, tenant=ACME, ids=["msg_succeeded"]) == ["msg_succeeded"]
    assert await ds.replay(0, tenant=None) == ["msg_dead"]
    await ds.poison(0, "callbacks", "0-2", 5)
    assert await store.client.llen(store.keys.delivery(0).poison) == 1
    # the listing index (ranges of the index, a task's range), then retention: a record written
    # before the index (indexed by the prune step first), pruning, and a lock held by another
    page = await ds.search(0, DeliveryQuery(tenant=ACME, size=10, bound=100, statuses=("gone",)))
    assert [records.decode(r).id for r in page.records] == ["msg_gone"]
    page = await ds.search(0, DeliveryQuery(tenant=ACME, size=10, bound=100, task_id=task_id))
    assert [records.decode(r).id for r in page.records] == [made[0].id]
    old = msgspec.structs.replace(delivery("old"), status="succeeded", task_id=task_id)
    await store.client.hset(store.keys.delivery(0).records, old.id, records.encode(old))
    pruned = await ds.prune(0, token="sweeper", lock_ms=60_000, limit=100, retention_ms=0)
    assert pruned is not None and pruned.pruned == 2 and pruned.indexed >= 1  # gone, old
    assert await ds.prune(0, token="other", lock_ms=1, limit=100, retention_ms=0) is None


async def exercise_replay_jobs(store: RedisStore) -> None:
    """Replay jobs (issue 18 item 3): put (new, exists), lease (none, one), a step that
    replays and ends the part, a step refused (not leased), cancel (ended, queued, foreign)."""
    ds = DeliveryStore(store)
    dead = records.Delivery(
        id="msg_jobdead", kind="callback", tenant=ACME, url=HOOK, body="{}",
        event_type="task.completed", created_at=now_ms(), schedule=[1],
    )  # fmt: skip
    attempt = json.dumps({"at": 1, "latencyMs": 1.0, "statusCode": 500}).encode()
    for p in range(store.keys.partitions):
        assert await ds.lease_job(p, "d1", lease_ms=60_000) is None
    await ds.enqueue(0, "callbacks", [], 60_000, [(dead.id, records.encode(dead))])
    assert (await ds.outcomes(0, [(dead.id, "dead", 0, attempt)], kept=1))[0][0] == "dead"
    part = msgspec.json.encode({"statuses": ["dead"], "createdFromMs": 0})
    assert await ds.create_job(0, "rpl_one", ACME, part)
    assert not await ds.create_job(0, "rpl_one", ACME, part)
    raw = await ds.lease_job(0, "d1", lease_ms=60_000)
    assert raw is not None and json.loads(raw)["status"] == "running"
    refused = await ds.job_step(
        0, "rpl_one", "d2", lease_ms=1, cursor="", reached=None, statuses=["dead"], ids=[dead.id]
    )
    assert refused.outcome == "LOST"
    step = await ds.job_step(
        0, "rpl_one", "d1", lease_ms=60_000, cursor="", reached=None, statuses=["dead"],
        ids=[dead.id, "msg_none"],
    )  # fmt: skip
    assert (step.outcome, step.replayed, step.skipped, step.status) == ("OK", 1, 1, "done")
    assert await ds.cancel_job(0, "rpl_one", ACME) == "done"
    assert await ds.create_job(0, "rpl_two", ACME, part)
    assert await ds.cancel_job(0, "rpl_two", GLOBEX) == "missing"
    assert await ds.cancel_job(0, "rpl_two", ACME) == "cancelled"
    assert [json.loads(r)["id"] for r in await ds.recent_jobs(0, ACME, limit=5)] == [
        "rpl_two", "rpl_one"
    ]  # fmt: skip


def subscription(sub_id: str, mode: str, group: str | None = None) -> bytes:
    record: dict[str, object] = {
        "id": sub_id, "tenant": ACME, "callbackUrl": HOOK, "eventTypes": ["render"],
        "deliveryMode": mode, "minIntervalSeconds": 0, "expiresAt": 0,
    }  # fmt: skip
    if group is not None:
        record["groupId"] = group
    return msgspec.json.encode(record)


async def exercise_subscriptions(store: RedisStore) -> None:
    """put (create, renew, unknown renewal), pick in every mode, expired records dropped by
    pick and by list, delete (own, foreign, unknown)."""
    subs = SubscriptionStore(store)
    plan = [("s_fan", "fanout", None), ("s_g1", "group", "g"), ("s_g2", "group", "g"),
            ("s_h1", "hash", "h"), ("s_h2", "hash", None)]  # fmt: skip
    for sub_id, mode, group in plan:
        assert await subs.put(sub_id, ACME, subscription(sub_id, mode, group), 60_000)
    assert await subs.put("s_old", ACME, subscription("s_old", "fanout"), -1) is not None
    assert await subs.put("s_fan", ACME, b"", 60_000) is not None
    assert await subs.put("s_none", ACME, b"", 60_000) is None
    assert len(await subs.pick(ACME, "render", 7)) == 4  # fanout, one per group, one per hash
    assert await subs.put("s_old2", ACME, subscription("s_old2", "fanout"), -1) is not None
    assert len(await subs.live(ACME)) == 5
    assert await subs.delete("s_fan", ACME)
    assert not await subs.delete("s_g1", GLOBEX)
    assert not await subs.delete("s_none", ACME)


async def exercise_endpoints(store: RedisStore) -> None:
    """create, patch and rotate (own, unknown, foreign), mark (ok, failing, disabled, gone,
    unknown), list, delete."""
    eps = EndpointStore(store)
    record = msgspec.json.encode({"id": "ep_1", "tenant": ACME, "url": HOOK, "enabled": True})
    await eps.create("ep_1", ACME, record)
    assert await eps.patch("ep_1", ACME, {"description": "d"})
    assert await eps.patch("ep_2", ACME, {"enabled": False}) is None
    assert await eps.patch("ep_1", GLOBEX, {"enabled": False}) is None
    assert await eps.rotate("ep_1", ACME, "whsec_n", DAY_MS)
    assert await eps.rotate("ep_1", GLOBEX, "whsec_x", DAY_MS) is None
    for outcome, after_ms in (("ok", 0), ("failed", DAY_MS), ("failed", 0), ("gone", 0)):
        await eps.mark("ep_1", ACME, outcome, after_ms)
    await eps.mark("ep_none", ACME, "ok", 0)
    (listed,) = await eps.all_of(ACME)
    assert json.loads(listed)["disabledReason"] == "410 Gone"
    await exercise_hook_events(store, eps)
    assert await eps.delete("ep_1", ACME)
    assert not await eps.delete("ep_1", ACME)


async def exercise_hook_events(store: RedisStore, eps: EndpointStore) -> None:
    """The {hooks} stream (issue 18 item 9): patch enabled (true and false, and to what it
    was), then its entries read, acknowledged, set aside (quarantined and poison) and trimmed
    (ep_ack)."""
    assert await eps.patch("ep_1", ACME, {"enabled": True})  # endpoint.enabled
    assert await eps.patch("ep_1", ACME, {"enabled": True})  # no change: no event
    assert await eps.patch("ep_1", ACME, {"enabled": False})  # endpoint.disabled (manual)
    hooks = HookEventStore(store)
    await hooks.ensure_group(0, "endpoints")
    read = await hooks.read_group(0, "endpoints", "c1", count=10, block_ms=1)
    kinds = [dict(zip(f[::2], f[1::2], strict=True))[b"type"] for _, f in read]
    # ep_mark's automatic disable (the failing streak of 0 ms), then the patches
    assert kinds == [b"endpoint.disabled", b"endpoint.enabled", b"endpoint.disabled"]
    (first, _), (second, _), (third, _) = read
    await hooks.acknowledge("endpoints", [first], set_aside=[(second, "bad")], floor_ms=now_ms())
    await hooks.poison(0, "endpoints", third, 5)
    assert [r["entry"] for r in await hooks.set_aside_records()] == [second, third]


async def exercise_rate_limits(store: RedisStore) -> None:
    limiter = RateLimiter(store)  # built after the swap: it takes the checked script
    takes = [
        await limiter.take("api", ACME, "me", requests_per_minute=60, burst=2) for _ in range(3)
    ]
    assert [t.allowed for t in takes] == [True, True, False]


async def exercise_cleanup(engine: Engine) -> None:
    """purge: another tenant's only (ours stay), nothing due yet, then every terminal task
    (completed, failed, dead-lettered)."""
    later = now_ms() + 30 * DAY_MS
    assert (await engine.cleanup(before_ms=later, tenant=GLOBEX)).deleted == 0
    assert (await engine.cleanup()).deleted == 0
    assert (await engine.cleanup(before_ms=later)).deleted >= 4
