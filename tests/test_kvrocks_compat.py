"""KVRocks compatibility (spec 06, "KVRocks compatibility notes"): every way KVRocks 2.10 differs
from Redis that the notes list is pinned here twice where that makes sense.

- A probe of the server itself, run on KVRocks and on Redis with each one's answer: what we rely
  on or steer around. A KVRocks release that changes one of these shows up here first.
- A test that our code copes with it on KVRocks: the deliverer takes over a dead consumer's
  entries by its liveness key (never by idle time, which KVRocks reports as 0), recreates a group
  that vanished without waiting for a ``NOGROUP`` that never comes, and forgets dead consumers
  without losing entries or corrupting the group; ``trim_events.lua`` trims exactly (no ``~``);
  ``gauges.lua`` reports the lag Redis would; scripts answer with structure, not error text;
  scripts survive a restart (and the store recovers where they do not).

Found on KVRocks 2.10.1 beyond the notes, and pinned here too: XGROUP DESTROY wipes the whole
stream; XINFO CONSUMERS also lists other groups' consumers; per-consumer pending counts drift on
XCLAIM, and XGROUP DELCONSUMER of a drifted consumer wraps the group's pending count below zero;
``entries-read`` counts from 0 (so ``lag`` is one too many).

Raw probes go through a client whose replies stay as the server sent them (RESP2, redis-py's
parsing switched off), so they pin the server, not redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import InvalidResponse, ResponseError

from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.errors import CodeQError, StoreUnavailable
from codeq.store.deliveries import DeliveryStore
from codeq.store.errors import function_missing
from codeq.store.keys import KeySchema
from codeq.store.protocol import GetReply
from codeq.store.redis_store import RedisStore
from codeq.store.scripts import library_names, load_scripts
from deliverers.runner import Deliverer
from tests.conftest import (
    SERVERS,
    eventually,
    make_store,
    new_prefix,
    require_kvrocks,
    server_url,
)
from tests.receivers import Receiver, receiver
from tests.servers import KvrocksServer, RedisServer
from tests.test_deliveries import settings

CALLBACKS = "callbacks"  # the result-callback consumer group (spec 03)
HOUR_MS = 3_600_000
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=SERVERS)
def kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def raw(request: pytest.FixtureRequest, kind: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the suite's ``kind`` server that hands replies back unparsed (RESP2)."""
    client = aioredis.Redis.from_url(server_url(request, kind), protocol=2)
    client.response_callbacks.clear()
    yield client
    await client.aclose()


def stream_key() -> str:
    return f"compat:{uuid.uuid4().hex}:stream"


