"""Settings choose the store: embedded by default, Redis when an address is configured; what
the factory hands out is a Backend whose parts each consumer takes."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import pytest
import redis.asyncio as aioredis

from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.errors import StoreUnavailable
from codeq.settings import Settings
from codeq.store import KeySchema, open_store
from codeq.store.redis_store import RedisStore
from tests.conftest import eventually, new_prefix
from tests.servers import RedisServer, free_port


async def test_memory_means_the_embedded_store(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.load(None, environ={"KEY_PREFIX": "emb", "PERSISTENCE_PROVIDER": "memory"})
    with caplog.at_level(logging.WARNING, logger="codeq.store"):
        store = open_store(settings)
    assert "nothing survives a restart" in caplog.text
    engine = Engine(store.tasks, EngineConfig.from_settings(settings))
    t = (await engine.create("t", NewTask(command="C", payload="1"))).task
    assert (await engine.get_task("t", t.id)).id == t.id
    await store.close()


async def test_redis_addr_means_redis(redis_server: RedisServer) -> None:
    settings = Settings.load(
        None, environ={"REDIS_ADDR": f"127.0.0.1:{redis_server.port}", "KEY_PREFIX": "fac"}
    )
    store = open_store(settings)
    engine = Engine(store.tasks, EngineConfig.from_settings(settings))
    t = (await engine.create("t", NewTask(command="C", payload="1"))).task
    assert await redis_server_has(redis_server, KeySchema("fac").partition(0).tasks, t.id)
    await store.close()


def test_a_local_store_is_opened_by_its_address_not_by_the_factory() -> None:
    settings = Settings.load(None, environ={"PERSISTENCE_PROVIDER": "local"})
    with pytest.raises(ValueError, match="codeq serve"):
        open_store(settings)


async def redis_server_has(server: RedisServer, key: str, field: str) -> bool:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(server.url)
    try:
        return bool(await client.hexists(key, field))
    finally:
        await client.aclose()


async def test_an_unreachable_store_is_unavailable_not_an_error() -> None:
    settings = Settings.load(
        None,
        environ={"REDIS_ADDR": f"127.0.0.1:{free_port()}", "REDIS_CONNECT_TIMEOUT_SECONDS": "0.5"},
    )
    store = open_store(settings)
    with pytest.raises(StoreUnavailable):
        await Engine(store.tasks).create("t", NewTask(command="C", payload="1"))
    await store.close()


async def test_store_outage_then_recovery(redis_server: RedisServer) -> None:
    server = RedisServer.start()
    try:
        settings = Settings.load(None, environ={"REDIS_ADDR": f"127.0.0.1:{server.port}"})
        store = open_store(settings)
        engine = Engine(store.tasks)
        await engine.create("t", NewTask(command="C", payload="1"))
        server.stop()
        with pytest.raises(StoreUnavailable):
            await engine.create("t", NewTask(command="C", payload="2"))
        server.restart()
        t = (await engine.create("t", NewTask(command="C", payload="3"))).task
        assert (await engine.get_task("t", t.id)).payload == "3"
        await store.close()
    finally:
        server.close()


def test_cli_version_and_config_show_masks_secrets() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "codeq.cli", "version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("codeq ")
    env = {"WEBHOOK_HMAC_SECRET": "s3cr3t-value", "PARTITIONS": "4", "PATH": "/usr/bin:/bin"}
    shown = subprocess.run(
        [sys.executable, "-m", "codeq.cli", "config", "show"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    assert '"partitions": 4' in shown.stdout and "s3cr3t-value" not in shown.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "codeq.cli", "config", "show"],
        capture_output=True,
        text=True,
        check=False,
        env={**env, "PARTITIONS": "0"},
    )
    assert bad.returncode == 2 and "PARTITIONS" in bad.stderr


async def test_every_pooled_connection_works_after_a_restart() -> None:
    """redis-py would hand out pooled connections whose server had gone, and each failed once;
    ours notices the server's close and reconnects, so nothing fails after a restart."""
    server = RedisServer.start()
    store = RedisStore.from_url(server.url, KeySchema(new_prefix()), pool_size=16)
    try:
        engine = Engine(store)
        # fill the pool: concurrent blocking reads and concurrent script calls
        await asyncio.gather(*(store.client.blpop([f"nothing-{i}"], timeout=0.1) for i in range(6)))
        await asyncio.gather(
            *(engine.create("t", NewTask(command="C", payload="1")) for _ in range(20))
        )
        server.restart()  # stop, then start on the same port (nothing persisted)

        async def accepts() -> bool:  # (a fresh connection: the server is back)
            probe = aioredis.Redis.from_url(server.url)
            try:
                return bool(await probe.ping())
            except Exception:
                return False
            finally:
                await probe.aclose()

        await eventually(accepts, timeout=10)
        for _ in range(12):
            assert await store.client.ping()
        for _ in range(12):
            await engine.create("t", NewTask(command="C", payload="2"))
        assert (await engine.queue_stats("t", "C")).ready == 12
    finally:
        await store.close()
        server.close()
