"""Poison in the event stream (issue 15, item 1, the deliverer's half): entries the deliverer
cannot decode, written straight into a partition stream between the good events of two
tenants, and an event whose task record cannot be decoded. Each bad one is quarantined on its
own (a dead-letter record with a reason, acknowledged); every good webhook is delivered. On
Redis and KVRocks.

Task records that cannot be decoded are the store's to quarantine (its scripts report them
absent); a result record that cannot be decoded fails the deliverer's batch, which is then
handled one entry at a time so that only that entry is quarantined. A failure that is not the
entry's own (the store failing one call) holds the entry back and tries it again: delivered,
not quarantined."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.store.deliveries import DeliveryStore
from codeq.store.redis_store import RedisStore, StoreError
from deliverers.runner import CALLBACKS, Deliverer
from tests.conftest import SERVERS, eventually, make_store
from tests.receivers import Receiver, receiver
from tests.test_deliveries import settings


@pytest.fixture(params=SERVERS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    # Not the contract fixture: this test writes records the invariants rightly call broken.
    s = make_store(request, request.param)
    yield s
    await s.close()


async def finish(engine: Engine, tenant: str, url: str, n: int) -> str:
    t = (await engine.create(tenant, NewTask(command="render", payload=str(n), webhook=url))).task
    c = await engine.claim(tenant, "w", ["render"])
    assert c is not None and c.id == t.id
    await engine.complete(tenant, t.id, "w", result=f'{{"n":{n}}}', lease_id=c.lease_id)
    return t.id


def arrived(r: Receiver) -> list[str]:
    with r.lock:
        return [json.loads(x.body)["taskId"] for x in r.received]


async def test_bad_entries_are_quarantined_one_by_one_and_every_good_webhook_goes_out(
    store: RedisStore,
) -> None:
    s = settings(eventMaxReceives=3)
    engine = Engine(store, EngineConfig.from_settings(s))
    events = store.keys.delivery(0).events
    tasks = store.keys.partition(0).tasks
    ds = DeliveryStore(store)
    with receiver() as r:
        hook = r.url
        bad: list[str] = []

        async def xadd(fields: dict[str, str | bytes]) -> None:
            """A bad entry the callbacks group must quarantine."""
            entry = await store.client.xadd(events, fields)  # type: ignore[arg-type]
            bad.append(entry.decode() if isinstance(entry, bytes) else str(entry))

        good: list[str] = []
        good.append(await finish(engine, "acme", hook, 0))
        # missing fields
        await xadd({"type": "task.completed", "webhook": hook})
        good.append(await finish(engine, "globex", hook, 1))
        # numbers no integer field can hold
        await xadd({"type": "task.completed", "id": good[0], "tenant": "acme",
                    "command": "render", "at": "1e300", "webhook": hook})  # fmt: skip
        # (no callback: the notifier quarantines this one, the callbacks group ignores it)
        huge_depth = await store.client.xadd(events, {"type": "task.ready", "id": good[0],
            "tenant": "acme", "command": "render", "at": "1", "depth": "9" * 40})  # fmt: skip
        good.append(await finish(engine, "acme", hook, 2))
        # bytes that are not UTF-8, in a value and in the type itself
        await xadd({"type": "task.failed", "id": b"\xff\xfe\xfd", "tenant": "acme",
                    "webhook": hook})  # fmt: skip
        await xadd({"type": b"\xc3\x28", "id": "x", "tenant": "globex"})
        await xadd({"garbage": "no type at all"})
        good.append(await finish(engine, "globex", hook, 3))
        # events whose task record cannot be decoded: maxAttempts beyond what a Lua number
        # holds as an integer (what issue 15 found after a create with maxAttempts >= 2^53),
        # and a record that is not JSON at all
        raw = await store.client.hget(tasks, good[0])
        record = json.loads(raw)
        record.update(id="poisoned-task", maxAttempts=1e300)
        await store.client.hset(tasks, "poisoned-task", json.dumps(record))
        await store.client.hset(tasks, "garbage-task", b"\xffnot json")
        for task_id in ("poisoned-task", "garbage-task"):
            entry = await store.client.xadd(events, {"type": "task.completed", "id": task_id,
                "tenant": "acme", "command": "render", "at": "1", "webhook": hook})  # fmt: skip
            assert entry
        # a task whose result record cannot be decoded
        broken = await finish(engine, "globex", hook, 6)
        await store.client.hset(store.keys.partition(0).results, broken, b"{not json")
        (broken_entry,) = [
            entry_id.decode()
            for entry_id, fields in await store.client.xrange(events)
            if fields.get(b"id") == broken.encode() and fields.get(b"type") == b"task.completed"
        ]
        good.append(await finish(engine, "acme", hook, 4))
        good.append(await finish(engine, "globex", hook, 5))

        # The deliverer starts with all of it waiting: one read, one batch.
        d = Deliverer(store, s, block_ms=100, scan_interval=0.05)
        await d.start()
        try:

            async def all_good_arrived() -> bool:
                return sorted(arrived(r)) == sorted(good)

            await eventually(all_good_arrived, timeout=15)

            async def all_set_aside() -> list[dict[str, object]] | None:
                records = [x for x in await ds.set_aside(0) if x["group"] == CALLBACKS]
                entries = {str(x["entry"]) for x in records}
                return records if entries == {*bad, broken_entry} else None

            records = await eventually(all_set_aside, timeout=20)
            assert all(x["reason"] for x in records), records
            by_entry = {str(x["entry"]): str(x["reason"]) for x in records}
            assert "at" in by_entry[bad[1]]  # the reason names the field
            assert "UTF-8" in by_entry[bad[2]]
            assert by_entry[broken_entry] == "cannot be handled: DecodeError"
            # and the operators see it: one count per entry set aside (spec 03)
            text = d.metrics.render().decode()
            counted = f'codeq_events_set_aside_total{{group="{CALLBACKS}",why="quarantined"}}'
            assert f"{counted} {float(len(records))}" in text, text

            async def notifier_too() -> bool:
                found = await ds.set_aside(0)
                return any(x["group"] == "notifier" and x["entry"] == huge_depth.decode()
                           for x in found)  # fmt: skip

            await eventually(notifier_too, timeout=10)

            async def nothing_pending() -> bool:
                return await ds.pending_of(0, CALLBACKS, d.consumer) == []

            await eventually(nothing_pending, timeout=10)
            # each good task exactly once: nothing was retried or repeated around the poison
            assert sorted(arrived(r)) == sorted(good)
        finally:
            await d.stop()


async def test_an_entry_the_store_fails_on_is_tried_again_not_quarantined(
    store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store error on one entry's task (a script failing, not the server gone) is not that
    entry's fault: it is held back and handled again, and the rest of its batch goes out at
    once. A store that fails on demand is not something a real server does on cue, hence
    the wrapper."""
    s = settings()
    engine = Engine(store, EngineConfig.from_settings(s))
    ds = DeliveryStore(store)
    with receiver() as r:
        ids = [await finish(engine, tenant, r.url, n) for n, tenant in
               enumerate(["acme", "globex", "acme", "globex"])]  # fmt: skip
        unlucky = ids[1]
        failures = 0
        real_get_many = store.get_many

        async def flaky(partition: int, wanted: Sequence[tuple[str, str, bool]]) -> Any:
            nonlocal failures
            if failures < 2 and any(task_id == unlucky for _, task_id, _ in wanted):
                failures += 1  # the batch, then the entry on its own
                raise StoreError("store error in get_many: a script failed")
            return await real_get_many(partition, wanted)

        monkeypatch.setattr(store, "get_many", flaky)
        d = Deliverer(store, s, block_ms=100, scan_interval=0.05)
        await d.start()
        try:

            async def others_arrived() -> bool:
                return set(arrived(r)) >= set(ids) - {unlucky}

            await eventually(others_arrived, timeout=10)

            async def all_arrived() -> bool:
                return sorted(arrived(r)) == sorted(ids)

            await eventually(all_arrived, timeout=10)
            assert failures == 2
            assert await ds.set_aside(0) == []

            async def nothing_pending() -> bool:
                return await ds.pending_of(0, CALLBACKS, d.consumer) == []

            await eventually(nothing_pending, timeout=10)
        finally:
            await d.stop()