def pairs(flat: list[Any]) -> dict[Any, Any]:
    """A RESP2 flat list of name, value, name, value... as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def now_ms() -> int:
    return int(time.time() * 1000)


async def delivered_once(raw: aioredis.Redis, key: str) -> bytes:
    """A stream with one entry, a group ``g`` and that entry delivered to consumer ``a``."""
    entry: bytes = await raw.execute_command("XADD", key, "*", "n", "1")
    await raw.execute_command("XGROUP", "CREATE", key, "g", "0")
    read = await raw.execute_command("XREADGROUP", "GROUP", "g", "a", "STREAMS", key, ">")
    assert read == [[key.encode(), [[entry, [b"n", b"1"]]]]]
    return entry


# --------------------------------------------------------------------------- server probes


async def test_a_fresh_delivery_is_claimable_at_once_whatever_the_min_idle_time(
    raw: aioredis.Redis, kind: str
) -> None:
    key = stream_key()
    entry = await delivered_once(raw, key)
    [[eid, owner, idle, count]] = await raw.execute_command("XPENDING", key, "g", "-", "+", 10)
    assert (eid, owner) == (entry, b"a")
    taken = await raw.execute_command("XCLAIM", key, "g", "b", HOUR_MS, entry, "JUSTID")
    if kind == "kvrocks":
        assert (idle, count) == (0, 0)  # "never delivered" as far as the pending list tells
        assert taken == [entry]  # an hour's min-idle-time, a moment after the delivery
    else:
        assert count == 1 and 0 <= idle < HOUR_MS
        assert taken == []


async def test_xpending_carries_the_last_delivery_time_where_redis_has_the_idle_time(
    raw: aioredis.Redis, kind: str
) -> None:
    key = stream_key()
    entry = await delivered_once(raw, key)
    before = now_ms()
    await raw.execute_command("XCLAIM", key, "g", "b", 0, entry)
    after = now_ms()
    [[_, owner, idle, count]] = await raw.execute_command("XPENDING", key, "g", "-", "+", 10)
    assert owner == b"b"
    if kind == "kvrocks":
        assert before - 1000 <= idle <= after + 1000  # a unix time in ms, not a duration
        assert count == 1  # and one delivery fewer than Redis counts
    else:
        assert 0 <= idle < 60_000
        assert count == 2


@pytest.mark.parametrize("block", [None, 50])
@pytest.mark.parametrize("stream_exists", [True, False])
async def test_xreadgroup_on_a_missing_group_never_says_nogroup_on_kvrocks(
    raw: aioredis.Redis, kind: str, block: int | None, stream_exists: bool
) -> None:
    key = stream_key()
    if stream_exists:
        await raw.execute_command("XADD", key, "*", "n", "1")
    command: list[Any] = ["XREADGROUP", "GROUP", "nogroup", "a", "COUNT", 10]
    if block is not None:
        command += ["BLOCK", block]
    command += ["STREAMS", key, ">"]
    if kind == "kvrocks":
        reply = await raw.execute_command(*command)
        assert reply == ([[key.encode(), []]] if block is None else None)
    else:
        with pytest.raises(ResponseError, match=r"^NOGROUP"):
            await raw.execute_command(*command)


async def test_xreadgroup_with_nothing_new_answers_an_empty_stream_array_on_kvrocks(
    raw: aioredis.Redis, kind: str
) -> None:
    key = stream_key()
    await delivered_once(raw, key)
    again = ["XREADGROUP", "GROUP", "g", "a", "COUNT", 10, "STREAMS", key, ">"]
    reply = await raw.execute_command(*again)
    assert reply == ([[key.encode(), []]] if kind == "kvrocks" else None)
    assert await raw.execute_command(*again[:6], "BLOCK", 50, *again[6:]) is None


async def test_xpending_on_a_missing_group_answers_instead_of_nogroup_on_kvrocks(
    raw: aioredis.Redis, kind: str
) -> None:
    key = stream_key()
    await delivered_once(raw, key)
    if kind == "kvrocks":
        summary = await raw.execute_command("XPENDING", key, "nogroup")
        assert isinstance(summary, list) and len(summary) == 4  # a made-up summary
        assert await raw.execute_command("XPENDING", key, "nogroup", "-", "+", 10) == []
    else:
        for command in (("XPENDING", key, "nogroup"), ("XPENDING", key, "nogroup", "-", "+", 10)):
            with pytest.raises(ResponseError, match=r"^NOGROUP"):
                await raw.execute_command(*command)


async def test_approximate_trimming_is_refused_on_kvrocks(raw: aioredis.Redis, kind: str) -> None:
    key = stream_key()
    exact: list[tuple[Any, ...]] = [
        ("XADD", key, "MAXLEN", "=", 10, "*", "n", 1),
        ("XADD", key, "MAXLEN", 10, "*", "n", 1),
        ("XTRIM", key, "MAXLEN", "=", 10),
        ("XTRIM", key, "MINID", "0-1"),
        ("XTRIM", key, "MINID", "=", "0-1"),
    ]
    for command in exact:
        await raw.execute_command(*command)
    approximate: list[tuple[Any, ...]] = [
        ("XADD", key, "MAXLEN", "~", 10, "*", "n", 1),
        ("XTRIM", key, "MAXLEN", "~", 10),
        ("XTRIM", key, "MINID", "~", "0-1"),
    ]
    for command in approximate:
        if kind == "kvrocks":
            with pytest.raises(ResponseError):
                await raw.execute_command(*command)
        else:
            await raw.execute_command(*command)
    # redis-py adds '~' to a maxlen unless told otherwise
    if kind == "kvrocks":
        with pytest.raises(ResponseError):
            await raw.xadd(key, {"n": 1}, maxlen=10)
    await raw.xadd(key, {"n": 1}, maxlen=10, approximate=False)


async def test_xgroup_destroy_wipes_the_whole_stream_on_kvrocks(
    raw: aioredis.Redis, kind: str
) -> None:
    """Not in Redis's book at all: on KVRocks 2.10 destroying one group takes the stream's
    entries and every other group with it (XLEN still counts them). Our code never sends it."""
    key = stream_key()
    entries = [await raw.execute_command("XADD", key, "*", "n", i) for i in range(3)]
    for group in ("g", "other"):
        await raw.execute_command("XGROUP", "CREATE", key, group, "0")
    assert await raw.execute_command("XGROUP", "DESTROY", key, "other") == 1
    ids = [e[0] for e in await raw.execute_command("XRANGE", key, "-", "+")]
    groups = [g[1] for g in await raw.execute_command("XINFO", "GROUPS", key)]
    if kind == "kvrocks":
        assert (ids, groups) == ([], [])
    else:
        assert (ids, groups) == (entries, [b"g"])


async def test_xinfo_consumers_lists_other_groups_consumers_on_kvrocks(
    raw: aioredis.Redis, kind: str
) -> None:
    """KVRocks 2.10 lists with a group's consumers those of the groups stored after it; XPENDING
    per consumer stays right."""
    key = stream_key()
    await raw.execute_command("XADD", key, "*", "n", 1)
    for group in ("cb", "cb2"):
        await raw.execute_command("XGROUP", "CREATE", key, group, "0")
    await raw.execute_command("XREADGROUP", "GROUP", "cb2", "q", "STREAMS", key, ">")
    listed = [c[1] for c in await raw.execute_command("XINFO", "CONSUMERS", key, "cb")]
    assert listed == ([b"q"] if kind == "kvrocks" else [])
    assert await raw.execute_command("XPENDING", key, "cb", "-", "+", 10, "q") == []


async def test_pending_counts_drift_on_kvrocks_and_deleting_a_drifted_consumer_corrupts_the_group(
    raw: aioredis.Redis, kind: str
) -> None:
    """KVRocks 2.10: an XCLAIM lowers the old owner's count by one however many entries it moves,
    and claiming one's own entry raises one's count; XGROUP DELCONSUMER then subtracts the
    drifted count from the group's, which wraps below zero (an integer hiredis refuses)."""

    async def counts(key: str) -> dict[bytes, int]:
        found = await raw.execute_command("XINFO", "CONSUMERS", key, "g")
        return {c[1]: c[3] for c in found}

    async def held_by_a(key: str) -> list[bytes]:
        entries = [await raw.execute_command("XADD", key, "*", "n", i) for i in range(3)]
        await raw.execute_command("XGROUP", "CREATE", key, "g", "0")
        await raw.execute_command("XREADGROUP", "GROUP", "g", "a", "STREAMS", key, ">")
        return entries

    batch, one_by_one, own = stream_key(), stream_key(), stream_key()
    entries = await held_by_a(batch)
    await raw.execute_command("XCLAIM", batch, "g", "b", 0, *entries)
    for_each = await held_by_a(one_by_one)
    for entry in for_each:
        await raw.execute_command("XCLAIM", one_by_one, "g", "b", 0, entry)
    mine = await held_by_a(own)
    await raw.execute_command("XCLAIM", own, "g", "a", 0, mine[0])
    assert await counts(one_by_one) == {b"a": 0, b"b": 3}  # one entry per call: right on both
    if kind == "kvrocks":
        assert await counts(batch) == {b"a": 2, b"b": 3}
        assert await counts(own) == {b"a": 4}
    else:
        assert await counts(batch) == {b"a": 0, b"b": 3}
        assert await counts(own) == {b"a": 3}
    await raw.execute_command("XACK", batch, "g", *entries)
    await raw.execute_command("XGROUP", "DELCONSUMER", batch, "g", "a")
    if kind == "kvrocks":
        with pytest.raises(InvalidResponse):  # pending: 2**64 - 2
            await raw.execute_command("XINFO", "GROUPS", batch)
    else:
        [group] = await raw.execute_command("XINFO", "GROUPS", batch)
        assert pairs(group)[b"pending"] == 0


