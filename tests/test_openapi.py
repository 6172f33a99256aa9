"""The OpenAPI document (``/schema/openapi.json``) describes every route, body and error.

The operations are taken from the app's own routes, not from a list kept here, so a new route
is checked the day it is added. What each operation must document follows spec 02: 401 and
503 on every authenticated route, 400 and 413 wherever a body (or a parameter) is read, 404
where a task id is looked up, 403 on admin and worker routes, 409 on transitions. Each error
response must be the ``{"error", "code"}`` object (429: the same with the limit's fields), and
the live app must answer the documented 401, 400 and 413 with exactly that shape. Every
operation under ``/v1/codeq/`` names the bearer scheme and nothing else does; a body is
``required`` exactly when the app refuses a request without one.
"""

from __future__ import annotations

import re
import types
import typing
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute

from codeq.settings import Settings
from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process

DEV_TOKEN = "openapi-dev-token"
MAX_BODY = 16 * 1024
API_PREFIX = "/v1/codeq/"
ERROR_SCHEMA = "#/components/schemas/ErrorOut"
RATE_LIMITED_SCHEMA = "#/components/schemas/RateLimitedOut"
#: the operations that take no credentials (spec 02 "Operations (no auth)")
PUBLIC = frozenset({("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")})

#: Errors spec 02 names for particular operations, beyond those the route's shape implies.
SPEC_ERRORS: dict[tuple[str, str], set[int]] = {
    ("POST", "/v1/codeq/tasks"): {409},  # idempotency_conflict
    ("POST", "/v1/codeq/tasks/claim"): {403},  # scope, eventTypes
    ("POST", "/v1/codeq/tasks/{task_id}/heartbeat"): {403, 409},
    ("POST", "/v1/codeq/tasks/{task_id}/abandon"): {403, 409},
    ("POST", "/v1/codeq/tasks/{task_id}/nack"): {403, 409},
    ("POST", "/v1/codeq/tasks/{task_id}/result"): {403, 409},
}

#: Valid bodies for the routes whose body has required fields (the others get ``{}``).
SAMPLE_BODIES: dict[str, dict[str, Any]] = {
    "CreateTaskBody": {"command": "RENDER", "payload": {"n": 1}},
    "BatchCreateBody": {"tasks": []},
    "ResultBody": {"status": "COMPLETED", "result": {}},
    "RequeueBody": {"all": True},
    "SubscriptionBody": {"callbackUrl": "http://127.0.0.1:9/hook"},
    "EndpointBody": {"url": "http://127.0.0.1:9/hook", "eventTypes": ["*"]},
}


class _AnyText(str):
    """Equal to any non-empty string (a description)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other.strip())

    __hash__ = str.__hash__


ANY_TEXT = _AnyText()

# --------------------------------------------------------------------------------------------
# The app, its operations, its document
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Operation:
    method: str
    path: str  # as the document spells it: {task_id}, not {task_id:str}
    handler: HTTPRouteHandler

    def __repr__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def authenticated(self) -> bool:
        return self.path.startswith(API_PREFIX)  # spec 02: every task route is under /v1/codeq

    @property
    def body_type(self) -> type[msgspec.Struct] | None:
        """The Struct the handler decodes its body into (``X | None`` → ``X``): its ``data``
        parameter, or, for handlers that decode the bytes themselves, the ``data`` of their
        documentation-only ``body_doc`` dependency."""
        data = self.handler.parsed_fn_signature.parameters.get("data")
        if data is None:
            doc = self.handler.resolve_dependencies().get("body_doc")
            if doc is None:
                return None
            data = doc.parsed_fn_signature.parameters["data"]
        annotation = data.annotation
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
            options = [a for a in typing.get_args(annotation) if a is not type(None)]
            assert len(options) == 1, f"{self}: body {annotation}"
            annotation = options[0]
        assert isinstance(annotation, type) and issubclass(annotation, msgspec.Struct), self
        return annotation

    @property
    def parameters(self) -> set[str]:
        """Path and query parameters (everything but the body and what is injected)."""
        injected = {"self", "request", "state", "data", *self.handler.resolve_dependencies()}
        return set(self.handler.parsed_fn_signature.parameters) - injected

    def url(self) -> str:
        return re.sub(r"\{[^}]+\}", "doc-test-id", self.path)


def operations(app: Litestar) -> list[Operation]:
    """Every operation the app serves, but OPTIONS and the OpenAPI plugin's own pages."""
    schema_root = (app.openapi_config.path if app.openapi_config else None) or "/schema"
    out: list[Operation] = []
    for route in app.routes:
        assert isinstance(route, HTTPRoute), route
        if route.path == schema_root or route.path.startswith((schema_root + "/", "/ui")):
            continue
        path = re.sub(r"\{(\w+):[^}]+\}", r"{\1}", route.path)
        for handler in route.route_handlers:
            for method in sorted(handler.http_methods - {"OPTIONS"}):
                out.append(Operation(method, path, handler))
    return out


