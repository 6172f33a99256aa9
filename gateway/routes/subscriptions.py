"""Worker availability subscriptions (spec 02/03): create, renew, list, delete.

A subscription belongs to the caller's tenant; its event types must be allowed by the token.
Each has its own signing secret, which signs its notifications instead of the global one:
made at create (or brought by the caller, ``whsec_`` + base64 of 24 to 64 bytes) and shown in
the answer to create only.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from msgspec import Meta

from codeq.engine import validate_command
from codeq.errors import Forbidden, InvalidRequest, NotFound
from codeq.webhooks import generate_secret
from gateway.bodies import decode_body, documents, optional_body
from gateway.openapi_errors import errors
from gateway.routes.endpoints import MAX_LIST, Secret, check_secret, check_target
from gateway.schemas import rfc3339
from gateway.state import gateway_for

__all__ = ["SubscriptionController"]

AnyRequest = Request[Any, Any, State]
MAX_TTL = 86_400


class SubscriptionBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    callback_url: str  # checked by check_target (codeq.webhooks.target_problem), the one place
    # The commands to be told about (the original's name), each allowed by the token.
    event_types: Annotated[list[str], Meta(max_length=MAX_LIST)] | None = None
    ttl_seconds: Annotated[int, Meta(ge=1, le=MAX_TTL)] = 300
    delivery_mode: Literal["fanout", "group", "hash"] | None = None
    group_id: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    min_interval_seconds: Annotated[float, Meta(ge=0, le=86_400)] = 5.0
    # Signs this subscription's notifications; made here when absent.
    secret: Secret | None = None


class RenewBody(msgspec.Struct, kw_only=True, rename="camel", forbid_unknown_fields=True):
    ttl_seconds: Annotated[int, Meta(ge=1, le=MAX_TTL)] = 300


# decoded by the handlers, strictly ("300" is not 300), as the task routes do
_subscription_decoder = msgspec.json.Decoder(SubscriptionBody)
_renew_decoder = msgspec.json.Decoder(RenewBody | None)


class SubscriptionOut(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    subscription_id: str
    expires_at: str
    secret: str | None = None  # only in the answer to create


class SubscriptionInfo(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    subscription_id: str
    callback_url: str
    event_types: list[str]
    delivery_mode: str
    min_interval_seconds: float
    expires_at: str
    group_id: str | None = None


class SubscriptionsOut(msgspec.Struct, kw_only=True):
    subscriptions: list[SubscriptionInfo]


def _ttl(ttl: int) -> int:
    if not 1 <= ttl <= MAX_TTL:
        raise InvalidRequest(f"ttlSeconds: must be between 1 and {MAX_TTL}", field="ttlSeconds")
    return ttl


class SubscriptionController(Controller):
    path = "/v1/codeq/workers/subscriptions"
    tags = ["subscriptions"]  # noqa: RUF012

    @post(
        "/",
        status_code=200,
        summary="Subscribe to 'work available' notifications; the answer carries the "
        "subscription's signing secret (worker, codeq:subscribe)",
        responses=errors(400, 403, 413),
        dependencies=documents(SubscriptionBody),
    )
    async def create(self, request: AnyRequest) -> SubscriptionOut:
        gw = gateway_for(request)
        identity = await gw.worker(request, "codeq:subscribe")
        data: SubscriptionBody = decode_body(await request.body(), _subscription_decoder)
        check_target(gw, data.callback_url, "callbackUrl")
        types = data.event_types or list(identity.event_types)
        if not types:
            raise InvalidRequest("eventTypes: the token allows none", field="eventTypes")
        for t in types:  # commands, as in the token's eventTypes claim
            if t != "*":
                validate_command(t, "eventTypes")
        for t in types:
            if not identity.allows_command(t):
                raise Forbidden(f"event type {t[:128]!r} is not in the token's eventTypes")
        worker_group = identity.worker_group
        mode = data.delivery_mode or ("group" if worker_group else "fanout")
        group_id = data.group_id or (str(worker_group) if worker_group else None)
        if mode == "group" and not group_id:
            raise InvalidRequest("groupId: required for deliveryMode group", field="groupId")
        if worker_group and group_id != str(worker_group):
            raise Forbidden("groupId must equal the token's workerGroup")
        if not 0 <= data.min_interval_seconds <= 3600:
            raise InvalidRequest(
                "minIntervalSeconds: must be between 0 and 3600", field="minIntervalSeconds"
            )
        ttl = _ttl(data.ttl_seconds)
        if data.secret is not None:
            check_secret(data.secret)
        secret = data.secret or generate_secret()
        sub_id = "sub_" + secrets.token_hex(12)
        record = msgspec.json.encode(
            {
                "id": sub_id,
                "tenant": identity.tenant,
                "subject": identity.subject,
                "callbackUrl": data.callback_url,
                "eventTypes": types,
                "deliveryMode": mode,
                "groupId": group_id,
                "minIntervalSeconds": data.min_interval_seconds,
                "expiresAt": 0,
                "secrets": [{"secret": secret}],
            }
        )
        expires = await gw.store.subscriptions.put(sub_id, identity.tenant, record, ttl * 1000)
        assert expires is not None  # a create always writes
        return SubscriptionOut(
            subscription_id=sub_id, expires_at=rfc3339(expires) or "", secret=secret
        )

    @post(
        "/{sub_id:str}/heartbeat",
        status_code=200,
        summary="Renew a subscription",
        responses=errors(400, 403, 404, 413),
        dependencies=documents(RenewBody),
    )
    async def heartbeat(self, request: AnyRequest, sub_id: FromPath[str]) -> SubscriptionOut:
        gw = gateway_for(request)
        identity = await gw.worker(request, "codeq:subscribe")
        data = await optional_body(request, _renew_decoder)
        ttl = _ttl((data or RenewBody()).ttl_seconds)
        expires = await gw.store.subscriptions.put(sub_id, identity.tenant, b"", ttl * 1000)
        if expires is None:
            raise NotFound(f"subscription {sub_id[:64]} not found")
        return SubscriptionOut(subscription_id=sub_id, expires_at=rfc3339(expires) or "")

    @get("/", summary="The tenant's live subscriptions", responses=errors(403))
    async def list_subscriptions(self, request: AnyRequest) -> SubscriptionsOut:
        gw = gateway_for(request)
        identity = await gw.worker(request, "codeq:subscribe")
        out = []
        for raw in await gw.store.subscriptions.live(identity.tenant):
            r = msgspec.json.decode(raw)
            out.append(
                SubscriptionInfo(
                    subscription_id=r["id"],
                    callback_url=r["callbackUrl"],
                    event_types=list(r.get("eventTypes") or []),
                    delivery_mode=r.get("deliveryMode", "fanout"),
                    min_interval_seconds=float(r.get("minIntervalSeconds", 5)),
                    expires_at=rfc3339(int(r["expiresAt"])) or "",
                    group_id=r.get("groupId"),
                )
            )
        out.sort(key=lambda s: s.subscription_id)
        return SubscriptionsOut(subscriptions=out)

    @delete(
        "/{sub_id:str}", status_code=204, summary="Unsubscribe", responses=errors(400, 403, 404)
    )
    async def remove(self, request: AnyRequest, sub_id: FromPath[str]) -> None:
        gw = gateway_for(request)
        identity = await gw.worker(request, "codeq:subscribe")
        if not await gw.store.subscriptions.delete(sub_id, identity.tenant):
            raise NotFound(f"subscription {sub_id[:64]} not found")
