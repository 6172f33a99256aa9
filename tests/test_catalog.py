"""The event-type catalog (issue 18 item 1): every ``EventType`` with a description, the JSON
schema of the body an endpoint receives and an example; served by
``GET /v1/codeq/webhooks/event-types``, rendered into docs/webhooks.md, and true of what the
deliverers really send."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest
import uvicorn
from litestar import Litestar

from codeq import bodies, catalog, reference
from codeq.domain import EVENT_TYPES, EventType
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from gateway.app import create_app
from gateway.routes.catalog import EventTypeController
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import eventually, make_store
from tests.receivers import receiver
from tests.servers import free_port, wait_for
from tests.test_api import ADMIN, PRODUCER, WORKER, auth, make_settings

ROOT = Path(__file__).resolve().parent.parent
WEBHOOKS_MD = ROOT / "docs" / "webhooks.md"
ROUTE = "/v1/codeq/webhooks/event-types"
Doc = dict[str, Any]


def validator(schema: Doc, *, closed: bool = False) -> jsonschema.Draft202012Validator:
    """A validator of ``schema``; ``closed``: objects may hold only the properties it names
    (the schema leaves them open, so a misspelt field would pass)."""
    if closed:
        schema = copy.deepcopy(schema)
        for definition in schema["$defs"].values():
            if "properties" in definition:
                definition["additionalProperties"] = False
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


# --- the data ---------------------------------------------------------------------------------


def test_every_event_type_is_in_the_catalog_once_in_order_with_a_description() -> None:
    entries = catalog.catalog().event_types
    assert [e.type for e in entries] == [e.value for e in EventType]
    assert set(catalog.DESCRIPTIONS) == set(EventType) == set(catalog.BODIES)
    for e in entries:
        assert e.description.strip() and "\n" not in e.description and "|" not in e.description
    assert catalog.entry("task.completed").type == "task.completed"
    with pytest.raises(KeyError):
        catalog.entry("task.heartbeat")


@pytest.mark.parametrize("event", list(EventType))
def test_each_example_validates_against_its_schema(event: EventType) -> None:
    info = catalog.entry(event.value)
    assert info.schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    validator(info.schema, closed=True).validate(info.example)
    assert info.example["type"] == event.value
    # The schema can fail: another event's name, a missing field, a field of the wrong type.
    check = validator(info.schema)
    for broken in (
        {**info.example, "type": "task.other"},
        {k: v for k, v in info.example.items() if k != "data"},
        {**info.example, "data": {**info.example["data"], next(iter(info.example["data"])): 7}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            check.validate(broken)


@pytest.mark.parametrize("event", list(EventType))
def test_the_schema_is_msgspecs_schema_of_the_body_that_is_sent(event: EventType) -> None:
    """Derived, not written: only ``type`` is narrowed to the event's name."""
    info = catalog.entry(event.value)
    body = catalog.BODIES[event]
    derived = msgspec.json.schema(body)
    name = derived["$ref"].rsplit("/", 1)[-1]
    assert name == body.__name__
    assert info.schema["$defs"][name]["properties"]["type"] == {"const": event.value}
    narrowed = copy.deepcopy(info.schema)
    narrowed["$defs"][name]["properties"]["type"] = {"type": "string"}
    assert {k: v for k, v in narrowed.items() if k not in ("$schema", "title")} == derived


def test_task_events_are_the_deliverers_endpoint_body_and_withhold_what_they_withhold() -> None:
    for event in EventType:
        if not event.value.startswith("task."):
            continue
        assert catalog.BODIES[event] is bodies.EndpointBody
        data = catalog.entry(event.value).example["data"]
        assert not {"payload", "webhook", "leaseId"} & set(data), event
    completed = catalog.entry("task.completed").example["data"]
    assert completed["status"] == "COMPLETED" and completed["result"] == {"pages": 3}
    assert "result" not in catalog.entry("task.created").example["data"]


def test_the_test_event_body() -> None:
    body = bodies.webhook_test_body("ep_1", 1795881731532)
    sent = json.loads(bodies.encode(body))
    assert sent == {
        "type": "webhook.test",
        "timestamp": "2026-11-28T16:02:11.532Z",
        "data": {"endpointId": "ep_1", "message": bodies.TEST_MESSAGE},
    }
    validator(catalog.entry("webhook.test").schema, closed=True).validate(sent)


