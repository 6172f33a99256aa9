"""Event-subscription endpoints (spec 02 "Event subscriptions"): a producer registers URLs that
receive signed events of its tenant.

Signing: an endpoint signs with HMAC-SHA256 (``signatureScheme: hmac-sha256``, the default:
a ``whsec_`` secret, made here or brought by the subscriber, readable by the tenant's
producers at ``GET .../secret``) or with ed25519 (``ed25519``: Standard Webhooks ``v1a``; the
key pair is made here, the private key stays in the endpoint's record and the public key is in
the endpoint's JSON). ``rotate-secret`` makes a new secret (or key pair); the old one keeps
signing beside it for 24 hours, so a receiver can switch over without losing a message.

Per-endpoint control: custom ``headers`` sent with every message (never ours: the signature
headers, ``X-CodeQ-*``, the message's framing), a ``rateLimit`` in deliveries per second that
holds deliveries back rather than failing them, ``channels`` (labels to find endpoints by:
``GET ...?channel=``), a ``description`` and ``metadata`` (a small map of strings). In a patch,
an empty list or map, or a ``rateLimit`` of 0, removes the field.

``POST .../{id}/test`` sends a ``webhook.test`` message to the endpoint now, through the
deliverers' own attempt, and answers with its delivery record.
"""

from __future__ import annotations

import re
import secrets as _secrets
import time
import unicodedata
from typing import Annotated, Any, Final, Literal

import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter
from msgspec import Meta

from codeq.domain import EVENT_TYPES
from codeq.engine import validate_command
from codeq.errors import InvalidRequest, NotFound
from codeq.webhooks import (
    allowed_networks,
    generate_secret,
    generate_signing_key,
    headers_problem,
    public_key_of,
    secret_problem,
    target_problem,
)
from deliverers import records
from deliverers.dispatch import attempt_now
from deliverers.endpoints import webhook_test_delivery
from gateway.bodies import decode_body, documents, optional_body
from gateway.openapi_errors import errors
from gateway.routes.deliveries import DeliveryOut
from gateway.routes.lookup import tenant_endpoint
from gateway.schemas import COMMAND_REGEX, between, check_items, items_matching, rfc3339
from gateway.state import Gateway, gateway_for

__all__ = ["EndpointController", "check_secret", "check_target"]

AnyRequest = Request[Any, Any, State]
ROTATION_GRACE_MS = 24 * 3600 * 1000
ANY_EVENT = "*"
MAX_LIST = 100
HMAC: Final = "hmac-sha256"
ED25519: Final = "ed25519"
MAX_RATE_LIMIT: Final = 10_000
MAX_CHANNELS: Final = 10
MAX_METADATA: Final = 16
MAX_METADATA_KEY: Final = 64
MAX_METADATA_VALUE: Final = 512

EventTypes = Annotated[list[str], Meta(max_length=MAX_LIST)]
Commands = Annotated[list[str], Meta(max_length=MAX_LIST)]
Description = Annotated[str, Meta(max_length=1024)]
Scheme = Literal["hmac-sha256", "ed25519"]
# Deliveries per second; 0 is no limit (at create nothing is kept; a patch removes the limit).
RateLimit = Annotated[
    int, between(0, MAX_RATE_LIMIT, "deliveries per second, at most; 0: no limit (removes it)")
]
# A label: the characters of a command. The pattern is checked after decoding (check_items).
CHANNEL_REGEX: Final = COMMAND_REGEX
_CHANNEL = re.compile(CHANNEL_REGEX)
Channels = Annotated[
    list[Annotated[str, Meta(min_length=1, max_length=128)]],
    items_matching(CHANNEL_REGEX, max_items=MAX_CHANNELS),
]
Secret = Annotated[str, Meta(max_length=256)]


class EndpointBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    url: str
    event_types: EventTypes
    commands: Commands | None = None
    description: Description | None = None
    headers: dict[str, str] | None = None  # checked by codeq.webhooks.headers_problem
    rate_limit: RateLimit | None = None
    channels: Channels | None = None
    metadata: dict[str, str] | None = None  # checked by _check_metadata
    secret: Secret | None = None  # whsec_ + base64 of 24..64 bytes; made here when absent
    signature_scheme: Scheme = HMAC

    def __post_init__(self) -> None:
        check_items(self.channels, _CHANNEL, "channels")