def required_errors(op: Operation) -> set[int]:
    if not op.authenticated:
        return set()
    codes = {401, 503} | SPEC_ERRORS.get((op.method, op.path), set())
    if op.body_type is not None:
        codes |= {400, 413}  # malformed or invalid JSON; larger than maxBodyBytes
    if op.parameters:
        codes.add(400)  # Litestar validates them (and documents a 400 for them regardless)
    if "{task_id}" in op.path:
        codes.add(404)  # unknown, or another tenant's
    if op.path.startswith(API_PREFIX + "admin/"):
        codes.add(403)  # not admin
    return codes


def make_app(tmp: Path) -> Litestar:
    """Dev mode: one token that is producer, worker (every scope) and admin, so every route
    can be reached with it."""
    prefix = "oa" + uuid.uuid4().hex[:10]
    settings = Settings.from_mapping(
        {
            "keyPrefix": prefix,
            "host": "127.0.0.1",
            "maxBodyBytes": MAX_BODY,
            "maxPayloadBytes": MAX_BODY // 2,
            "localArtifactsDir": str(tmp / "artifacts"),
        }
    )
    return create_app(
        settings,
        store=RedisStore.embedded(KeySchema(prefix)),
        close_store=True,
        environ={"CODEQ_DEV_TOKEN": DEV_TOKEN},
    )


@pytest.fixture
def app(tmp_path: Path) -> Litestar:
    return make_app(tmp_path)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[ApiClient]:
    async with serve_in_process(app) as c:
        yield c


async def fetch_document(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/schema/openapi.json")
    assert r.status_code == 200, r.text
    document: dict[str, Any] = r.json()
    return document


@pytest.fixture
async def document(client: ApiClient) -> dict[str, Any]:
    return await fetch_document(client)


def operation_of(document: dict[str, Any], op: Operation) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][op.path][op.method.lower()]
    return found


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a ``$ref`` to its component."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.removeprefix("#/components/schemas/")
    component: dict[str, Any] = document["components"]["schemas"][name]
    return component


def body_schema(document: dict[str, Any], op: Operation) -> tuple[str, dict[str, Any]]:
    """The documented JSON body of ``op``: (component name, schema); ``X | null`` → ``X``."""
    request_body = operation_of(document, op).get("requestBody")
    assert request_body is not None, f"{op}: no requestBody"
    schema = request_body["content"]["application/json"]["schema"]
    options = schema.get("oneOf", [schema])
    refs = [o["$ref"] for o in options if "$ref" in o]
    assert len(refs) == 1 and all("$ref" in o or o == {"type": "null"} for o in options), op
    return refs[0].removeprefix("#/components/schemas/"), resolve(document, {"$ref": refs[0]})


def dev() -> dict[str, str]:
    return {"Authorization": f"Bearer {DEV_TOKEN}"}


def assert_error_body(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "code"} and body["code"] == code, body
    assert isinstance(body["error"], str) and body["error"], body


# --------------------------------------------------------------------------------------------
# Routes and bodies
# --------------------------------------------------------------------------------------------


async def test_every_route_of_the_app_is_documented_and_nothing_else(
    app: Litestar, document: dict[str, Any]
) -> None:
    ops = operations(app)
    assert sum(op.authenticated for op in ops) >= 10  # the task and admin routes were found
    served = {(op.method.lower(), op.path) for op in ops}
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"
    for op in ops:
        assert operation_of(document, op).get("summary"), f"{op}: no summary"
    assert {(method, path) for method, path in SPEC_ERRORS} <= {(op.method, op.path) for op in ops}


# POSTs that are actions on a resource and read no body at all.
NO_BODY_POSTS = frozenset(
    {
        "/v1/codeq/deliveries/{delivery_id}/retry",
        "/v1/codeq/webhooks/endpoints/{endpoint_id}/test",
        "/v1/codeq/webhooks/replays/{job_id}/cancel",
    }
)


