"""Worker subscription and delivery routes over HTTP (spec 02), on Redis and embedded."""

from __future__ import annotations

from typing import Any

import pytest

from codeq.store.subscriptions import SubscriptionStore
from tests.asgi import ApiClient
from tests.test_api import (
    ADMIN,
    NO_SCOPE,
    ONLY_RENDER,
    OTHER_TENANT,
    PRODUCER,
    WORKER,
    WORKER_B,
    auth,
    error_of,
)
from tests.test_api import client as client

BASE = "/v1/codeq/workers/subscriptions"


async def subscribe(c: ApiClient, token: str = WORKER, **body: Any) -> dict[str, Any]:
    r = await c.post(BASE, json={"callbackUrl": "http://127.0.0.1:9/hook", **body},
                     headers=auth(token))  # fmt: skip
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def test_subscribe_renew_list_delete(client: ApiClient) -> None:
    sub = await subscribe(client, eventTypes=["RENDER"], ttlSeconds=60)
    assert sub["subscriptionId"].startswith("sub_") and sub["expiresAt"].endswith("Z")
    r = await client.post(f"{BASE}/{sub['subscriptionId']}/heartbeat", json={"ttlSeconds": 600},
                          headers=auth(WORKER))  # fmt: skip
    assert r.status_code == 200 and r.json()["expiresAt"] > sub["expiresAt"]
    listed = (await client.get(BASE, headers=auth(WORKER_B))).json()["subscriptions"]
    assert [(s["subscriptionId"], s["eventTypes"], s["deliveryMode"]) for s in listed] == [
        (sub["subscriptionId"], ["RENDER"], "fanout")
    ]
    r = await client.delete(f"{BASE}/{sub['subscriptionId']}", headers=auth(WORKER))
    assert r.status_code == 204
    assert (await client.get(BASE, headers=auth(WORKER))).json() == {"subscriptions": []}
    error_of(await client.delete(f"{BASE}/{sub['subscriptionId']}", headers=auth(WORKER)),
             404, "not_found")  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"callbackUrl": "ftp://x/y"}, "callbackUrl"),
        ({"callbackUrl": "http://a..b.example/y"}, "callbackUrl"),
        ({"callbackUrl": "http://x:99999/y"}, "callbackUrl"),
        ({"callbackUrl": "http://x/y", "ttlSeconds": 0}, "ttlSeconds"),
        ({"callbackUrl": "http://x/y", "ttlSeconds": 86_401}, "ttlSeconds"),
        ({"callbackUrl": "http://x/y", "deliveryMode": "group"}, "groupId"),
        ({"callbackUrl": "http://x/y", "deliveryMode": "nope"}, "deliveryMode"),
        ({"callbackUrl": "http://x/y", "minIntervalSeconds": -1}, "minIntervalSeconds"),
        ({}, "callbackUrl"),
    ],
)
async def test_bad_subscriptions_are_400(
    client: ApiClient, body: dict[str, Any], field: str
) -> None:
    r = await client.post(BASE, json=body, headers=auth(WORKER))
    assert field in error_of(r, 400, "invalid_request")
    assert (await client.get(BASE, headers=auth(WORKER))).json() == {"subscriptions": []}


async def test_subscription_permissions_and_tenants(client: ApiClient) -> None:
    error_of(await client.post(BASE, json={"callbackUrl": "http://x/y"},
                               headers=auth(NO_SCOPE)), 403, "forbidden")  # fmt: skip
    error_of(await client.post(BASE, json={"callbackUrl": "http://x/y", "eventTypes": ["OTHER"]},
                               headers=auth(ONLY_RENDER)), 403, "forbidden")  # fmt: skip
    error_of(await client.post(BASE, json={"callbackUrl": "http://x/y"},
                               headers=auth(PRODUCER)), 401, "unauthorized")  # fmt: skip
    error_of(await client.get(BASE, headers=auth(OTHER_TENANT)), 401, "unauthorized")
    # another tenant cannot renew, delete or list a subscription (the scripts check the tenant)
    sub_id = (await subscribe(client))["subscriptionId"]
    subs = SubscriptionStore(client.gw.store)
    assert await subs.put(sub_id, "globex", b"", 60_000) is None
    assert await subs.delete(sub_id, "globex") is False
    assert await subs.live("globex") == []
    assert len(await subs.live("acme")) == 1


async def test_delivery_routes_404_and_admin_dlq(client: ApiClient) -> None:
    error_of(await client.get("/v1/codeq/deliveries/msg_0_nothing", headers=auth(PRODUCER)),
             404, "not_found")  # fmt: skip
    error_of(await client.get("/v1/codeq/deliveries/garbage", headers=auth(PRODUCER)),
             404, "not_found")  # fmt: skip
    error_of(await client.post("/v1/codeq/deliveries/msg_0_x/retry", headers=auth(PRODUCER)),
             404, "not_found")  # fmt: skip
    error_of(await client.get("/v1/codeq/admin/deliveries/dlq", headers=auth(PRODUCER)),
             403, "forbidden")  # fmt: skip
    r = await client.get("/v1/codeq/admin/deliveries/dlq", headers=auth(ADMIN))
    assert r.status_code == 200 and r.json() == {"deliveries": []}
    r = await client.post("/v1/codeq/admin/deliveries/dlq/replay", json={},
                          headers=auth(ADMIN))  # fmt: skip
    assert r.json() == {"replayed": 0, "ids": []}