@pytest.mark.parametrize(
    ("fields", "data"),
    [
        (
            {"type": "endpoint.disabled", "id": "ep_1", "tenant": "acme", "at": "1795881731532",
             "endpointId": "ep_1", "trigger": "automatic", "reason": "failing",
             "failingSince": "1795881000000"},
            {"endpointId": "ep_1", "trigger": "automatic", "reason": "failing",
             "failingSince": "2026-11-28T15:50:00.000Z"},
        ),
        (
            {"type": "endpoint.disabled", "id": "ep_1", "tenant": "acme", "at": "1795881731532",
             "endpointId": "ep_1", "trigger": "manual"},
            {"endpointId": "ep_1", "trigger": "manual"},
        ),
        (
            {"type": "endpoint.enabled", "id": "ep_1", "tenant": "acme", "at": "1795881731532",
             "endpointId": "ep_1"},
            {"endpointId": "ep_1"},
        ),
        (
            {"type": "delivery.exhausted", "id": "msg_0_a", "tenant": "acme",
             "at": "1795881731532", "deliveryId": "msg_0_a", "kind": "callback",
             "eventType": "task.completed", "attempts": "5", "taskId": "t1",
             "lastError": "timed out"},
            {"deliveryId": "msg_0_a", "kind": "callback", "eventType": "task.completed",
             "attempts": 5, "taskId": "t1", "lastError": "timed out"},
        ),
    ],
)  # fmt: skip
def test_operational_bodies_from_the_stream_entries_the_scripts_write(
    fields: dict[str, str], data: dict[str, Any]
) -> None:
    """What ep_mark/ep_patch/dlv_outcome write (every value text) → the body sent, which fits
    the catalog's schema of its type, closed."""
    sent = json.loads(bodies.encode(bodies.operational_body(bodies.decode_operational(fields))))
    assert sent == {"type": fields["type"], "timestamp": "2026-11-28T16:02:11.532Z", "data": data}
    validator(catalog.entry(fields["type"]).schema, closed=True).validate(sent)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"type": "endpoint.enabled", "tenant": "acme", "at": "1"}, "endpointId"),
        ({"type": "endpoint.enabled", "tenant": "", "at": "1", "endpointId": "e"}, "tenant"),
        ({"type": "endpoint.disabled", "tenant": "a", "at": "1", "endpointId": "e"}, "trigger"),
        ({"type": "endpoint.disabled", "tenant": "a", "at": "1", "endpointId": "e",
          "trigger": "whim"}, "trigger"),
        ({"type": "delivery.exhausted", "tenant": "a", "at": "1", "deliveryId": "m",
          "kind": "endpoint", "eventType": "task.failed", "attempts": "many"}, "attempts"),
        ({"type": "delivery.exhausted", "tenant": "a", "at": "-1", "deliveryId": "m",
          "kind": "endpoint", "eventType": "task.failed", "attempts": "1"}, "at"),
        ({"type": "task.completed", "tenant": "a", "at": "1"}, "type"),
    ],
)  # fmt: skip
def test_an_operational_entry_that_is_not_what_the_scripts_write_names_the_field(
    fields: dict[str, str], field: str
) -> None:
    with pytest.raises(msgspec.ValidationError, match=rf"(\$\.{field}\b|`{field}`)"):
        bodies.decode_operational(fields)