async def test_every_body_is_documented_with_its_fields(
    app: Litestar, document: dict[str, Any]
) -> None:
    with_body = 0
    for op in operations(app):
        struct = op.body_type
        documented = operation_of(document, op).get("requestBody")
        if struct is None:
            assert documented is None, f"{op}: documents a body it does not read"
            assert op.method != "POST" or not op.authenticated or op.path in NO_BODY_POSTS, (
                f"{op}: a POST with no body"
            )
            continue
        with_body += 1
        name, schema = body_schema(document, op)
        assert name == struct.__name__, op
        assert schema.get("type") == "object", op
        fields = msgspec.structs.fields(struct)
        # the names on the wire (camelCase), as msgspec decodes them
        assert set(schema["properties"]) == {f.encode_name for f in fields}, op
        required = {
            f.encode_name
            for f in fields
            if f.default is msgspec.NODEFAULT and f.default_factory is msgspec.NODEFAULT
        }
        assert set(schema.get("required", [])) == required, op
    assert with_body >= 8


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


async def test_every_task_and_admin_operation_documents_its_errors(
    app: Litestar, document: dict[str, Any]
) -> None:
    missing: list[str] = []
    for op in operations(app):
        responses = operation_of(document, op)["responses"]
        documented = {int(status) for status in responses}
        for status in sorted(required_errors(op) - documented):
            missing.append(f"{op}: {status}")
    assert missing == [], "undocumented error responses:\n" + "\n".join(missing)


async def test_every_documented_error_is_the_error_object(
    app: Litestar, document: dict[str, Any]
) -> None:
    wrong: list[str] = []
    for op in operations(app):
        if not op.authenticated:
            continue
        for status, response in operation_of(document, op)["responses"].items():
            if int(status) < 400:
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            expected = RATE_LIMITED_SCHEMA if status == "429" else ERROR_SCHEMA
            if schema != {"$ref": expected}:
                wrong.append(f"{op}: {status} is {schema}")
            if status in ("429", "503"):
                retry_after = response.get("headers", {}).get("Retry-After", {})
                if not retry_after.get("required"):
                    wrong.append(f"{op}: {status} without a required Retry-After header")
    assert wrong == [], "error responses not documented as ErrorOut:\n" + "\n".join(wrong)
    error = resolve(document, {"$ref": ERROR_SCHEMA})
    assert error["type"] == "object"
    assert error["properties"].keys() == {"error", "code", "outcomeUnknown"}
    assert all(error["properties"][key]["type"] == "string" for key in ("error", "code"))
    assert set(error["required"]) == {"error", "code"}  # outcomeUnknown: 503s only
    # a 429 is the error object and the limit that was hit (gateway/errors.py adds them)
    limited = resolve(document, {"$ref": RATE_LIMITED_SCHEMA})
    assert limited["properties"].keys() == error["properties"].keys() | {
        "scope",
        "operation",
        "retryAfterSeconds",
    }
    assert set(limited["required"]) == {"error", "code", "retryAfterSeconds"}
    assert limited["properties"]["retryAfterSeconds"]["type"] == "integer"


# --------------------------------------------------------------------------------------------
# Credentials
# --------------------------------------------------------------------------------------------


async def test_every_api_operation_names_the_bearer_scheme_and_no_other_does(
    app: Litestar, document: dict[str, Any]
) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"bearer": {"type": "http", "scheme": "bearer", "description": ANY_TEXT}}
    assert "security" not in document  # per operation, so the public ones stay public
    secured = 0
    for op in operations(app):
        security = operation_of(document, op).get("security")
        if op.authenticated:
            secured += 1
            assert security == [{"bearer": []}], f"{op}: security {security}"
        else:
            assert (op.method, op.path) in PUBLIC, f"{op}: outside {API_PREFIX} but not public"
            assert security is None, f"{op}: a public operation names {security}"
    assert secured >= 25
    assert {(op.method, op.path) for op in operations(app)} >= PUBLIC


async def test_the_document_is_the_same_for_every_app(tmp_path: Path, client: ApiClient) -> None:
    """Nothing random in it (generated examples), so it can be published and diffed."""
    first = await fetch_document(client)
    async with serve_in_process(make_app(tmp_path / "other")) as other:
        second = await fetch_document(other)
    assert first == second


# --------------------------------------------------------------------------------------------
# The documented errors are the ones the app gives
# --------------------------------------------------------------------------------------------


