"""Shared fixtures: real servers started by the suite, and the store backend matrix.

The contract suite runs every store test against: a real redis-server, the embedded store
(fakeredis + Lua), a 3-node Redis Cluster with 4 partitions, and KVRocks (``KVROCKS_BIN``,
``../shared/bin/kvrocks`` or PATH; under ``CI=true`` a missing KVRocks fails the run, it never
skips). Each test gets its own random key prefix; after each test the structural invariants of
every partition are checked.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from codeq.engine import Engine, EngineConfig
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from tests.invariants import check_all
from tests.servers import (
    KVROCKS_MISSING,
    KvrocksServer,
    RedisCluster,
    RedisServer,
    kvrocks_binary,
)

BACKENDS = ["redis", "embedded", "cluster", "kvrocks"]
#: the backends of tests that need a real server but no cluster (API, deliverers, races)
SERVERS = ["redis", "kvrocks"]


def require_kvrocks() -> str:
    """The kvrocks binary; without one the test fails under ``CI=true`` (spec 06) and is
    skipped elsewhere."""
    binary = kvrocks_binary()
    if binary is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(KVROCKS_MISSING, pytrace=False)
        pytest.skip(KVROCKS_MISSING)
    return binary


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
    server = KvrocksServer.start(binary=require_kvrocks())
    yield server
    server.stop()


def new_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


def own_server(kind: str) -> RedisServer | KvrocksServer:
    """A server of the test's own ("redis" or "kvrocks"), to stop, kill or restart: it keeps
    its data across ``restart()`` (Redis with its append-only file, KVRocks always)."""
    if kind == "kvrocks":
        return KvrocksServer.start(binary=require_kvrocks())
    return RedisServer.start(persistence=True)


def server_url(request: pytest.FixtureRequest, kind: str) -> str:
    """The URL of the suite's shared ``kind`` server ("redis", "cluster" or "kvrocks")."""
    fixture = {"redis": "redis_server", "cluster": "redis_cluster", "kvrocks": "kvrocks_server"}
    server: RedisServer | RedisCluster | KvrocksServer = request.getfixturevalue(fixture[kind])
    return server.url


def make_store(
    request: pytest.FixtureRequest, kind: str, prefix: str | None = None, **options: Any
) -> RedisStore:
    """A store with its own key prefix on the suite's ``kind`` backend: "embedded",
    "redis", "cluster" (4 partitions) or "kvrocks". ``options`` go to ``from_url``."""
    prefix = prefix or new_prefix()
    if kind == "embedded":
        return RedisStore.embedded(KeySchema(prefix))
    if kind == "cluster":
        return RedisStore.from_url(
            server_url(request, kind), KeySchema(prefix, 4), cluster=True, **options
        )
    return RedisStore.from_url(server_url(request, kind), KeySchema(prefix), **options)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    s = make_store(request, request.param)
    await s.list_waiting_apart()  # as a server's start leaves a new store
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


@pytest.fixture(params=SERVERS)
async def redis_store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    """A store on a real server, Redis and KVRocks (race and crash tests)."""
    s = make_store(request, request.param, pool_size=128)
    await s.list_waiting_apart()  # as a server's start leaves a new store
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
