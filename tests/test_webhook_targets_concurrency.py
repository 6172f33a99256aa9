"""Concurrent changes to one webhook endpoint (issue 15 item 11): each rotation and each PATCH
is one script on the stored record, so none undoes another. Over HTTP, on Redis and KVRocks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from codeq.store.endpoints import EndpointStore
from codeq.webhooks import WebhookVerificationError, verify
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import SERVERS, eventually, make_store
from tests.receivers import Receiver, receiver
from tests.test_api import PRODUCER, auth, make_settings

BASE = "/v1/codeq/webhooks/endpoints"
GRACE_MS = 24 * 3600 * 1000
ROTATIONS = 20


@pytest.fixture(params=SERVERS)
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "wc" + uuid.uuid4().hex[:10]
    settings = make_settings(
        tmp_path, prefix, webhookAllowedCidrs=["127.0.0.0/8"], webhookRetrySchedule=[0.1, 0.1]
    )
    store = make_store(request, request.param, prefix, pool_size=64)
    app = create_app(settings, store=store, close_store=True, run_deliverers=True)
    async with serve_in_process(app) as c:
        yield c


async def stored(api: ApiClient, endpoint_id: str) -> dict[str, Any]:
    for raw in await EndpointStore(api.gw.store).all_of("acme"):
        record: dict[str, Any] = json.loads(raw)
        if record["id"] == endpoint_id:
            return record
    raise AssertionError(f"{endpoint_id} is not stored")


async def create_a_task(api: ApiClient) -> None:
    r = await api.post("/v1/codeq/tasks", json={"command": "RENDER", "payload": {}},
                       headers=auth(PRODUCER))  # fmt: skip
    assert r.status_code == 202, r.text


async def one_arrival(r: Receiver) -> None:
    async def arrived() -> bool:
        return r.count() >= 1

    await eventually(arrived, timeout=10)


async def test_concurrent_rotations_keep_every_secret_for_its_overlap(api: ApiClient) -> None:
    with receiver() as r:
        created = await api.post(BASE, json={"url": r.url, "eventTypes": ["task.created"]},
                                 headers=auth(PRODUCER))  # fmt: skip
        assert created.status_code == 201, created.text
        ep, first = created.json()["id"], created.json()["secret"]

        started_ms = int(time.time() * 1000)
        answers = await asyncio.gather(
            *(api.post(f"{BASE}/{ep}/rotate-secret", headers=auth(PRODUCER))
              for _ in range(ROTATIONS))
        )  # fmt: skip
        assert [a.status_code for a in answers] == [200] * ROTATIONS
        returned = [a.json()["secret"] for a in answers]
        assert len(set(returned)) == ROTATIONS

        # In the store: every secret ever returned, the current one among the rotated ones,
        # each superseded one signing for 24 h from (at least) the start of the rotations.
        secrets = {s["secret"]: s.get("expiresAt") for s in (await stored(api, ep))["secrets"]}
        assert set(secrets) == {first, *returned}
        current = [s for s, expires in secrets.items() if expires is None]
        assert len(current) == 1 and current[0] in returned
        for s, expires in secrets.items():
            if expires is not None:
                assert expires >= started_ms + GRACE_MS - 5_000, s
        for a in answers:
            expires_at = a.json()["previousSecretExpiresAt"]
            assert expires_at.endswith("Z")

        # On the wire: one event, and each of the 21 secrets verifies it alone.
        await create_a_task(api)
        await one_arrival(r)
        got = r.received[0]
        assert len(got.headers["webhook-signature"].split()) == ROTATIONS + 1
        for s in (first, *returned):
            verify(got.headers, got.body, s)
        with pytest.raises(WebhookVerificationError):
            verify(got.headers, got.body, "whsec_" + "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB")


async def test_concurrent_patches_of_different_fields_all_survive(api: ApiClient) -> None:
    created = await api.post(BASE, json={"url": "https://a.example/hook", "eventTypes": ["*"]},
                             headers=auth(PRODUCER))  # fmt: skip
    ep = created.json()["id"]
    for round_no in range(5):
        changes: list[dict[str, Any]] = [
            {"url": f"https://b{round_no}.example/hook"},
            {"eventTypes": ["task.completed", "task.failed"][: 1 + round_no % 2]},
            {"commands": [f"render{round_no}"]},
            {"description": f"round {round_no}"},
            {"enabled": round_no % 2 == 0},
        ]
        rotation = api.post(f"{BASE}/{ep}/rotate-secret", headers=auth(PRODUCER))
        answers = await asyncio.gather(
            rotation, *(api.patch(f"{BASE}/{ep}", json=c, headers=auth(PRODUCER)) for c in changes)
        )
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
        secret = answers[0].json()["secret"]

        got = (await api.get(f"{BASE}/{ep}", headers=auth(PRODUCER))).json()
        assert got["url"] == f"https://b{round_no}.example/hook"
        assert got["eventTypes"] == ["task.completed", "task.failed"][: 1 + round_no % 2]
        assert got["commands"] == [f"render{round_no}"]
        assert got["description"] == f"round {round_no}"
        assert got["enabled"] is (round_no % 2 == 0)
        record = await stored(api, ep)
        assert record["secrets"][0] == {"secret": secret}  # the rotation survived the patches
        assert record["tenant"] == "acme" and record["createdAt"] > 0
