"""Secrets (issue 18 items 7 and 8): a subscriber's own endpoint secret, reading the current
one, rotation with an overlap window (every valid secret signs; the legacy header only the
newest), the global secret's rotation (``webhookHmacPreviousSecrets``), subscriptions' own
secrets, and ed25519 endpoints (Standard Webhooks ``v1a``).

The reference ``standardwebhooks`` library (1.3.0) verifies ``v1`` (HMAC) signatures only: it
has no ``v1a`` support, so ed25519 signatures are checked with ``codeq.webhooks.verify``,
``codeq webhook verify --public-key`` and ``cryptography`` directly."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as TheirError

from codeq.metrics import Metrics
from codeq.rate_limits import RateGuard
from codeq.tracing import Tracing
from codeq.webhooks import (
    WebhookVerificationError,
    generate_secret,
    generate_signing_key,
    public_key_of,
    secret_problem,
    sign,
    verify,
)
from deliverers import records
from deliverers.dispatch import Dispatcher
from deliverers.endpoints import EndpointDirectory
from deliverers.outcomes import Outcomes
from deliverers.records import Delivery
from deliverers.sender import TargetPolicy, WebhookSender
from deliverers.stopping import Stopping
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store
from tests.receivers import Received, Receiver, receiver
from tests.test_api import OTHER_TENANT, PRODUCER, WORKER, auth, make_settings

BASE = "/v1/codeq/webhooks/endpoints"
SUBSCRIPTIONS = "/v1/codeq/workers/subscriptions"
MINE = "whsec_" + base64.b64encode(b"a subscriber's own secret!").decode()  # 26 bytes


@pytest.fixture(params=["redis", "embedded", "kvrocks"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "es" + uuid.uuid4().hex[:10]
    settings = make_settings(
        tmp_path,
        prefix,
        webhookAllowedCidrs=["127.0.0.0/8"],
        webhookHmacSecret="global-secret",
        webhookRetrySchedule=[0.1, 0.1, 0.1],
    )
    app = create_app(
        settings,
        store=make_store(request, request.param, prefix),
        close_store=True,
        run_deliverers=True,
    )
    async with serve_in_process(app) as c:
        yield c


async def create(api: ApiClient, url: str, **fields: Any) -> dict[str, Any]:
    r = await api.post(
        BASE, json={"url": url, "eventTypes": ["task.completed"], **fields}, headers=auth(PRODUCER)
    )
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def finish_task(api: ApiClient, webhook: str | None = None) -> str:
    body: dict[str, Any] = {"command": "RENDER", "payload": {}}
    if webhook is not None:
        body["webhook"] = webhook
    task_id: str = (await api.post("/v1/codeq/tasks", json=body, headers=auth(PRODUCER))).json()[
        "id"
    ]
    lease = (
        await api.post("/v1/codeq/tasks/claim", json={"commands": ["RENDER"]}, headers=auth(WORKER))
    ).json()["leaseId"]
    r = await api.post(
        f"/v1/codeq/tasks/{task_id}/result",
        json={"status": "COMPLETED", "result": {"ok": 1}, "leaseId": lease},
        headers=auth(WORKER),
    )
    assert r.status_code == 200, r.text
    return task_id


async def arrival(r: Receiver, n: int) -> Received:
    """The ``n``-th request the receiver gets (from 0), once it is there."""

    async def arrived() -> bool:
        return r.count() > n

    await eventually(arrived, timeout=10)
    return r.received[n]


def entries(got: Received, version: str) -> list[str]:
    return [
        e.split(",", 1)[1]
        for e in got.headers["webhook-signature"].split()
        if e.split(",", 1)[0] == version
    ]


def legacy_only(got: Received) -> dict[str, str]:
    return {k: v for k, v in got.headers.items() if not k.startswith("webhook-")}


# -- a subscriber's own secret, read back, rotated ------------------------------------------


def test_the_shape_of_a_secret_a_subscriber_brings() -> None:
    assert secret_problem(MINE) is None
    assert secret_problem(generate_secret()) is None
    assert secret_problem(MINE.rstrip("=")) is None  # padding is optional
    for n, ok in ((23, False), (24, True), (64, True), (65, False)):
        secret = "whsec_" + base64.b64encode(b"x" * n).decode()
        assert (secret_problem(secret) is None) is ok, n
    assert secret_problem("plain") == (
        "must start with whsec_ (whsec_ + base64 of 24 to 64 random bytes)"
    )
    assert secret_problem("whsec_***") == "must be whsec_ followed by base64"


async def test_a_chosen_secret_signs_is_readable_and_rotates_with_an_overlap(
    api: ApiClient,
) -> None:
    with receiver() as r:
        ep = await create(api, r.url, secret=MINE)
        assert ep["secret"] == MINE and ep["signatureScheme"] == "hmac-sha256"
        shown = (await api.get(f"{BASE}/{ep['id']}/secret", headers=auth(PRODUCER))).json()
        assert shown == {"signatureScheme": "hmac-sha256", "secret": MINE}
        other = await api.get(f"{BASE}/{ep['id']}/secret", headers=auth(OTHER_TENANT))
        assert other.status_code == 404

        await finish_task(api)
        first = await arrival(r, 0)
        Webhook(MINE).verify(first.body, first.headers)
        assert len(entries(first, "v1")) == 1

        new = generate_secret()
        rotated = await api.post(
            f"{BASE}/{ep['id']}/rotate-secret", json={"secret": new}, headers=auth(PRODUCER)
        )
        assert rotated.json()["secret"] == new
        expires = datetime.fromisoformat(rotated.json()["previousSecretExpiresAt"])
        assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(hours=24)
        shown = (await api.get(f"{BASE}/{ep['id']}/secret", headers=auth(PRODUCER))).json()
        assert shown["secret"] == new

        # During the overlap both sign (one v1 entry each); the legacy header only the newest.
        await finish_task(api)
        second = await arrival(r, 1)
        assert len(entries(second, "v1")) == 2
        Webhook(new).verify(second.body, second.headers)
        Webhook(MINE).verify(second.body, second.headers)
        verify(legacy_only(second), second.body, new)
        with pytest.raises(WebhookVerificationError):
            verify(legacy_only(second), second.body, MINE)
        with pytest.raises(TheirError):
            Webhook(generate_secret()).verify(second.body, second.headers)

        bad = await api.post(
            f"{BASE}/{ep['id']}/rotate-secret", json={"secret": "short"}, headers=auth(PRODUCER)
        )
        assert bad.status_code == 400 and bad.json()["error"].startswith("secret")
        still = (await api.get(f"{BASE}/{ep['id']}/secret", headers=auth(PRODUCER))).json()
        assert still["secret"] == new


# -- ed25519 ----------------------------------------------------------------------------------


def ed25519_valid(public: str, got: Received) -> bool:
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public.removeprefix("whpk_")))
    content = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode()
    for signature in entries(got, "v1a"):
        try:
            key.verify(base64.b64decode(signature), content + got.body)
            return True
        except InvalidSignature:  # another key's entry: try the next
            continue
    return False


def cli_verify(got: Received, public: str) -> subprocess.CompletedProcess[str]:
    capture = json.dumps({"headers": got.headers, "body": got.body.decode()})
    return subprocess.run(
        [sys.executable, "-m", "codeq.cli", "--json", "webhook", "verify", "--public-key", public],
        input=capture,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_an_ed25519_endpoint_signs_v1a_only_with_a_readable_public_key(
    api: ApiClient,
) -> None:
    with receiver() as r:
        ep = await create(api, r.url, signatureScheme="ed25519")
        assert ep["signatureScheme"] == "ed25519" and "secret" not in ep
        public = ep["publicKey"]
        assert public.startswith("whpk_") and len(base64.b64decode(public[5:])) == 32
        shown = (await api.get(f"{BASE}/{ep['id']}/secret", headers=auth(PRODUCER))).json()
        assert shown == {"signatureScheme": "ed25519", "publicKey": public}
        listed = (await api.get(BASE, headers=auth(PRODUCER))).json()["endpoints"]
        assert listed[0]["publicKey"] == public and "secret" not in listed[0]

        await finish_task(api)
        got = await arrival(r, 0)
        assert entries(got, "v1") == [] and len(entries(got, "v1a")) == 1
        assert "x-codeq-signature" not in got.headers  # HMAC only: none here
        verify(got.headers, got.body, [], public_key=public)
        assert ed25519_valid(public, got)
        with pytest.raises(WebhookVerificationError):
            verify(got.headers, got.body, [], public_key=generate_signing_key()[1])
        ok = cli_verify(got, public)
        assert ok.returncode == 0 and json.loads(ok.stdout)["valid"] is True, ok.stderr
        wrong = cli_verify(got, generate_signing_key()[1])
        assert wrong.returncode == 1 and json.loads(wrong.stdout)["valid"] is False

        # Rotation: a new key pair; the old key keeps signing beside it for the overlap.
        rotated = (
            await api.post(f"{BASE}/{ep['id']}/rotate-secret", headers=auth(PRODUCER))
        ).json()
        new_public = rotated["publicKey"]
        assert new_public != public and "secret" not in rotated
        assert (await api.get(f"{BASE}/{ep['id']}", headers=auth(PRODUCER))).json()[
            "publicKey"
        ] == new_public
        await finish_task(api)
        second = await arrival(r, 1)
        assert len(entries(second, "v1a")) == 2
        assert ed25519_valid(new_public, second) and ed25519_valid(public, second)
        verify(second.headers, second.body, [], public_key=[public])

        refused = await api.post(
            f"{BASE}/{ep['id']}/rotate-secret", json={"secret": MINE}, headers=auth(PRODUCER)
        )
        assert refused.status_code == 400 and refused.json()["error"].startswith("secret")


def test_sign_with_ed25519_alone_and_with_several_keys() -> None:
    body, msg_id, ts = b'{"a":1}', "msg_x", int(time.time())
    (k1, p1), (k2, p2) = generate_signing_key(), generate_signing_key()
    assert public_key_of(k1) == p1
    headers = sign(body, secrets=[], msg_id=msg_id, timestamp=ts, ed25519_key=[k1, k2])
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert [e.split(",")[0] for e in headers["webhook-signature"].split()] == ["v1a", "v1a"]
    verify(headers, body, [], public_key=p1, now=ts)
    verify(headers, body, [], public_key=p2, now=ts)
    with pytest.raises(ValueError, match="at least one secret"):
        sign(body, secrets=[], msg_id=msg_id, ed25519_key=[])
    with pytest.raises(ValueError, match="key"):
        public_key_of(p1)


# -- the global secret's rotation -------------------------------------------------------------


async def test_the_global_secret_rotates_with_an_overlap(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    new, old, older = generate_secret(), generate_secret(), generate_secret()
    now = datetime.now(UTC)
    prefix = "gs" + uuid.uuid4().hex[:10]
    settings = make_settings(
        tmp_path,
        prefix,
        webhookAllowedCidrs=["127.0.0.0/8"],
        webhookHmacSecret=new,
        webhookHmacPreviousSecrets=[
            {"secret": old, "expiresAt": (now + timedelta(hours=1)).isoformat()},
            {"secret": older, "expiresAt": (now - timedelta(seconds=1)).isoformat()},
        ],
    )
    app = create_app(
        settings, store=make_store(request, "redis", prefix), close_store=True, run_deliverers=True
    )
    with receiver() as r:
        async with serve_in_process(app) as api:
            await finish_task(api, webhook=r.url)
            got = await arrival(r, 0)
    assert len(entries(got, "v1")) == 2  # the current and the previous one in force
    Webhook(new).verify(got.body, got.headers)
    Webhook(old).verify(got.body, got.headers)
    with pytest.raises(TheirError):
        Webhook(older).verify(got.body, got.headers)  # expired: no longer signs
    verify(legacy_only(got), got.body, new)  # X-CodeQ-Signature: the newest only
    with pytest.raises(WebhookVerificationError):
        verify(legacy_only(got), got.body, old)


# -- subscriptions' own secrets ---------------------------------------------------------------


class _Notification(Delivery, kw_only=True):
    """A notification delivery naming its subscription (what deliverers/handlers.py writes
    once records.Delivery has the field)."""

    subscription_id: str | None = None


async def test_a_subscription_has_its_own_secret_that_signs_its_notifications(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    prefix = "ss" + uuid.uuid4().hex[:10]
    settings = make_settings(
        tmp_path, prefix, webhookAllowedCidrs=["127.0.0.0/8"], webhookHmacSecret="global-secret"
    )
    store = make_store(request, "redis", prefix)
    app = create_app(settings, store=store, close_store=True)
    with receiver() as r:
        async with serve_in_process(app) as api:
            made = await api.post(
                SUBSCRIPTIONS,
                json={"callbackUrl": r.url, "eventTypes": ["RENDER"]},
                headers=auth(WORKER),
            )
            assert made.status_code == 200 and made.json()["secret"].startswith("whsec_")
            chosen = await api.post(
                SUBSCRIPTIONS,
                json={"callbackUrl": r.url, "eventTypes": ["RENDER"], "secret": MINE},
                headers=auth(WORKER),
            )
            sub = chosen.json()
            assert sub["secret"] == MINE
            renewed = await api.post(
                f"{SUBSCRIPTIONS}/{sub['subscriptionId']}/heartbeat", headers=auth(WORKER)
            )
            assert "secret" not in renewed.json()
            listed = (await api.get(SUBSCRIPTIONS, headers=auth(WORKER))).json()
            assert all("secret" not in s for s in listed["subscriptions"])
            for bad in ("plain", "whsec_" + base64.b64encode(b"x" * 8).decode()):
                refused = await api.post(
                    SUBSCRIPTIONS, json={"callbackUrl": r.url, "secret": bad}, headers=auth(WORKER)
                )
                assert refused.status_code == 400, refused.text
                assert refused.json()["error"].startswith("secret")
            assert (
                len((await api.get(SUBSCRIPTIONS, headers=auth(WORKER))).json()["subscriptions"])
                == 2
            )

            # The dispatcher signs a notification with its subscription's secret, and one
            # that names none with the global secret.
            metrics = Metrics()
            sender = WebhookSender(TargetPolicy(["127.0.0.0/8"]))
            dispatcher = Dispatcher(
                store.deliveries,
                store.endpoints,
                EndpointDirectory(store.endpoints),
                sender,
                Outcomes(store.deliveries, 20, metrics),
                settings=settings,
                metrics=metrics,
                rate=RateGuard(settings.rate_limit, store.rate_buckets, metrics),
                tracing=Tracing(settings),
                secret="global-secret",
                scan_interval=0.5,
                stopping=Stopping(),
                subscriptions=store.subscriptions,
            )
            try:
                for sub_id in (sub["subscriptionId"], None):
                    d = _Notification(
                        id=records.delivery_id(0, f"notify:{sub_id}", "1-0", r.url),
                        kind="notification",
                        tenant="acme",
                        url=r.url,
                        body='{"n":1}',
                        event_type="worker.notification",
                        created_at=int(time.time() * 1000),
                        schedule=[0.5],
                        command="RENDER",
                        subscription_id=sub_id,
                        started=1,
                    )
                    await store.deliveries.enqueue(
                        0, "notifier", [], 10_000, [(d.id, records.encode(d))]
                    )
                    await dispatcher.attempt(0, d, None)
            finally:
                await sender.aclose()
    own, global_ = r.received
    Webhook(MINE).verify(own.body, own.headers)
    with pytest.raises(WebhookVerificationError):
        verify(own.headers, own.body, "global-secret")
    verify(global_.headers, global_.body, "global-secret")
    with pytest.raises(TheirError):
        Webhook(MINE).verify(global_.body, global_.headers)


# -- a secret that cannot sign ------------------------------------------------------------------


async def test_a_secret_that_cannot_sign_is_a_failed_attempt_never_a_lost_one(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """An endpoint record written another way (an older version, by hand) with a secret that
    does not decode, or a global secret given past the settings' check: each attempt is a
    failed one, recorded, and the delivery ends in the DLQ on its schedule, rather than an
    exception that leaves it leased again forever. Nothing is sent unsigned."""
    prefix = "ns" + uuid.uuid4().hex[:10]
    settings = make_settings(tmp_path, prefix, webhookAllowedCidrs=["127.0.0.0/8"])
    store = make_store(request, "redis", prefix)
    metrics = Metrics()
    sender = WebhookSender(TargetPolicy(["127.0.0.0/8"]))
    dispatcher = Dispatcher(
        store.deliveries,
        store.endpoints,
        EndpointDirectory(store.endpoints),
        sender,
        Outcomes(store.deliveries, 20, metrics),
        settings=settings,
        metrics=metrics,
        rate=RateGuard(settings.rate_limit, store.rate_buckets, metrics),
        tracing=Tracing(settings),
        secret="whsec_!!not base64!!",  # past the settings' check (they refuse it at load)
        scan_interval=0.5,
        stopping=Stopping(),
    )
    broken = {"id": "ep_broken", "tenant": "acme", "secrets": [{"secret": "whsec_%%%"}]}
    try:
        with receiver() as r:
            for kind, endpoint in (("endpoint", broken), ("callback", None)):
                d = Delivery(
                    id=records.delivery_id(0, kind, "1-0", r.url),
                    kind=kind,
                    tenant="acme",
                    url=r.url,
                    body='{"n":1}',
                    event_type="task.completed",
                    created_at=int(time.time() * 1000),
                    schedule=[0.5],
                    endpoint_id="ep_broken" if endpoint is not None else None,
                    started=1,
                )
                group = "endpoints" if endpoint is not None else "callbacks"
                await store.deliveries.enqueue(0, group, [], 10_000, [(d.id, records.encode(d))])
                await dispatcher.attempt(0, d, endpoint, paced=False)
                first = await store.deliveries.get(0, d.id)
                assert first is not None
                after_one = records.decode(first)
                assert (after_one.status, after_one.attempts) == ("retrying", 1), kind
                (entry,) = after_one.log
                assert entry.error is not None
                assert entry.error.startswith("request not built: ValueError"), entry.error
                assert "%%%" not in entry.error and "not base64!!" not in entry.error

                after_one.started = 2  # the schedule's lease of the next (dlv_claim)
                await dispatcher.attempt(0, after_one, endpoint, paced=False)
                last = await store.deliveries.get(0, d.id)
                assert last is not None
                assert (records.decode(last).status, records.decode(last).attempts) == (
                    "dead",
                    2,
                ), kind
            assert r.count() == 0
    finally:
        await sender.aclose()
        await store.close()