class EndpointPatch(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    url: str | None = None
    event_types: EventTypes | None = None
    commands: Commands | None = None
    description: Description | None = None
    enabled: bool | None = None
    headers: dict[str, str] | None = None
    rate_limit: RateLimit | None = None
    channels: Channels | None = None
    metadata: dict[str, str] | None = None

    def __post_init__(self) -> None:
        check_items(self.channels, _CHANNEL, "channels")


class RotateBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The new secret, when the subscriber brings it (HMAC endpoints); else one is made."""

    secret: Secret | None = None


# decoded by the handlers, strictly ("5" is not 5), as the task and subscription routes do
_endpoint_decoder = msgspec.json.Decoder(EndpointBody)
_patch_decoder = msgspec.json.Decoder(EndpointPatch | None)
_rotate_decoder = msgspec.json.Decoder(RotateBody | None)


class EndpointOut(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    id: str
    url: str
    event_types: list[str]
    enabled: bool
    created_at: str
    signature_scheme: str
    commands: list[str] | None = None
    description: str | None = None
    disabled_reason: str | None = None
    headers: dict[str, str] | None = None
    rate_limit: int | None = None
    channels: list[str] | None = None
    metadata: dict[str, str] | None = None
    public_key: str | None = None  # ed25519: what receivers verify v1a signatures with
    secret: str | None = None  # only in the answer to create

    @classmethod
    def of(cls, e: dict[str, Any], *, secret: str | None = None) -> EndpointOut:
        commands = e.get("commands") or None  # cjson stores [] as {}
        scheme = str(e.get("signatureScheme") or HMAC)
        rate = e.get("rateLimit")
        return cls(
            id=e["id"],
            url=e["url"],
            event_types=list(e.get("eventTypes") or []),
            enabled=bool(e.get("enabled", True)),
            created_at=rfc3339(int(e.get("createdAt", 0))) or "",
            signature_scheme=scheme,
            commands=list(commands) if commands else None,
            description=e.get("description"),
            disabled_reason=None if e.get("enabled", True) else e.get("disabledReason"),
            headers=dict(e["headers"]) if e.get("headers") else None,
            rate_limit=int(rate) if rate else None,
            channels=list(e["channels"]) if e.get("channels") else None,
            metadata=dict(e["metadata"]) if e.get("metadata") else None,
            public_key=_public_key(e) if scheme == ED25519 else None,
            secret=secret,
        )


class EndpointsOut(msgspec.Struct, kw_only=True):
    endpoints: list[EndpointOut]


class RotateOut(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    previous_secret_expires_at: str
    secret: str | None = None  # HMAC endpoints: the new secret
    public_key: str | None = None  # ed25519 endpoints: the new public key


class SecretOut(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    signature_scheme: str
    secret: str | None = None  # HMAC endpoints: the current secret
    public_key: str | None = None  # ed25519 endpoints: the current public key


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


def check_secret(secret: str, field: str = "secret") -> None:
    """400 naming ``field`` unless ``secret`` is one a subscriber may bring (``whsec_`` +
    base64 of 24 to 64 bytes)."""
    problem = secret_problem(secret)
    if problem is not None:
        raise InvalidRequest(f"{field}: {problem}", field=field)


def _check_types(types: list[str]) -> None:
    """Names of ``EventType``, or ``*``: every task event (the operational types,
    ``endpoint.disabled`` and the others, are named one by one)."""
    if not types:
        raise InvalidRequest("eventTypes: at least one (or '*')", field="eventTypes")
    for t in types:
        if t != ANY_EVENT and t not in EVENT_TYPES:
            raise InvalidRequest(
                f"eventTypes: unknown event type {t[:64]!r} (known: '*' for every task event, "
                f"{', '.join(sorted(EVENT_TYPES))})",
                field="eventTypes",
            )


def _check_commands(commands: list[str] | None) -> None:
    for c in commands or ():
        validate_command(c, "commands")


def _plain(text: str) -> bool:
    return not any(unicodedata.category(c) in ("Cc", "Cf") for c in text)


def _check_metadata(metadata: dict[str, str]) -> None:
    if len(metadata) > MAX_METADATA:
        raise InvalidRequest(f"metadata: at most {MAX_METADATA} entries", field="metadata")
    for key, value in metadata.items():
        if not 1 <= len(key) <= MAX_METADATA_KEY or not _plain(key):
            raise InvalidRequest(
                f"metadata: key {key[:64]!r} must be 1 to {MAX_METADATA_KEY} characters "
                "without control characters",
                field="metadata",
            )
        if len(value) > MAX_METADATA_VALUE or not _plain(value):
            raise InvalidRequest(
                f"metadata: the value of {key!r} must be at most {MAX_METADATA_VALUE} "
                "characters without control characters",
                field="metadata",
            )


def _control(data: EndpointBody | EndpointPatch) -> dict[str, Any]:
    """The per-endpoint control fields given, checked (400 naming the field), as stored."""
    out: dict[str, Any] = {}
    if data.headers is not None:
        problem = headers_problem(data.headers, url=data.url)
        if problem is not None:
            raise InvalidRequest(f"headers: {problem}", field="headers")
        out["headers"] = data.headers
    if data.rate_limit is not None:
        out["rateLimit"] = data.rate_limit
    if data.channels is not None:
        out["channels"] = list(dict.fromkeys(data.channels))
    if data.metadata is not None:
        _check_metadata(data.metadata)
        out["metadata"] = data.metadata
    return out


def _current(e: dict[str, Any]) -> str | None:
    """The endpoint's current secret (or signing key): the one without an expiry."""
    entries = e.get("secrets") or []
    for s in entries:
        if s.get("expiresAt") is None:
            return str(s["secret"])
    return str(entries[0]["secret"]) if entries else None


def _public_key(e: dict[str, Any]) -> str | None:
    current = _current(e)
    if current is None:
        return None
    try:
        return public_key_of(current)
    except ValueError:  # a record written by hand: no key to show rather than a 500
        return None


def _not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"endpoint {endpoint_id[:64]} not found")


