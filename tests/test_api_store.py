"""The API against a real Redis that goes away and comes back, and its round-trip cost."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from gateway.app import create_app
from tests.asgi import serve_in_process
from tests.servers import RedisServer
from tests.test_api import ADMIN, PRODUCER, WORKER, auth, make_settings


async def test_store_outage_is_503_with_retry_after_then_recovers(tmp_path: Path) -> None:
    server = RedisServer.start()
    prefix = "out" + uuid.uuid4().hex[:8]
    store = RedisStore.from_url(server.url, KeySchema(prefix), connect_timeout=0.5)
    try:
        app = create_app(make_settings(tmp_path, prefix), store=store, close_store=True)
        async with serve_in_process(app) as c:
            body = {"command": "RENDER", "payload": 1}
            assert (
                await c.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))
            ).status_code == 202
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
            server.restart()
            r = await c.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))
            assert r.status_code == 202
            assert (await c.get("/readyz")).status_code == 200
    finally:
        server.close()


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
                assert await one(call) == ["evalsha"], name
    finally:
        await monitor.__aexit__(None, None, None)
        await mon_client.aclose()
        await probe.aclose()
