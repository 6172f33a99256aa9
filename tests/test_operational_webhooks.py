"""Operational webhooks (issue 18 item 9): an operator endpoint that names
``endpoint.disabled``, ``endpoint.enabled`` and ``delivery.exhausted`` learns of a dead endpoint
before the customers do. Each event is written by the script that makes the change, in the same
step (``ep_mark``/``ep_patch`` to the ``{hooks}`` stream, ``dlv_outcome`` to the partition
stream), and delivered through the one delivery pipeline: signed, recorded, retried. Real
Redis and KVRocks, real receivers on loopback."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest

from codeq.settings import Settings
from codeq.store.hook_events import HookEventStore
from codeq.store.redis_store import RedisStore
from codeq.webhooks import verify
from deliverers import records
from deliverers.endpoints import endpoint_matches
from deliverers.handlers import ENDPOINTS
from deliverers.runner import Deliverer
from deliverers.sender import TargetPolicy, WebhookSender
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import SERVERS, eventually, make_store
from tests.receivers import Receiver, Reply, receiver
from tests.test_api import OTHER_TENANT, PRODUCER, WORKER, auth, error_of, make_settings

BASE = "/v1/codeq/webhooks/endpoints"
OPERATIONAL = ["endpoint.disabled", "endpoint.enabled", "delivery.exhausted"]


# -- who receives what (pure) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("types", "kind", "wanted"),
    [
        (["*"], "task.completed", True),
        (["*"], "endpoint.disabled", False),  # `*` is every task event, no operational one
        (["*"], "delivery.exhausted", False),
        (["*", "endpoint.disabled"], "endpoint.disabled", True),
        (["endpoint.disabled"], "endpoint.enabled", False),
        (["delivery.exhausted"], "delivery.exhausted", True),
        (["delivery.exhausted"], "task.completed", False),
    ],
)
def test_star_means_task_events_and_operational_types_are_named(
    types: list[str], kind: str, wanted: bool
) -> None:
    endpoint = {"id": "ep_1", "eventTypes": types, "enabled": True, "commands": ["render"]}
    # commands narrow task events only: an operational event is about no command
    assert endpoint_matches(endpoint, kind, "render" if kind.startswith("task.") else "") is wanted
    assert not endpoint_matches({**endpoint, "enabled": False}, kind, "render")


# -- through the API, with the deliverers -----------------------------------------------------


@pytest.fixture(params=SERVERS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def serve_app(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str, **extra: Any
) -> AsyncIterator[ApiClient]:
    prefix = "ow" + uuid.uuid4().hex[:10]
    settings = make_settings(
        tmp_path,
        prefix,
        **{"webhookAllowedCidrs": ["127.0.0.0/8"], "webhookRetrySchedule": [0.1, 0.1], **extra},
    )
    app = create_app(
        settings, store=make_store(request, kind, prefix), close_store=True, run_deliverers=True
    )
    async with serve_in_process(app) as c:
        yield c


@pytest.fixture
async def api(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> AsyncIterator[ApiClient]:
    async for c in serve_app(request, tmp_path, backend):
        yield c


@pytest.fixture
async def failing_api(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> AsyncIterator[ApiClient]:
    """Endpoints disabled after 0.36 s of failing (endpointDisableAfterHours 0.0001)."""
    async for c in serve_app(
        request, tmp_path, backend, endpointDisableAfterHours=0.0001,
        webhookRetrySchedule=[0.5, 0.5, 0.5],
    ):  # fmt: skip
        yield c


async def endpoint(
    api: ApiClient, url: str, types: Sequence[str], token: str = PRODUCER
) -> dict[str, Any]:
    r = await api.post(BASE, json={"url": url, "eventTypes": list(types)}, headers=auth(token))
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def finished_task(api: ApiClient, **fields: Any) -> str:
    """A task of command ``render`` run to COMPLETED; its id."""
    made = await api.post("/v1/codeq/tasks", json={"command": "render", "payload": 1, **fields},
                          headers=auth(PRODUCER))  # fmt: skip
    assert made.status_code == 202, made.text
    task_id = str(made.json()["id"])
    claimed = await api.post("/v1/codeq/tasks/claim", json={"commands": ["render"]},
                             headers=auth(WORKER))  # fmt: skip
    assert claimed.json()["id"] == task_id
    done = await api.post(f"/v1/codeq/tasks/{task_id}/result",
                          json={"status": "COMPLETED", "result": {"ok": 1},
                                "leaseId": claimed.json()["leaseId"]},
                          headers=auth(WORKER))  # fmt: skip
    assert done.status_code == 200, done.text
    return task_id


def events_of(r: Receiver, secret: str) -> list[dict[str, Any]]:
    """What ``r`` received, each verified with the endpoint's secret (raises otherwise)."""
    with r.lock:
        got = list(r.received)
    out = []
    for x in got:
        verify(x.headers, x.body, secret)
        event: dict[str, Any] = json.loads(x.body)
        assert x.headers["x-codeq-event"] == event["type"]
        out.append(event)
    return out


