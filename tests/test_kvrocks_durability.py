"""Acknowledged work survives a store killed with SIGKILL (issue 13 items 5 and 6).

KVRocks runs with the ``kvrocks.conf`` the Helm chart renders (``helm template``), only its
machine-specific lines (bind, port, dir, backup-dir, pidfile, daemonize) replaced, on the
release the chart deploys; CONFIG GET shows every line in effect, and docs/deploy.md names the
durability lines the chart has. Redis runs with the append-only file fsynced on every write.

Producers and workers drive create → claim → complete through the engine; the store is killed
while calls are in flight and restarted on the same data directory, a few times over. After
each restart:

- every create the store acknowledged (a task id came back) is there, and creating it again
  with its idempotency key replays that same task;
- every acknowledged completion is still COMPLETED, and draining the queue hands out no
  completed task and no task twice; what stays leased was leased before the kill;
- the crash left no half-applied script: the structures are consistent (tests/invariants.py),
  and a create whose outcome was unknown (StoreUnavailable), retried with its idempotency key,
  yields one task. A failure of these raises :class:`HalfAppliedScript`.

KVRocks applies each ``redis.call`` of a script as its own RocksDB write, so a crash can keep
half of a bare script (``test_a_kvrocks_script_is_crash_atomic_only_inside_multi_exec`` shows it
deterministically); the store therefore sends its scripts to KVRocks inside MULTI/EXEC (one
write batch), and the engine-level KVRocks case holds every check.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
import redis.asyncio

from codeq.domain import NewTask, TaskStatus
from codeq.engine import Engine, EngineConfig
from codeq.errors import NotFound, StoreUnavailable
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from tests.conftest import eventually, new_prefix, require_kvrocks
from tests.helm_tool import helm_template
from tests.invariants import check_all
from tests.servers import KvrocksServer, RedisServer

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "codeq"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
#: kvrocks.conf keys that name this machine's paths and addresses: KvrocksServer sets its own
LOCAL_KEYS = frozenset({"bind", "port", "dir", "backup-dir", "pidfile", "daemonize"})

TENANT = "acme"
COMMAND = "durable"
PRODUCERS = 6
WORKERS = 4
MAX_CREATES = 600  # per cycle: the load is bounded in count as well as in time
KILL_AFTER_CREATES = 150  # acknowledged creates before the kill...
KILL_AFTER_COMPLETIONS = 40  # ...and acknowledged completions
LOAD_DEADLINE = 20.0  # seconds for the load to reach the kill point
RECOVERY_DEADLINE = 15.0
# On KVRocks a kill leaves a half-applied script in 25-50 % of the cycles (2 cores, loaded).
KVROCKS_CYCLES = 6
REDIS_CYCLES = 3


class HalfAppliedScript(AssertionError):
    """The store kept part of a script's writes: a crash interrupted the script."""


class CrashableServer(Protocol):
    @property
    def url(self) -> str: ...

    def kill(self) -> None: ...

    def restart(self) -> None: ...


# --------------------------------------------------------------------- the chart's kvrocks.conf


@functools.cache
def chart_kvrocks_conf(*set_values: str) -> str:
    """The ``kvrocks.conf`` of the chart's KVRocks ConfigMap (default values plus ``--set``s)."""
    args = [a for v in set_values for a in ("--set", v)]
    docs = helm_template(CHART, "--show-only", "templates/kvrocks.yaml", *args)
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    conf: str = config_map["data"]["kvrocks.conf"]
    return conf


def conf_settings(conf: str) -> list[tuple[str, str]]:
    """``(key, value)`` of each setting line (comments and blank lines dropped)."""
    out = []
    for line in conf.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            key, _, value = stripped.partition(" ")
            out.append((key, value.strip()))
    return out


def local_config(conf: str) -> list[str]:
    """The chart's lines for a server on this machine: all but the machine-specific ones."""
    return [f"{k} {v}" for k, v in conf_settings(conf) if k not in LOCAL_KEYS]


def doc_snippet(file_name: str) -> str:
    """The ``conf`` block of docs/deploy.md's Durability section headed ``# <file_name>``."""
    text = DEPLOY_DOC.read_text()
    section = text.split("\n## Durability\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```conf\n(.*?)```", section, flags=re.S)
    found = [b for b in blocks if b.startswith(f"# {file_name}\n")]
    assert len(found) == 1, f"one ```conf block headed '# {file_name}' in '## Durability'"
    return str(found[0])