def test_the_core_package_imports_no_deliverers() -> None:
    """The catalog's bodies live in ``codeq.bodies``: importing the SDK (and with it the
    catalog) loads nothing of ``deliverers`` (a fresh interpreter: this one has them loaded)."""
    code = (
        "import sys, codeq.client, codeq.catalog, codeq.bodies; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'deliverers'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]", out.stdout


# --- the docs ---------------------------------------------------------------------------------


def test_the_docs_event_types_block_is_the_rendered_catalog() -> None:
    page = WEBHOOKS_MD.read_text()
    start = page.index(reference.EVENT_TYPES_START)
    end = page.index(reference.EVENT_TYPES_END) + len(reference.EVENT_TYPES_END) + 1
    assert page[start:end] == reference.event_types_markdown(), (
        "regenerate it: python -m codeq.reference event-types docs/webhooks.md"
    )
    assert reference.with_event_types(page) == page


def test_the_rendering_lists_every_type_and_its_example() -> None:
    block = reference.event_types_markdown()
    rows = re.findall(r"^\| `([a-z_.]+)` \| (.+) \|$", block, re.MULTILINE)
    assert dict(rows) == {e.value: catalog.DESCRIPTIONS[e] for e in EventType}
    examples = re.findall(r"^```json\n(.*?)^```$", block, re.MULTILINE | re.DOTALL)
    assert [json.loads(x) for x in examples] == [e.example for e in catalog.catalog().event_types]


def test_a_page_without_the_block_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="event-types"):
        reference.with_event_types("# Webhooks\n\nno block here\n")
    page = tmp_path / "webhooks.md"
    page.write_text(f"# W\n\n{reference.EVENT_TYPES_START} old -->\n| x |\n"
                    f"{reference.EVENT_TYPES_END}\n\nafter\n")  # fmt: skip
    assert reference.main(["event-types", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("# W\n\n") and text.endswith(f"{reference.EVENT_TYPES_END}\n\nafter\n")
    assert "| x |" not in text and "| `webhook.test` |" in text


# --- the route --------------------------------------------------------------------------------


def with_catalog_route(app: Litestar) -> Litestar:
    """The app with the catalog's controller (registered here until gateway/app.py lists it)."""
    if not any(route.path == ROUTE for route in app.routes):
        app.register(EventTypeController)
    return app


@pytest.fixture
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "cat" + uuid.uuid4().hex[:10]
    app = create_app(make_settings(tmp_path, prefix), store=make_store(request, "embedded"),
                     close_store=True)  # fmt: skip
    async with serve_in_process(with_catalog_route(app)) as c:
        yield c


async def test_any_valid_token_reads_the_catalog(api: ApiClient) -> None:
    expected = json.loads(msgspec.json.encode(catalog.catalog()))
    for token in (PRODUCER, WORKER, ADMIN):
        r = await api.get(ROUTE, headers=auth(token))
        assert r.status_code == 200, r.text
        assert r.json() == expected
    assert sorted(e["type"] for e in expected["eventTypes"]) == sorted(EVENT_TYPES)
    for headers in ({}, auth("not-a-token")):
        r = await api.get(ROUTE, headers=headers)
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_the_openapi_document_describes_the_answer() -> None:
    doc = Litestar(route_handlers=[EventTypeController]).openapi_schema.to_schema()
    answer = doc["paths"][ROUTE]["get"]["responses"]
    assert answer["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventTypeCatalog"
    }
    schemas = doc["components"]["schemas"]
    items = schemas["EventTypeCatalog"]["properties"]["eventTypes"]["items"]
    assert items == {"$ref": "#/components/schemas/EventTypeInfo"}
    assert sorted(schemas["EventTypeInfo"]["required"]) == [
        "description",
        "example",
        "schema",
        "type",
    ]
    assert {"401", "503"} <= set(answer)


# --- true of what is sent ---------------------------------------------------------------------


@pytest.fixture
async def delivering(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "cad" + uuid.uuid4().hex[:10]
    settings = make_settings(tmp_path, prefix, webhookAllowedCidrs=["127.0.0.0/8"],
                             webhookRetrySchedule=[0.1, 0.1])  # fmt: skip
    app = create_app(settings, store=make_store(request, "redis", prefix), close_store=True,
                     run_deliverers=True)  # fmt: skip
    async with serve_in_process(app) as c:
        yield c


async def test_what_an_endpoint_receives_is_what_the_catalog_says(delivering: ApiClient) -> None:
    """A real endpoint subscribed to everything, a task run through its life: every body that
    arrives fits its type's schema, closed (no field the schema does not name)."""
    api = delivering
    with receiver() as r:
        created = await api.post("/v1/codeq/webhooks/endpoints",
                                 json={"url": r.url, "eventTypes": ["*"]},
                                 headers=auth(PRODUCER))  # fmt: skip
        assert created.status_code == 201, created.text
        for outcome in ("COMPLETED", "FAILED"):
            r_task = await api.post("/v1/codeq/tasks", json={"command": "render", "payload": 1},
                                    headers=auth(PRODUCER))  # fmt: skip
            task_id = r_task.json()["id"]
            claimed = await api.post("/v1/codeq/tasks/claim", json={"commands": ["render"]},
                                     headers=auth(WORKER))  # fmt: skip
            lease = claimed.json()["leaseId"]
            done = await api.post(f"/v1/codeq/tasks/{task_id}/result",
                                  json={"status": outcome, "result": {"pages": 3},
                                        "error": "bad page", "leaseId": lease},
                                  headers=auth(WORKER))  # fmt: skip
            assert done.status_code == 200, done.text
        wanted = {"task.created", "task.ready", "task.claimed", "task.completed", "task.failed"}

        async def arrived() -> bool:
            with r.lock:
                return wanted <= {json.loads(x.body)["type"] for x in r.received}

        await eventually(arrived, timeout=10)
        with r.lock:
            received = [json.loads(x.body) for x in r.received]
    for event in received:
        validator(catalog.entry(event["type"]).schema, closed=True).validate(event)


# --- the docs example -------------------------------------------------------------------------


@pytest.fixture
def served_over_http(tmp_path: Path) -> Iterator[str]:
    """The app (with the catalog's route) on a real port, for the docs' plain-HTTP example."""
    prefix = "cah" + uuid.uuid4().hex[:10]
    app = create_app(make_settings(tmp_path, prefix),
                     store=RedisStore.embedded(KeySchema(prefix)), close_store=True)  # fmt: skip
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(with_catalog_route(app), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=20, message="the app did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def test_the_docs_example_runs(
    served_over_http: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    section = WEBHOOKS_MD.read_text().split("### Event types", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"^```python\n(.*?)^```$", section, re.S | re.M)
    monkeypatch.setenv("CODEQ_BASE_URL", served_over_http)
    monkeypatch.setenv("CODEQ_TOKEN", PRODUCER)
    scope: dict[str, Any] = {"__name__": "webhooks_docs"}
    exec(compile(code, "docs/webhooks.md", "exec"), scope)  # noqa: S102
    assert capsys.readouterr().out.strip() == str(sorted(EVENT_TYPES))
    with pytest.raises(jsonschema.ValidationError):
        scope["check"]({"type": "task.completed", "timestamp": "now", "data": {"id": 1}})
