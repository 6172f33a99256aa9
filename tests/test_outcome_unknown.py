"""A write whose answer the store did not give in time says so (issue 14): 503 with
``outcomeUnknown: true``, and a retry with the same idempotency key makes no second task.

The store is made slow for real: another connection runs a script that keeps the server busy
for longer than the gateway's socket timeout, so the create is sent, waits, times out, and then
runs once the server is free."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from gateway.app import create_app
from tests.asgi import serve_in_process
from tests.conftest import SERVERS, eventually, server_url
from tests.test_api import PRODUCER, auth, make_settings

BUSY_SCRIPT = """
local function secs() local t = redis.call('TIME'); return t[1] + t[2] / 1e6 end
local stop = secs() + tonumber(ARGV[1])
repeat until secs() >= stop
return 1
"""


@pytest.mark.parametrize("kind", SERVERS)
async def test_a_timed_out_create_says_outcome_unknown_and_a_retry_is_safe(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = server_url(request, kind)
    prefix = "ou" + uuid.uuid4().hex[:8]
    store = RedisStore.from_url(url, KeySchema(prefix), socket_timeout=0.3)
    app = create_app(make_settings(tmp_path, prefix), store=store, close_store=True)
    body = {"command": "RENDER", "payload": {"n": 1}, "idempotencyKey": "order-17"}
    busy = aioredis.Redis.from_url(url, protocol=2, socket_timeout=10)
    try:
        async with serve_in_process(app) as c:
            # warm: the scripts are loaded and the store knows what server it talks to
            r = await c.post("/v1/codeq/tasks", json={"command": "W", "payload": 0},
                             headers=auth(PRODUCER))  # fmt: skip
            assert r.status_code == 202, r.text
            blocking = asyncio.create_task(busy.eval(BUSY_SCRIPT, 0, 1.5))

            async def server_busy() -> bool:
                probe = aioredis.Redis.from_url(url, protocol=2, socket_timeout=0.05)
                try:
                    await probe.ping()
                except Exception:  # a timeout or BUSY: the script is running
                    return True
                finally:
                    await probe.aclose()
                return blocking.done()

            await eventually(server_busy, timeout=5, interval=0.01)
            assert not blocking.done(), "the busy script ended before the create was sent"
            r = await c.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))
            assert r.status_code == 503, r.text
            assert r.json()["outcomeUnknown"] is True and "idempotencyKey" in r.json()["error"]
            assert int(r.headers["retry-after"]) >= 1
            assert await blocking == 1
            # the create ran after all, once the server was free: that is what "unknown" means
            assert ("render", 1) in await store_stats(url, prefix)
            first = await c.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))
            second = await c.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))
            assert first.status_code == second.status_code == 202, (first.text, second.text)
            assert first.json()["id"] == second.json()["id"]  # the timed-out create, replayed
        [queue] = [q for q in await store_stats(url, prefix) if q[0] == "render"]
        assert queue[1] == 1  # one task, however many tries
    finally:
        await busy.aclose()


async def store_stats(url: str, prefix: str) -> list[tuple[str, int]]:
    from codeq.engine import Engine

    store = RedisStore.from_url(url, KeySchema(prefix))
    try:
        return [(q.command, q.ready) for q in await Engine(store).list_queues("acme")]
    finally:
        await store.close()