def test_the_chart_kvrocks_conf_holds_the_durability_lines_the_docs_name() -> None:
    conf = chart_kvrocks_conf()
    settings = conf_settings(conf)
    keys = [k for k, _ in settings]
    assert len(keys) == len(set(keys)), f"a setting appears twice:\n{conf}"
    documented = conf_settings(doc_snippet("kvrocks.conf"))
    assert ("rocksdb.write_options.sync", "yes") in documented
    for setting in documented:
        assert setting in settings, f"docs/deploy.md names {setting}, the chart has:\n{conf}"
    relaxed = dict(conf_settings(chart_kvrocks_conf("kvrocks.walSync=false")))
    assert relaxed["rocksdb.write_options.sync"] == "no"
    assert relaxed["rocksdb.write_options.disable_wal"] == "no"  # the WAL itself stays


def test_the_documented_redis_settings_are_the_ones_tested() -> None:
    """docs/deploy.md's Redis lines are what ``RedisServer.start(persistence=True)`` runs with
    (checked on the running server by the Redis crash test below)."""
    documented = dict(conf_settings(doc_snippet("redis.conf")))
    assert documented == {
        "appendonly": "yes",
        "appendfsync": "always",
        "maxmemory-policy": "noeviction",
    }


def kvrocks_release(binary: str) -> str:
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    found = re.search(r"version (\d+\.\d+\.\d+)", done.stdout + done.stderr)
    assert found, done.stdout + done.stderr
    return found.group(1)


def test_the_chart_deploys_the_kvrocks_release_the_suite_runs() -> None:
    docs = helm_template(CHART, "--show-only", "templates/kvrocks.yaml")
    [statefulset] = [d for d in docs if d["kind"] == "StatefulSet"]
    [container] = statefulset["spec"]["template"]["spec"]["containers"]
    image, tag = container["image"].rsplit(":", 1)
    assert (image, tag) == ("apache/kvrocks", kvrocks_release(require_kvrocks()))


# ------------------------------------------------------------------------------------- load


@dataclass
class Ledger:
    """What the clients were told, and what they could not know."""

    acked: dict[str, str] = field(default_factory=dict)  # task id -> idempotency key
    unknown_creates: list[str] = field(default_factory=list)  # idempotency keys
    claimed: set[str] = field(default_factory=set)  # claims answered before the kill
    unknown_claims: int = 0
    completed: set[str] = field(default_factory=set)
    unknown_completions: set[str] = field(default_factory=set)
    handed_out_again: list[str] = field(default_factory=list)
    failures_before_kill: list[str] = field(default_factory=list)
    kill_started: bool = False

    def unavailable(self, what: str) -> None:
        if not self.kill_started:
            self.failures_before_kill.append(what)


def new_task(key: str) -> NewTask:
    return NewTask(command=COMMAND, payload=f'{{"k":"{key}"}}', idempotency_key=key)


async def produce(engine: Engine, ledger: Ledger, keys: Iterator[str]) -> None:
    for key in keys:
        try:
            outcome = await engine.create(TENANT, new_task(key))
        except StoreUnavailable:
            ledger.unavailable(f"create {key}")
            ledger.unknown_creates.append(key)
            return
        ledger.acked[outcome.task.id] = key


