"""SIGTERM to a loaded ``codeq serve`` (real Redis): it exits within the grace period, no
client gets a 5xx, no task stays leased by a poll that was closed, and every delivery is done
or scheduled — a second process finishes what the first left."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter

import httpx

from codeq.client import CodeQClient
from tests.receivers import Reply, receiver
from tests.served import TOKEN, polls_waiting, serve
from tests.servers import RedisServer, free_port, wait_for

GRACE = 4.0
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


async def test_sigterm_under_load_loses_nothing(redis_server: RedisServer) -> None:
    env = {
        "REDIS_ADDR": f"127.0.0.1:{redis_server.port}",
        "KEY_PREFIX": f"shut{free_port()}",
        "SHUTDOWN_GRACE_SECONDS": str(GRACE),
        "WEBHOOK_RETRY_SCHEDULE": "0.5,0.5,0.5,0.5",
    }
    statuses: Counter[int] = Counter()
    claimed: set[str] = set()  # tasks a client received in a claim answer
    completed: set[str] = set()  # tasks whose result a client saw accepted
    stop = asyncio.Event()

    with receiver() as hooks:
        hooks.default = Reply(delay=0.2)  # deliveries are in flight at the signal
        with serve(env) as first:
            base = f"{first.base}/v1/codeq"

            async def producer(http: httpx.AsyncClient, command: str) -> None:
                while not stop.is_set():
                    try:
                        r = await http.post(
                            f"{base}/tasks",
                            json={"command": command, "payload": {}, "webhook": hooks.url},
                        )
                    except httpx.TransportError:
                        return  # the server stopped listening: not an answer
                    statuses[r.status_code] += 1

            async def worker(http: httpx.AsyncClient, command: str, wait: float) -> None:
                while not stop.is_set():
                    try:
                        r = await http.post(
                            f"{base}/tasks/claim",
                            json={"commands": [command], "waitSeconds": wait},
                            timeout=30,
                        )
                        statuses[r.status_code] += 1
                        if r.status_code != 200:
                            continue
                        task = r.json()
                        claimed.add(task["id"])
                        r = await http.post(
                            f"{base}/tasks/{task['id']}/result",
                            json={"status": "COMPLETED", "result": {}, "leaseId": task["leaseId"]},
                        )
                        statuses[r.status_code] += 1
                        if r.status_code == 200:
                            completed.add(task["id"])
                    except httpx.TransportError:
                        return

            async with httpx.AsyncClient(headers=HEADERS, timeout=30) as http:
                load = [asyncio.create_task(producer(http, "BUSY")) for _ in range(8)]
                load += [asyncio.create_task(worker(http, "BUSY", 1)) for _ in range(4)]
                # Long polls on a queue that stays empty until the signal.
                load += [asyncio.create_task(worker(http, "IDLE", 20)) for _ in range(6)]
                await asyncio.to_thread(polls_waiting, first.base, 6)
                await asyncio.to_thread(
                    wait_for, lambda: hooks.count() >= 20, timeout=30, message="no deliveries"
                )
                # Tasks for the idle polls, created as the signal lands.
                with CodeQClient(first.base, token=TOKEN) as cq:
                    # With a webhook like every task here: a poll may complete one too.
                    idle_ids = [cq.create_task("IDLE", {}, webhook=hooks.url).id for _ in range(6)]
                signalled = time.monotonic()
                first.proc.send_signal(signal.SIGTERM)
                code = await asyncio.to_thread(first.proc.wait, GRACE + 10)
                took = time.monotonic() - signalled
                stop.set()
                await asyncio.wait_for(asyncio.gather(*load), timeout=30)

            assert code == 0, first.stderr()[-3000:]
            assert took < GRACE + 3, f"exit took {took:.1f} s"

        assert statuses[202] > 0 and statuses[200] > 0
        assert not [s for s in statuses if s >= 500], statuses

        # A second process on the same store: what the first left is finished from there.
        with serve(env) as second, CodeQClient(second.base, token=TOKEN) as cq:
            # A task is leased only if a client received it: no closed poll holds one.
            for task_id in idle_ids:
                task = cq.get_task(task_id)
                if task.status == "IN_PROGRESS":
                    assert task_id in claimed, "a task is leased by a poll that was closed"
            busy = cq.queue_stats("BUSY")
            assert busy.in_progress <= len(claimed - completed)

            # Every accepted result's callback arrives (at least once), from either process.
            def delivered() -> bool:
                got = {json.loads(h.body)["taskId"] for h in list(hooks.received)}
                return completed <= got

            wait_for(delivered, timeout=30, message="a callback was lost in the shutdown")
