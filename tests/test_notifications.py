"""Worker availability notifications (spec 03): empty → non-empty within milliseconds, bounded
per subscription under a burst, one member per group, delayed tasks count, each signed with
its subscription's own secret (found by id). Real receivers."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from codeq.domain import NewTask
from codeq.engine import Engine, EngineConfig
from codeq.store.redis_store import RedisStore
from codeq.store.subscriptions import SubscriptionStore
from codeq.webhooks import WebhookVerificationError, generate_secret, verify
from deliverers.runner import Deliverer
from tests.conftest import eventually
from tests.receivers import Receiver, receiver
from tests.test_deliveries import SECRET, settings
from tests.test_deliveries import store as store


async def subscribe(
    store: RedisStore, url: str, *, tenant: str = "acme", types: tuple[str, ...] = ("render",),
    mode: str = "fanout", group: str | None = None, interval: float = 5.0,
    secret: str | None = None,
) -> str:  # fmt: skip
    sub_id = "sub_" + uuid.uuid4().hex[:12]
    fields: dict[str, Any] = {
        "id": sub_id, "tenant": tenant, "callbackUrl": url, "eventTypes": list(types),
        "deliveryMode": mode, "groupId": group, "minIntervalSeconds": interval, "expiresAt": 0,
    }  # fmt: skip
    if secret is not None:
        fields["secrets"] = [{"secret": secret}]
    record = msgspec.json.encode(fields)
    assert await SubscriptionStore(store).put(sub_id, tenant, record, 60_000) is not None
    return sub_id


async def running(store: RedisStore) -> AsyncIterator[tuple[Engine, Deliverer]]:
    s = settings()
    d = Deliverer(store, s, block_ms=50, scan_interval=0.05)
    await d.start()
    try:
        yield Engine(store, EngineConfig.from_settings(s)), d
    finally:
        await d.stop()


@pytest.fixture
async def system(store: RedisStore) -> AsyncIterator[tuple[Engine, Deliverer]]:
    async for pair in running(store):
        yield pair


async def count_at_least(r: Receiver, n: int, timeout: float = 5) -> None:  # noqa: ASYNC109
    async def enough() -> bool:
        return r.count() >= n

    await eventually(enough, timeout=timeout, interval=0.002)


async def test_first_task_into_an_empty_queue_notifies_within_100ms(
    store: RedisStore, system: tuple[Engine, Deliverer]
) -> None:
    engine, _ = system
    with receiver() as r:
        await subscribe(store, r.url)
        await subscribe(store, r.url, types=("other",))  # another command: not notified
        started = time.monotonic()
        await engine.create("acme", NewTask(command="render", payload="1"))
        await count_at_least(r, 1)
        took = r.received[0].at - started
        body = json.loads(r.received[0].body)
        assert body["available"] is True and body["eventType"] == "render"
        assert body["queueDepth"] == 1 and body["claimUrl"] == "/v1/codeq/tasks/claim"
        assert body["notificationId"] == r.received[0].headers["webhook-id"]
        assert took < 0.1, took
        await engine.create("globex", NewTask(command="render", payload="1"))  # other tenant
        await engine.create("acme", NewTask(command="render", payload="2"))  # within interval
        marker = await engine.create("acme", NewTask(command="other", payload="1"))
        await count_at_least(r, 2)  # the other-command subscription fires for `other`...
        assert marker.task.command == "other"
        assert [json.loads(x.body)["eventType"] for x in r.received] == ["render", "other"]


async def test_a_burst_notifies_each_subscription_at_most_once_per_interval(
    store: RedisStore, system: tuple[Engine, Deliverer]
) -> None:
    engine, deliverer = system
    with receiver() as a, receiver() as b:
        await subscribe(store, a.url, interval=60)
        await subscribe(store, b.url, interval=60)
        items = [NewTask(command="render", payload=str(i)) for i in range(1000)]
        for i in range(0, 1000, 250):
            await engine.create_many("acme", items[i : i + 250])
        await count_at_least(a, 1)
        await count_at_least(b, 1)
        ds = deliverer.dstore

        async def all_read() -> bool:  # every task.ready has been through the group
            return (
                await ds.pending_of(0, "notifier", deliverer.consumer) == []
                and (await ds.consumers(0, "notifier")) != []
            )

        await eventually(all_read, timeout=15)
        # every event is acknowledged, so every delivery it caused is written: two in all
        assert await store.client.hlen(store.keys.delivery(0).records) == 2
        assert (a.count(), b.count()) == (1, 1)


async def test_group_mode_notifies_one_member_per_group(
    store: RedisStore, system: tuple[Engine, Deliverer]
) -> None:
    engine, _ = system
    with receiver() as m1, receiver() as m2, receiver() as m3, receiver() as solo:
        for m in (m1, m2, m3):
            await subscribe(store, m.url, mode="group", group="render-workers", interval=0)
        await subscribe(store, solo.url, mode="group", group="other-group", interval=0)
        for i in range(6):
            await engine.create("acme", NewTask(command="render", payload=str(i)))

            async def delivered(n: int = i + 1) -> bool:
                return m1.count() + m2.count() + m3.count() >= n and solo.count() >= n

            await eventually(delivered)
        assert m1.count() + m2.count() + m3.count() == 6 and solo.count() == 6
        assert (m1.count(), m2.count(), m3.count()) == (2, 2, 2)  # round-robin


async def test_a_delayed_task_becoming_ready_notifies(
    store: RedisStore, system: tuple[Engine, Deliverer]
) -> None:
    engine, _ = system
    with receiver() as r:
        await subscribe(store, r.url, interval=0)
        await engine.create("acme", NewTask(command="render", payload="1", delay_seconds=0.3))
        ready_at = time.monotonic() + 0.3

        async def swept_and_notified() -> Any:
            await engine.sweep_partition(0, "t-" + uuid.uuid4().hex)
            return r.count() >= 1

        await eventually(swept_and_notified, timeout=5, interval=0.05)
        assert r.received[0].at >= ready_at - 0.05
        assert json.loads(r.received[0].body)["eventType"] == "render"


async def test_each_subscription_of_a_fanout_signs_with_its_own_secret(
    store: RedisStore, system: tuple[Engine, Deliverer]
) -> None:
    """Every notification is signed with its own subscription's secret, found by the
    subscription's id (one read per notification, not a listing of the tenant's)."""
    engine, _ = system
    with receiver() as r:
        own: dict[str, str] = {}
        for _ in range(5):
            secret = generate_secret()
            own[await subscribe(store, r.url, interval=60, secret=secret)] = secret
        await subscribe(store, r.url, interval=60)  # none of its own: the global secret
        await engine.create("acme", NewTask(command="render", payload="1"))
        await count_at_least(r, 6)
    by_secret = 0
    for got in r.received:
        matching = [s for s in own.values() if _verifies(got.headers, got.body, s)]
        if matching:
            (secret,) = matching  # one subscription's secret, no other
            Webhook(secret).verify(got.body, got.headers)
            with pytest.raises(WebhookVerificationError):
                verify(got.headers, got.body, SECRET)
            by_secret += 1
        else:
            verify(got.headers, got.body, SECRET)
    assert by_secret == 5 and r.count() == 6


def _verifies(headers: dict[str, str], body: bytes, secret: str) -> bool:
    try:
        verify(headers, body, secret)
    except WebhookVerificationError:
        return False
    return True


async def test_a_subscription_is_read_by_id_within_its_tenant(store: RedisStore) -> None:
    subs = SubscriptionStore(store)
    sub_id = await subscribe(store, "http://127.0.0.1:9/hook", secret=generate_secret())
    raw = await subs.get(sub_id, "acme")
    assert raw is not None and json.loads(raw)["id"] == sub_id
    assert await subs.get(sub_id, "globex") is None  # another tenant's: not found
    assert await subs.get("sub_unknown", "acme") is None
    assert await subs.delete(sub_id, "acme")
    assert await subs.get(sub_id, "acme") is None
