"""One list of event types (issue 15 item 12): ``codeq.domain.EventType`` is what the Lua
scripts emit (all but ``webhook.test``, which a test send delivers and no script writes; the
operational types included, issue 18 item 9), what endpoints may subscribe to and what the
docs list; a name outside it, or a field a route does not know (a replay filter above all), is
a 400 naming it, never ignored."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from codeq.domain import EVENT_TYPES, EventType
from codeq.store.deliveries import DeliveryStore
from deliverers import records
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import make_store
from tests.test_api import ADMIN, PRODUCER, WORKER, auth, error_of, make_settings

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "codeq" / "store" / "lua"
ENDPOINTS = "/v1/codeq/webhooks/endpoints"
SUBSCRIPTIONS = "/v1/codeq/workers/subscriptions"
REPLAY = "/v1/codeq/admin/deliveries/dlq/replay"


def emitted_by_scripts() -> set[str]:
    """Every event type a script writes: ``emit('...')`` calls and literal XADD ``type``s."""
    found: set[str] = set()
    for path in LUA.glob("*.lua"):
        code = re.sub(r"--[^\n]*", "", path.read_text())
        found |= set(re.findall(r"""\bemit\(\s*['"]([^'"]+)['"]""", code))
        found |= set(re.findall(r"""['"]XADD['"][^\n]*?['"]type['"],\s*['"]([^'"]+)['"]""", code))
    return found


#: The event types no script writes: sent on request, never by a change of a task.
NOT_FROM_SCRIPTS = {EventType.WEBHOOK_TEST.value}


def test_the_scripts_emit_exactly_the_domain_event_types() -> None:
    emitted = emitted_by_scripts()
    assert emitted, "no emit(...) found: the scan no longer matches the scripts"
    assert emitted == EVENT_TYPES - NOT_FROM_SCRIPTS
    assert NOT_FROM_SCRIPTS <= EVENT_TYPES
    assert {e.value for e in EventType} == EVENT_TYPES


LITERAL_TYPE = re.compile(r"""['"]XADD['"][^\n]*?['"]type['"],\s*['"]([a-z_.]+)['"]""")


def test_every_writer_of_events_is_seen_by_the_scan() -> None:
    """An XADD with a computed type would escape the scan above: there is one, in emit() (the
    task events); every other names its type on its own line: create.lua's task.created
    (written with its fields in place, not through emit; one entry that is the task's
    task.ready too when it is visible at once), and the operational events, each written by
    the script that makes its change, to the stream its consumers read."""
    xadds = [
        (path.name, line.strip())
        for path in sorted(LUA.glob("*.lua"))
        for line in re.sub(r"--[^\n]*", "", path.read_text()).splitlines()
        if "'XADD'" in line or '"XADD"' in line
    ]
    computed = [(name, line) for name, line in xadds if not LITERAL_TYPE.search(line)]
    assert [name for name, _ in computed] == ["lib.lua"], xadds
    assert "'type', kind," in computed[0][1]  # emit(kind, ...)
    literal = sorted(
        (name, LITERAL_TYPE.findall(line)[0], line.split(",")[1].strip())
        for name, line in xadds
        if LITERAL_TYPE.search(line)
    )
    assert literal == [
        ("create.lua", "task.created", "K.events"),  # delayed
        ("create.lua", "task.created", "K.events"),  # visible at once: its task.ready too
        ("dlv_outcome.lua", "delivery.exhausted", "D.events"),  # the partition stream
        ("ep_mark.lua", "endpoint.disabled", "KEYS[3]"),  # the {hooks} stream
        ("ep_patch.lua", "endpoint.disabled", "KEYS[3]"),
        ("ep_patch.lua", "endpoint.enabled", "KEYS[3]"),
    ]
    operational = {e.value for e in EventType if e.is_operational}
    assert {kind for name, kind, _ in literal if name != "create.lua"} == operational


def test_the_docs_list_exactly_the_domain_event_types() -> None:
    text = (ROOT / "docs" / "webhooks.md").read_text()
    block = text.split("<!-- event-types:", 1)[1].split("<!-- /event-types -->", 1)[0]
    listed = re.findall(r"^\| `([a-z_.]+)` \|", block, re.MULTILINE)
    assert sorted(listed) == sorted(EVENT_TYPES)
    mentioned = set(re.findall(r"`((?:task|webhook|endpoint|delivery)\.[a-z_]+)`", text))
    assert mentioned <= EVENT_TYPES, mentioned - EVENT_TYPES


# --- the API --------------------------------------------------------------------------------


@pytest.fixture(params=["embedded", "redis"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "we" + uuid.uuid4().hex[:10]
    app = create_app(
        make_settings(tmp_path, prefix), store=make_store(request, request.param, prefix),
        close_store=True,
    )  # fmt: skip
    async with serve_in_process(app) as c:
        yield c


URL = "https://hooks.example.com/x"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": URL, "eventTypes": ["task.heartbeat"]}, "eventTypes"),  # never emitted
        ({"url": URL, "eventTypes": ["task.requeued"]}, "eventTypes"),
        ({"url": URL, "eventTypes": ["endpoint.deleted"]}, "eventTypes"),
        ({"url": URL, "eventTypes": ["delivery.failed", "delivery.exhausted"]}, "eventTypes"),
        ({"url": URL, "eventTypes": ["endpoint.*"]}, "eventTypes"),
        ({"url": URL, "eventTypes": ["task.completed", "task.complete"]}, "eventTypes"),
        ({"url": URL, "eventTypes": ["TASK.COMPLETED"]}, "eventTypes"),
        ({"url": URL, "eventTypes": []}, "eventTypes"),
        ({"url": URL, "eventTypes": ["*"] * 101}, "eventTypes"),
        ({"url": URL, "eventTypes": ["*"], "commands": ["bad command"]}, "commands"),
        ({"url": URL, "eventTypes": ["*"], "commands": ["x" * 129]}, "commands"),
        ({"url": URL, "eventTypes": ["*"], "eventType": ["task.failed"]}, "eventType"),
        ({"url": URL, "eventTypes": ["*"], "secret": "whsec_mine"}, "secret"),
        ({"url": URL, "eventTypes": ["*"], "description": "d" * 1025}, "description"),
    ],
)
async def test_endpoint_create_refuses_unknown_types_and_fields(
    api: ApiClient, body: dict[str, object], field: str
) -> None:
    r = await api.post(ENDPOINTS, json=body, headers=auth(PRODUCER))
    assert field in error_of(r, 400, "invalid_request")
    assert (await api.get(ENDPOINTS, headers=auth(PRODUCER))).json() == {"endpoints": []}


async def test_endpoint_patch_refuses_unknown_types_and_fields(api: ApiClient) -> None:
    every = sorted(EVENT_TYPES)
    created = await api.post(ENDPOINTS, json={"url": URL, "eventTypes": every},
                             headers=auth(PRODUCER))  # fmt: skip
    assert created.status_code == 201, created.text
    ep = created.json()["id"]
    for body, field in (
        ({"eventTypes": ["task.purged"]}, "eventTypes"),
        ({"eventTypes": ["task.failed", "nope"], "description": "x"}, "eventTypes"),
        ({"commands": ["a/b"]}, "commands"),
        ({"enable": False}, "enable"),  # a typo is not a silent no-op
        ({"eventtypes": ["task.failed"]}, "eventtypes"),
    ):
        r = await api.patch(f"{ENDPOINTS}/{ep}", json=body, headers=auth(PRODUCER))
        assert field in error_of(r, 400, "invalid_request"), body
    got = (await api.get(f"{ENDPOINTS}/{ep}", headers=auth(PRODUCER))).json()
    assert got["eventTypes"] == every and got["enabled"] is True and "description" not in got
    ok = await api.patch(f"{ENDPOINTS}/{ep}", json={"eventTypes": ["task.dead_lettered"]},
                         headers=auth(PRODUCER))  # fmt: skip
    assert ok.status_code == 200 and ok.json()["eventTypes"] == ["task.dead_lettered"]


async def test_subscriptions_refuse_event_types_that_are_no_command(api: ApiClient) -> None:
    for types in (["bad name"], ["RENDER", "a\nb"], [""], ["x" * 129], ["RENDER"] * 101):
        r = await api.post(SUBSCRIPTIONS, json={"callbackUrl": URL, "eventTypes": types},
                           headers=auth(WORKER))  # fmt: skip
        assert error_of(r, 400, "invalid_request").startswith("eventTypes"), types
    assert (await api.get(SUBSCRIPTIONS, headers=auth(WORKER))).json() == {"subscriptions": []}


# --- replay filters -------------------------------------------------------------------------


async def bury(api: ApiClient, n: int, endpoint_id: str | None, dead_at: int) -> str:
    """A dead delivery of tenant acme, written as the deliverers leave one."""
    keys = api.gw.store.keys.delivery(0)
    delivery_id = records.delivery_id(0, f"test:{endpoint_id}", f"{n}-0", URL)
    d = records.Delivery(
        id=delivery_id, kind="endpoint" if endpoint_id else "callback", tenant="acme", url=URL,
        body="{}", event_type="task.completed", created_at=dead_at - 1000, schedule=[1.0],
        endpoint_id=endpoint_id, attempts=2, status="dead", dead_at=dead_at,
    )  # fmt: skip
    await api.gw.store.client.hset(keys.records, delivery_id, records.encode(d))
    await api.gw.store.client.zadd(keys.dead, {delivery_id: dead_at})
    return delivery_id


async def dead_ids(api: ApiClient) -> set[str]:
    raws = await DeliveryStore(api.gw.store).dead_page(0, limit=100)
    return {records.decode(r).id for r in raws}


@pytest.mark.parametrize(
    "body",
    [
        {"endpoint": "ep_a"},
        {"endpointID": "ep_a"},
        {"endpoint_id": "ep_a"},
        {"from": "2026-01-01T00:00:00Z"},
        {"tenant": "globex"},
        {"ids": [], "status": "dead"},
    ],
)
async def test_replay_with_an_unknown_filter_is_refused(
    api: ApiClient, body: dict[str, object]
) -> None:
    now = int(time.time() * 1000)
    buried = {await bury(api, 1, "ep_a", now), await bury(api, 2, "ep_b", now)}
    r = await api.post(REPLAY, json=body, headers=auth(ADMIN))
    (name,) = (k for k in body if k != "ids")
    assert name in error_of(r, 400, "invalid_request")
    assert await dead_ids(api) == buried  # nothing replayed


async def test_replay_filters_by_endpoint_and_time(api: ApiClient) -> None:
    now = int(time.time() * 1000)
    old_a = await bury(api, 1, "ep_a", now - 3_600_000)
    new_a = await bury(api, 2, "ep_a", now - 60_000)
    new_b = await bury(api, 3, "ep_b", now - 60_000)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime((now - 600_000) / 1000))

    r = await api.post(REPLAY, json={"endpointId": "ep_a", "since": since}, headers=auth(ADMIN))
    assert r.status_code == 200, r.text
    assert r.json() == {"replayed": 1, "ids": [new_a]}
    assert await dead_ids(api) == {old_a, new_b}

    r = await api.post(REPLAY, json={"endpointId": "ep_b", "until": since}, headers=auth(ADMIN))
    assert r.json() == {"replayed": 0, "ids": []}
    r = await api.post(REPLAY, json={"endpointId": "ep_a"}, headers=auth(ADMIN))
    assert r.json() == {"replayed": 1, "ids": [old_a]}
    assert await dead_ids(api) == {new_b}

    for body, field in (
        ({"ids": [new_b], "endpointId": "ep_b"}, "ids"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-01T00:00:00"}, "since"),  # no time zone
        ({"limit": 0}, "limit"),
        ({"limit": 10_001}, "limit"),
    ):
        r = await api.post(REPLAY, json=body, headers=auth(ADMIN))
        assert field in error_of(r, 400, "invalid_request"), body
    assert await dead_ids(api) == {new_b}
