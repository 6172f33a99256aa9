"""Durability of deliveries across processes and store trouble (spec 03, issue C #2): a
``codeq deliver`` killed with SIGKILL, a receiver that is down for a while, a store restarted
with persistence, and consumer groups that vanished (NOGROUP on Redis; on KVRocks, which never
says NOGROUP, an empty read). The store tests run on Redis and on KVRocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis.asyncio

from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.errors import StoreUnavailable
from codeq.settings import Settings
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from deliverers.runner import Deliverer
from tests.conftest import SERVERS, eventually, own_server, server_url
from tests.receivers import Receiver, Reply, receiver
from tests.servers import RedisServer, stop_process
from tests.test_deliveries import SECRET, settings


@contextmanager
def deliver_process(
    url: str, prefix: str, tmp: Path, name: str
) -> Iterator[subprocess.Popen[bytes]]:
    config = tmp / f"{name}.yaml"
    config.write_text(
        f"webhookHmacSecret: {SECRET}\n"
        "webhookAllowedCidrs: ['127.0.0.0/8']\n"
        "webhookTimeoutSeconds: 2\n"
        "webhookRetrySchedule: [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]\n"
        "consumerTtlSeconds: 2\n"
    )
    env = {**os.environ, "REDIS_URL": url, "KEY_PREFIX": prefix, "LOG_FORMAT": "json"}
    env.pop("REDIS_ADDR", None)
    with (tmp / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "codeq.cli", "deliver", "--config", str(config)],
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
        try:
            yield proc
        finally:
            stop_process(proc)


async def complete_many(engine: Engine, url: str, n: int) -> set[str]:
    ids = set()
    for i in range(n):
        t = (await engine.create("acme", NewTask(command="c", payload=str(i), webhook=url))).task
        c = await engine.claim("acme", "w", ["c"])
        assert c is not None
        await engine.complete("acme", c.id, "w", result="{}", lease_id=c.lease_id)
        ids.add(t.id)
    return ids


def arrived(r: Receiver) -> set[str]:
    with r.lock:
        return {json.loads(x.body)["taskId"] for x in r.received}


@pytest.mark.parametrize("kind", SERVERS)
async def test_a_killed_deliverer_loses_nothing(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = server_url(request, kind)
    prefix = "dur" + uuid.uuid4().hex[:8]
    store = RedisStore.from_url(url, KeySchema(prefix))
    engine = Engine(
        store,
        EngineConfig.from_settings(Settings.from_mapping({"webhookAllowedCidrs": ["127.0.0.0/8"]})),
    )  # the receivers are on loopback: allowed explicitly
    try:
        with receiver() as r:
            r.default = Reply(200, delay=0.3)  # slow: attempts are in flight at the kill
            r.script = [Reply(500)] * 10  # and some are waiting in the retry schedule
            with deliver_process(url, prefix, tmp_path, "a") as a:
                ids = await complete_many(engine, r.url, 40)

                async def some() -> bool:
                    return r.count() >= 15

                await eventually(some, timeout=20)
                a.send_signal(signal.SIGKILL)
                a.wait(10)
            with deliver_process(url, prefix, tmp_path, "b"):

                async def all_arrived() -> bool:
                    return arrived(r) >= ids

                await eventually(all_arrived, timeout=45)
            # duplicates only for attempts in flight at the kill (at-least-once)
            assert r.count() - 10 - len(ids) <= 20
    finally:
        await store.close()


async def test_a_receiver_down_for_a_while_gets_every_delivery(
    redis_server: RedisServer,
) -> None:
    prefix = "down" + uuid.uuid4().hex[:8]
    store = RedisStore.from_url(redis_server.url, KeySchema(prefix))
    s = settings(webhookRetrySchedule=[1.0] * 30, webhookTimeoutSeconds=1)
    engine = Engine(store, EngineConfig.from_settings(s))
    d = Deliverer(store, s, block_ms=100, scan_interval=0.1)
    await d.start()
    try:
        with receiver() as r:
            r.default = Reply(503)  # "down": answers nothing useful
            ids = await complete_many(engine, r.url, 20)

            async def down_for_20s() -> bool:  # the outage lasts 20 s, retried all along
                with r.lock:
                    first = r.received[0].at if r.received else None
                return first is not None and time.monotonic() - first >= 20

            await eventually(down_for_20s, timeout=40, interval=0.2)
            failed = r.count()
            assert failed >= 20 * 10  # every delivery kept being attempted during the outage
            r.default = Reply(200)  # back

            async def all_arrived() -> bool:
                with r.lock:
                    ok = {json.loads(x.body)["taskId"] for x in r.received[failed:]}
                return ok >= ids

            await eventually(all_arrived, timeout=30)
    finally:
        await d.stop()
        await store.close()


@pytest.mark.parametrize("kind", SERVERS)
async def test_restart_with_persistence_and_a_vanished_group_recover(kind: str) -> None:
    server = own_server(kind)
    prefix = "rst" + uuid.uuid4().hex[:8]
    store = RedisStore.from_url(server.url, KeySchema(prefix), connect_timeout=0.5)
    s = settings()
    engine = Engine(store, EngineConfig.from_settings(s))
    d = Deliverer(store, s, block_ms=100, scan_interval=0.05)
    await d.start()
    try:
        with receiver() as r:
            first = await complete_many(engine, r.url, 3)

            async def got(ids: set[str]) -> bool:
                return arrived(r) >= ids

            await eventually(lambda: got(first))
            server.restart()  # the groups survive (Redis: in the append-only file)

            async def answers() -> bool:  # pooled connections to the old process fail once
                try:
                    await store.ping()
                    await store.stats(0)
                except StoreUnavailable:
                    return False
                return True

            await eventually(answers, timeout=10)
            again = await complete_many(engine, r.url, 3)
            await eventually(lambda: got(again), timeout=20)
            # the stream and its groups vanish (a store that lost its data): NOGROUP
            # (a fresh connection: the store's pool may still hold one to the old process)
            fresh = redis.asyncio.Redis.from_url(server.url, protocol=2)
            try:
                await fresh.delete(store.keys.delivery(0).events)
            finally:
                await fresh.aclose()
            later = await complete_many(engine, r.url, 3)
            await eventually(lambda: got(later), timeout=20)
    finally:
        await d.stop()
        await store.close()
        server.close()