@pytest.mark.parametrize("command", ["WAIT", "BRPOPLPUSH", "OBJECT ENCODING"])
async def test_commands_kvrocks_lacks(raw: aioredis.Redis, kind: str, command: str) -> None:
    key = stream_key()
    await raw.execute_command("XADD", key, "*", "n", 1)
    args: dict[str, tuple[Any, ...]] = {
        "WAIT": ("WAIT", 0, 0),
        "BRPOPLPUSH": ("BRPOPLPUSH", key + ":a", key + ":b", "0.01"),
        "OBJECT ENCODING": ("OBJECT", "ENCODING", key),
    }
    if kind == "kvrocks":
        with pytest.raises(ResponseError):
            await raw.execute_command(*args[command])
    else:
        await raw.execute_command(*args[command])


async def test_blmove_works_on_both(raw: aioredis.Redis) -> None:
    key = stream_key()
    await raw.execute_command("RPUSH", key + ":a", "x")
    moved = await raw.execute_command("BLMOVE", key + ":a", key + ":b", "LEFT", "RIGHT", "0.01")
    assert moved == b"x"
    assert await raw.execute_command("LRANGE", key + ":b", 0, -1) == [b"x"]


async def test_error_text_differs_and_structured_script_replies_do_not(
    raw: aioredis.Redis, kind: str
) -> None:
    key = stream_key()
    await raw.execute_command("XADD", key, "*", "n", 1)
    with pytest.raises(ResponseError) as plain:
        await raw.execute_command("INCR", key)
    with pytest.raises(ResponseError) as scripted:
        await raw.execute_command("EVAL", "return redis.call('INCR', KEYS[1])", 1, key)
    if kind == "kvrocks":
        assert str(plain.value).startswith("Invalid argument: WRONGTYPE")
        assert "Invalid argument: WRONGTYPE" in str(scripted.value)
        assert "running script" in str(scripted.value)
    else:
        assert str(plain.value).startswith("WRONGTYPE")
        assert str(scripted.value).startswith("WRONGTYPE")
    # what our scripts do instead: answer with a table whose first element says what happened
    structured = await raw.execute_command("EVAL", "return {'NOT_OWNER', ARGV[1]}", 0, "w2")
    assert structured == [b"NOT_OWNER", b"w2"]