async def work(engine: Engine, ledger: Ledger, worker_id: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            task = await engine.claim(TENANT, worker_id, [COMMAND])
        except StoreUnavailable:
            ledger.unavailable(f"claim by {worker_id}")
            ledger.unknown_claims += 1
            return
        if task is None:
            await asyncio.sleep(0.005)  # the producers are behind: ask again (a poll)
            continue
        if task.id in ledger.claimed:
            ledger.handed_out_again.append(task.id)
        ledger.claimed.add(task.id)
        try:
            await engine.complete(TENANT, task.id, worker_id, result="{}", lease_id=task.lease_id)
        except StoreUnavailable:
            ledger.unavailable(f"complete {task.id}")
            ledger.unknown_completions.add(task.id)
            return
        ledger.completed.add(task.id)


async def load_then_kill(engine: Engine, server: CrashableServer) -> Ledger:
    """Run producers and workers; SIGKILL the server while their calls are in flight."""
    ledger = Ledger()
    stop = asyncio.Event()
    keys = (f"k{i}" for i in range(MAX_CREATES))  # shared: at most MAX_CREATES in all
    loops = [asyncio.create_task(produce(engine, ledger, keys)) for _ in range(PRODUCERS)]
    loops += [asyncio.create_task(work(engine, ledger, f"w{i}", stop)) for i in range(WORKERS)]
    try:

        async def kill_point() -> bool:
            return (
                len(ledger.acked) >= KILL_AFTER_CREATES
                and len(ledger.completed) >= KILL_AFTER_COMPLETIONS
            )

        await eventually(kill_point, timeout=LOAD_DEADLINE, interval=0.005)
        ledger.kill_started = True
        running = sum(not t.done() for t in loops)
        await asyncio.to_thread(server.kill)  # the loops keep calling while the signal lands
        stop.set()
        await asyncio.wait_for(asyncio.gather(*loops), timeout=RECOVERY_DEADLINE)
    finally:
        stop.set()
        for t in loops:
            t.cancel()
    assert running == PRODUCERS + WORKERS, "the load had ended before the kill"
    assert not ledger.failures_before_kill, ledger.failures_before_kill
    assert not ledger.handed_out_again, f"handed out twice: {ledger.handed_out_again}"
    return ledger


# ----------------------------------------------------------------------------------- checks


async def recovered(store: RedisStore, engine: Engine) -> None:
    """Wait until the store answers again, scripts included (pooled connections to the old
    process fail once)."""

    async def answers() -> bool:
        try:
            await store.ping()
            await engine.queue_stats(TENANT, COMMAND)
        except StoreUnavailable:
            return False
        return True

    await eventually(answers, timeout=RECOVERY_DEADLINE)


async def invariant_problems(store: RedisStore) -> list[str]:
    try:
        return await check_all(store.client, store.keys)
    except KeyError as exc:  # a record's loc names a structure that does not hold it
        return [f"the invariant check found no entry for {exc}"]


async def check_after_restart(engine: Engine, store: RedisStore, ledger: Ledger) -> None:
    # Acknowledged creates are there; acknowledged completions are still COMPLETED.
    lost = []
    for task_id in ledger.acked:
        try:
            task = await engine.get_task(TENANT, task_id)
        except NotFound:
            lost.append(task_id)
            continue
        if task_id in ledger.completed:
            assert task.status is TaskStatus.COMPLETED, (task_id, task.status)
    assert not lost, f"{len(lost)} acknowledged creates lost, e.g. {lost[:5]}"

    problems = await invariant_problems(store)
    if problems:
        raise HalfAppliedScript("inconsistent after the crash:\n" + "\n".join(problems))

    # Exactly once: an acknowledged create replays as itself; an unknown one yields one task.
    for task_id, key in ledger.acked.items():
        again = await engine.create(TENANT, new_task(key))
        assert again.replayed and again.task.id == task_id, (key, task_id, again.task.id)
    retried = {(await engine.create(TENANT, new_task(k))).task.id for k in ledger.unknown_creates}
    records = await store.client.hlen(store.keys.partition(0).tasks)
    if records != len(ledger.acked) + len(retried):
        raise HalfAppliedScript(
            f"{records} task records for {len(ledger.acked) + len(retried)} idempotency keys: "
            "a create was kept without its idempotency key"
        )

    # Draining hands out no completed task, and none twice.
    drained: list[str] = []
    while (lease := await engine.claim(TENANT, "drain", [COMMAND])) is not None:
        drained.append(lease.id)
        assert len(drained) <= records, "the drain does not end"
        await engine.complete(TENANT, lease.id, "drain", result="{}", lease_id=lease.lease_id)
    assert not set(drained) & ledger.completed, "a completed task was handed out again"
    assert len(drained) == len(set(drained)), "a task was handed out twice in the drain"

    # What is still leased was leased before the kill (leases last 300 s); a claim the server
    # made but could not answer leaves a lease no worker knows of.
    unknown_leases = []
    for task_id in [*ledger.acked, *retried]:
        task = await engine.get_task(TENANT, task_id)
        if task.status is TaskStatus.IN_PROGRESS:
            assert task.worker_id != "drain", task_id
            if task_id not in ledger.claimed:
                unknown_leases.append(task_id)
        else:
            assert task.status is TaskStatus.COMPLETED, (task_id, task.status)
    assert len(unknown_leases) <= ledger.unknown_claims, unknown_leases
    problems = await invariant_problems(store)
    assert not problems, "inconsistent after the drain:\n" + "\n".join(problems)


async def crash_cycle(server: CrashableServer) -> Ledger:
    """Load, SIGKILL, restart on the same data, check — on a fresh key prefix."""
    store = RedisStore.from_url(server.url, KeySchema(new_prefix()), connect_timeout=0.5)
    engine = Engine(store, EngineConfig())
    try:
        await store.load_scripts()
        ledger = await load_then_kill(engine, server)
        server.restart()
        await recovered(store, engine)
        await check_after_restart(engine, store, ledger)
        return ledger
    finally:
        await store.close()


async def config_get(url: str, key: str) -> str | None:
    client = redis.asyncio.Redis.from_url(url, protocol=2, decode_responses=True)
    try:
        reply: dict[str | None, str | None] = await client.config_get(key)
    finally:
        await client.aclose()
    return reply.get(key)


# ------------------------------------------------------------------------------------ tests


async def test_kvrocks_runs_the_chart_config_as_rendered(tmp_path: Path) -> None:
    """Every line of the chart's kvrocks.conf is in effect on the suite's KVRocks (kvrocks only
    warns about a key it does not know), before and after a restart, and a task goes through
    its life on it over RESP2."""
    lines = local_config(chart_kvrocks_conf())
    server = KvrocksServer.start(binary=require_kvrocks(), extra_config=lines, dir=tmp_path)
    # KvrocksServer adds lua-strict-key-accessing where the binary has it: then so must the chart
    assert server.strict_lua == ("lua-strict-key-accessing yes" in lines)
    store = RedisStore.from_url(server.url, KeySchema(new_prefix()), connect_timeout=0.5)
    engine = Engine(store, EngineConfig())
    try:
        for restarted in (False, True):
            for key, value in conf_settings("\n".join(lines)):
                assert await config_get(server.url, key) == value, f"{key} ({restarted=})"
            assert await config_get(server.url, "resp3-enabled") == "no"  # codeQ speaks RESP2
            if restarted:
                await recovered(store, engine)
            created = (await engine.create(TENANT, new_task(f"life-{restarted}"))).task
            task = await engine.claim(TENANT, "w", [COMMAND])
            assert task is not None and task.id == created.id
            await engine.complete(TENANT, task.id, "w", result="{}", lease_id=task.lease_id)
            assert (await engine.get_task(TENANT, task.id)).status is TaskStatus.COMPLETED
            if not restarted:
                server.restart()
    finally:
        await store.close()
        server.close()


# KVRocks writes each redis.call of a script on its own, so a kill inside a script would keep
# half of it (test_a_kvrocks_script_is_crash_atomic_only_inside_multi_exec); the store sends
# every script call to KVRocks inside MULTI/EXEC, one write batch. Any failure fails the test.
async def test_kvrocks_with_the_chart_config_keeps_acknowledged_work_across_sigkill(
    tmp_path: Path,
) -> None:
    lines = local_config(chart_kvrocks_conf())
    server = KvrocksServer.start(binary=require_kvrocks(), extra_config=lines, dir=tmp_path)
    try:
        for _ in range(KVROCKS_CYCLES):
            await crash_cycle(server)
    finally:
        server.close()


async def test_the_check_catches_a_kvrocks_that_loses_acknowledged_writes(
    tmp_path: Path,
) -> None:
    """The same cycle against a KVRocks without its WAL: acknowledged creates are gone."""
    lines = [
        "rocksdb.write_options.disable_wal yes"
        if line.startswith("rocksdb.write_options.disable_wal")
        else line
        for line in local_config(chart_kvrocks_conf("kvrocks.walSync=false"))
    ]
    server = KvrocksServer.start(binary=require_kvrocks(), extra_config=lines, dir=tmp_path)
    try:
        assert await config_get(server.url, "rocksdb.write_options.disable_wal") == "yes"
        with pytest.raises(AssertionError, match="acknowledged creates lost") as caught:
            await crash_cycle(server)
        assert not isinstance(caught.value, HalfAppliedScript)
    finally:
        server.close()


async def test_redis_with_an_fsynced_append_only_file_keeps_acknowledged_work_across_sigkill(
    tmp_path: Path,
) -> None:
    server = RedisServer.start(persistence=True, dir=tmp_path)
    try:
        assert await config_get(server.url, "appendonly") == "yes"
        assert await config_get(server.url, "appendfsync") == "always"
        assert await config_get(server.url, "maxmemory-policy") == "noeviction"
        unknown = 0
        for _ in range(REDIS_CYCLES):
            ledger = await crash_cycle(server)
            unknown += len(ledger.unknown_creates) + ledger.unknown_claims
            unknown += len(ledger.unknown_completions)
        assert unknown, "no call was in flight at any kill"
    finally:
        server.close()


# A script that writes, works for ARGV[1] seconds of the server's clock (however fast its Lua:
# plain 5.1 or LuaJIT), then writes again.
HALVES_SCRIPT = """
redis.call('SET', KEYS[1], 'first')
local function secs() local t = redis.call('TIME'); return t[1] + t[2] / 1e6 end
local stop, x = secs() + tonumber(ARGV[1]), 0
repeat
  for i = 1, 100000 do x = x + i end
until secs() >= stop
redis.call('SET', KEYS[2], 'second')
return x
"""
BUSY_SECONDS = 20  # the kill comes long before the end
BUSY_CPU_SECONDS = 0.5  # CPU the server has burnt when we know the script is in its loop


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc/<pid>/stat``)."""
    after_name = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(after_name[11]), int(after_name[12])  # fields 14 and 15
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("in_multi_exec", [False, True], ids=["eval", "multi-exec-eval"])
async def test_a_kvrocks_script_is_crash_atomic_only_inside_multi_exec(
    in_multi_exec: bool, tmp_path: Path
) -> None:
    """SIGKILL between the two writes of one script. A bare EVAL keeps the first (each
    ``redis.call`` is its own RocksDB write, here fsynced); inside MULTI/EXEC both go into one
    write batch, committed at EXEC: neither survives.

    The script is known to be between its writes when the server has burnt half a second of CPU
    after the call: only its busy loop does that (the writes before it take microseconds), and
    the loop needs seconds more. Nothing observable over the protocol would do: kvrocks runs no
    other data command during a script, and a published message waits if the subscriber's
    connection shares the script's worker thread."""
    lines = local_config(chart_kvrocks_conf())
    server = KvrocksServer.start(binary=require_kvrocks(), extra_config=lines, dir=tmp_path)
    assert server.pid is not None
    first, second = f"{new_prefix()}:first", f"{new_prefix()}:second"
    caller = redis.asyncio.Redis.from_url(server.url, protocol=2, socket_timeout=60)
    try:
        await caller.ping()
        idle = cpu_seconds(server.pid)

        async def call() -> object:
            args = (HALVES_SCRIPT, 2, first, second, BUSY_SECONDS)
            if not in_multi_exec:
                return await caller.eval(*args)
            pipe = caller.pipeline(transaction=True)
            pipe.eval(*args)
            return await pipe.execute()

        running = asyncio.create_task(call())
        pid = server.pid

        async def in_the_loop() -> bool:
            return cpu_seconds(pid) - idle >= BUSY_CPU_SECONDS

        await eventually(in_the_loop, timeout=30)
        assert not running.done(), "the script ended before the kill"
        await asyncio.to_thread(server.kill)
        try:
            await running
        except redis.ConnectionError:
            pass  # the server died under it: what we want
        else:
            raise AssertionError("the script finished before the kill")
        server.restart()
        fresh = redis.asyncio.Redis.from_url(server.url, protocol=2)
        try:
            kept = await fresh.get(first), await fresh.get(second)
        finally:
            await fresh.aclose()
        assert kept[1] is None
        assert kept[0] == (None if in_multi_exec else b"first")
    finally:
        with contextlib.suppress(redis.ConnectionError, OSError):
            await caller.aclose()
        server.close()
