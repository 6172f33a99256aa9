"""The API against a real store (Redis and KVRocks) that goes away and comes back under load,
and its round-trip cost."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from gateway.app import create_app
from tests.asgi import serve_in_process
from tests.conftest import SERVERS, eventually, own_server
from tests.servers import RedisServer
from tests.test_api import ADMIN, PRODUCER, WORKER, auth, make_settings


@pytest.mark.parametrize("kind", SERVERS)
async def test_store_outage_is_503_with_retry_after_then_recovers(
    kind: str, tmp_path: Path
) -> None:
    server = own_server(kind)
    prefix = "out" + uuid.uuid4().hex[:8]
    store = RedisStore.from_url(server.url, KeySchema(prefix), connect_timeout=0.5)
    try:
        app = create_app(make_settings(tmp_path, prefix), store=store, close_store=True)
        async with serve_in_process(app) as c:
            body = {"command": "RENDER", "payload": 1}
            acked: list[str] = []
            answers: list[int] = []
            stop_load = asyncio.Event()

            async def producer() -> None:  # load through the outage: 202 or 503, nothing else
                while not stop_load.is_set():
                    r = await c.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))
                    answers.append(r.status_code)
                    if r.status_code == 202:
                        acked.append(r.json()["id"])
                    else:
                        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
                        await asyncio.sleep(0.01)  # a client backing off, not a synchronisation

            load = [asyncio.create_task(producer()) for _ in range(8)]
            await eventually(lambda: _at_least(acked, 50))
            server.stop()
            for path, method in (("/v1/codeq/tasks", "post"), ("/v1/codeq/admin/queues", "get")):
                if method == "post":
                    r = await c.post(path, json=body, headers=auth(PRODUCER))
                else:
                    r = await c.get(path, headers=auth(ADMIN))
                assert r.status_code == 503, r.text
                assert r.json()["code"] == "store_unavailable"
                assert int(r.headers["retry-after"]) >= 1
            ready = await c.get("/readyz")
            assert ready.status_code == 503 and "retry-after" in ready.headers
            await eventually(lambda: _at_least([a for a in answers if a == 503], 20))
            server.restart()
            before = len(acked)
            await eventually(lambda: _at_least(acked, before + 50), timeout=15)  # by itself
            stop_load.set()
            await asyncio.gather(*load)
            assert (await c.get("/readyz")).status_code == 200
            for task_id in acked:  # every acknowledged create is there
                r = await c.get(f"/v1/codeq/tasks/{task_id}", headers=auth(PRODUCER))
                assert r.status_code == 200, (task_id, r.text)
    finally:
        server.close()


async def _at_least(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def _client_commands(monitor: Any, marker: str) -> list[str]:
    out = []
    while True:
        cmd = await monitor.next_command()
        text = cmd["command"]
        if marker in text:
            return out
        if cmd.get("client_type") == "lua":
            continue
        name = text.split(" ", 1)[0].strip('"').lower()
        if name not in ("xread", "xrevrange", "echo", "client", "hello"):
            out.append(name)


async def test_each_http_operation_is_one_script_call(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = "rt" + uuid.uuid4().hex[:8]
    store = RedisStore.from_url(redis_server.url, KeySchema(prefix))
    app = create_app(make_settings(tmp_path, prefix), store=store, close_store=True)
    probe = aioredis.Redis.from_url(redis_server.url)
    mon_client = aioredis.Redis.from_url(redis_server.url)
    monitor = await mon_client.monitor().__aenter__()
    try:
        async with serve_in_process(app) as c:
            await c.post(
                "/v1/codeq/tasks", json={"command": "W", "payload": 0}, headers=auth(PRODUCER)
            )  # warm: scripts loaded, connections open
            await probe.echo("start-marker")
            await _client_commands(monitor, "start-marker")

            async def one(call: Any) -> list[str]:
                marker = "m-" + uuid.uuid4().hex
                r = await call()
                assert r.status_code in (200, 202), r.text
                await probe.echo(marker)
                return await _client_commands(monitor, marker)

            created = {}

            async def create() -> Any:
                r = await c.post(
                    "/v1/codeq/tasks", json={"command": "RT", "payload": 1}, headers=auth(PRODUCER)
                )
                created["id"] = r.json()["id"]
                return r

            async def claim() -> Any:
                r = await c.post(
                    "/v1/codeq/tasks/claim", json={"commands": ["RT"]}, headers=auth(WORKER)
                )
                created["lease"] = r.json()["leaseId"]
                return r

            tid = lambda: created["id"]  # noqa: E731
            ops = {
                "create": create,
                "claim": claim,
                "heartbeat": lambda: c.post(
                    f"/v1/codeq/tasks/{tid()}/heartbeat", json={}, headers=auth(WORKER)
                ),
                "nack": lambda: c.post(
                    f"/v1/codeq/tasks/{tid()}/nack", json={"delaySeconds": 0}, headers=auth(WORKER)
                ),
                "claim again": claim,
                "result": lambda: c.post(
                    f"/v1/codeq/tasks/{tid()}/result",
                    json={"status": "COMPLETED", "result": {}},
                    headers=auth(WORKER),
                ),
            }
            for name, call in ops.items():
                assert await one(call) == ["fcall"], name
            got = lambda: c.get(f"/v1/codeq/tasks/{tid()}", headers=auth(PRODUCER))  # noqa: E731
            assert await one(got) == ["fcall"]  # a read too
    finally:
        await monitor.__aexit__(None, None, None)
        await mon_client.aclose()
        await probe.aclose()