async def test_kvrocks_says_redis_4_and_stays_on_resp2(raw: aioredis.Redis, kind: str) -> None:
    info = (await raw.execute_command("INFO", "server")).decode()
    version = re.search(r"^redis_version:(\S+)", info, re.MULTILINE)
    assert version is not None
    assert pairs(await raw.execute_command("HELLO", 2))[b"proto"] == 2
    if kind == "kvrocks":
        assert version.group(1) == "4.0.0"  # never gate a feature on the version
        # asked for RESP3, it answers (in RESP2) that it speaks RESP2
        answer = await raw.execute_command("HELLO", 3)
        assert isinstance(answer, list)
        assert pairs(answer)[b"proto"] == 2
    else:
        assert int(version.group(1).split(".")[0]) >= 7


async def test_dbsize_is_a_cached_value_on_kvrocks(
    request: pytest.FixtureRequest, kind: str
) -> None:
    # Redis: a database of this probe's own (other tests leave keys with TTLs behind in db 0)
    client = aioredis.Redis.from_url(
        server_url(request, kind), protocol=2, db=0 if kind == "kvrocks" else 7
    )
    try:
        before = await client.dbsize()
        key = stream_key()
        for i in range(3):
            await client.set(f"{key}:{i}", 1)
        if kind == "kvrocks":
            assert await client.dbsize() == before  # not counted yet
            await client.execute_command("DBSIZE", "SCAN")  # a recount, in the background

            async def recounted() -> bool:
                return await client.dbsize() >= before + 3

            await eventually(recounted)
        else:
            assert await client.dbsize() == before + 3
            await client.delete(*(f"{key}:{i}" for i in range(3)))
    finally:
        await client.aclose()


# --------------------------------------------------------------------------- scripts


async def _libraries(client: aioredis.Redis) -> set[str]:
    """The names of the codeq libraries the server has."""
    listed = await client.execute_command("FUNCTION", "LIST")
    return {name for name in library_names(listed) if name.startswith("codeq_")}


async def _function_restart(server: KvrocksServer | RedisServer, persisted: bool) -> None:
    """The store's functions loaded, the server restarted on its dir: they are still there when
    the server keeps its data (KVRocks always, Redis with a file to load), and gone when it
    does not; our store works after the restart either way (it loads them again when a call
    finds its function missing)."""
    prefix = new_prefix()
    client = aioredis.Redis.from_url(server.url, protocol=2)
    store = RedisStore.from_url(server.url, KeySchema(prefix), connect_timeout=0.5)
    try:
        await store.load_scripts()
        ours = {s.function for s in load_scripts().values()}
        assert await _libraries(client) >= ours
        engine = Engine(store, EngineConfig())
        before = (await engine.create("acme", NewTask(command="c", payload="1"))).task
        await client.aclose()
        server.restart()
        client = aioredis.Redis.from_url(server.url, protocol=2)
        if persisted:
            assert await _libraries(client) >= ours
        else:
            assert not await _libraries(client)

        async def answers() -> bool:  # pooled connections to the old process fail once
            try:
                await engine.create("acme", NewTask(command="c", payload="2"))
            except StoreUnavailable:
                return False
            return True

        await eventually(answers, timeout=10)
        assert load_scripts()["create"].function in await _libraries(client)
        if persisted:  # and the data came back with them
            assert (await engine.get_task("acme", before.id)).id == before.id
    finally:
        await client.aclose()
        await store.close()


async def test_functions_survive_a_kvrocks_restart() -> None:
    server = KvrocksServer.start(binary=require_kvrocks())
    try:
        await _function_restart(server, persisted=True)
    finally:
        server.close()


