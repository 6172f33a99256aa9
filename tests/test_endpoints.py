"""Event-subscription endpoints end to end: the API registers them, the deliverers send signed
events (per-endpoint secret, rotation overlap), 410 disables, tenants are separate."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from codeq.domain import NewTask
from codeq.engine import Engine
from codeq.metrics import Metrics
from codeq.settings import Settings
from codeq.store.protocol import GetReply
from codeq.store.redis_store import RedisStore
from deliverers.endpoints import EndpointDirectory
from deliverers.handlers import Handlers
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store
from tests.receivers import Receiver, Reply, receiver
from tests.test_api import OTHER_TENANT, PRODUCER, WORKER, auth, make_settings

BASE = "/v1/codeq/webhooks/endpoints"


@pytest.fixture(params=["redis", "embedded", "kvrocks"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "ep" + uuid.uuid4().hex[:10]
    store = make_store(request, request.param, prefix)
    settings = make_settings(
        tmp_path, prefix, webhookAllowedCidrs=["127.0.0.0/8"],
        webhookHmacSecret="global-secret", webhookRetrySchedule=[0.1, 0.1, 0.1],
    )  # fmt: skip
    app = create_app(settings, store=store, close_store=True, run_deliverers=True)
    async with serve_in_process(app) as c:
        yield c


async def run_task(api: ApiClient, command: str = "RENDER") -> str:
    r = await api.post("/v1/codeq/tasks", json={"command": command, "payload": {"n": 1}},
                       headers=auth(PRODUCER))  # fmt: skip
    task_id: str = r.json()["id"]
    r = await api.post("/v1/codeq/tasks/claim", json={"commands": [command]}, headers=auth(WORKER))
    lease = r.json()["leaseId"]
    r = await api.post(f"/v1/codeq/tasks/{task_id}/result",
                       json={"status": "COMPLETED", "result": {"ok": 1}, "leaseId": lease},
                       headers=auth(WORKER))  # fmt: skip
    assert r.status_code == 200
    return task_id


async def arrivals(r: Receiver, n: int) -> None:
    async def enough() -> bool:
        return r.count() >= n

    await eventually(enough, timeout=10)


async def test_register_receive_verify_rotate(api: ApiClient) -> None:
    with receiver() as r:
        body = {"url": r.url, "eventTypes": ["task.completed"], "commands": ["render"]}
        created = await api.post(BASE, json=body, headers=auth(PRODUCER))
        assert created.status_code == 201, created.text
        ep = created.json()
        secret = ep.pop("secret")
        assert secret.startswith("whsec_") and ep["enabled"] is True
        listed = (await api.get(BASE, headers=auth(PRODUCER))).json()["endpoints"]
        assert [e["id"] for e in listed] == [ep["id"]] and "secret" not in listed[0]
        assert (await api.get(BASE, headers=auth(OTHER_TENANT))).json() == {"endpoints": []}

        task_id = await run_task(api)
        await run_task(api, command="OTHER")  # filtered out by `commands`
        await arrivals(r, 1)
        got = r.received[0]
        event = json.loads(got.body)
        assert event["type"] == "task.completed" and event["data"]["id"] == task_id
        assert event["data"]["result"] == {"ok": 1}
        Webhook(secret).verify(got.body, got.headers)

        rotated = (
            await api.post(f"{BASE}/{ep['id']}/rotate-secret", headers=auth(PRODUCER))
        ).json()
        new = rotated["secret"]
        assert new != secret and rotated["previousSecretExpiresAt"].endswith("Z")
        await run_task(api)
        await arrivals(r, 2)
        second = r.received[1]
        Webhook(new).verify(second.body, second.headers)
        Webhook(secret).verify(second.body, second.headers)  # the old one, within 24 h
        assert len(second.headers["webhook-signature"].split()) == 2
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB").verify(
                second.body, second.headers
            )

        deliveries = (await api.get(f"{BASE}/{ep['id']}/deliveries", headers=auth(PRODUCER))).json()
        assert len(deliveries["deliveries"]) == 2
        assert {d["status"] for d in deliveries["deliveries"]} <= {"succeeded", "pending"}


async def test_410_disables_the_endpoint(api: ApiClient) -> None:
    with receiver() as r:
        r.default = Reply(410)
        ep = (await api.post(BASE, json={"url": r.url, "eventTypes": ["*"]},
                             headers=auth(PRODUCER))).json()  # fmt: skip

        async def disabled() -> bool:
            e = (await api.get(f"{BASE}/{ep['id']}", headers=auth(PRODUCER))).json()
            return e["enabled"] is False

        await run_task(api)
        await eventually(disabled, timeout=10)
        e = (await api.get(f"{BASE}/{ep['id']}", headers=auth(PRODUCER))).json()
        assert e["disabledReason"] == "410 Gone"
        r.default = Reply(200)
        r.received.clear()
        patched = await api.patch(f"{BASE}/{ep['id']}", json={"enabled": True},
                                  headers=auth(PRODUCER))  # fmt: skip
        assert patched.json()["enabled"] is True

        async def delivered_again() -> bool:
            # deliverers see endpoint changes within ENDPOINT_CACHE_SECONDS: events of tasks
            # finished before that may still find it disabled, so finish tasks until one lands
            await run_task(api)
            return r.count() >= 1

        await eventually(delivered_again, timeout=10, interval=0.2)


async def test_endpoint_validation_and_tenancy(api: ApiClient) -> None:
    for body, field in (
        ({"url": "ftp://x/y", "eventTypes": ["*"]}, "url"),
        ({"url": "http://a..b.example/y", "eventTypes": ["*"]}, "url"),
        ({"url": "http://x:0/y", "eventTypes": ["*"]}, "url"),
        ({"url": "http://x/y", "eventTypes": []}, "eventTypes"),
        ({"url": "http://x/y", "eventTypes": ["task.bogus"]}, "eventTypes"),
        ({"eventTypes": ["*"]}, "url"),
    ):
        r = await api.post(BASE, json=body, headers=auth(PRODUCER))
        assert r.status_code == 400 and field in r.json()["error"], r.text
    ep = (await api.post(BASE, json={"url": "http://127.0.0.1:9/x", "eventTypes": ["*"]},
                         headers=auth(PRODUCER))).json()  # fmt: skip
    for method, path in (("get", ""), ("delete", ""), ("post", "/rotate-secret"),
                         ("get", "/deliveries")):  # fmt: skip
        r = await api.request(
            method.upper(), f"{BASE}/{ep['id']}{path}", headers=auth(OTHER_TENANT)
        )
        assert r.status_code == 404, (method, path, r.text)
    assert (await api.delete(f"{BASE}/{ep['id']}", headers=auth(PRODUCER))).status_code == 204
    assert (await api.get(f"{BASE}/{ep['id']}", headers=auth(PRODUCER))).status_code == 404


async def test_a_create_ready_at_once_is_both_events_to_its_endpoints(api: ApiClient) -> None:
    """The create writes one stream entry for its task.created and task.ready (create.lua):
    an endpoint still gets each event it wants, as a webhook of its own (its own id); one that
    wants only task.ready gets only that."""
    with receiver() as both, receiver() as ready_only:
        ids = []
        for r, types in ((both, ["task.created", "task.ready"]), (ready_only, ["task.ready"])):
            made = await api.post(BASE, json={"url": r.url, "eventTypes": types},
                                  headers=auth(PRODUCER))  # fmt: skip
            assert made.status_code == 201, made.text
            ids.append(made.json()["id"])
        created = await api.post("/v1/codeq/tasks", json={"command": "BOTH", "payload": {}},
                                 headers=auth(PRODUCER))  # fmt: skip
        task_id = created.json()["id"]
        await arrivals(both, 2)
        await arrivals(ready_only, 1)
        got = [(json.loads(x.body), x.headers["webhook-id"]) for x in both.received]
        # (deliveries to one endpoint may overlap: their order is not promised)
        assert sorted((e["type"], e["data"]["id"]) for e, _ in got) == [
            ("task.created", task_id),
            ("task.ready", task_id),
        ]
        assert got[0][1] != got[1][1]  # two deliveries, each with its own webhook-id
        (only,) = [json.loads(x.body) for x in ready_only.received]
        assert only["type"] == "task.ready" and only["data"]["id"] == task_id
        # an entry's deliveries are written together: every one of them is there by now
        written = [
            (await api.get(f"{BASE}/{i}/deliveries", headers=auth(PRODUCER))).json()["deliveries"]
            for i in ids
        ]
        assert [len(w) for w in written] == [2, 1]


class _CountedReads(RedisStore):
    """The suite's store, counting the task reads ``get_many`` is asked for."""

    def __init__(self, base: RedisStore) -> None:
        super().__init__(base.client, base.keys, coalesce=False)
        self.asked: list[tuple[str, str, bool]] = []

    async def get_many(
        self, partition: int, wanted: Sequence[tuple[str, str, bool]]
    ) -> list[GetReply | None]:
        self.asked += wanted
        return await super().get_many(partition, wanted)