def sample_body(document: dict[str, Any], op: Operation) -> dict[str, Any]:
    name, _ = body_schema(document, op)
    return SAMPLE_BODIES.get(name, {})


async def test_without_credentials_every_api_route_is_401_as_documented(
    app: Litestar, client: ApiClient, document: dict[str, Any]
) -> None:
    for op in operations(app):
        body = sample_body(document, op) if op.body_type is not None else None
        r = await client.request(op.method, op.url(), json=body)
        if not op.authenticated:
            assert r.status_code == 200, f"{op}: {r.status_code}"
            continue
        assert_error_body(r, 401, "unauthorized")
        assert "401" in operation_of(document, op)["responses"], op
        # the same request with credentials gets past authentication
        r = await client.request(op.method, op.url(), json=body, headers=dev())
        assert r.status_code != 401, f"{op}: {r.text}"


async def test_every_body_answers_the_documented_400_and_413(
    app: Litestar, client: ApiClient, document: dict[str, Any]
) -> None:
    checked = 0
    for op in operations(app):
        if op.body_type is None:
            continue
        checked += 1
        headers = {**dev(), "Content-Type": "application/json"}
        r = await client.request(op.method, op.url(), content=b'{"not json', headers=headers)
        assert_error_body(r, 400, "invalid_request")
        too_large = b'{"x": "' + b"a" * MAX_BODY + b'"}'
        r = await client.request(op.method, op.url(), content=too_large, headers=headers)
        assert_error_body(r, 413, "payload_too_large")
        assert {"400", "413"} <= set(operation_of(document, op)["responses"]), op
    assert checked >= 8


async def test_a_body_is_required_exactly_when_the_app_refuses_a_request_without_one(
    app: Litestar, client: ApiClient, document: dict[str, Any]
) -> None:
    """``required: true`` — no body is a 400; ``required: false`` — no body is read as ``{}``
    (the same answer)."""
    required_seen = optional_seen = 0
    for op in operations(app):
        if op.body_type is None:
            continue
        required = operation_of(document, op)["requestBody"].get("required", False)
        without = await client.request(op.method, op.url(), headers=dev())
        if required:
            required_seen += 1
            assert_error_body(without, 400, "invalid_request")
            continue
        optional_seen += 1
        empty = await client.request(op.method, op.url(), json={}, headers=dev())
        assert without.status_code == empty.status_code, f"{op}: {without.text} / {empty.text}"
        if empty.status_code >= 400:
            assert without.json() == empty.json(), op
    # create, batch, result, subscribe, endpoint create; claim, heartbeat, abandon, nack,
    # requeue (no body: the same 400 as {}), cleanup, renew, replay, endpoint patch and
    # rotate-secret
    assert required_seen >= 5 and optional_seen >= 10, (required_seen, optional_seen)


async def test_a_body_that_refuses_unknown_fields_says_so(
    app: Litestar, client: ApiClient, document: dict[str, Any]
) -> None:
    """``additionalProperties: false`` exactly on the bodies msgspec decodes with
    ``forbid_unknown_fields``; and those answer an unknown field with a 400 naming it."""
    for op in operations(app):
        struct = op.body_type
        if struct is None:
            continue
        name, schema = body_schema(document, op)
        forbids = struct.__struct_config__.forbid_unknown_fields
        assert (schema.get("additionalProperties") is False) == forbids, f"{op}: {name}"
        if not forbids:
            continue
        body = {**sample_body(document, op), "noSuchField": 1}
        r = await client.request(op.method, op.url(), json=body, headers=dev())
        assert_error_body(r, 400, "invalid_request")
        assert "noSuchField" in r.json()["error"], r.text


# --------------------------------------------------------------------------------------------
# Every number a request carries has a documented range (issue 15)
# --------------------------------------------------------------------------------------------

_LOWER = ("minimum", "exclusiveMinimum")
_UPPER = ("maximum", "exclusiveMaximum")
_NUMERIC = frozenset({"integer", "number"})