async def received(r: Receiver, secret: str, kind: str, n: int = 1) -> list[dict[str, Any]]:
    """The first ``n`` events of type ``kind`` ``r`` gets, once it has them."""

    async def arrived() -> list[dict[str, Any]]:
        found = [e for e in events_of(r, secret) if e["type"] == kind]
        return found[:n] if len(found) >= n else []

    found: list[dict[str, Any]] = await eventually(arrived, timeout=15)
    return found


def store_of(api: ApiClient) -> RedisStore:
    store = api.gw.store
    assert isinstance(store, RedisStore)
    return store


async def records_of(api: ApiClient, endpoint_id: str) -> list[records.Delivery]:
    """Every delivery record to ``endpoint_id`` (all of them, not an index)."""
    store = store_of(api)
    out = []
    for p in range(store.keys.partitions):
        raws = await store.client.hvals(store.keys.delivery(p).records)
        out += [d for d in map(records.decode, raws) if d.endpoint_id == endpoint_id]
    return out


async def stream_types(api: ApiClient) -> list[str]:
    """The types of the entries of partition 0's stream (the scripts' own writes)."""
    store = store_of(api)
    entries = await store.client.xrange(store.keys.delivery(0).events)
    return [fields[b"type"].decode() for _, fields in entries]


async def test_an_endpoint_that_answers_410_is_disabled_and_the_operator_told(
    api: ApiClient,
) -> None:
    with receiver() as ops, receiver() as gone, receiver() as star, receiver() as theirs:
        gone.default = Reply(410)
        operator = await endpoint(api, ops.url, OPERATIONAL)
        # the gone endpoint names endpoint.disabled too: it is never told of its own
        customer = await endpoint(api, gone.url, ["task.completed", "endpoint.disabled"])
        everything = await endpoint(api, star.url, ["*"])
        other = await endpoint(api, theirs.url, OPERATIONAL, token=OTHER_TENANT)
        await finished_task(api)

        (event,) = await received(ops, operator["secret"], "endpoint.disabled")
        assert event["data"] == {
            "endpointId": customer["id"],
            "trigger": "automatic",
            "reason": "gone",
        }
        assert event["timestamp"].endswith("Z")
        shown = (await api.get(f"{BASE}/{customer['id']}", headers=auth(PRODUCER))).json()
        assert shown["enabled"] is False and shown["disabledReason"] == "410 Gone"
        # The event's deliveries were written together, before any was attempted: nobody
        # else has one (not the disabled endpoint, not `*`, not another tenant's operator).
        assert [d.event_type for d in await records_of(api, operator["id"])] == [
            "endpoint.disabled"
        ]
        for ep in (customer, everything, other):
            kinds = {d.event_type for d in await records_of(api, ep["id"])}
            assert not kinds & set(OPERATIONAL), ep
        assert theirs.count() == 0
        # A 410 ends the delivery as gone, not dead: nothing is exhausted.
        assert "delivery.exhausted" not in await stream_types(api)
        (sent,) = await records_of(api, operator["id"])
        assert sent.kind == "endpoint" and sent.task_id is None


