"""How the store talks to KVRocks: every script call inside MULTI/EXEC (one write batch, so a
crash never keeps half a script), and no read that blocks on the server (a blocked stream
read that an XADD wakes runs outside KVRocks' command lock and corrupts a transaction's batch:
"Corruption: WriteBatch has wrong count", then a segfault). On Redis neither is needed: scripts
go bare and reads block. See ``ServerKind`` in codeq/store/coalescer.py.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis

from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.events import EventTail
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from codeq.store.scripts import load_scripts
from deliverers.runner import Deliverer
from tests.conftest import SERVERS, eventually, require_kvrocks, server_url
from tests.receivers import receiver
from tests.servers import KvrocksServer
from tests.test_deliveries import settings

# `<time> [<db or namespace> <client address>] "COMMAND" "arg" ...` (Redis and KVRocks alike)
_LINE = re.compile(rb'^[\d.]+ \[\S+ (?P<client>[^\]]+)\] "(?P<name>[^"]+)"(?P<rest>.*)$')


class Monitor:
    """MONITOR on its own connection, parsed by us (redis-py's parser expects Redis' format)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str]] = []  # (client, COMMAND, the rest)

    def by_client(self) -> dict[str, list[tuple[str, str]]]:
        out: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for client, name, rest in self.lines:
            out[client].append((name, rest))
        return out


@asynccontextmanager
async def monitoring(url: str) -> AsyncIterator[Monitor]:
    client = aioredis.Redis.from_url(url, protocol=2)
    conn = await client.connection_pool.get_connection()
    await conn.send_command("MONITOR")
    assert await conn.read_response() == b"OK"
    monitor = Monitor()

    async def collect() -> None:
        while True:
            line = await conn.read_response()
            m = _LINE.match(line)
            if m is not None:
                rest = m["rest"].decode(errors="replace")
                monitor.lines.append((m["client"].decode(), m["name"].decode().upper(), rest))

    reading = asyncio.create_task(collect())
    try:
        yield monitor
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await conn.disconnect()
        await client.aclose()


@pytest.mark.parametrize("coalesce", [True, False], ids=["coalesced", "one-by-one"])
@pytest.mark.parametrize("kind", SERVERS)
async def test_scripts_are_transactions_and_reads_never_block_on_kvrocks(
    kind: str, coalesce: bool, request: pytest.FixtureRequest
) -> None:
    url = server_url(request, kind)
    prefix = "kvs" + uuid.uuid4().hex[:8]
    store = RedisStore.from_url(url, KeySchema(prefix), coalesce=coalesce)
    s = settings()
    engine = Engine(store, EngineConfig.from_settings(s))
    woken: list[object] = []
    tail = EventTail(store, woken.append, block_ms=200)
    deliverer = Deliverer(store, s, block_ms=200, scan_interval=0.05)
    try:
        async with monitoring(url) as monitor:
            await tail.start()
            await deliverer.start()
            with receiver() as r:
                t = await engine.create("acme", NewTask(command="c", payload="1", webhook=r.url))
                claimed = await engine.claim("acme", "w", ["c"])
                assert claimed is not None and claimed.id == t.task.id
                await engine.complete(
                    "acme", claimed.id, "w", result="{}", lease_id=claimed.lease_id
                )

                async def delivered() -> bool:
                    return r.count() >= 1 and len(woken) >= 3

                await eventually(delivered, timeout=10)
                # let the tail and the groups go round a few idle reads
                before = len(monitor.lines)
                await eventually(lambda: _more(monitor, before + 20), timeout=10)
            await deliverer.stop()
            await tail.stop()
        on_kvrocks = kind == "kvrocks"
        assert await store.on_kvrocks() is on_kvrocks
        reads = [rest for _, name, rest in monitor.lines if name in ("XREAD", "XREADGROUP")]
        assert reads, "the tail and the deliverer read the streams"
        blocking = [rest for rest in reads if '"BLOCK"' in rest.upper()]
        if on_kvrocks:
            assert not blocking, blocking[:3]
        else:
            assert blocking  # Redis: the server wakes them, no polling
        read_only = {s.function for s in load_scripts().values() if s.read_only}
        writes = reads = 0
        for client, commands in monitor.by_client().items():
            names = Counter(name for name, _ in commands)
            assert names["FCALL_RO"] == 0, (client, names)  # KVRocks 2.10: see the coalescer
            calls = [rest.split()[0].strip('"') for name, rest in commands if name == "FCALL"]
            reading = sum(function in read_only for function in calls)
            reads += reading
            writes += len(calls) - reading
            if on_kvrocks:  # each call of a script that writes is MULTI, FCALL, EXEC; reads bare
                assert names["MULTI"] == names["EXEC"] == len(calls) - reading, (client, names)
            else:
                assert names["MULTI"] == 0, (client, names)
        assert writes >= 3  # create, claim, complete (and the deliverer's)
        assert reads >= 1  # the deliverer's read of the task
    finally:
        await store.close()


async def _more(monitor: Monitor, n: int) -> bool:
    return len(monitor.lines) >= n


async def test_kvrocks_stays_whole_under_scripts_streams_and_deliveries() -> None:
    """Concurrent lifecycles (transactions) while a tail and a deliverer read the stream: the
    server never corrupts a batch nor dies (it did when reads blocked)."""
    with KvrocksServer.start(binary=require_kvrocks()) as kv:
        store = RedisStore.from_url(kv.url, KeySchema("kvw" + uuid.uuid4().hex[:8]))
        s = settings()
        engine = Engine(store, EngineConfig.from_settings(s))
        seen: list[object] = []
        tail = EventTail(store, seen.append, block_ms=200)
        deliverer = Deliverer(store, s, block_ms=200, scan_interval=0.05)
        await tail.start()
        await deliverer.start()
        try:
            with receiver() as r:

                async def lifecycles(worker: str, n: int) -> None:
                    for i in range(n):
                        await engine.create(
                            "acme", NewTask(command=worker, payload=str(i), webhook=r.url)
                        )
                        task = await engine.claim("acme", worker, [worker])
                        assert task is not None
                        await engine.complete(
                            "acme", task.id, worker, result="{}", lease_id=task.lease_id
                        )

                await asyncio.gather(*(lifecycles(f"w{k}", 40) for k in range(8)))

                async def all_delivered() -> bool:
                    return r.count() >= 8 * 40

                await eventually(all_delivered, timeout=30)
            log = kv.server_log(2000)
            assert "kvrocks version" in log  # the log is there to read
            assert kv.is_running(), log
            assert "Corruption" not in log and "Segmentation fault" not in log, log
        finally:
            await deliverer.stop()
            await tail.stop()
            await store.close()
