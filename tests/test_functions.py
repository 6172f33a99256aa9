"""The scripts as function libraries (codeq/store/scripts.py): a library's top level runs once,
when it is loaded, and its functions run many times, so nothing of one call may reach the next;
two releases' libraries live side by side; processes that load at once load one library.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from codeq.domain import NewTask, TaskFilter
from codeq.engine import Engine
from codeq.errors import StoreUnavailable
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore, StoreError
from codeq.store.scripts import (
    READ_ONLY,
    SCRIPT_NAMES,
    build_script,
    compose,
    library_names,
    load_scripts,
    read_lua,
)
from tests.conftest import SERVERS, make_store, new_prefix, own_server
from tests.servers import RedisServer
from tests.strict_keys import code_only

# the files a library is made of, with the key table `begin` binds (None: no `begin`, so
# nothing at their top level may change in a call)
LIBRARIES = {"lib": "K", "dlv_lib": "D", "scan": None, "trim": None}


@pytest.mark.parametrize(("library", "table"), sorted(LIBRARIES.items()))
def test_what_a_library_changes_during_a_call_is_made_anew_by_begin(
    library: str, table: str | None
) -> None:
    """Every table or value a library file keeps at its top level and changes inside a function
    is made anew (or, for the key table, bound field by field) by ``begin``: the static half of
    the rule, which catches a cache added later without its reset."""
    text = code_only(read_lua(library))
    begin = re.search(r"^local function begin\(keys\)\n(.*?)^end$", text, re.DOTALL | re.MULTILINE)
    assert (begin is not None) is (table is not None)
    rest = text.replace(begin.group(0), "") if begin else text
    kept = [  # `local a = ...` and `local a, b = ...`
        name.strip()
        for names in re.findall(
            r"^local (?!function\b)(\w+(?:\s*,\s*\w+)*)\s*=", rest, re.MULTILINE
        )
        for name in names.split(",")
    ]
    # declarations stop looking like assignments; what is left assigns to, or into, a name
    rest = re.sub(r"^local (\w+(?:\s*,\s*\w+)*)\s*=", r"local \1 :=", rest, flags=re.MULTILINE)
    # the targets of `a, b = ...` (not `local`: those were made `:=` above)
    multi = {
        name.strip()
        for names in re.findall(r"(?<![\w.])((?:\w+\s*,\s*)+\w+)\s*=(?!=)", rest)
        for name in names.split(",")
    }
    changed = {
        name
        for name in kept
        if name in multi or re.search(rf"(?<![\w.]){name}(?:\.\w+|\[[^]\n]*\])*\s*=(?!=)", rest)
    }
    if begin is None:
        assert not changed, f"{library}.lua changes these in a call, and has no begin: {changed}"
        return
    renewed = set(re.findall(r"^  (\w+) = ", begin.group(1), re.MULTILINE))
    bound = re.findall(rf"^  {table}\.\w+ = keys\[\d+\]$", begin.group(1), re.MULTILINE)
    assert bound and renewed, begin.group(1)
    assert changed, "the rule sees the caches it is about (floors; ESCAPED, IX)"
    assert changed <= renewed, f"{library}.lua changes these in a call: {changed}"


def _lib_probe() -> str:
    # what a call finds cached, then caches something itself
    return (
        "local cached = 0\n"
        "for _ in pairs(floors) do cached = cached + 1 end\n"
        "floor_of('!delayed_floor', ARGV[1])\n"
        "return {cached, K.qstats, K.by_command}"
    )


def _dlv_probe() -> str:
    return (
        "local left = 0\n"
        "if next(IX.add) ~= nil or next(ESCAPED) ~= nil or IX.direct then left = 1 end\n"
        "ix_add('x')\n"
        "esc(ARGV[1])\n"
        "IX.direct = true\n"
        "return {left, D.records, D.lock}"
    )


async def test_a_call_finds_nothing_an_earlier_call_left(store: RedisStore) -> None:
    """The dynamic half: two calls of one function of each library, on two partitions' keys,
    each after a call that left its caches full. Each sees its own keys and empty caches (it
    fails with `floors = {}`, `ESCAPED = {}` or `IX = ...` taken out of `begin`)."""
    lib = compose("probe_lib", _lib_probe(), before=[read_lua("lib")], begin=True)
    dlv = compose("probe_dlv", _dlv_probe(), before=[read_lua("dlv_lib")], begin=True)
    partitions = (0, 1) if store.keys.partitions > 1 else (0, 0)
    for round_ in range(2):
        for p in partitions:
            k = store.keys.partition(p)
            got = await store._eval(lib, k.all, (str(1000 + round_),))
            assert got == [0, k.qstats.encode(), k.by_command.encode()]
            d = store.keys.delivery(p)
            got = await store._eval(dlv, d.all, (f"tenant {round_}",))
            assert got == [0, d.records.encode(), d.lock.encode()]


@pytest.mark.parametrize("kind", [*SERVERS, "embedded"])
async def test_two_releases_run_side_by_side(request: pytest.FixtureRequest, kind: str) -> None:
    """A library of another release (its text differs) has another name: loading it leaves
    ours in place, and both answer, as they do while a rollout runs both releases."""
    store = make_store(request, kind)
    try:
        ours = load_scripts()["get"]
        other = build_script("get", lambda n: read_lua(n) + ("\n-- another release" * (n == "get")))
        assert other.function != ours.function and other.name == ours.name
        await store.load_scripts()
        await store._load(other)
        listed = library_names(await store.client.execute_command("FUNCTION", "LIST"))
        assert {ours.function, other.function} <= listed  # neither replaced the other
        keys = store.keys.partition(0).all
        for script in (other, ours, other):
            assert await store._eval(script, keys, ("acme", "nope", "0", "0")) == [b"NOT_FOUND"]
        created = (await Engine(store).create("acme", NewTask(command="c", payload="1"))).task
        found = await store._eval(other, keys, ("acme", created.id, "1", "0"))
        assert found[0] == b"OK" and found[2] == b"1"
    finally:
        await store.close()


@pytest.mark.parametrize("kind", SERVERS)
async def test_processes_that_load_at_once_load_one_library_each(kind: str) -> None:
    """Several stores loading every library at the same moment on a fresh server (as the
    processes of a rollout do at start): no error, one library per script."""
    server = own_server(kind)
    stores = [RedisStore.from_url(server.url, KeySchema(new_prefix())) for _ in range(4)]
    try:
        await asyncio.gather(*(s.load_scripts() for s in stores))
        listed = await stores[0].client.execute_command("FUNCTION", "LIST")
        assert library_names(listed) == {s.function for s in load_scripts().values()}
        await asyncio.gather(*(s.load_scripts() for s in stores))  # and again: all there
    finally:
        for s in stores:
            await s.close()
        server.close()


def test_every_library_file_the_scripts_use_is_in_the_package() -> None:
    """The files a library is put together from are package files (what build_script reads)."""
    files = {p.name for p in resources.files("codeq.store").joinpath("lua").iterdir()}
    for name, script in load_scripts().items():
        assert f"{name}.lua" in files
        assert script.source.startswith(f"#!lua name={script.function}\n")
        assert re.fullmatch(rf"codeq_{name}_[0-9a-f]{{20}}", script.function)


def test_the_read_only_scripts_are_those_that_say_so() -> None:
    """A script is flagged ``no-writes`` exactly when its header says it is read-only."""
    for name in SCRIPT_NAMES:
        header = read_lua(name).split("\n\n")[0]
        assert ("Read-only" in header) == (name in READ_ONLY), name
        flagged = "flags = {'no-writes'}" in load_scripts()[name].source
        assert flagged == (name in READ_ONLY), name


@pytest.mark.parametrize("kind", [*SERVERS, "embedded"])
async def test_a_read_only_function_cannot_write(request: pytest.FixtureRequest, kind: str) -> None:
    """Each server holds a function flagged ``no-writes`` to it (KVRocks takes the flag in
    the positional form, Redis in the table form: the library asks which it is on)."""
    store = make_store(request, kind)
    try:
        key = store.keys.partition(0).seq
        body = "redis.call('INCR', KEYS[1]) return 1"
        writes = compose("probe_rw", body)
        assert await store._eval(writes, (key,), ()) == 1
        with pytest.raises(StoreError, match="Write commands are not allowed"):
            await store._eval(compose("probe_ro", body, read_only=True), (key,), ())
        assert await store.client.get(key) == b"1"
    finally:
        await store.client.delete(store.keys.partition(0).seq)
        await store.close()


async def test_a_redis_out_of_memory_answers_reads_and_refuses_changes_with_503() -> None:
    """At maxmemory (noeviction) Redis refuses every function not flagged ``no-writes`` whole,
    before it runs: a change is a 503 that says so (nothing changed, so nothing is unknown);
    reads go on."""
    server = RedisServer.start()
    store = RedisStore.from_url(server.url, KeySchema(new_prefix()))
    try:
        await store.load_scripts()  # as a process does at start (FUNCTION LOAD is a change too)
        engine = Engine(store)
        task = (await engine.create("acme", NewTask(command="c", payload="1"))).task
        await store.client.config_set("maxmemory", "1")  # below what it uses: always out
        with pytest.raises(StoreUnavailable, match="out of memory") as refused:
            await engine.create("acme", NewTask(command="c", payload="2"))
        assert not refused.value.outcome_unknown
        with pytest.raises(StoreUnavailable, match="out of memory"):
            await engine.claim("acme", "w", ["c"])
        assert (await engine.get_task("acme", task.id)).id == task.id
        assert [t.id for t in (await engine.list_tasks("acme", TaskFilter())).tasks] == [task.id]
        await store.client.config_set("maxmemory", "0")
        claimed = await engine.claim("acme", "w", ["c"])
        assert claimed is not None and claimed.id == task.id
    finally:
        await store.close()
        server.close()


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("kind", [*SERVERS, "embedded"])
async def test_a_failed_script_is_never_sent_again_a_missing_function_is(
    request: pytest.FixtureRequest, kind: str, coalesce: bool
) -> None:
    """A call that fails is sent again only when the server says it has no such function (it
    did not run then): a script that wrote and then failed runs once, and a call of a function
    deleted under it loads the library and runs once."""
    store = make_store(request, kind, **({} if kind == "embedded" else {"coalesce": coalesce}))
    key = store.keys.partition(0).seq
    fails = compose("probe_fails", "redis.call('INCR', KEYS[1])\nreturn redis.error_reply('boom')")
    try:
        with pytest.raises(StoreError, match="boom"):
            await store._eval(fails, (key,), ())
        assert await store.client.get(key) == b"1"  # once, not again
        await store.client.execute_command("FUNCTION", "DELETE", fails.function)
        with pytest.raises(StoreError, match="boom"):
            await store._eval(fails, (key,), ())
        assert await store.client.get(key) == b"2"  # loaded, run once
        assert fails.function in library_names(
            await store.client.execute_command("FUNCTION", "LIST")
        )
    finally:
        await store.client.delete(key)
        await store.close()


@pytest.mark.parametrize("coalesce", [True, False])
@pytest.mark.parametrize("kind", [*SERVERS, "embedded", "cluster"])
async def test_many_calls_of_a_missing_function_all_load_and_answer(
    request: pytest.FixtureRequest, kind: str, coalesce: bool
) -> None:
    """Concurrent calls that all find their function missing: each loads it (or finds it
    loaded by another) and answers; none takes the other's load for its own failure."""
    options = {} if kind == "embedded" else {"coalesce": coalesce}
    store = make_store(request, kind, **options)
    try:
        get = load_scripts()["get"]
        await store.load_scripts()
        nodes = await store._on_nodes()
        assert len(nodes) == (3 if kind == "cluster" else 1)
        for on in nodes:
            assert await store._has(get, on)  # load_scripts loaded it everywhere
            await store.client.execute_command("FUNCTION", "DELETE", get.function, **on)
            assert not await store._has(get, on)
        keys = [store.keys.partition(p % store.keys.partitions).all for p in range(20)]
        replies = await asyncio.gather(
            *(store._eval(get, k, ("acme", "nope", "0", "0")) for k in keys)
        )
        assert replies == [[b"NOT_FOUND"]] * 20
    finally:
        await store.close()