def unbounded_numbers(
    document: dict[str, Any], schema: dict[str, Any], where: str, seen: frozenset[str]
) -> tuple[list[str], int]:
    """(the numbers under ``schema`` without both a lower and an upper bound, how many numbers
    there are) — following ``$ref``s, ``oneOf``/``anyOf``/``allOf``, properties, items and map
    values. A bound beside a ``oneOf`` holds for its branches (``X | null`` is documented so)."""
    ref = schema.get("$ref")
    if ref is not None:
        name = ref.removeprefix("#/components/schemas/")
        if name in seen:  # a recursive schema: its numbers are checked where it was entered
            return [], 0
        return unbounded_numbers(document, resolve(document, schema), name, seen | {name})
    missing: list[str] = []
    count = 0
    inherited = {k: schema[k] for k in (*_LOWER, *_UPPER) if k in schema}
    for key in ("oneOf", "anyOf", "allOf"):
        for branch in schema.get(key, []):
            m, n = unbounded_numbers(document, {**inherited, **branch}, where, seen)
            missing += m
            count += n
    types = schema.get("type")
    if _NUMERIC & set(types if isinstance(types, list) else [types]):
        count += 1
        if not (any(k in schema for k in _LOWER) and any(k in schema for k in _UPPER)):
            missing.append(f"{where}: {schema}")
    children = [(f"{where}.{name}", prop) for name, prop in schema.get("properties", {}).items()]
    for key, suffix in (("items", "[]"), ("additionalProperties", "{}")):
        if isinstance(schema.get(key), dict):
            children.append((where + suffix, schema[key]))
    for child_where, child in children:
        m, n = unbounded_numbers(document, child, child_where, seen)
        missing += m
        count += n
    return missing, count


async def test_every_number_of_a_request_has_a_minimum_and_a_maximum(
    document: dict[str, Any],
) -> None:
    """Request bodies (nested, referenced, in unions) and path and query parameters: a client
    reading the document knows every number's range, as the API refuses what is outside it."""
    missing: list[str] = []
    counted: dict[str, int] = {}
    for path, item in document["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            for parameter in op.get("parameters", []):
                m, n = unbounded_numbers(
                    document,
                    parameter["schema"],
                    f"{where} {parameter['in']} {parameter['name']}",
                    frozenset(),
                )
                missing += m
                counted[f"{where} {parameter['name']}"] = n
            for content in op.get("requestBody", {}).get("content", {}).values():
                m, n = unbounded_numbers(document, content["schema"], f"{where} body", frozenset())
                missing += m
                counted[f"{where} body"] = n
    assert missing == [], "numbers without a documented range:\n" + "\n".join(missing)
    # the walk reached the numbers it is about (a walk that finds none proves nothing)
    assert counted["GET /v1/codeq/tasks priority"] == 1
    assert counted["GET /v1/codeq/tasks limit"] == 1
    assert counted["POST /v1/codeq/tasks/claim body"] == 2  # leaseSeconds, waitSeconds
    assert counted["POST /v1/codeq/webhooks/endpoints body"] == 1  # rateLimit
    assert counted["PATCH /v1/codeq/webhooks/endpoints/{endpoint_id} body"] == 1
    assert sum(counted.values()) >= 15, counted


def test_the_range_walk_finds_what_is_missing() -> None:
    """The walk itself: a bound missing on either side, behind a ``$ref``, in a union or an
    array is found; a bound beside a ``oneOf`` counts for its branches."""
    document: dict[str, Any] = {
        "components": {
            "schemas": {
                "Inner": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}},
                "Loop": {
                    "type": "object",
                    "properties": {"next": {"$ref": "#/components/schemas/Loop"}},
                },
            }
        }
    }
    cases: list[tuple[dict[str, Any], int]] = [
        ({"type": "integer", "minimum": 0, "maximum": 9}, 0),
        ({"type": "number", "exclusiveMinimum": 0, "maximum": 9}, 0),
        ({"type": "integer", "maximum": 9}, 1),
        ({"oneOf": [{"type": "integer"}, {"type": "null"}], "minimum": 0, "maximum": 9}, 0),
        ({"oneOf": [{"type": "integer"}, {"type": "null"}], "maximum": 9}, 1),
        ({"anyOf": [{"type": ["integer", "null"], "minimum": 1}]}, 1),
        ({"$ref": "#/components/schemas/Inner"}, 1),
        ({"type": "array", "items": {"$ref": "#/components/schemas/Inner"}}, 1),
        ({"type": "object", "additionalProperties": {"type": "number"}}, 1),
        ({"$ref": "#/components/schemas/Loop"}, 0),
    ]
    for schema, expected in cases:
        missing, _ = unbounded_numbers(document, schema, "x", frozenset())
        assert len(missing) == expected, (schema, missing)