async def test_an_endpoint_failing_past_the_window_is_disabled_and_the_operator_told(
    failing_api: ApiClient,
) -> None:
    api = failing_api
    with receiver() as ops, receiver() as broken:
        broken.default = Reply(500)
        operator = await endpoint(api, ops.url, OPERATIONAL)
        customer = await endpoint(api, broken.url, ["task.completed"])
        await finished_task(api)

        (event,) = await received(ops, operator["secret"], "endpoint.disabled")
        data = event["data"]
        assert data["endpointId"] == customer["id"]
        assert (data["trigger"], data["reason"]) == ("automatic", "failing")
        assert data["failingSince"] < event["timestamp"]  # RFC 3339, same format: text order
        assert broken.count() >= 2  # the streak began with the first failure
        shown = (await api.get(f"{BASE}/{customer['id']}", headers=auth(PRODUCER))).json()
        assert shown["enabled"] is False and shown["disabledReason"] == "failing"


async def test_patch_enabled_tells_the_operator_each_change_once(api: ApiClient) -> None:
    with receiver() as ops, receiver() as quiet:
        operator = await endpoint(api, ops.url, ["endpoint.enabled", "endpoint.disabled"])
        customer = await endpoint(api, quiet.url, ["task.completed"])
        url = f"{BASE}/{customer['id']}"
        for enabled in (False, False, True, True):  # the repeats change nothing
            r = await api.patch(url, json={"enabled": enabled}, headers=auth(PRODUCER))
            assert r.status_code == 200 and r.json()["enabled"] is enabled
        (disabled,) = await received(ops, operator["secret"], "endpoint.disabled")
        (enabled_event,) = await received(ops, operator["secret"], "endpoint.enabled")
        assert disabled["data"] == {"endpointId": customer["id"], "trigger": "manual"}
        assert enabled_event["data"] == {"endpointId": customer["id"]}
        assert disabled["timestamp"] <= enabled_event["timestamp"]
        # one delivery each, in the pipeline like any other: recorded, listed, succeeded
        sent = await records_of(api, operator["id"])
        assert sorted(d.event_type for d in sent) == ["endpoint.disabled", "endpoint.enabled"]

        async def both_succeeded() -> bool:
            return all(d.status == "succeeded" for d in await records_of(api, operator["id"]))

        await eventually(both_succeeded)
        listed = (await api.get(f"{BASE}/{operator['id']}/deliveries",
                                headers=auth(PRODUCER))).json()["deliveries"]  # fmt: skip
        assert {d["eventType"] for d in listed} == {"endpoint.disabled", "endpoint.enabled"}
        # the hooks stream is acknowledged: nothing pending for its group
        hooks = api.gw.store.keys.hook_events()[0]

        async def acknowledged() -> bool:
            return bool((await store_of(api).client.xpending(hooks, ENDPOINTS))["pending"] == 0)

        await eventually(acknowledged)
        assert quiet.count() == 0


