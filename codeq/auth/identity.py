"""Who is calling: :class:`Identity`, and how token claims become one.

Claims read (JWT payloads and static-token claim tables alike):

* ``sub`` — the producer or worker id (a static token may omit it; see :mod:`codeq.auth.static`);
* tenant — the first present of ``tenantId``, ``tenant_id``, ``organizationId``,
  ``organization_id``; else ``sub`` when ``tenantFromSubject`` is on; else the token is refused;
* ``scope`` — space-separated string (a list is accepted too), and/or ``scp`` (list or string);
  the scopes are the union of both;
* ``eventTypes`` — list of commands a worker may take (``"*"`` = all; a single string is taken
  as a one-item list); absent = none;
* ``role``, ``workerGroup`` — optional strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import msgspec

from codeq.errors import Unauthorized

__all__ = [
    "ADMIN_ALL_SCOPE",
    "ADMIN_SCOPE",
    "TENANT_CLAIMS",
    "WORKER_SCOPES",
    "Identity",
    "identity_from_claims",
]

ADMIN_SCOPE: Final = "codeq:admin"
ADMIN_ALL_SCOPE: Final = "codeq:admin:all"

#: Every scope a worker route may ask for.
WORKER_SCOPES: Final = frozenset(
    {
        "codeq:claim",
        "codeq:heartbeat",
        "codeq:abandon",
        "codeq:nack",
        "codeq:result",
        "codeq:subscribe",
    }
)

#: Claims naming the tenant, in order of precedence.
TENANT_CLAIMS: Final = ("tenantId", "tenant_id", "organizationId", "organization_id")

_MAX_ID_LENGTH: Final = 256  # subject, tenant, role, worker group
_MAX_ITEMS: Final = 1024  # scopes, event types
_MAX_ITEM_LENGTH: Final = 256


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    """An authenticated caller. Built only by the authenticators; never from request headers."""

    subject: str
    tenant: str
    scopes: frozenset[str]
    event_types: tuple[str, ...]
    role: str | None = None
    worker_group: str | None = None
    producer: bool = False
    worker: bool = False

    @property
    def is_admin(self) -> bool:
        """Scope ``codeq:admin`` or ``codeq:admin:all``, or role ``ADMIN`` (any case)."""
        return (
            ADMIN_SCOPE in self.scopes
            or ADMIN_ALL_SCOPE in self.scopes
            or (self.role is not None and self.role.upper() == "ADMIN")
        )

    @property
    def is_super_admin(self) -> bool:
        """Scope ``codeq:admin:all``: admin of every tenant."""
        return ADMIN_ALL_SCOPE in self.scopes

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def allows_command(self, command: str) -> bool:
        """``*`` in the event types, or the command among them (case-insensitive)."""
        if "*" in self.event_types:
            return True
        wanted = command.lower()
        return any(event.lower() == wanted for event in self.event_types)


def _clean_id(value: object, claim: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Unauthorized(f"invalid '{claim}' claim: expected a non-empty string")
    if len(value) > _MAX_ID_LENGTH or not value.isprintable():
        raise Unauthorized(f"invalid '{claim}' claim: too long or not printable")
    return value


def _optional_id(claims: Mapping[str, Any], claim: str) -> str | None:
    value = claims.get(claim)
    return None if value is None else _clean_id(value, claim)


def _string_items(value: object, claim: str, *, split: bool) -> list[str]:
    """A string (space-split when ``split``, else one item) or a list of strings."""
    if isinstance(value, str):
        items = value.split() if split else [value]
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = list(value)
    else:
        raise Unauthorized(f"invalid '{claim}' claim: expected a string or a list of strings")
    if len(items) > _MAX_ITEMS or any(len(item) > _MAX_ITEM_LENGTH for item in items):
        raise Unauthorized(f"invalid '{claim}' claim: too many or too long items")
    return [item for item in (i.strip() for i in items) if item]


def _tenant(claims: Mapping[str, Any], subject: str, tenant_from_subject: bool) -> str:
    for claim in TENANT_CLAIMS:
        value = claims.get(claim)
        if value is not None:
            return _clean_id(value, claim)
    if tenant_from_subject:
        return subject
    raise Unauthorized("no tenant in token")


def identity_from_claims(
    claims: Mapping[str, Any],
    *,
    tenant_from_subject: bool,
    producer: bool,
    worker: bool,
    default_subject: str | None = None,
) -> Identity:
    """Map verified claims to an :class:`Identity`; raises :class:`Unauthorized` naming the claim.

    ``default_subject`` is used when ``sub`` is absent (static tokens); without it ``sub`` is
    required.
    """
    raw_subject = claims.get("sub")
    if raw_subject is None:
        if default_subject is None:
            raise Unauthorized("token has no 'sub' claim")
        raw_subject = default_subject
    subject = _clean_id(raw_subject, "sub")
    scopes: set[str] = set()
    for claim in ("scope", "scp"):
        if claims.get(claim) is not None:
            scopes.update(_string_items(claims[claim], claim, split=True))
    event_types: tuple[str, ...] = ()
    if claims.get("eventTypes") is not None:
        event_types = tuple(
            dict.fromkeys(_string_items(claims["eventTypes"], "eventTypes", split=False))
        )
    return Identity(
        subject=subject,
        tenant=_tenant(claims, subject, tenant_from_subject),
        scopes=frozenset(scopes),
        event_types=event_types,
        role=_optional_id(claims, "role"),
        worker_group=_optional_id(claims, "workerGroup"),
        producer=producer,
        worker=worker,
    )