async def test_functions_survive_a_redis_restart_with_its_append_only_file() -> None:
    server = RedisServer.start(persistence=True)
    try:
        await _function_restart(server, persisted=True)
    finally:
        server.close()


async def test_redis_without_its_data_forgets_functions_and_the_store_loads_them_again() -> None:
    server = RedisServer.start()
    try:
        await _function_restart(server, persisted=False)
    finally:
        server.close()


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("kind", ["kvrocks", "redis"])
async def test_the_store_recovers_from_lost_functions(
    request: pytest.FixtureRequest, raw: aioredis.Redis, kind: str, coalesce: bool
) -> None:
    """A call whose function the server does not have (each server words it its own way, and
    both are recognised): both call paths load the library and call again."""
    store = make_store(request, kind, coalesce=coalesce)
    try:
        engine = Engine(store, EngineConfig())
        await engine.create("acme", NewTask(command="c", payload="1"))
        for script in load_scripts().values():  # (KVRocks 2.10 has no FUNCTION FLUSH)
            with contextlib.suppress(ResponseError):  # (a library no call has loaded)
                await raw.execute_command("FUNCTION", "DELETE", script.function)
        with pytest.raises(ResponseError) as missing:
            await raw.fcall(load_scripts()["create"].function, 0)
        assert function_missing(missing.value), missing.value
        listed = library_names(await raw.execute_command("FUNCTION", "LIST"))
        assert load_scripts()["create"].function not in listed
        created = (await engine.create("acme", NewTask(command="c", payload="2"))).task
        assert (await engine.get_task("acme", created.id)).id == created.id
    finally:
        await store.close()


async def test_script_outcomes_are_the_same_domain_errors_on_both(
    request: pytest.FixtureRequest, kind: str
) -> None:
    """Outcomes come from what the scripts return, never from the server's error text."""
    store = make_store(request, kind)
    try:
        engine = Engine(store, EngineConfig())
        task = (await engine.create("acme", NewTask(command="c", payload="1"))).task
        claimed = await engine.claim("acme", "w1", ["c"])
        assert claimed is not None and claimed.lease_id is not None
        seen: list[tuple[str, str]] = []
        attempts: list[tuple[str, str, str | None]] = [
            ("acme", "w2", None),  # another worker
            ("acme", "w1", "not-the-lease"),
            ("other", "w1", None),  # another tenant
        ]
        for tenant, worker, lease in attempts:
            with pytest.raises(CodeQError) as err:
                await engine.complete(tenant, task.id, worker, result="{}", lease_id=lease)
            seen.append((type(err.value).__name__, err.value.code))
        await engine.complete("acme", task.id, "w1", result="{}", lease_id=claimed.lease_id)
        with pytest.raises(CodeQError) as done:
            await engine.complete("acme", task.id, "w1", result="{}", lease_id=claimed.lease_id)
        seen.append((type(done.value).__name__, done.value.code))
        assert seen == [
            ("Forbidden", "not_owner"),
            ("Conflict", "lease_mismatch"),
            ("NotFound", "not_found"),
            ("Conflict", "not_in_progress"),
        ]
    finally:
        await store.close()


# --------------------------------------------------------------------------- streams in Lua


async def entry_ids(store: RedisStore) -> list[str]:
    entries = await store.client.xrange(store.keys.delivery(0).events)
    return [i.decode() for i, _ in entries]


@pytest.mark.parametrize("kind", [*SERVERS, "embedded"])
async def test_trim_events_trims_exactly_and_never_past_what_a_group_holds(
    request: pytest.FixtureRequest, kind: str
) -> None:
    store = make_store(request, kind)
    try:
        engine = Engine(store, EngineConfig())
        for i in range(3):
            await engine.create("acme", NewTask(command="c", payload=str(i)))
        ids = await entry_ids(store)
        n = len(ids)
        assert n >= 3
        d = DeliveryStore(store)
        await d.ensure_group(0, "g")
        read = await d.read_group(0, "g", "c1", count=n - 1, block_ms=50)
        assert [i for i, _ in read] == ids[: n - 1]
        await d.enqueue(0, "g", ids[:1], 1000, [])  # g holds ids[1 : n-1]
        later = now_ms() + HOUR_MS
        assert await store.trim_events(0, floor_ms=1) == 0  # nothing is that old
        assert await store.trim_events(0, floor_ms=later) == 1  # up to g's oldest pending
        assert await entry_ids(store) == ids[1:]
        await d.enqueue(0, "g", ids[1 : n - 1], 1000, [])  # g holds nothing now
        assert await store.trim_events(0, floor_ms=later) == n - 3  # up to g's last read
        assert await entry_ids(store) == ids[n - 2 :]
        await d.ensure_group(0, "late")  # a group that has read nothing holds everything
        await engine.create("acme", NewTask(command="c", payload="more"))
        assert await store.trim_events(0, floor_ms=later) == 0
        assert (await entry_ids(store))[:2] == ids[n - 2 :]
    finally:
        await store.close()