async def test_a_delivery_out_of_attempts_tells_the_operator_and_nothing_loops(
    api: ApiClient,
) -> None:
    """An endpoint delivery and a result callback run out of attempts: one
    ``delivery.exhausted`` each. A second operator endpoint that fails too gets its own
    deliveries of them, which die in turn without an event about an event; a test send that
    dies gets none either."""
    with receiver() as ops, receiver() as broken, receiver() as down, receiver() as hook:
        broken.default = down.default = hook.default = Reply(500)
        operator = await endpoint(api, ops.url, ["delivery.exhausted"])
        failing_operator = await endpoint(api, down.url, ["delivery.exhausted"])
        customer = await endpoint(api, broken.url, ["task.completed"])
        task_id = await finished_task(api, webhook=hook.url)
        test_send = await api.post(f"{BASE}/{customer['id']}/test", headers=auth(PRODUCER))
        assert test_send.json()["status"] == "retrying"

        found = await received(ops, operator["secret"], "delivery.exhausted", n=2)
        by_kind = {e["data"]["kind"]: e["data"] for e in found}
        (dead,) = [
            d
            for d in await records_of(api, customer["id"])
            if d.status == "dead" and d.event_type == "task.completed"
        ]
        assert by_kind["endpoint"] == {
            "deliveryId": dead.id,
            "kind": "endpoint",
            "eventType": "task.completed",
            "attempts": 3,
            "endpointId": customer["id"],
            "taskId": task_id,
            "lastStatusCode": 500,
            "lastError": "HTTP 500",
        }
        callback = by_kind["callback"]
        assert (callback["eventType"], callback["taskId"], callback["attempts"]) == (
            "task.completed", task_id, 3,
        )  # fmt: skip
        assert "endpointId" not in callback and hook.count() == 3
        record = (await api.get(f"/v1/codeq/deliveries/{dead.id}", headers=auth(PRODUCER))).json()
        assert record["status"] == "dead"

        async def all_dead() -> bool:
            theirs = await records_of(api, failing_operator["id"])
            ours = await records_of(api, customer["id"])
            return (
                len(theirs) == 2
                and all(d.status == "dead" for d in theirs)
                and all(d.status == "dead" for d in ours)
            )

        await eventually(all_dead, timeout=15)
        # Each death and its event are one script call: the two exhausted deliveries wrote
        # one entry each; the failing operator's deliveries and the test send wrote none.
        assert (await stream_types(api)).count("delivery.exhausted") == 2
        assert len(await records_of(api, operator["id"])) == 2
        assert len(events_of(ops, operator["secret"])) == 2


async def test_operational_types_are_accepted_and_unknown_ones_refused(api: ApiClient) -> None:
    ep = await endpoint(api, "http://127.0.0.1:9/ops", OPERATIONAL)
    assert ep["eventTypes"] == OPERATIONAL
    for types in (["endpoint.deleted"], ["delivery.failed"], ["endpoint.*"]):
        r = await api.patch(f"{BASE}/{ep['id']}", json={"eventTypes": types},
                            headers=auth(PRODUCER))  # fmt: skip
        assert "eventTypes" in error_of(r, 400, "invalid_request"), types
    shown = (await api.get(f"{BASE}/{ep['id']}", headers=auth(PRODUCER))).json()
    assert shown["eventTypes"] == OPERATIONAL


# -- a deliverer killed between the change and the send ---------------------------------------


class _Crashing(HookEventStore):
    """A's ``{hooks}`` side: A writes the event's deliveries, then dies before acknowledging
    the entry (the acknowledgement never returns; then no heartbeat and no goodbye)."""

    def __init__(self, store: RedisStore) -> None:
        super().__init__(store)
        self.written = asyncio.Event()
        self.dead = False

    async def acknowledge(
        self, group: str, entry_ids: Sequence[str], *,
        set_aside: Sequence[tuple[str, str]] = (), floor_ms: int,
    ) -> None:  # fmt: skip
        self.written.set()
        await asyncio.Event().wait()  # the process is gone: this never comes back

    async def heartbeat(self, partition: int, group: str, consumer: str, ttl_s: int) -> None:
        if not self.dead:
            await super().heartbeat(partition, group, consumer, ttl_s)

    async def release(self, partition: int, group: str, consumer: str) -> None:
        if not self.dead:
            await super().release(partition, group, consumer)


def fast_sender() -> WebhookSender:
    """A short attempt lease (timeout + slot wait + 5 s): the schedule retakes a delivery
    whose deliverer died soon after."""
    return WebhookSender(TargetPolicy(["127.0.0.0/8"]), timeout=1.0, queue_seconds=0.5)


