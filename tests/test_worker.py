"""The worker runtime (codeq.worker) against a real ``codeq serve``: a refused token stops it,
and every task handled is one log line."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from codeq.client import AsyncCodeQClient
from codeq.errors import Unauthorized
from codeq.worker import Job, NonRetryable, Worker
from tests.served import TOKEN, Served, serve


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve({}) as s:
        yield s


def unique(name: str) -> str:
    return f"{name}_{time.monotonic_ns()}"


async def test_a_refused_token_stops_the_worker_after_a_few_claims(served: Served) -> None:
    async with AsyncCodeQClient(served.base, token="not-a-token") as client:
        worker = Worker(client, wait_seconds=1, max_rejections=3)
        worker.add_handler("ANY", lambda job: None)
        started = time.monotonic()
        with pytest.raises(Unauthorized):
            await asyncio.wait_for(worker.run(), timeout=30)
    assert time.monotonic() - started < 10  # 3 claims and 2 short pauses, not for ever
    assert worker.stopping and worker.stats.claimed == 0
    with pytest.raises(ValueError, match="max_rejections"):
        Worker(client, max_rejections=0)


async def test_one_log_line_per_task_with_its_outcome(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    command = unique("LOGGED")
    async with AsyncCodeQClient(served.base, token=TOKEN) as client:
        ok = await client.create_task(command, {"n": 1})
        bad = await client.create_task(command, {"n": 2}, max_attempts=5)
        final = await client.create_task(command, {"n": 3})
        worker = Worker(client, wait_seconds=1, max_tasks=3)

        @worker.handler(command)
        async def handle(job: Job) -> dict[str, Any]:
            if job.payload["n"] == 2:
                raise RuntimeError("try later")
            if job.payload["n"] == 3:
                raise NonRetryable("bad input")
            return {}

        with caplog.at_level(logging.INFO, logger="codeq.worker"):
            stats = await asyncio.wait_for(worker.run(), timeout=30)
    assert (stats.completed, stats.nacked, stats.failed, stats.unsuccessful) == (1, 1, 1, 2)
    lines = {r.task_id: r for r in caplog.records if hasattr(r, "task_id")}  # type: ignore[attr-defined]
    assert set(lines) == {ok.id, bad.id, final.id}
    assert lines[ok.id].outcome == "completed"  # type: ignore[attr-defined]
    assert lines[bad.id].outcome == "nacked"  # type: ignore[attr-defined]
    assert lines[final.id].outcome == "failed"  # type: ignore[attr-defined]
    text = lines[bad.id].getMessage()
    assert re.fullmatch(
        rf"task {bad.id} {command} nacked in \d+\.\d\d s: RuntimeError: try later", text
    ), text
    assert all(r.command == command for r in lines.values())  # type: ignore[attr-defined]