@pytest.mark.parametrize("kind", [*SERVERS, "embedded"])
async def test_gauges_report_the_lag_redis_would(request: pytest.FixtureRequest, kind: str) -> None:
    """KVRocks counts ``entries-read`` from 0, so its own ``lag`` is one too many once a
    group has read anything: a group that has read everything would show lag 1."""
    store = make_store(request, kind)
    try:
        engine = Engine(store, EngineConfig())
        for i in range(3):
            await engine.create("acme", NewTask(command="c", payload=str(i)))
        n = len(await entry_ids(store))
        d = DeliveryStore(store)
        await d.ensure_group(0, "g")

        async def lag_pending() -> tuple[int | None, int]:
            found = {g.group: (g.lag, g.pending) for g in (await store.gauges(0)).groups}
            return found["g"]

        assert await lag_pending() == (n, 0)
        read = await d.read_group(0, "g", "c1", count=n - 2, block_ms=50)
        await d.enqueue(0, "g", [read[0][0]], 1000, [])
        assert await lag_pending() == (2, n - 3)
        rest = await d.read_group(0, "g", "c1", count=n, block_ms=50)
        assert len(rest) == 2
        assert await lag_pending() == (0, n - 1)
    finally:
        await store.close()


# --------------------------------------------------------------------------- the deliverer


async def finish(engine: Engine, url: str, n: int) -> list[str]:
    """Tasks with a result webhook to ``url``, created, claimed and completed."""
    ids = []
    for i in range(n):
        task = (await engine.create("acme", NewTask(command="c", payload=str(i), webhook=url))).task
        claimed = await engine.claim("acme", "w", ["c"])
        assert claimed is not None and claimed.id == task.id
        await engine.complete("acme", task.id, "w", result="{}", lease_id=claimed.lease_id)
        ids.append(task.id)
    return ids


def arrived(r: Receiver) -> list[str]:
    with r.lock:
        return sorted(json.loads(x.body)["taskId"] for x in r.received)


async def group_pending(store: RedisStore, group: str) -> int:
    """The group's pending count as XINFO GROUPS has it (the count gauges.lua reports). It
    must stay equal to what XPENDING lists: KVRocks' XGROUP DELCONSUMER subtracts a consumer's
    own count from it, and when that count had drifted the group's wraps below zero (a
    2**64 - k that the hiredis parser refuses)."""
    look = DeliveryStore(store)
    assert await look.group_exists(0, group)  # parses XINFO GROUPS
    found = {g.group: g.pending for g in (await store.gauges(0)).groups}
    return found[group]


class _HeldStore(RedisStore):
    """Deliverer A's store: a batch that needs task records waits at ``gate`` (A is busy with
    the entries it read, not acknowledging them)."""

    def __init__(self, base: RedisStore) -> None:
        super().__init__(base.client, base.keys, coalesce=False)
        self.holding = asyncio.Event()
        self.gate = asyncio.Event()

    async def get_many(
        self, partition: int, wanted: Sequence[tuple[str, str, bool]]
    ) -> list[GetReply | None]:
        self.holding.set()
        await self.gate.wait()
        return await super().get_many(partition, wanted)


class _Mortal(DeliveryStore):
    """A's delivery side: once ``dead``, no heartbeat and no goodbye (a crashed process)."""

    dead = False

    async def heartbeat(self, partition: int, group: str, consumer: str, ttl_s: int) -> None:
        if not self.dead:
            await super().heartbeat(partition, group, consumer, ttl_s)

    async def release(self, partition: int, group: str, consumer: str) -> None:
        if not self.dead:
            await super().release(partition, group, consumer)


class _Watching(DeliveryStore):
    """B's delivery side: records what B learns about A's liveness in the callbacks group."""

    def __init__(self, store: RedisStore, watched: str) -> None:
        super().__init__(store)
        self.watched = watched
        self.answers: list[bool] = []

    async def alive(self, partition: int, group: str, consumer: str) -> bool:
        answer = await super().alive(partition, group, consumer)
        if group == CALLBACKS and consumer == self.watched:
            self.answers.append(answer)
        return answer


