"""The store client on every server it supports, and one clear sentence for one it cannot use.

codeQ speaks RESP2 (issue 13: RESP3 measured no faster; KVRocks answers RESP2 unless
``resp3-enabled yes``). The client must work with KVRocks in its default configuration and
with RESP3 enabled, with Redis 7 and with the 3-node Redis Cluster; a server that answers the
handshake in a way we cannot use stops ``codeq`` at start-up with the store's address and the
setting to change, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import redis

from codeq.domain import NewTask
from codeq.engine import Engine
from codeq.settings import Settings
from codeq.store import RedisStore, StoreHandshakeError, check_store, open_store
from codeq.store.keys import KeySchema
from tests.conftest import new_prefix, require_kvrocks, server_url
from tests.servers import KvrocksServer, RedisServer, free_port


@pytest.fixture(scope="module")
def kvrocks_resp3() -> Iterator[KvrocksServer]:
    with KvrocksServer.start(binary=require_kvrocks(), extra_config=["resp3-enabled yes"]) as kv:
        yield kv


@asynccontextmanager
async def not_redis() -> AsyncIterator[int]:
    """A TCP server on loopback that answers like a web server: what a wrong port finds."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(64)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@asynccontextmanager
async def old_redis() -> AsyncIterator[int]:
    """A TCP server on loopback that answers like a Redis 6.2 (no functions): PONG, its INFO,
    OK to the client's set-up, and an unknown command for anything else."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            if not line.startswith(b"*"):
                continue
            words = []
            for _ in range(int(line[1:])):
                size = int((await reader.readline())[1:])
                words.append((await reader.readexactly(size + 2))[:-2].upper())
            if words[0] == b"PING":
                writer.write(b"+PONG\r\n")
            elif words[0] == b"INFO":
                info = b"# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n"
                writer.write(b"$%d\r\n%s\r\n" % (len(info), info))
            elif words[0] == b"CLIENT":
                writer.write(b"+OK\r\n")
            else:
                writer.write(b"-ERR unknown command '%s'\r\n" % words[0].lower())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


def settings_for(url: str, **extra: object) -> Settings:
    return Settings.from_mapping({"redisUrl": url, "keyPrefix": new_prefix(), **extra})


@pytest.mark.parametrize("kind", ["kvrocks", "kvrocks-resp3", "redis", "cluster"])
async def test_the_store_works_on_every_server_it_supports(
    kind: str, request: pytest.FixtureRequest
) -> None:
    if kind == "kvrocks-resp3":
        kv: KvrocksServer = request.getfixturevalue("kvrocks_resp3")
        url = kv.url
        with redis.Redis.from_url(url, protocol=2) as probe:  # the server does offer RESP3
            hello = probe.execute_command("HELLO", "3")
            assert isinstance(hello, dict) and hello[b"proto"] == 3
    else:
        url = server_url(request, kind)
    settings = settings_for(
        url, redisCluster=kind == "cluster", partitions=4 if kind == "cluster" else 1
    )
    await check_store(settings)
    store = open_store(settings)
    try:
        await store.check()
        assert store.address == url.removeprefix("redis://")
        engine = Engine(store)
        created = (await engine.create("acme", NewTask(command="hello", payload='{"n":1}'))).task
        claimed = await engine.claim("acme", "w1", ["hello"])
        assert claimed is not None and claimed.id == created.id
        await engine.complete(
            "acme", created.id, "w1", result='{"ok":1}', lease_id=claimed.lease_id
        )
        done = await engine.get_task("acme", created.id)
        assert done.status == "COMPLETED"
        events = await store.read_stream(
            store.keys.partition(store.keys.partition_of(created.id)).events,
            "0-0",
            block_ms=0,
            count=100,
        )
        kinds = [fields["type"] for _, fields in events if fields.get("id") == created.id]
        assert kinds[0] == "task.created" and kinds[-1] == "task.completed"
    finally:
        await store.close()


async def test_a_resp3_client_on_a_resp2_kvrocks_gets_one_clear_error(
    kvrocks_server: KvrocksServer,
) -> None:
    store = RedisStore.from_url(kvrocks_server.url, KeySchema(new_prefix()), protocol=3)
    try:
        with pytest.raises(StoreHandshakeError) as caught:
            await store.check()
    finally:
        await store.close()
    message = str(caught.value)
    assert f"127.0.0.1:{kvrocks_server.port}" in message
    assert "protocol=2" in message and "resp3-enabled yes" in message


def test_the_settings_refuse_resp3_in_the_url() -> None:
    with pytest.raises(ValueError, match="redisUrl") as caught:
        settings_for("redis://127.0.0.1:6666/0?protocol=3")
    assert "RESP2" in str(caught.value)


@pytest.fixture(scope="module")
def redis_with_password() -> Iterator[RedisServer]:
    with RedisServer.start() as server:
        with redis.Redis.from_url(server.url) as admin:
            admin.config_set("requirepass", "s3cret-pw")
        yield server


@pytest.mark.parametrize("password", [None, "wrong-pw"])
async def test_a_missing_or_wrong_password_names_redis_password(
    redis_with_password: RedisServer, password: str | None
) -> None:
    extra = {} if password is None else {"redisPassword": password}
    settings = settings_for(redis_with_password.url, **extra)
    with pytest.raises(StoreHandshakeError) as caught:
        await check_store(settings)
    message = str(caught.value)
    assert f"127.0.0.1:{redis_with_password.port}" in message and "redisPassword" in message
    assert caught.value.key == "redisPassword"
    assert "wrong-pw" not in message and "s3cret" not in message  # never a secret


async def test_the_right_password_passes(redis_with_password: RedisServer) -> None:
    await check_store(settings_for(redis_with_password.url, redisPassword="s3cret-pw"))


async def test_a_server_that_is_not_redis_names_the_address_setting() -> None:
    async with not_redis() as port:
        with pytest.raises(StoreHandshakeError) as caught:
            await check_store(settings_for(f"redis://127.0.0.1:{port}/0"))
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "redisAddr" in message


async def test_a_redis_without_functions_is_refused_with_the_version_it_needs() -> None:
    async with old_redis() as port:
        with pytest.raises(StoreHandshakeError) as caught:
            await check_store(settings_for(f"redis://127.0.0.1:{port}/0"))
    message = str(caught.value)
    assert f"127.0.0.1:{port} refused FUNCTION LIST (unknown command" in message
    assert "Redis 7.0" in message and caught.value.key == "redisAddr"


async def test_a_store_not_there_yet_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    settings = settings_for(f"redis://127.0.0.1:{port}/0", redisConnectTimeoutSeconds=0.5)
    with caplog.at_level(logging.WARNING, logger="codeq.store"):
        await check_store(settings)
    assert any(f"127.0.0.1:{port}" in r.getMessage() for r in caplog.records)


def test_codeq_gateway_stops_with_one_sentence_on_a_store_it_cannot_use() -> None:
    async def run() -> subprocess.CompletedProcess[str]:
        async with not_redis() as port:
            env = {**os.environ, "REDIS_ADDR": f"127.0.0.1:{port}"}
            return await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "codeq.cli", "gateway", "--port", str(free_port())],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )

    done = asyncio.run(run())
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("codeq: the server at 127.0.0.1:"), lines
    assert "redisAddr" in lines[0] and "Traceback" not in done.stderr


async def test_a_cluster_not_there_yet_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    settings = settings_for(
        f"redis://127.0.0.1:{port}/0", redisCluster=True, redisConnectTimeoutSeconds=0.5
    )
    with caplog.at_level(logging.WARNING, logger="codeq.store"):
        await check_store(settings)
    assert any(f"127.0.0.1:{port}" in r.getMessage() for r in caplog.records)


async def test_cluster_mode_against_a_single_server_names_redis_cluster(
    redis_server: RedisServer,
) -> None:
    with pytest.raises(StoreHandshakeError) as caught:
        await check_store(settings_for(redis_server.url, redisCluster=True))
    assert caught.value.key == "redisCluster"
    assert f"127.0.0.1:{redis_server.port}" in str(caught.value)


def test_codeq_deliver_without_a_shared_store_stops_with_one_sentence() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_ADDR", "REDIS_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "codeq.cli", "deliver"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "codeq: codeq deliver needs the store the gateways use: set REDIS_ADDR (or "
        "redisUrl); `codeq serve` delivers from its own store"
    ]
