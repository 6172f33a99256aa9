"""Per-endpoint control (issue 18 item 6): custom headers (validated, never ours, their values
never in a delivery record, never a second ``Authorization``), a rate limit that holds
deliveries back to its pace across deliverer processes (measured at a real receiver, and no
token of it spent on a delivery the host's bucket puts off), channels (labels that filter the
listing), description and metadata; bad input is a 400 naming the field and changes nothing;
another tenant's endpoint is a 404."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

from codeq.metrics import Metrics
from codeq.rate_limits import RateGuard
from codeq.settings import Settings
from codeq.tracing import Tracing
from codeq.webhooks import headers_problem, reserved_header
from deliverers import records
from deliverers.dispatch import Dispatcher
from deliverers.endpoints import PACE_SCOPE, EndpointDirectory, pace_burst
from deliverers.outcomes import Outcomes
from deliverers.runner import Deliverer
from deliverers.sender import TargetPolicy, WebhookSender
from deliverers.stopping import Stopping
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store
from tests.receivers import Receiver, receiver
from tests.test_api import OTHER_TENANT, PRODUCER, WORKER, auth, make_settings

BASE = "/v1/codeq/webhooks/endpoints"


def _settings(tmp_path: Path, prefix: str) -> Any:
    return make_settings(
        tmp_path,
        prefix,
        webhookAllowedCidrs=["127.0.0.0/8"],
        webhookHmacSecret="global-secret",
        webhookRetrySchedule=[0.1, 0.1, 0.1],
    )


@pytest.fixture(params=["redis", "embedded", "kvrocks"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "ec" + uuid.uuid4().hex[:10]
    store = make_store(request, request.param, prefix)
    app = create_app(
        _settings(tmp_path, prefix), store=store, close_store=True, run_deliverers=True
    )
    async with serve_in_process(app) as c:
        yield c


async def create(api: ApiClient, url: str, **fields: Any) -> dict[str, Any]:
    r = await api.post(
        BASE, json={"url": url, "eventTypes": ["*"], **fields}, headers=auth(PRODUCER)
    )
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


async def finish_task(api: ApiClient, command: str = "RENDER") -> str:
    r = await api.post(
        "/v1/codeq/tasks", json={"command": command, "payload": {}}, headers=auth(PRODUCER)
    )
    task_id: str = r.json()["id"]
    lease = (
        await api.post("/v1/codeq/tasks/claim", json={"commands": [command]}, headers=auth(WORKER))
    ).json()["leaseId"]
    r = await api.post(
        f"/v1/codeq/tasks/{task_id}/result",
        json={"status": "COMPLETED", "result": {"ok": 1}, "leaseId": lease},
        headers=auth(WORKER),
    )
    assert r.status_code == 200, r.text
    return task_id


async def arrivals(r: Receiver, n: int, within: float = 10) -> None:
    async def enough() -> bool:
        return r.count() >= n

    await eventually(enough, timeout=within)


# -- custom headers -----------------------------------------------------------------------------


async def test_custom_headers_reach_the_receiver_beside_ours(api: ApiClient) -> None:
    with receiver() as r:
        custom = {"Authorization": "Bearer t0k", "X-Tenant-Route": "eu-1", "X-Empty": ""}
        ep = await create(api, r.url, eventTypes=["task.completed"], headers=custom)
        assert ep["headers"] == custom
        await finish_task(api)
        await arrivals(r, 1)
        got = r.received[0]
        assert got.headers["authorization"] == "Bearer t0k"
        assert got.headers["x-tenant-route"] == "eu-1" and got.headers["x-empty"] == ""
        assert got.headers["x-codeq-event"] == "task.completed"
        assert got.headers["content-type"] == "application/json"
        Webhook(ep["secret"]).verify(got.body, got.headers)

        # A patch replaces the whole map; an empty one removes it.
        patched = await api.patch(
            f"{BASE}/{ep['id']}", json={"headers": {"X-Only": "1"}}, headers=auth(PRODUCER)
        )
        assert patched.json()["headers"] == {"X-Only": "1"}
        cleared = await api.patch(
            f"{BASE}/{ep['id']}", json={"headers": {}}, headers=auth(PRODUCER)
        )
        assert "headers" not in cleared.json()


async def test_custom_header_values_never_show_in_delivery_records(api: ApiClient) -> None:
    """Deliveries are readable by every token of the tenant (workers too), an endpoint's
    headers by its producers only: what a delivery record keeps of a custom header is its
    name, never its value."""
    with receiver() as r:
        ep = await create(api, r.url, headers={"X-Auth-Token": "s3cret", "X-Region": "eu-1"})
        d = (await api.post(f"{BASE}/{ep['id']}/test", headers=auth(PRODUCER))).json()
        assert d["status"] == "succeeded", d
        got = r.received[0]
        assert got.headers["x-auth-token"] == "s3cret" and got.headers["x-region"] == "eu-1"

    for token in (PRODUCER, WORKER):
        one = await api.get(f"/v1/codeq/deliveries/{d['id']}", headers=auth(token))
        assert one.status_code == 200, one.text
        listing = await api.get(
            "/v1/codeq/deliveries", params={"endpointId": ep["id"]}, headers=auth(token)
        )
        assert [x["id"] for x in listing.json()["deliveries"]] == [d["id"]]
        for answer in (one, listing):
            assert "s3cret" not in answer.text and "eu-1" not in answer.text
        sent = one.json()["request"]["headers"]
        assert sent["X-Auth-Token"] == sent["X-Region"] == "[redacted]"  # named, not shown
        assert sent["webhook-id"] == d["id"]  # ours are kept
    own = await api.get(f"{BASE}/{ep['id']}/deliveries", headers=auth(PRODUCER))
    assert "s3cret" not in own.text
    # The producers read the values on the endpoint itself.
    shown = (await api.get(f"{BASE}/{ep['id']}", headers=auth(PRODUCER))).json()
    assert shown["headers"]["X-Auth-Token"] == "s3cret"


@dataclass
class RawRequest:
    head: list[tuple[str, str]]  # every header line, repeats kept, in order
    body: bytes


@dataclass
class RawReceiver:
    """A receiver that keeps each request's header lines as sent (the test receiver keeps
    one value per name: a repeated header would not show)."""

    port: int = 0
    got: list[RawRequest] = dataclasses.field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                lines = [
                    (name.strip(), value.strip())
                    for name, _, value in (x.partition(":") for x in head.split("\r\n")[1:])
                    if name
                ]
                size = next(int(v) for k, v in lines if k.lower() == "content-length")
                self.got.append(RawRequest(lines, await reader.readexactly(size)))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def raw_receiver() -> AsyncIterator[RawReceiver]:
    r = RawReceiver()
    server = await asyncio.start_server(r.handle, "127.0.0.1", 0)
    r.port = server.sockets[0].getsockname()[1]
    try:
        yield r
    finally:
        server.close()
        await server.wait_closed()


async def test_one_authorization_when_the_url_has_user_info(api: ApiClient) -> None:
    """The URL's user info is sent as ``Authorization: Basic``; a custom ``Authorization``
    set apart from it (the URL and the headers are patched separately) is left out, so a
    request never carries two. Given together in one body, the pair is a 400."""
    async with raw_receiver() as r:
        with_user = r.url.replace("http://", "http://hook-user:hook%20pw@")
        ep = await create(api, with_user)
        patched = await api.patch(
            f"{BASE}/{ep['id']}",
            json={"headers": {"Authorization": "Bearer custom", "X-A": "1"}},
            headers=auth(PRODUCER),
        )
        assert patched.status_code == 200, patched.text
        d = (await api.post(f"{BASE}/{ep['id']}/test", headers=auth(PRODUCER))).json()
        assert d["status"] == "succeeded", d
        (sent,) = r.got
        basic = "Basic " + base64.b64encode(b"hook-user:hook pw").decode()
        assert [v for k, v in sent.head if k.lower() == "authorization"] == [basic]
        assert ("X-A", "1") in sent.head

        # Without user info in the URL, the custom one is sent (and only it).
        await api.patch(f"{BASE}/{ep['id']}", json={"url": r.url}, headers=auth(PRODUCER))
        await api.post(f"{BASE}/{ep['id']}/test", headers=auth(PRODUCER))
        assert [v for k, v in r.got[1].head if k.lower() == "authorization"] == ["Bearer custom"]

    both = {"url": with_user, "eventTypes": ["*"], "headers": {"Authorization": "Bearer x"}}
    refused = await api.post(BASE, json=both, headers=auth(PRODUCER))
    assert refused.status_code == 400 and refused.json()["error"].startswith("headers"), (
        refused.text
    )
    refused = await api.patch(
        f"{BASE}/{ep['id']}",
        json={"url": with_user, "headers": {"AUTHORIZATION": "Bearer x"}},
        headers=auth(PRODUCER),
    )
    assert refused.status_code == 400 and refused.json()["error"].startswith("headers")


async def test_a_reserved_header_in_a_stored_record_is_never_sent(api: ApiClient) -> None:
    """The API refuses ``Content-Encoding``; a record written another way (an older version,
    by hand) still never sends it: the body is sent as it is."""
    async with raw_receiver() as r:
        ep = await create(api, r.url)
        changed = await api.gw.store.endpoints.patch(
            ep["id"], "acme", {"headers": {"Content-Encoding": "gzip", "X-Kept": "1"}}
        )
        assert changed is not None
        d = (await api.post(f"{BASE}/{ep['id']}/test", headers=auth(PRODUCER))).json()
        assert d["status"] == "succeeded", d
        (sent,) = r.got
        names = [k.lower() for k, _ in sent.head]
        assert "content-encoding" not in names and "x-kept" in names
        assert json.loads(sent.body)["type"] == "webhook.test"


@pytest.mark.parametrize(
    ("name", "reserved"),
    [
        ("webhook-id", True),
        ("Webhook-Signature", True),
        ("WEBHOOK-TIMESTAMP", True),
        ("X-CodeQ-Event", True),
        ("x-codeq-anything", True),
        ("Host", True),
        ("content-length", True),
        ("Content-Type", True),
        ("Transfer-Encoding", True),
        ("Connection", True),
        ("Content-Encoding", True),  # the body goes as it is: gzip would break every receiver
        ("Authorization", False),
        ("X-CodeQ", False),  # no dash: not the X-CodeQ-* family
        ("X-Webhook-Id", False),
    ],
)
def test_reserved_header_names(name: str, reserved: bool) -> None:
    assert reserved_header(name) is reserved
    assert (headers_problem({name: "v"}) is not None) is reserved


def test_header_limits() -> None:
    assert headers_problem({f"X-H{i}": "v" for i in range(20)}) is None
    assert headers_problem({f"X-H{i}": "v" for i in range(21)}) == "must be at most 20 headers"
    assert headers_problem({"X-A": "v" * 2048}) is None
    assert "at most 2048 characters" in (headers_problem({"X-A": "v" * 2049}) or "")
    big = {f"X-H{i}": "v" * 2000 for i in range(5)}
    assert headers_problem(big) == "must be at most 8192 bytes in all"
    assert headers_problem({"X-A": "a\tb c"}) is None
    for value in (
        "a\r\nX-Injected: 1",
        "a\nb",
        "a\rb",
        "a\x00b",
        "a\x7fb",
        " lead",
        "tail ",
        "caf\u00e9",
    ):
        assert "printable ASCII" in (headers_problem({"X-A": value}) or ""), value
    for name in ("Bad Name", "X:A", "", "X-\u00e9", "a\r\nb", "x" * 129):
        assert "not a header name" in (headers_problem({name: "v"}) or ""), name
    assert headers_problem({"X-A": "1", "x-a": "2"}) == "'x-a' is given twice"


# -- bad input: a 400 naming the field, nothing changes ----------------------------------------

SHORT = "whsec_" + base64.b64encode(b"s" * 23).decode()
LONG = "whsec_" + base64.b64encode(b"s" * 65).decode()

BAD_CONTROL: list[tuple[dict[str, Any], str]] = [
    ({"headers": {"Bad Name": "x"}}, "headers"),
    ({"headers": {"X-A": "a\r\nInjected: 1"}}, "headers"),
    ({"headers": {"X-A": "a\u0000"}}, "headers"),
    ({"headers": {"webhook-signature": "v1,forged"}}, "headers"),
    ({"headers": {"X-CodeQ-Signature": "00"}}, "headers"),
    ({"headers": {"Content-Length": "1"}}, "headers"),
    ({"headers": {"host": "evil.example"}}, "headers"),
    ({"headers": {"Transfer-Encoding": "chunked"}}, "headers"),
    ({"headers": {"Content-Encoding": "gzip"}}, "headers"),
    # the URL's user info is sent as Authorization: a second one is refused in the same body
    ({"url": "http://u:pw@127.0.0.1:9/y", "headers": {"authorization": "Bearer x"}}, "headers"),
    ({"headers": {"X-A": "1", "x-a": "2"}}, "headers"),
    ({"headers": {f"X-H{i}": "v" for i in range(21)}}, "headers"),
    ({"headers": ["X-A: 1"]}, "headers"),
    ({"headers": {"X-A": 1}}, "headers"),
    ({"rateLimit": -1}, "rateLimit"),
    ({"rateLimit": 10_001}, "rateLimit"),
    ({"rateLimit": "5"}, "rateLimit"),
    ({"rateLimit": 1.5}, "rateLimit"),
    ({"channels": ["has space"]}, "channels"),
    ({"channels": ["c"] * 11}, "channels"),
    ({"channels": "billing"}, "channels"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
    ({"metadata": {"": "v"}}, "metadata"),
    ({"metadata": {"k": "v" * 513}}, "metadata"),
    ({"metadata": {"k": "a\nb"}}, "metadata"),
    ({"metadata": {"k": 1}}, "metadata"),
    ({"description": "d" * 1025}, "description"),
]
BAD_CREATE_ONLY: list[tuple[dict[str, Any], str]] = [
    ({"secret": "plain-text"}, "secret"),
    ({"secret": "whsec_!!not base64!!"}, "secret"),
    ({"secret": SHORT}, "secret"),
    ({"secret": LONG}, "secret"),
    (
        {"secret": "whsec_" + base64.b64encode(b"k" * 32).decode(), "signatureScheme": "ed25519"},
        "secret",
    ),
    ({"signatureScheme": "rsa"}, "signatureScheme"),
]


async def test_bad_input_is_a_400_naming_the_field_and_changes_nothing(api: ApiClient) -> None:
    ep = await create(
        api,
        "http://127.0.0.1:9/x",
        description="before",
        metadata={"a": "b"},
        headers={"X-A": "1"},
        rateLimit=5,
        channels=["c1"],
    )
    before = (await api.get(BASE, headers=auth(PRODUCER))).json()
    for fields, field in BAD_CONTROL + BAD_CREATE_ONLY:
        body = {"url": "http://127.0.0.1:9/y", "eventTypes": ["*"], **fields}
        r = await api.post(BASE, json=body, headers=auth(PRODUCER))
        assert r.status_code == 400, (fields, r.text)
        assert r.json()["error"].startswith(field), (fields, r.json())
    for fields, field in BAD_CONTROL:
        r = await api.patch(f"{BASE}/{ep['id']}", json=fields, headers=auth(PRODUCER))
        assert r.status_code == 400, (fields, r.text)
        assert r.json()["error"].startswith(field), (fields, r.json())
    for fields in ({"secret": "whsec_x"}, {"signatureScheme": "ed25519"}):  # create only
        r = await api.patch(f"{BASE}/{ep['id']}", json=fields, headers=auth(PRODUCER))
        assert r.status_code == 400 and "unknown field" in r.json()["error"], r.text
    assert (await api.get(BASE, headers=auth(PRODUCER))).json() == before


async def test_another_tenants_endpoint_is_not_found(api: ApiClient) -> None:
    ep = await create(api, "http://127.0.0.1:9/x")
    for method, path, body in (
        ("GET", "", None),
        ("PATCH", "", {"rateLimit": 1}),
        ("DELETE", "", None),
        ("GET", "/secret", None),
        ("POST", "/rotate-secret", None),
        ("POST", "/test", None),
        ("GET", "/deliveries", None),
    ):
        r = await api.request(
            method, f"{BASE}/{ep['id']}{path}", json=body, headers=auth(OTHER_TENANT)
        )
        assert r.status_code == 404, (method, path, r.text)
    same = (await api.get(f"{BASE}/{ep['id']}", headers=auth(PRODUCER))).json()
    assert same == {k: v for k, v in ep.items() if k != "secret"}


# -- channels, description, metadata ------------------------------------------------------------


async def test_channels_label_endpoints_and_filter_the_listing(api: ApiClient) -> None:
    a = await create(api, "http://127.0.0.1:9/a", channels=["billing", "eu", "billing"])
    b = await create(api, "http://127.0.0.1:9/b", channels=["eu"])
    c = await create(api, "http://127.0.0.1:9/c")
    assert a["channels"] == ["billing", "eu"] and "channels" not in c

    async def ids(query: str) -> list[str]:
        r = await api.get(f"{BASE}{query}", headers=auth(PRODUCER))
        return [e["id"] for e in r.json()["endpoints"]]

    assert await ids("?channel=billing") == [a["id"]]
    assert await ids("?channel=eu") == sorted([a["id"], b["id"]])
    assert await ids("?channel=none") == []
    assert sorted(await ids("")) == sorted([a["id"], b["id"], c["id"]])
    other = await api.get(f"{BASE}?channel=eu", headers=auth(OTHER_TENANT))
    assert other.json() == {"endpoints": []}


async def test_description_and_metadata_are_kept_changed_and_removed(api: ApiClient) -> None:
    ep = await create(
        api,
        "http://127.0.0.1:9/x",
        description="billing events",
        metadata={"owner": "ops", "ticket": "OPS-1"},
    )
    assert ep["description"] == "billing events"
    assert ep["metadata"] == {"owner": "ops", "ticket": "OPS-1"}
    url = f"{BASE}/{ep['id']}"
    patched = (
        await api.patch(
            url, json={"metadata": {"owner": "dev"}, "rateLimit": 7}, headers=auth(PRODUCER)
        )
    ).json()
    assert patched["metadata"] == {"owner": "dev"} and patched["rateLimit"] == 7
    assert patched["description"] == "billing events"  # not named: kept
    cleared = (
        await api.patch(
            url, json={"metadata": {}, "rateLimit": 0, "channels": []}, headers=auth(PRODUCER)
        )
    ).json()
    assert not {"metadata", "rateLimit", "channels"} & set(cleared)
    assert (await api.get(url, headers=auth(PRODUCER))).json() == cleared


# -- the rate limit ----------------------------------------------------------------------------

RATE = 40  # deliveries per second
EVENTS = 240  # six seconds of them


@pytest.mark.parametrize("kind", ["redis", "kvrocks"])
async def test_the_rate_limit_holds_deliveries_to_its_pace_across_deliverers(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    """Two deliverer processes' worth (the app's and a second one on its own connections)
    share one endpoint's bucket: the receiver sees the limit, within 5 %, and every delivery
    arrives once, on its first attempt (held back, never failed)."""
    prefix = "rl" + uuid.uuid4().hex[:10]
    settings = _settings(tmp_path, prefix)
    app = create_app(
        settings, store=make_store(request, kind, prefix), close_store=True, run_deliverers=True
    )
    second_store = make_store(request, kind, prefix)
    second = Deliverer(second_store, settings, allow_loopback=True)
    with receiver() as r:
        async with serve_in_process(app) as api:
            await second.start()
            try:
                ep = await create(api, r.url, eventTypes=["task.created"], rateLimit=RATE)
                tasks = [{"command": "PACED", "payload": {"i": i}} for i in range(EVENTS)]
                created = await api.post(
                    "/v1/codeq/tasks/batch", json={"tasks": tasks}, headers=auth(PRODUCER)
                )
                assert created.status_code in (200, 201, 202), created.text
                await arrivals(r, EVENTS, within=EVENTS / RATE * 3)
                deliveries = (
                    await api.get(f"{BASE}/{ep['id']}/deliveries", headers=auth(PRODUCER))
                ).json()["deliveries"]
            finally:
                await second.stop(grace=5)
                await second_store.close()
    times = sorted(x.at for x in r.received)
    ids = [x.headers["webhook-id"] for x in r.received]
    assert len(ids) == len(set(ids)) == EVENTS  # each once
    assert {x.headers["x-codeq-delivery-attempt"] for x in r.received} == {"1"}
    # The bucket starts full (pace_burst deliveries at once); from then on, the pace.
    burst = pace_burst(RATE)
    rate = (EVENTS - burst) / (times[-1] - times[0])
    print(f"{kind}: {rate:.2f} deliveries/s at the receiver, limit {RATE}/s")
    assert abs(rate - RATE) <= 0.05 * RATE, f"{rate:.2f}/s against a limit of {RATE}/s"
    # No second of it carries more than the limit (after the first, which has the burst).
    for i, start in enumerate(times):
        if start - times[0] >= 1.0:
            within = sum(1 for t in times[i:] if t < start + 1.0)
            assert within <= RATE * 1.05, f"{within} deliveries in one second"
    # The deliveries the API shows (the newest 50) all succeeded at their first attempt.
    assert deliveries and {(d["status"], d["attempts"]) for d in deliveries} == {("succeeded", 1)}
    assert json.loads(r.received[0].body)["type"] == "task.created"


@pytest.mark.parametrize("kind", ["redis", "kvrocks"])
async def test_a_delivery_the_host_bucket_puts_off_takes_no_token_of_the_endpoint(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    """The host's bucket (``rateLimit.webhook``) is asked before the endpoint's pace: a
    delivery it puts off leaves the endpoint's bucket as it was (the buckets give no token
    back, and the endpoint's pace is the one its owner set)."""
    prefix = "ho" + uuid.uuid4().hex[:10]
    settings = Settings.from_mapping(
        {
            "keyPrefix": prefix,
            "webhookAllowedCidrs": ["127.0.0.0/8"],
            "webhookHmacSecret": "global-secret",
            "rateLimit": {"webhook": {"requestsPerMinute": 1, "burstSize": 1}},
        }
    )
    store = make_store(request, kind, prefix)
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
    )
    endpoint = {"id": "ep_paced", "tenant": "acme", "rateLimit": 1, "secrets": []}
    try:
        with receiver() as r:
            # The host's one token is spent: its bucket is empty for the next minute.
            spent = await store.rate_buckets.take(
                "webhook", "acme", "127.0.0.1", requests_per_minute=1, burst=1
            )
            assert spent.allowed
            d = records.Delivery(
                id=records.delivery_id(0, "endpoint:ep_paced", "1-0", r.url),
                kind="endpoint",
                tenant="acme",
                url=r.url,
                body='{"type":"task.completed"}',
                event_type="task.completed",
                created_at=int(time.time() * 1000),
                schedule=[0.5],
                endpoint_id="ep_paced",
                started=1,
            )
            await store.deliveries.enqueue(0, "endpoints", [], 10_000, [(d.id, records.encode(d))])
            await dispatcher.attempt(0, d, endpoint)
            assert r.count() == 0  # put off, nothing sent
            raw = await store.deliveries.get(0, d.id)
            assert raw is not None and records.decode(raw).attempts == 0  # and no attempt
            # The endpoint's bucket still holds its token (1 per second: asked at once, a
            # token taken by the attempt would not be back yet).
            left = await store.rate_buckets.take(
                PACE_SCOPE, "acme", "ep_paced", requests_per_minute=60, burst=pace_burst(1)
            )
            assert left.allowed, "the put-off delivery used the endpoint's token"
    finally:
        await sender.aclose()
        await store.close()