@pytest.mark.parametrize("coalesce", [True, False])
async def test_a_library_redis_will_not_load_for_want_of_memory_is_a_503(coalesce: bool) -> None:
    """A call whose function is missing on a Redis at maxmemory: its library cannot be loaded
    (FUNCTION LOAD is a change), and both call paths answer with why: out of memory, a 503."""
    server = RedisServer.start()
    store = RedisStore.from_url(server.url, KeySchema(new_prefix()), coalesce=coalesce)
    try:
        await store.load_scripts()
        task = (await Engine(store).create("acme", NewTask(command="c", payload="1"))).task
        await store.client.execute_command("FUNCTION", "DELETE", load_scripts()["get"].function)
        await store.client.config_set("maxmemory", "1")
        with pytest.raises(StoreUnavailable, match="out of memory") as refused:
            await Engine(store).get_task("acme", task.id)
        assert not refused.value.outcome_unknown
        await store.client.config_set("maxmemory", "0")
        assert (await Engine(store).get_task("acme", task.id)).id == task.id
    finally:
        await store.close()
        server.close()


def test_the_deploy_guide_names_this_releases_libraries() -> None:
    """deploy.md's command for the names an operator keeps, run here as it runs in the image."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "deploy.md").read_text("utf-8")
    (line,) = [
        x for x in guide.splitlines() if x.startswith("kubectl") and x.endswith("codeq.store")
    ]
    command = line.split(" -- ", 1)[1].split()
    assert command[0] == "python"
    out = subprocess.run(
        [sys.executable, *command[1:]], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == sorted(s.function for s in load_scripts().values())
    assert out.stderr == ""
