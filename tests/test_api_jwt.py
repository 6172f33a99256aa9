"""JWT bearer tokens through the HTTP API: the real Litestar app (in-process ASGI) with the
``jwks`` provider on both sides, its keys fetched from a real JWKS server on 127.0.0.1.

Every refusal is asserted on the wire (status, ``{"error", "code"}`` body, the reason in the
message, no echo of the token) and shown to have changed nothing; every acceptance is carried
through create → claim → result.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.jwt_helpers import (
    ISSUER,
    PRODUCER_AUD,
    WORKER_AUD,
    JwksServer,
    Signer,
    ec_signer,
    ed_signer,
    handmade_token,
    rsa_signer,
)
from tests.test_api import make_settings

ALL_WORKER_SCOPES = (
    "codeq:claim codeq:heartbeat codeq:abandon codeq:nack codeq:result codeq:subscribe"
)
TASKS = "/v1/codeq/tasks"

# --------------------------------------------------------------------------------------------
# Keys, the app, tokens
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signers() -> dict[str, Signer]:
    return {"RS256": rsa_signer("rsa-1"), "ES256": ec_signer("ec-1"), "EdDSA": ed_signer("ed-1")}


@pytest.fixture
def jwks_server(signers: dict[str, Signer]) -> Iterator[JwksServer]:
    server = JwksServer()
    server.serve(*signers.values())
    yield server
    server.stop()


@pytest.fixture
async def client(tmp_path: Path, jwks_server: JwksServer) -> AsyncIterator[ApiClient]:
    prefix = "jwt" + uuid.uuid4().hex[:10]
    settings = make_settings(
        tmp_path,
        prefix,
        producerAuthProvider="jwks",
        producerAuthConfig={"jwksUrl": jwks_server.url, "issuer": ISSUER, "audience": PRODUCER_AUD},
        workerAuthProvider="jwks",
        # no audience: workers default to codeq-worker
        workerAuthConfig={"jwksUrl": jwks_server.url, "issuer": ISSUER},
    )
    app = create_app(settings, store=RedisStore.embedded(KeySchema(prefix)), close_store=True)
    async with serve_in_process(app) as c:
        yield c


def claims(**overrides: Any) -> dict[str, Any]:
    """Claims valid now, for neither side yet (no ``aud``); ``None`` removes a claim."""
    now = int(time.time())
    base: dict[str, Any] = {"sub": "someone", "tenantId": "acme", "iss": ISSUER}
    base.update(iat=now, exp=now + 300)
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def producer_claims(**overrides: Any) -> dict[str, Any]:
    return claims(**{"sub": "billing", "aud": PRODUCER_AUD, **overrides})


def worker_claims(**overrides: Any) -> dict[str, Any]:
    defaults = {"sub": "w1", "aud": WORKER_AUD, "scope": ALL_WORKER_SCOPES, "eventTypes": ["*"]}
    return claims(**{**defaults, **overrides})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unauthorized(r: httpx.Response, reason: str) -> None:
    """A 401 whose body is exactly ``{"error", "code": "unauthorized"}``, naming ``reason``."""
    assert r.status_code == 401, r.text
    body = r.json()
    assert set(body) == {"error", "code"}, body
    assert body["code"] == "unauthorized"
    assert isinstance(body["error"], str) and reason in body["error"], body


def forbidden(r: httpx.Response, reason: str) -> None:
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["code"] == "forbidden" and reason in body["error"], body


async def create(c: httpx.AsyncClient, token: str, command: str = "RENDER") -> dict[str, Any]:
    r = await c.post(TASKS, json={"command": command, "payload": {"n": 1}}, headers=bearer(token))
    assert r.status_code == 202, r.text
    task: dict[str, Any] = r.json()
    return task


async def claim(c: httpx.AsyncClient, token: str, commands: list[str]) -> httpx.Response:
    return await c.post(f"{TASKS}/claim", json={"commands": commands}, headers=bearer(token))


async def queue_depths(c: ApiClient, tenant: str = "acme") -> list[Any]:
    """What the store holds for ``tenant`` (read through the engine, not the API under test)."""
    return list(await c.gw.engine.list_queues(tenant))


# --------------------------------------------------------------------------------------------
# Refusals: 401 on producer, worker and read routes
# --------------------------------------------------------------------------------------------

#: ``producer_claims`` or ``worker_claims``: whose token to forge.
Side = Callable[..., dict[str, Any]]
#: Makes the (refused) request headers for a side from the served keys.
Forge = Callable[[dict[str, Signer], Side], dict[str, str]]


def _expired(keys: dict[str, Signer], side: Side) -> dict[str, str]:
    now = int(time.time())
    return bearer(keys["RS256"].sign(side(iat=now - 3600, exp=now - 120)))  # beyond 60 s skew


def _wrong_audience(keys: dict[str, Signer], side: Side) -> dict[str, str]:
    return bearer(keys["ES256"].sign(side(aud="some-other-service")))


def _wrong_issuer(keys: dict[str, Signer], side: Side) -> dict[str, str]:
    return bearer(keys["EdDSA"].sign(side(iss="https://evil.test/")))


def _impostor(keys: dict[str, Signer], side: Side) -> dict[str, str]:
    # another key under the kid of a served one: the signature cannot verify
    return bearer(rsa_signer(keys["RS256"].kid).sign(side()))


def _alg_none(keys: dict[str, Signer], side: Side) -> dict[str, str]:
    token = handmade_token({"alg": "none", "typ": "JWT", "kid": keys["RS256"].kid}, side(), b"")
    assert token.endswith(".")  # really unsigned
    return bearer(token)


def _no_header(keys: dict[str, Signer], side: Side) -> dict[str, str]:
    return {}


#: (forge, the reason the 401 must give)
REFUSALS = [
    pytest.param(_expired, "token expired", id="expired"),
    pytest.param(_wrong_audience, "wrong audience", id="wrong-audience"),
    pytest.param(_wrong_issuer, "wrong issuer", id="wrong-issuer"),
    pytest.param(_impostor, "bad signature", id="bad-signature"),
    pytest.param(_alg_none, "algorithm not allowed", id="alg-none"),
    pytest.param(_no_header, "missing Authorization header", id="missing-header"),
]


@pytest.mark.parametrize(("forge", "reason"), REFUSALS)
async def test_refused_producer_token_is_401_and_creates_nothing(
    client: ApiClient, signers: dict[str, Signer], forge: Forge, reason: str
) -> None:
    headers = forge(signers, producer_claims)
    r = await client.post(TASKS, json={"command": "RENDER", "payload": 1}, headers=headers)
    unauthorized(r, reason)
    if "Authorization" in headers:
        assert headers["Authorization"].split()[1] not in r.text  # the token is never echoed
    assert await queue_depths(client) == []
    # a sound token is accepted by the same app: the refusal was the defect's
    await create(client, signers["RS256"].sign(producer_claims()))
    assert len(await queue_depths(client)) == 1


@pytest.mark.parametrize(("forge", "reason"), REFUSALS)
async def test_refused_worker_token_is_401_and_claims_nothing(
    client: ApiClient, signers: dict[str, Signer], forge: Forge, reason: str
) -> None:
    task = await create(client, signers["ES256"].sign(producer_claims()))
    r = await client.post(
        f"{TASKS}/claim", json={"commands": ["RENDER"]}, headers=forge(signers, worker_claims)
    )
    unauthorized(r, reason)
    # still pending: a valid worker token gets exactly this task
    ok = await claim(client, signers["EdDSA"].sign(worker_claims()), ["RENDER"])
    assert ok.status_code == 200 and ok.json()["id"] == task["id"]


@pytest.mark.parametrize(("forge", "reason"), REFUSALS)
async def test_refused_token_on_a_read_route_is_401(
    client: ApiClient, signers: dict[str, Signer], forge: Forge, reason: str
) -> None:
    task = await create(client, signers["RS256"].sign(producer_claims()))
    # read routes try the producer side, then the worker side: a token refused by both is 401
    for side in (producer_claims, worker_claims):
        r = await client.get(f"{TASKS}/{task['id']}", headers=forge(signers, side))
        unauthorized(r, reason)
    reader = signers["ES256"].sign(claims(aud=WORKER_AUD))  # a worker token, no scope needed
    ok = await client.get(f"{TASKS}/{task['id']}", headers=bearer(reader))
    assert ok.status_code == 200 and ok.json()["id"] == task["id"]


async def test_a_token_of_one_side_is_refused_on_the_other(
    client: ApiClient, signers: dict[str, Signer]
) -> None:
    producer = signers["RS256"].sign(producer_claims())
    worker = signers["RS256"].sign(worker_claims())
    r = await client.post(TASKS, json={"command": "RENDER", "payload": 1}, headers=bearer(worker))
    unauthorized(r, "wrong audience")
    assert await queue_depths(client) == []
    await create(client, producer)
    unauthorized(await claim(client, producer, ["RENDER"]), "wrong audience")
    assert (await claim(client, worker, ["RENDER"])).status_code == 200


# --------------------------------------------------------------------------------------------
# Acceptance: each algorithm end to end
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_valid_token_of_each_algorithm_works_end_to_end(
    client: ApiClient, signers: dict[str, Signer], jwks_server: JwksServer, alg: str
) -> None:
    signer = signers[alg]
    producer = signer.sign(producer_claims(tenantId="acme"))
    worker = signer.sign(worker_claims(sub="gpu-worker-7", tenantId="acme"))

    task = await create(client, producer)
    assert task["tenantId"] == "acme" and task["status"] == "PENDING"

    r = await claim(client, worker, ["RENDER"])
    assert r.status_code == 200, r.text
    claimed = r.json()
    assert claimed["id"] == task["id"] and claimed["status"] == "IN_PROGRESS"
    assert claimed["workerId"] == "gpu-worker-7"  # the subject of the token

    r = await client.post(
        f"{TASKS}/{task['id']}/result",
        json={"status": "COMPLETED", "result": {"ok": alg}, "leaseId": claimed["leaseId"]},
        headers=bearer(worker),
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "COMPLETED"

    r = await client.get(f"{TASKS}/{task['id']}/result", headers=bearer(producer))
    assert r.status_code == 200, r.text
    assert r.json()["task"]["status"] == "COMPLETED"
    assert r.json()["result"]["result"] == {"ok": alg}
    # the keys came over HTTP from the JWKS server (once per side, then cached)
    assert jwks_server.requests == 2


# --------------------------------------------------------------------------------------------
# Worker permissions (403) and tenants (404)
# --------------------------------------------------------------------------------------------


async def test_worker_token_without_the_claim_scope_is_403(
    client: ApiClient, signers: dict[str, Signer]
) -> None:
    task = await create(client, signers["RS256"].sign(producer_claims()))
    without = signers["ES256"].sign(worker_claims(scope="codeq:heartbeat codeq:result"))
    forbidden(await claim(client, without, ["RENDER"]), "codeq:claim")
    no_scope_at_all = signers["ES256"].sign(worker_claims(scope=None))
    forbidden(await claim(client, no_scope_at_all, ["RENDER"]), "codeq:claim")
    # nothing was handed out: the task is still there for a worker with the scope
    ok = await claim(client, signers["ES256"].sign(worker_claims(scope="codeq:claim")), ["RENDER"])
    assert ok.status_code == 200 and ok.json()["id"] == task["id"]


async def test_claim_for_a_command_outside_the_event_types_is_403(
    client: ApiClient, signers: dict[str, Signer]
) -> None:
    producer = signers["RS256"].sign(producer_claims())
    deploy = await create(client, producer, command="DEPLOY")
    only_render = signers["EdDSA"].sign(worker_claims(eventTypes=["render"]))
    forbidden(await claim(client, only_render, ["DEPLOY"]), "DEPLOY")
    forbidden(await claim(client, only_render, ["RENDER", "DEPLOY"]), "DEPLOY")
    no_event_types = signers["EdDSA"].sign(worker_claims(eventTypes=None))
    forbidden(await claim(client, no_event_types, ["DEPLOY"]), "DEPLOY")
    # the allowed command is fine (nothing of it queued: 204), and DEPLOY is still there
    assert (await claim(client, only_render, ["RENDER"])).status_code == 204
    ok = await claim(
        client, signers["EdDSA"].sign(worker_claims(eventTypes=["deploy"])), ["DEPLOY"]
    )
    assert ok.status_code == 200 and ok.json()["id"] == deploy["id"]


async def test_tenant_comes_from_the_token_and_other_tenants_get_404(
    client: ApiClient, signers: dict[str, Signer]
) -> None:
    producer_a = signers["RS256"].sign(producer_claims(tenantId="tenant-a"))
    producer_b = signers["RS256"].sign(producer_claims(sub="billing-b", tenantId="tenant-b"))
    worker_a = signers["ES256"].sign(worker_claims(tenantId="tenant-a"))
    worker_b = signers["ES256"].sign(worker_claims(sub="w-b", tenantId="tenant-b"))

    # a header naming another tenant changes nothing: the tenant is the token's
    r = await client.post(
        TASKS,
        json={"command": "RENDER", "payload": 1},
        headers={**bearer(producer_a), "X-Tenant-Id": "tenant-b", "X-Role": "ADMIN"},
    )
    assert r.status_code == 202, r.text
    task = r.json()
    assert task["tenantId"] == "tenant-a"

    task_url = f"{TASKS}/{task['id']}"
    for token in (producer_b, worker_b):
        for url in (task_url, f"{task_url}/result"):
            r = await client.get(url, headers=bearer(token))
            assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
    assert (await claim(client, worker_b, ["RENDER"])).status_code == 204  # B's queue is empty
    for action, body in (
        ("heartbeat", {}),
        ("nack", {}),
        ("abandon", {}),
        ("result", {"status": "COMPLETED", "result": {}}),
    ):
        r = await client.post(f"{task_url}/{action}", json=body, headers=bearer(worker_b))
        assert r.status_code == 404 and r.json()["code"] == "not_found", (action, r.text)

    # tenant A sees it, and its worker gets it: it was there all along
    assert (await client.get(task_url, headers=bearer(producer_a))).status_code == 200
    r = await claim(client, worker_a, ["RENDER"])
    assert r.status_code == 200 and r.json()["id"] == task["id"]
    assert await queue_depths(client, "tenant-b") == []
