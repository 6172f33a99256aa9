"""Store round trips per operation, from ``INFO commandstats`` deltas.

    python bench/roundtrips.py --redis-url redis://127.0.0.1:PORT

Prints one line per operation: ``<op> script_calls=<n> other_commands=<m>``. Each operation is
measured alone on a quiet server (functions loaded beforehand so no reload is counted).

Redis counts the commands a script runs in ``INFO commandstats`` too, so the delta alone cannot
tell a round trip from a ``redis.call``. A MONITOR connection attributes every command: those
sent by a client (``script_calls`` = FCALL, FCALL_RO, EVALSHA/EVAL, ``other_commands`` =
anything else) and those run inside a script (``in_script``). The sum is checked against the
commandstats delta, so nothing is missed; the measurement's own INFO/ECHO are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.asyncio as aioredis

from bench._common import local_store
from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore

SCRIPT_COMMANDS = {
    "cmdstat_evalsha",
    "cmdstat_eval",
    "cmdstat_evalsha_ro",
    "cmdstat_eval_ro",
    "cmdstat_fcall",
    "cmdstat_fcall_ro",
}
IGNORED = {"cmdstat_info", "cmdstat_echo"}


async def counts(client: Any) -> dict[str, int]:
    info = await client.info("commandstats")
    return {k: int(v["calls"]) for k, v in info.items()}


async def measure(
    client: Any, monitor: Any, op: Callable[[], Awaitable[object]], *, check: bool = True
) -> tuple[int, int, int]:
    marker = "bench-marker-" + uuid.uuid4().hex
    before = await counts(client)
    await op()
    await client.echo(marker)
    after = await counts(client)
    script = other = inner = 0
    while True:
        cmd = await monitor.next_command()
        text = cmd["command"]
        if marker in text:
            break
        name = text.split(" ", 1)[0].strip('"').lower()
        if cmd.get("client_type") == "lua":
            inner += 1
        elif name in ("evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro"):
            script += 1
        elif name not in ("info", "echo"):
            other += 1
    counted = sum(
        calls - before.get(name, 0) for name, calls in after.items() if name not in IGNORED
    )
    if check and counted != script + other + inner:
        raise SystemExit(f"commandstats delta {counted} != attributed {script + other + inner}")
    return script, other, inner


async def main(url: str) -> int:
    # One connection: a fresh connection's handshake (CLIENT SETINFO) would be counted.
    store = RedisStore.from_url(url, KeySchema("rt" + uuid.uuid4().hex[:8]), pool_size=1)
    engine = Engine(store, EngineConfig(backoff_base_seconds=0.001, backoff_max_seconds=0.001))
    await store.load_scripts()
    await store.ping()
    client = store.client
    t = "bench"
    rows: list[tuple[str, int, int, int]] = []
    monitor_client = aioredis.Redis.from_url(url, protocol=2)
    monitor = await monitor_client.monitor().__aenter__()
    state: dict[str, Any] = {}

    async def claim() -> None:
        state["task"] = await engine.claim(t, "w", ["RT"])

    def with_claim(fn: Callable[[Any], Awaitable[object]]) -> Callable[[], Awaitable[object]]:
        async def run() -> object:
            return await fn(state["task"])

        return run

    await engine.create(t, NewTask(command="RT", payload="0"))  # warm up the connection
    ops: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("create", lambda: engine.create(t, NewTask(command="RT", payload='{"a":1}'))),
        (
            "create_delayed",
            lambda: engine.create(t, NewTask(command="LATER", payload="1", delay_seconds=60)),
        ),
        (
            "create_idempotent",
            lambda: engine.create(t, NewTask(command="RT", payload="2", idempotency_key="k1")),
        ),
        (
            "create_idempotent_replay",
            lambda: engine.create(t, NewTask(command="RT", payload="2", idempotency_key="k1")),
        ),
        ("claim", claim),
        ("heartbeat", with_claim(lambda x: engine.heartbeat(t, x.id, "w", lease_id=x.lease_id))),
        (
            "nack",
            with_claim(lambda x: engine.nack(t, x.id, "w", lease_id=x.lease_id, delay_seconds=0)),
        ),
        ("claim", claim),
        ("abandon", with_claim(lambda x: engine.abandon(t, x.id, "w", lease_id=x.lease_id))),
        ("claim", claim),
        (
            "complete",
            with_claim(lambda x: engine.complete(t, x.id, "w", result="{}", lease_id=x.lease_id)),
        ),
        ("claim", claim),
        ("fail", with_claim(lambda x: engine.fail(t, x.id, "w", error="no"))),
        ("get_task", with_claim(lambda x: engine.get_task(t, x.id))),
        ("queue_stats", lambda: engine.queue_stats(t, "RT")),
    ]
    seen: set[str] = set()

    async def nothing() -> None:
        return None

    await measure(
        client, monitor, nothing, check=False
    )  # drain what the monitor saw before we began
    for name, op in ops:
        script, other, inner = await measure(client, monitor, op)
        if name not in seen:
            rows.append((name, script, other, inner))
            seen.add(name)
    await monitor.__aexit__(None, None, None)
    await monitor_client.aclose()
    await store.close()
    print(f"# python bench/roundtrips.py --redis-url {url}")
    for name, script, other, _ in rows:
        print(f"{name} script_calls={script} other_commands={other}")
    print()
    print(f"{'operation':<26}{'round trips':>12}{'commands inside the script':>30}")
    for name, script, other, inner in rows:
        print(f"{name:<26}{script + other:>12}{inner:>30}")
    bad = [r for r in rows if (r[1], r[2]) != (1, 0)]
    return 1 if bad else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="a Redis/KVRocks URL; default: start a local server")
    args = parser.parse_args()
    with local_store(args.redis_url) as url:
        sys.exit(asyncio.run(main(url)))