class EndpointController(Controller):
    path = "/v1/codeq/webhooks/endpoints"
    tags = ["webhook endpoints"]  # noqa: RUF012

    @post(
        "/",
        status_code=201,
        summary="Register an endpoint; the answer carries its signing secret (producer)",
        responses=errors(400, 413),
        dependencies=documents(EndpointBody),
    )
    async def create(self, request: AnyRequest) -> EndpointOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        data: EndpointBody = decode_body(await request.body(), _endpoint_decoder)
        check_target(gw, data.url, "url")
        _check_types(data.event_types)
        _check_commands(data.commands)
        control = _control(data)
        shown: str | None
        if data.signature_scheme == ED25519:
            if data.secret is not None:
                raise InvalidRequest(
                    "secret: an ed25519 endpoint signs with a key pair codeQ makes "
                    "(its public key is in the answer); give no secret",
                    field="secret",
                )
            secret, shown = generate_signing_key()[0], None
        elif data.secret is not None:
            check_secret(data.secret)
            secret = shown = data.secret
        else:
            secret = shown = generate_secret()
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
            "signatureScheme": data.signature_scheme,
            "secrets": [{"secret": secret}],
        }
        record.update({k: v for k, v in control.items() if v})  # empty: nothing to keep
        await gw.store.endpoints.create(endpoint_id, identity.tenant, msgspec.json.encode(record))
        return EndpointOut.of(record, secret=shown)

    @get("/", summary="The tenant's endpoints (producer)", responses=errors(400))
    async def list_endpoints(
        self,
        request: AnyRequest,
        channel: Annotated[
            str | None,
            QueryParameter(description="Only endpoints with this channel.", max_length=128),
        ] = None,
    ) -> EndpointsOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        found = [msgspec.json.decode(r) for r in await gw.store.endpoints.all_of(identity.tenant)]
        if channel is not None:
            found = [e for e in found if channel in (e.get("channels") or ())]
        found.sort(key=lambda e: e["id"])
        return EndpointsOut(endpoints=[EndpointOut.of(e) for e in found])

    @get("/{endpoint_id:str}", summary="One endpoint (producer)", responses=errors(400, 404))
    async def get_endpoint(self, request: AnyRequest, endpoint_id: FromPath[str]) -> EndpointOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        return EndpointOut.of(await tenant_endpoint(gw, identity.tenant, endpoint_id))

    @patch(
        "/{endpoint_id:str}",
        summary="Change an endpoint; enabled: true re-enables a disabled one (producer)",
        responses=errors(400, 404, 413),
        dependencies=documents(EndpointPatch),
    )
    async def update(self, request: AnyRequest, endpoint_id: FromPath[str]) -> EndpointOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        data: EndpointPatch = await optional_body(request, _patch_decoder) or EndpointPatch()
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
        changes.update(_control(data))
        # One script applies the fields named here to the stored record: a concurrent change
        # of other fields (or a rotation, or the deliverers marking it) is kept.
        raw = await gw.store.endpoints.patch(endpoint_id, identity.tenant, changes)
        if raw is None:
            raise _not_found(endpoint_id)
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
            raise _not_found(endpoint_id)

    @get(
        "/{endpoint_id:str}/secret",
        summary="The endpoint's current signing secret (ed25519: its public key) (producer)",
        responses=errors(400, 404),
    )
    async def secret(self, request: AnyRequest, endpoint_id: FromPath[str]) -> SecretOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        e = await tenant_endpoint(gw, identity.tenant, endpoint_id)
        scheme = str(e.get("signatureScheme") or HMAC)
        if scheme == ED25519:
            return SecretOut(signature_scheme=scheme, public_key=_public_key(e))
        return SecretOut(signature_scheme=scheme, secret=_current(e))

    @post(
        "/{endpoint_id:str}/rotate-secret",
        status_code=200,
        summary="New signing secret (or key pair); the old one keeps signing beside it for 24 h",
        responses=errors(400, 404, 413),
        dependencies=documents(RotateBody),
    )
    async def rotate(self, request: AnyRequest, endpoint_id: FromPath[str]) -> RotateOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        data: RotateBody = await optional_body(request, _rotate_decoder) or RotateBody()
        # The scheme is fixed at create: which kind of secret to make is read first (the
        # script refuses a secret of the other kind all the same).
        e = await tenant_endpoint(gw, identity.tenant, endpoint_id)
        public: str | None = None
        if e.get("signatureScheme") == ED25519:
            if data.secret is not None:
                raise InvalidRequest(
                    "secret: an ed25519 endpoint's keys are made by codeQ; give no secret",
                    field="secret",
                )
            secret, public = generate_signing_key()
        elif data.secret is not None:
            check_secret(data.secret)
            secret = data.secret
        else:
            secret = generate_secret()
        expires = await gw.store.endpoints.rotate(
            endpoint_id, identity.tenant, secret, ROTATION_GRACE_MS
        )
        if expires is None:
            raise _not_found(endpoint_id)
        return RotateOut(
            previous_secret_expires_at=rfc3339(expires) or "",
            secret=None if public is not None else secret,
            public_key=public,
        )

    @post(
        "/{endpoint_id:str}/test",
        status_code=200,
        summary="Send a signed webhook.test message to the endpoint now; its delivery record "
        "(producer)",
        responses=errors(400, 404),
    )
    async def send_test(self, request: AnyRequest, endpoint_id: FromPath[str]) -> DeliveryOut:
        gw = gateway_for(request)
        identity = await gw.producer(request)
        endpoint = await tenant_endpoint(gw, identity.tenant, endpoint_id)
        partition, d = webhook_test_delivery(
            endpoint,
            partitions=gw.store.keys.partitions,
            schedule=list(gw.settings.webhook_retry_schedule),
            now_ms=int(time.time() * 1000),
        )
        # The deliverers' own sender (target policy, egress proxy), for this one attempt.
        from deliverers.runner import webhook_sender

        sender = webhook_sender(gw.settings, allow_loopback=gw.auth.dev_mode)
        try:
            await attempt_now(
                gw.store.deliveries,
                gw.store.endpoints,
                partition,
                d,
                endpoint,
                sender=sender,
                settings=gw.settings,
                metrics=gw.metrics,
                rate=gw.rate,
                tracing=gw.tracing,
            )
        finally:
            await sender.aclose()
        raw = await gw.store.deliveries.get(partition, d.id)
        return DeliveryOut.of(records.decode(raw) if raw is not None else d)

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
        await tenant_endpoint(gw, identity.tenant, endpoint_id)
        ds = gw.store.deliveries
        out = []
        for did in await gw.store.endpoints.recent(endpoint_id, 50):
            p = records.partition_of(did, gw.store.keys.partitions)
            raw = None if p is None else await ds.get(p, did)
            if raw is not None:
                out.append(DeliveryOut.of(records.decode(raw)))
        return EndpointDeliveriesOut(deliveries=out)