async def test_a_create_entry_reads_its_task_once_for_both_of_its_events(
    redis_store: RedisStore,
) -> None:
    """An endpoint that wants every event gets a create's task.created and task.ready from one
    stream entry, and the endpoints group reads the task for them once."""
    store = _CountedReads(redis_store)
    record = {"id": "ep_all", "tenant": "acme", "url": "http://127.0.0.1:9/x", "enabled": True,
              "eventTypes": ["*"]}  # fmt: skip
    await store.endpoints.create("ep_all", "acme", msgspec.json.encode(record))
    task = (await Engine(store).create("acme", NewTask(command="render", payload="{}"))).task
    p = store.keys.partition_of(task.id)
    entries = await store.events.read_stream(
        store.keys.partition(p).events, "0-0", block_ms=10, count=10
    )
    raw = [(eid, [x for kv in fields.items() for x in kv]) for eid, fields in entries]
    handlers = Handlers(
        store, store.subscriptions, EndpointDirectory(store.endpoints), Settings.from_mapping({}),
        Metrics(), partition_of=store.keys.partition_of,
    )  # fmt: skip
    handled = await handlers.endpoint_events(p, raw)
    assert sorted(d.event_type for d in handled.deliveries) == ["task.created", "task.ready"]
    assert len({d.id for d in handled.deliveries}) == 2
    assert store.asked == [("acme", task.id, False)]
