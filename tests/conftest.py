"""Shared fixtures: real servers started by the suite, and the store backend matrix.

The contract suite runs every store test against: a real redis-server, the embedded store
(fakeredis + Lua), a 3-node Redis Cluster with 4 partitions, and KVRocks when ``KVROCKS_BIN``
(or ``kvrocks`` on PATH) is available. Each test gets its own random key prefix; after each
test the structural invariants of every partition are checked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from codeq.engine import Engine, EngineConfig
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from tests.invariants import check_all
from tests.servers import KvrocksServer, RedisCluster, RedisServer, kvrocks_binary

BACKENDS = ["redis", "embedded", "cluster", "kvrocks"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def kvrocks_server() -> Iterator[KvrocksServer]:
    if kvrocks_binary() is None:
        pytest.skip("KVROCKS_BIN not set: the KVRocks run of the contract suite is skipped")
    server = KvrocksServer.start()
    yield server
    server.stop()


def new_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


def make_store(request: pytest.FixtureRequest, kind: str) -> RedisStore:
    prefix = new_prefix()
    if kind == "embedded":
        return RedisStore.embedded(KeySchema(prefix))
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        return RedisStore.from_url(server.url, KeySchema(prefix))
    if kind == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        return RedisStore.from_url(cluster.url, KeySchema(prefix, 4), cluster=True)
    if kind == "kvrocks":
        kv = request.getfixturevalue("kvrocks_server")
        return RedisStore.from_url(kv.url, KeySchema(prefix))
    raise AssertionError(kind)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    s = make_store(request, request.param)
    yield s
    problems = await check_all(s.client, s.keys)
    await s.close()
    assert not problems, "store invariants broken:\n" + "\n".join(problems)


@pytest.fixture
def config() -> EngineConfig:
    return EngineConfig(backoff_base_seconds=0.2, backoff_max_seconds=900)


@pytest.fixture
async def engine(store: RedisStore, config: EngineConfig) -> Engine:
    return Engine(store, config)


@pytest.fixture
async def redis_store(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    """A store on the real redis-server only (race and crash tests)."""
    s = RedisStore.from_url(redis_server.url, KeySchema(new_prefix()), pool_size=128)
    yield s
    problems = await check_all(s.client, s.keys)
    await s.close()
    assert not problems, "store invariants broken:\n" + "\n".join(problems)


async def eventually(
    probe: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for a polled condition
    interval: float = 0.02,
) -> Any:
    """Await ``probe()`` until it returns something truthy; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
