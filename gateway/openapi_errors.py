"""The OpenAPI document tells the truth: errors, credentials and which bodies are required.

Each route names the errors particular to it with :func:`errors` (``responses=errors(403,
409)``). :func:`complete_document` then finishes the document of the built app, once, for what
Litestar cannot see in a handler's signature:

* the ``bearer`` security scheme (``Authorization: Bearer <token>``, static token or JWT) on
  every operation under ``/v1/codeq/`` — and on nothing else (health, readiness, metrics and
  the OpenAPI pages take no credentials);
* the errors every operation of a shape can give, whether its route named them or not: 401 and
  503 on every authenticated operation, 400 where a parameter or a body is read, 413 where a
  body is, 404 where a path names an id; each one the ``{"error", "code"}`` object (Litestar
  would document its own validation shape for a 400 nobody named), with ``Retry-After`` on 429
  and 503;
* ``additionalProperties: false`` on the bodies (and the objects inside them) that refuse
  unknown fields (msgspec's ``forbid_unknown_fields``), so a client learns it before a 400;
* ``requestBody.required`` as the handler treats a missing body (Litestar says ``true`` for
  every body): false when the body's type admits ``null``, or when the handler decodes the
  bytes itself (a documentation-only ``data`` dependency) into a Struct whose every field has
  a default — those handlers read an absent body as ``{}``.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import (
    Components,
    OpenAPIHeader,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIType
from litestar.routes import HTTPRoute
from litestar.typing import FieldDefinition

from gateway.schemas import ErrorOut

__all__ = [
    "API_PREFIX",
    "BEARER",
    "RateLimitedOut",
    "complete_document",
    "errors",
    "security_components",
]

#: Every route under this prefix takes a bearer token (spec 02); nothing else does.
API_PREFIX = "/v1/codeq/"
#: The name of the security scheme in ``components.securitySchemes``.
BEARER = "bearer"


class RateLimitedOut(ErrorOut, kw_only=True):
    """A 429: the error object, plus the limit that was hit and when to come back (the same
    number as ``Retry-After``)."""

    retry_after_seconds: int = msgspec.field(name="retryAfterSeconds")
    scope: str | None = None
    operation: str | None = None


_TEXT = {
    400: "Invalid request: the message names the field (`invalid_request`)",
    401: "Missing, invalid or expired credentials (`unauthorized`)",
    403: "Not allowed: scope, command not in `eventTypes`, not the lease holder (`not_owner`), "
    "not admin (`forbidden`)",
    404: "Unknown id, or one that belongs to another tenant (`not_found`)",
    409: "Illegal transition (`not_in_progress`, `lease_mismatch`, `idempotency_conflict`)",
    413: "Body, payload, result or artifact larger than its limit (`payload_too_large`)",
    429: "Rate limited (`rate_limited`); retry after `Retry-After` seconds. The body also "
    "names the limit: `scope`, `operation` and `retryAfterSeconds`",
    503: "Store unreachable or shutting down; retry after `Retry-After` seconds. With "
    "`outcomeUnknown: true` the store got the call but its answer did not come back: the change "
    "may have been made, and a retry is safe with the same `idempotencyKey` (create) or "
    "`leaseId` (a second result or nack answers 409)",
}
_RETRY_AFTER = {429, 503}
_ERROR_REF = f"#/components/schemas/{ErrorOut.__name__}"
_LIMITED_REF = f"#/components/schemas/{RateLimitedOut.__name__}"


def errors(*codes: int) -> dict[int, ResponseSpec]:
    """The ``responses=`` of an authenticated route: ``codes`` plus 401 and 503, each an
    :class:`ErrorOut` (429: :class:`RateLimitedOut`). What every route of its shape can give
    (400, 404, 413) is added by :func:`complete_document` when a route does not name it."""
    wanted = sorted({401, 503, *codes})
    return {
        # no generated examples: they are random, and the document must be reproducible
        code: ResponseSpec(
            data_container=RateLimitedOut if code == 429 else ErrorOut,
            description=_TEXT[code],
            generate_examples=False,
        )
        for code in wanted
    }


def security_components() -> Components:
    """``components.securitySchemes`` of the document (for ``OpenAPIConfig``)."""
    return Components(
        security_schemes={
            BEARER: SecurityScheme(
                type="http",
                scheme="bearer",
                description="A static token or a JWT: `Authorization: Bearer <token>`. "
                "Producer routes take producer credentials, worker routes worker credentials "
                "with the route's `codeq:*` scope, admin routes admin credentials.",
            )
        }
    )


def complete_document(app: Litestar) -> None:
    """Finish ``app``'s OpenAPI document (see the module docstring). Call it once, after the
    app is built: the document is generated here, and served as it is left."""
    document = app.openapi_schema
    paths = document.paths or {}
    bodies: set[type[msgspec.Struct]] = set()
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or route.path_format not in paths:
            continue  # the OpenAPI pages themselves
        item = paths[route.path_format]
        for handler in route.route_handlers:
            body = _body_type(handler)
            if body is not None:
                bodies |= _structs_in(body[0].annotation)
            for method in handler.http_methods:
                operation = getattr(item, method.lower(), None)
                if isinstance(operation, Operation):
                    _complete_operation(route.path_format, handler, operation)
    components = document.components.schemas or {}
    for struct in bodies:
        schema = components.get(struct.__name__)
        if schema is not None and struct.__struct_config__.forbid_unknown_fields:
            schema.additional_properties = False


def _complete_operation(path: str, handler: HTTPRouteHandler, operation: Operation) -> None:
    body = _body_type(handler)
    if isinstance(operation.request_body, RequestBody) and body is not None:
        operation.request_body.required = _body_required(*body)
    if not path.startswith(API_PREFIX):
        return
    operation.security = [{BEARER: []}]
    codes = {401, 503}
    if body is not None:
        codes |= {400, 413}
    if operation.parameters:
        codes.add(400)
    if re.search(r"\{\w+_id\}", path):
        codes.add(404)
    responses = operation.responses if operation.responses is not None else {}
    for status, documented in list(responses.items()):
        if int(status) >= 400:
            codes.add(int(status))
            if not _is_error_object(documented):  # Litestar's own shape for a 400
                del responses[status]
    for code in sorted(codes):
        response = responses.get(str(code))
        if response is None:
            schema = Reference(_LIMITED_REF if code == 429 else _ERROR_REF)
            response = responses[str(code)] = OpenAPIResponse(
                description=_TEXT.get(code, "Error"),
                content={"application/json": OpenAPIMediaType(schema=schema)},
            )
        if code in _RETRY_AFTER and isinstance(response, OpenAPIResponse):
            response.headers = {
                "Retry-After": OpenAPIHeader(
                    description="Seconds to wait before trying again",
                    required=True,
                    schema=Schema(type=OpenAPIType.INTEGER, minimum=1),
                )
            }
    operation.responses = dict(sorted(responses.items()))


def _is_error_object(response: OpenAPIResponse | Reference) -> bool:
    if not isinstance(response, OpenAPIResponse) or not response.content:
        return False
    media = response.content.get("application/json")
    schema = media.schema if media is not None else None
    return isinstance(schema, Reference) and schema.ref in {_ERROR_REF, _LIMITED_REF}


def _body_type(handler: HTTPRouteHandler) -> tuple[FieldDefinition, bool] | None:
    """(the body's field, whether the handler decodes the bytes itself), or None for a handler
    that reads no body."""
    data = handler.parsed_fn_signature.parameters.get("data")
    if data is not None:
        return data, False
    for dependency in handler.resolve_dependencies().values():
        documented = dependency.parsed_fn_signature.parameters.get("data")
        if documented is not None:
            return documented, True
    return None


def _body_required(field: FieldDefinition, self_decoded: bool) -> bool:
    if field.is_optional:
        return False
    body = field.annotation
    if self_decoded and isinstance(body, type) and issubclass(body, msgspec.Struct):
        return any(
            f.default is msgspec.NODEFAULT and f.default_factory is msgspec.NODEFAULT
            for f in msgspec.structs.fields(body)
        )
    return True


def _structs_in(
    annotation: Any, found: set[type[msgspec.Struct]] | None = None
) -> set[type[msgspec.Struct]]:
    """The Structs a body annotation is made of: itself, its fields', their items'..."""
    found = set() if found is None else found
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        if annotation in found:
            return found
        found.add(annotation)
        for field in msgspec.structs.fields(annotation):
            _structs_in(field.type, found)
    for arg in typing.get_args(annotation):
        _structs_in(arg, found)
    return found