async def test_a_dead_deliverer_is_recovered_by_liveness_never_by_idle_time(
    request: pytest.FixtureRequest, kind: str
) -> None:
    s = settings(consumerTtlSeconds=2)  # heartbeat every 2/3 s, dead 2 s after the last one
    store = make_store(request, kind)
    engine = Engine(store, EngineConfig.from_settings(s))
    look = DeliveryStore(store)
    events = store.keys.delivery(0).events
    held = _HeldStore(store)
    a = Deliverer(held, s, consumer="deliverer-a", block_ms=100, scan_interval=0.05)
    mortal = _Mortal(held)
    a.dstore = mortal
    b = Deliverer(store, s, consumer="deliverer-b", block_ms=100, scan_interval=0.05)
    watching = _Watching(store, a.consumer)
    b.dstore = watching
    a_running = b_running = False
    try:
        with receiver() as r:
            first = await finish(engine, r.url, 4)
            await a.start()
            a_running = True
            await asyncio.wait_for(held.holding.wait(), timeout=10)
            loop = asyncio.get_running_loop()
            held_since = loop.time()
            held_entries = await look.pending_of(0, CALLBACKS, a.consumer)
            assert [i for i, _ in held_entries] == await entry_ids(store)  # all, one batch
            if kind == "kvrocks":  # by idle time, every one of them is up for grabs
                pel = await store.client.xpending_range(events, CALLBACKS, "-", "+", 100)
                assert {(p["time_since_delivered"], p["times_delivered"]) for p in pel} == {(0, 0)}

            await b.start()
            b_running = True
            fresh = await finish(engine, r.url, 1)

            # B serves new work while A holds its batch past the TTL and a take-over pass:
            # a take-over by idle time would have had A's entries by then, on Redis as well.
            window = s.consumer_ttl_seconds * 1.6

            async def b_serves_while_a_holds_past_its_ttl() -> bool:
                return set(fresh) <= set(arrived(r)) and loop.time() - held_since >= window

            await eventually(b_serves_while_a_holds_past_its_ttl, timeout=15)
            stolen = arrived(r) != fresh
            assert not stolen, "a live deliverer's entries were taken"
            assert await look.pending_of(0, CALLBACKS, a.consumer) == held_entries
            assert watching.answers and all(watching.answers), "A was taken for dead alive"

            mortal.dead = True  # A dies holding its batch: nothing acknowledged, no goodbye
            await a.stop(grace=0)
            a_running = False
            assert await look.alive(0, CALLBACKS, a.consumer)  # its key is left to expire

            async def all_arrived() -> bool:
                return arrived(r) == sorted(first + fresh)

            await eventually(all_arrived, timeout=15)
            assert r.count() == len(first) + len(fresh)  # each once: A never sent any
            assert watching.answers[-1] is False
            assert await look.pending_of(0, CALLBACKS, a.consumer) == []

            async def a_forgotten() -> bool:
                names = [name for name, _ in await look.consumers(0, CALLBACKS)]
                return a.consumer not in names and b.consumer in names

            await eventually(a_forgotten, timeout=10)
            assert await group_pending(store, CALLBACKS) == 0
    finally:
        if b_running:
            await b.stop()
        if a_running:
            mortal.dead = False
            await a.stop(grace=0)
        await store.close()


async def test_a_dead_consumer_holding_more_than_a_batch_loses_nothing(
    request: pytest.FixtureRequest, kind: str
) -> None:
    """A dead consumer ("ghost", no liveness key) holds more entries than one take-over pass
    claims, and has a consumer of the same name in another group. KVRocks' XINFO CONSUMERS
    lists that other group's consumers too, and its pending counts drift: what a consumer holds
    must come from XPENDING, or the ghost is forgotten (XGROUP DELCONSUMER) with entries still
    pending, and their webhooks are never sent."""
    s = settings(consumerTtlSeconds=2)
    store = make_store(request, kind)
    engine = Engine(store, EngineConfig.from_settings(s))
    look = DeliveryStore(store)
    b = Deliverer(store, s, consumer="deliverer-b", block_ms=100, scan_interval=0.05)
    try:
        with receiver() as r:
            ids = await finish(engine, r.url, 40)  # 120 and more events
            for group in (CALLBACKS, "notifier", "endpoints"):
                await look.ensure_group(0, group)
            held = await look.read_group(0, CALLBACKS, "ghost", count=1000, block_ms=50)
            assert len(held) > 100  # more than one pass takes (pending_of reads 100)
            [(first, _)] = await look.read_group(0, "endpoints", "ghost", count=1, block_ms=50)
            await look.enqueue(0, "endpoints", [first], 1000, [])  # holds nothing there
            await b.start()

            async def all_arrived() -> bool:
                return arrived(r) == sorted(ids)

            await eventually(all_arrived, timeout=15)
            assert r.count() == len(ids)

            async def ghost_forgotten() -> bool:
                for group in (CALLBACKS, "endpoints"):
                    if "ghost" in [name for name, _ in await look.consumers(0, group)]:
                        return False
                return True

            await eventually(ghost_forgotten, timeout=10)
            for group in (CALLBACKS, "notifier", "endpoints"):
                assert await group_pending(store, group) == 0
    finally:
        await b.stop()
        await store.close()


