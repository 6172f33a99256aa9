"""A ``codeq deliver`` killed (SIGKILL) in the middle of a burst to one receiver leaves at most
1 % duplicates and loses nothing (issue 15, item 7). The duplicates a kill must cause are the
attempts in flight at that moment (at most ``deliveryPerHostConcurrency``, 16); before the
timeout stopped counting the wait for a connection slot, a burst also timed out requests the
receiver had answered, and retried them: 16 % duplicates. On Redis and KVRocks."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.settings import Settings
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from tests.conftest import SERVERS, eventually, server_url
from tests.receivers import Receiver, Reply, receiver
from tests.test_deliver_durability import deliver_process

BURST = 2000


def received(r: Receiver) -> Counter[str]:
    with r.lock:
        return Counter(json.loads(x.body)["taskId"] for x in r.received)


async def complete_burst(engine: Engine, url: str, n: int) -> set[str]:
    gate = asyncio.Semaphore(32)

    async def one(i: int) -> str:
        async with gate:
            t = await engine.create("acme", NewTask(command="c", payload=str(i), webhook=url))
            c = await engine.claim("acme", f"w{i}", ["c"])
            assert c is not None
            await engine.complete("acme", c.id, f"w{i}", result="{}", lease_id=c.lease_id)
            return t.task.id

    return set(await asyncio.gather(*(one(i) for i in range(n))))


@pytest.mark.parametrize("kind", SERVERS)
async def test_a_deliverer_killed_mid_burst_leaves_few_duplicates_and_loses_nothing(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    started = time.monotonic()
    url = server_url(request, kind)
    prefix = "kill" + uuid.uuid4().hex[:8]
    store = RedisStore.from_url(url, KeySchema(prefix), pool_size=64)
    loopback = Settings.from_mapping({"webhookAllowedCidrs": ["127.0.0.0/8"]})
    engine = Engine(store, EngineConfig.from_settings(loopback))
    try:
        with receiver() as r:
            # 50 ms a request, 16 at a time (the per-host default): ~6 s for the burst, while
            # the timeout is 2 s (deliver_process): most of the burst waits longer than that
            r.default = Reply(200, delay=0.05)
            with deliver_process(url, prefix, tmp_path, "a") as a:
                ids = await complete_burst(engine, r.url, BURST)

                async def a_third() -> bool:
                    return r.count() >= BURST // 3

                await eventually(a_third, timeout=30)
                a.send_signal(signal.SIGKILL)
                a.wait(10)
            with deliver_process(url, prefix, tmp_path, "b"):

                async def all_arrived() -> bool:
                    return set(received(r)) >= ids

                await eventually(all_arrived, timeout=45, interval=0.1)
            got = received(r)
            assert set(got) == ids  # nothing lost, nothing else
            duplicates = sum(got.values()) - len(ids)
            assert duplicates <= BURST // 100, duplicates
        assert time.monotonic() - started < 60
    finally:
        await store.close()
