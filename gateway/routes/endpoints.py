"""Event-subscription endpoints (spec 02 "Event subscriptions"): a producer registers URLs that
receive signed events of its tenant. The signing secret is shown once, at creation and at each
rotation; a rotated secret keeps signing beside the new one for 24 hours."""

from __future__ import annotations

import secrets as _secrets
import time
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from msgspec import Meta

from codeq.domain import EVENT_TYPES
from codeq.engine import validate_command
from codeq.errors import InvalidRequest, NotFound
from codeq.webhooks import allowed_networks, generate_secret, target_problem
from deliverers import records
from gateway.openapi_errors import errors
from gateway.routes.deliveries import DeliveryOut
from gateway.schemas import rfc3339
from gateway.state import Gateway, gateway_for

__all__ = ["EndpointController", "check_target"]

AnyRequest = Request[Any, Any, State]
ROTATION_GRACE_MS = 24 * 3600 * 1000
ANY_EVENT = "*"
MAX_LIST = 100

EventTypes = Annotated[list[str], Meta(max_length=MAX_LIST)]
Commands = Annotated[list[str], Meta(max_length=MAX_LIST)]
Description = Annotated[str, Meta(max_length=1024)]


class EndpointBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    url: str
    event_types: EventTypes
    commands: Commands | None = None
    description: Description | None = None