async def test_a_vanished_group_or_stream_is_created_again_by_the_deliverer(
    request: pytest.FixtureRequest, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """KVRocks never answers NOGROUP: the deliverer finds out with XINFO GROUPS."""
    s = settings()
    store = make_store(request, kind)
    engine = Engine(store, EngineConfig.from_settings(s))
    look = DeliveryStore(store)
    events = store.keys.delivery(0).events
    d = Deliverer(store, s, block_ms=100, scan_interval=0.05)
    await d.start()
    try:
        with receiver() as r:
            sent: list[str] = []

            async def deliver_some() -> None:
                sent.extend(await finish(engine, r.url, 2))

                async def got_them() -> bool:
                    return arrived(r) == sorted(sent)

                await eventually(got_them, timeout=15)

            await deliver_some()
            # (on KVRocks this wipes the stream and all its groups: see the probe above)
            await store.client.xgroup_destroy(events, CALLBACKS)
            await deliver_some()
            assert await look.group_exists(0, CALLBACKS)
            await store.client.delete(events)  # the stream and all its groups
            await deliver_some()
            assert await look.group_exists(0, CALLBACKS)
            # re-reading the stream from its start sent nothing twice
            assert r.count() == len(sent) == 6
        recreated = [
            rec
            for rec in caplog.records
            if rec.getMessage() == "consumer group was missing and has been created again"
            and getattr(rec, "group", None) == CALLBACKS
        ]
        assert len(recreated) >= 2
    finally:
        await d.stop()
        await store.close()


# --------------------------------------------------------------------------- our sources


def test_our_code_uses_nothing_kvrocks_lacks_or_misreports() -> None:
    """No approximate trimming, no XAUTOCLAIM idle time, no DBSIZE, no BRPOPLPUSH / WAIT /
    OBJECT, no XGROUP DESTROY (it wipes the stream on KVRocks), no feature gated on
    redis_version (spec 06)."""
    lua_call = re.compile(
        r"""redis\.p?call\(\s*['"](XAUTOCLAIM|DBSIZE|BRPOPLPUSH|WAIT|OBJECT)['"]|'DESTROY'""",
        re.I,
    )
    py_call = re.compile(
        r"\.(xautoclaim|dbsize|brpoplpush|object|xgroup_destroy)\(|redis_version"
        r"""|["'](XAUTOCLAIM|DBSIZE|BRPOPLPUSH|WAIT|OBJECT|DESTROY)["']"""
    )
    problems: list[str] = []
    for path in sorted((ROOT / "codeq" / "store" / "lua").glob("*.lua")):
        code = re.sub(r"--.*", "", path.read_text())
        if lua_call.search(code) or re.search(r"['\"]~['\"]", code):
            problems.append(path.name)
    for package in ("codeq", "gateway", "deliverers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            code = path.read_text()
            calls_with_maxlen = re.findall(r"maxlen=[^)]*", code)
            if py_call.search(code) or any("approximate=False" not in c for c in calls_with_maxlen):
                problems.append(str(path.relative_to(ROOT)))
    assert problems == []


def test_our_code_recognises_no_error_text_but_busygroup_nogroup_and_a_missing_function() -> None:
    """Error strings differ on KVRocks ("Invalid argument: ...", another Lua wrapper): what
    our code reads from an error's text is BUSYGROUP (the same on both), NOGROUP (Redis
    only: KVRocks never sends it, and groups are checked with XINFO GROUPS there), and each
    server's words for a function it does not have (codeq.store.errors.function_missing; both
    pinned by test_the_store_recovers_from_lost_functions)."""
    found: set[str] = set()
    for package in ("codeq", "gateway", "deliverers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            code = path.read_text()
            found.update(re.findall(r"""["']([^"'\n]{3,})["']\s+in\s+(?:str\(|text\b)""", code))
            found.update(re.findall(r"""str\([^)]*\)\.startswith\(\s*["']([^"']+)""", code))
    missing_function = {"Function not found", "No such function name found in storage"}
    assert "BUSYGROUP" in found and missing_function <= found  # the search sees them
    assert found <= {"BUSYGROUP", "NOGROUP"} | missing_function, found
