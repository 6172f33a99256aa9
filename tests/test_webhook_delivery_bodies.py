"""One encoder for everything that leaves the service (issue 15, item 10): webhook bodies are
the API's own output Structs, checked here against the gateway's OpenAPI document. Result
callbacks used to say ``content_type`` for artifacts where the API says ``contentType``."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest

from codeq.domain import Artifact, Location, NewTask, Task, TaskResult, TaskStatus
from codeq.engine import Engine, EngineConfig
from codeq.settings import Settings
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from deliverers import bodies
from deliverers.runner import Deliverer
from gateway.app import create_app
from tests.conftest import SERVERS, make_store
from tests.receivers import receiver
from tests.test_deliveries import settings, wait_count


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    """The gateway's OpenAPI document, as ``/schema/openapi.json`` serves it."""
    app = create_app(
        Settings.from_mapping({"keyPrefix": "oabodies"}),
        store=RedisStore.embedded(KeySchema("oabodies")),
        close_store=True,
        environ={"CODEQ_DEV_TOKEN": "bodies-dev-token"},
    )
    document: dict[str, Any] = app.openapi_schema.to_schema()
    return document


def strict_validator(openapi: dict[str, Any], name: str, **extra: Any) -> Any:
    """A validator for component ``name`` that also refuses properties the document does not
    name (the document leaves objects open; a misspelt field must not pass), with ``extra``
    properties added to it (what a webhook carries beyond the API's Struct)."""
    components = copy.deepcopy(openapi["components"])
    for schema in components["schemas"].values():
        if "properties" in schema:
            schema["additionalProperties"] = False
    target = components["schemas"][name]
    target["properties"].update(extra)
    target["required"] = sorted({*target.get("required", []), *extra})
    root = {"$ref": f"#/components/schemas/{name}", "components": components}
    return jsonschema.Draft202012Validator(root)


@pytest.fixture(params=SERVERS)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RedisStore]:
    s = make_store(request, request.param)
    yield s
    await s.close()


async def test_a_result_callback_is_the_documented_result(
    store: RedisStore, openapi: dict[str, Any]
) -> None:
    s = settings()
    engine = Engine(store, EngineConfig.from_settings(s))
    d = Deliverer(store, s, block_ms=100, scan_interval=0.05)
    await d.start()
    try:
        with receiver() as r:
            t = (await engine.create("acme", NewTask(command="Render", payload="1",
                                                     webhook=r.url))).task  # fmt: skip
            c = await engine.claim("acme", "w", ["render"])
            assert c is not None
            pdf = Artifact(name="out.pdf", url="https://files.example/out.pdf",
                           content_type="application/pdf", size=1234)  # fmt: skip
            await engine.complete("acme", t.id, "w", result='{"pages":3}', lease_id=c.lease_id,
                                  artifacts=[pdf, Artifact(name="log.txt")])  # fmt: skip
            await wait_count(r, 1)
            body = json.loads(r.received[0].body)
    finally:
        await d.stop()
    validator = strict_validator(openapi, "ResultOut", eventType={"type": "string"})
    errors = [e.message for e in validator.iter_errors(body)]
    assert errors == [], errors
    assert body["artifacts"] == [
        {"name": "out.pdf", "url": "https://files.example/out.pdf",
         "contentType": "application/pdf", "size": 1234},
        {"name": "log.txt"},
    ]  # fmt: skip
    assert body["eventType"] == "Render" and body["taskId"] == t.id
    assert body["status"] == "COMPLETED" and body["result"] == {"pages": 3}
    assert body["error"] is None and body["completedAt"].endswith("Z")


def test_an_event_subscription_carries_the_documented_task(openapi: dict[str, Any]) -> None:
    task = Task(
        id="t1", command="render", tenant_id="acme", status=TaskStatus.COMPLETED,
        last_known_location=Location.NONE,
        priority=0, attempts=1, max_attempts=5, created_at_ms=1_700_000_000_000,
        updated_at_ms=1_700_000_000_500, webhook="https://u:secret@hooks.example/x",
        lease_id="lease-1", payload="{}",
    )  # fmt: skip
    result = TaskResult(
        task_id="t1", status=TaskStatus.COMPLETED, result='{"ok":1}', completed_at_ms=1,
        artifacts=(Artifact(name="a", content_type="text/plain"),),
    )  # fmt: skip
    body = json.loads(bodies.encode(bodies.endpoint_body("task.completed", 1, task, result)))
    assert body["type"] == "task.completed" and body["timestamp"] == "1970-01-01T00:00:00.001Z"
    data = body["data"]
    validator = strict_validator(openapi, "TaskOut", result={})
    errors = [e.message for e in validator.iter_errors(data)]
    assert errors == [], errors
    assert data["result"] == {"ok": 1} and data["createdAt"] == "2023-11-14T22:13:20.000Z"
    # withheld: the payload, the webhook URL (credentials) and the lease id (a capability)
    assert not {"payload", "webhook", "leaseId"} & set(data)