class EndpointPatch(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    url: str | None = None
    event_types: EventTypes | None = None
    commands: Commands | None = None
    description: Description | None = None
    enabled: bool | None = None


class EndpointOut(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    id: str
    url: str
    event_types: list[str]
    enabled: bool
    created_at: str
    commands: list[str] | None = None
    description: str | None = None
    disabled_reason: str | None = None
    secret: str | None = None  # only in the answer to create and rotate-secret

    @classmethod
    def of(cls, e: dict[str, Any], *, secret: str | None = None) -> EndpointOut:
        commands = e.get("commands") or None  # cjson stores [] as {}
        return cls(
            id=e["id"],
            url=e["url"],
            event_types=list(e.get("eventTypes") or []),
            enabled=bool(e.get("enabled", True)),
            created_at=rfc3339(int(e.get("createdAt", 0))) or "",
            commands=list(commands) if commands else None,
            description=e.get("description"),
            disabled_reason=None if e.get("enabled", True) else e.get("disabledReason"),
            secret=secret,
        )


class EndpointsOut(msgspec.Struct, kw_only=True):
    endpoints: list[EndpointOut]


class RotateOut(msgspec.Struct, kw_only=True, rename="camel"):
    secret: str
    previous_secret_expires_at: str


class EndpointDeliveriesOut(msgspec.Struct, kw_only=True):
    deliveries: list[DeliveryOut]


def check_target(gw: Gateway, url: str, field: str) -> None:
    """400 naming ``field`` unless ``url`` is a target webhooks may go to under this
    deployment's rules: the deliverers check it again, with every resolved address, at each
    attempt."""
    problem = target_problem(
        url,
        require_https=gw.settings.webhook_require_https,
        allowed=allowed_networks(gw.settings.webhook_allowed_cidrs, loopback=gw.auth.dev_mode),
    )
    if problem is not None:
        raise InvalidRequest(f"{field}: {problem}", field=field)


def _check_types(types: list[str]) -> None:
    if not types:
        raise InvalidRequest("eventTypes: at least one (or '*')", field="eventTypes")
    for t in types:
        if t != ANY_EVENT and t not in EVENT_TYPES:
            raise InvalidRequest(
                f"eventTypes: unknown event type {t[:64]!r} (known: '*', "
                f"{', '.join(sorted(EVENT_TYPES))})",
                field="eventTypes",
            )


def _check_commands(commands: list[str] | None) -> None:
    for c in commands or ():
        validate_command(c, "commands")


async def _find(gw: Gateway, tenant: str, endpoint_id: str) -> dict[str, Any]:
    for raw in await gw.store.endpoints.all_of(tenant):
        e: dict[str, Any] = msgspec.json.decode(raw)
        if e.get("id") == endpoint_id:
            return e
    raise NotFound(f"endpoint {endpoint_id[:64]} not found")


class EndpointController(Controller):
    path = "/v1/codeq/webhooks/endpoints"
    tags = ["webhook endpoints"]  # noqa: RUF012

    @post(
        "/",
        status_code=201,
        summary="Register an endpoint; the answer carries its signing secret, once (producer)",
        responses=errors(400, 413),
    )
    async def create(self, request: AnyRequest, data: JSONBody[EndpointBody]) -> EndpointOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        check_target(gw, data.url, "url")
        _check_types(data.event_types)
        _check_commands(data.commands)
        secret = generate_secret()
        endpoint_id = "ep_" + _secrets.token_hex(12)
        record: dict[str, Any] = {
            "id": endpoint_id,
            "tenant": identity.tenant,
            "url": data.url,
            "eventTypes": data.event_types,
            "commands": data.commands,
            "description": data.description,
            "enabled": True,
            "createdAt": int(time.time() * 1000),
            "secrets": [{"secret": secret}],
        }
        await gw.store.endpoints.create(endpoint_id, identity.tenant, msgspec.json.encode(record))
        return EndpointOut.of(record, secret=secret)

    @get("/", summary="The tenant's endpoints (producer)", responses=errors())
    async def list_endpoints(self, request: AnyRequest) -> EndpointsOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        found = [msgspec.json.decode(r) for r in await gw.store.endpoints.all_of(identity.tenant)]
        found.sort(key=lambda e: e["id"])
        return EndpointsOut(endpoints=[EndpointOut.of(e) for e in found])

    @get("/{endpoint_id:str}", summary="One endpoint (producer)", responses=errors(400, 404))
    async def get_endpoint(self, request: AnyRequest, endpoint_id: FromPath[str]) -> EndpointOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        return EndpointOut.of(await _find(gw, identity.tenant, endpoint_id))

    @patch(
        "/{endpoint_id:str}",
        summary="Change an endpoint; enabled: true re-enables a disabled one (producer)",
        responses=errors(400, 404, 413),
    )
    async def update(
        self, request: AnyRequest, endpoint_id: FromPath[str], data: JSONBody[EndpointPatch]
    ) -> EndpointOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        changes: dict[str, Any] = {}
        if data.url is not None:
            check_target(gw, data.url, "url")
            changes["url"] = data.url
        if data.event_types is not None:
            _check_types(data.event_types)
            changes["eventTypes"] = data.event_types
        if data.commands is not None:
            _check_commands(data.commands)
            changes["commands"] = data.commands
        if data.description is not None:
            changes["description"] = data.description
        if data.enabled is not None:
            changes["enabled"] = data.enabled
        # One script applies the fields named here to the stored record: a concurrent change
        # of other fields (or a rotation, or the deliverers marking it) is kept.
        raw = await gw.store.endpoints.patch(endpoint_id, identity.tenant, changes)
        if raw is None:
            raise NotFound(f"endpoint {endpoint_id[:64]} not found")
        return EndpointOut.of(msgspec.json.decode(raw))

    @delete(
        "/{endpoint_id:str}",
        status_code=204,
        summary="Delete an endpoint",
        responses=errors(400, 404),
    )
    async def remove(self, request: AnyRequest, endpoint_id: FromPath[str]) -> None:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        if not await gw.store.endpoints.delete(endpoint_id, identity.tenant):
            raise NotFound(f"endpoint {endpoint_id[:64]} not found")

    @post(
        "/{endpoint_id:str}/rotate-secret",
        status_code=200,
        summary="New signing secret; the old one keeps signing beside it for 24 h",
        responses=errors(400, 404),
    )
    async def rotate(self, request: AnyRequest, endpoint_id: FromPath[str]) -> RotateOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        secret = generate_secret()
        expires = await gw.store.endpoints.rotate(
            endpoint_id, identity.tenant, secret, ROTATION_GRACE_MS
        )
        if expires is None:
            raise NotFound(f"endpoint {endpoint_id[:64]} not found")
        return RotateOut(secret=secret, previous_secret_expires_at=rfc3339(expires) or "")

    @get(
        "/{endpoint_id:str}/deliveries",
        summary="The endpoint's recent deliveries with their attempts",
        responses=errors(400, 404),
    )
    async def deliveries(
        self, request: AnyRequest, endpoint_id: FromPath[str]
    ) -> EndpointDeliveriesOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        await _find(gw, identity.tenant, endpoint_id)
        ds = gw.store.deliveries
        out = []
        for did in await gw.store.endpoints.recent(endpoint_id, 50):
            p = records.partition_of(did, gw.store.keys.partitions)
            raw = None if p is None else await ds.get(p, did)
            if raw is not None:
                out.append(DeliveryOut.of(records.decode(raw)))
        return EndpointDeliveriesOut(deliveries=out)