async def test_a_deliverer_killed_between_the_change_and_the_send_delivers_it_once(
    request: pytest.FixtureRequest, backend: str
) -> None:
    store = make_store(request, backend)
    settings = Settings.from_mapping(
        {"keyPrefix": store.keys.prefix, "consumerTtlSeconds": 2, "webhookTimeoutSeconds": 1}
    )
    eps = store.endpoints
    a_sender, b_sender = fast_sender(), fast_sender()
    a = Deliverer(store, settings, sender=a_sender, consumer="a", block_ms=100,
                  scan_interval=0.05)  # fmt: skip
    crashing = _Crashing(store)
    a.hooks = crashing
    b = Deliverer(store, settings, sender=b_sender, consumer="b", block_ms=100,
                  scan_interval=0.05)  # fmt: skip
    a_running = b_running = False
    try:
        with receiver() as ops:
            secret = "whsec_" + "QUFB" * 8
            record = {"tenant": "acme", "url": ops.url, "eventTypes": ["endpoint.disabled"],
                      "enabled": True, "secrets": [{"secret": secret}]}  # fmt: skip
            await eps.create("ep_ops", "acme", msgspec.json.encode({"id": "ep_ops", **record}))
            await eps.create("ep_c", "acme", msgspec.json.encode(
                {**record, "id": "ep_c", "url": "http://127.0.0.1:9/x"}))  # fmt: skip
            # The change while no deliverer runs: the event waits in the stream.
            assert await eps.patch("ep_c", "acme", {"enabled": False})

            await a.start()
            a_running = True
            await asyncio.wait_for(crashing.written.wait(), timeout=10)
            (sent,) = [d for d in await all_records(store) if d.endpoint_id == "ep_ops"]
            crashing.dead = True  # A dies: the entry unacknowledged, the delivery leased
            await a.stop(grace=0)
            a_running = False
            assert ops.count() == 0

            await b.start()  # the restart: another consumer takes the entry over
            b_running = True
            hooks = store.keys.hook_events()[0]

            async def delivered_and_acknowledged() -> bool:
                pending = (await store.client.xpending(hooks, ENDPOINTS))["pending"]
                done = [d for d in await all_records(store) if d.endpoint_id == "ep_ops"]
                return pending == 0 and [d.status for d in done] == ["succeeded"]

            await eventually(delivered_and_acknowledged, timeout=20)
            # once: the entry was handled twice, its delivery written and sent once
            assert ops.count() == 1
            (got,) = ops.received
            assert got.headers["webhook-id"] == sent.id
            verify(got.headers, got.body, secret)
            assert json.loads(got.body)["data"] == {"endpointId": "ep_c", "trigger": "manual"}
    finally:
        if b_running:
            await b.stop()
        if a_running:
            crashing.dead = False
            await a.stop(grace=0)
        await a_sender.aclose()
        await b_sender.aclose()
        await store.close()


async def all_records(store: RedisStore) -> list[records.Delivery]:
    out = []
    for p in range(store.keys.partitions):
        out += [records.decode(r) for r in await store.client.hvals(store.keys.delivery(p).records)]
    return out


async def test_the_hooks_stream_is_trimmed_like_the_partition_streams(
    request: pytest.FixtureRequest, backend: str
) -> None:
    """Never past an entry a group has not acknowledged, nor past the retention floor."""
    store = make_store(request, backend)
    try:
        hooks = store.hook_events
        stream = store.keys.hook_events()[0]
        record = {"id": "ep_1", "tenant": "acme", "url": "http://127.0.0.1:9/x", "enabled": True}
        await store.endpoints.create("ep_1", "acme", msgspec.json.encode(record))
        for enabled in (False, True, False, True):
            assert await store.endpoints.patch("ep_1", "acme", {"enabled": enabled})
        await hooks.ensure_group(0, ENDPOINTS)
        first = await hooks.read_group(0, ENDPOINTS, "c", count=2, block_ms=10)
        later = int(time.time() * 1000) + 60_000  # a floor that keeps nothing back
        await hooks.acknowledge(ENDPOINTS, [first[0][0]], floor_ms=later)
        assert await store.client.xlen(stream) == 3  # the second is still pending
        rest = await hooks.read_group(0, ENDPOINTS, "c", count=10, block_ms=10)
        await hooks.acknowledge(ENDPOINTS, [first[1][0], *(i for i, _ in rest)], floor_ms=0)
        assert await store.client.xlen(stream) == 3  # within retention: kept
        await hooks.acknowledge(ENDPOINTS, [], floor_ms=later)
        assert await store.client.xlen(stream) == 1  # the last delivered one stays
        assert (await store.client.xpending(stream, ENDPOINTS))["pending"] == 0
    finally:
        await store.close()
