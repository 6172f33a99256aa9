"""The ``static`` provider: a table of tokens → claims.

    producerAuthConfig:
      tokens:
        "a-plain-token": {sub: billing, tenantId: acme, scope: "codeq:admin"}
        "sha256:9f86d0818...": {tenantId: acme, eventTypes: ["*"]}   # sha256(token), hex

Keys are the token itself or ``sha256:<64 hex>`` of its UTF-8 bytes, so the config need hold no
secret. Claims are read as for JWTs (:func:`~codeq.auth.identity.identity_from_claims`) and are
checked when the provider is built. A token without ``sub`` gets the subject
``static-<first 8 hex of its sha256>``. Config key ``tenantFromSubject`` overrides the setting.

The presented token is hashed once and its digest is compared with every entry's digest with
:func:`hmac.compare_digest`, without stopping at a match: the time taken does not depend on
which entry (if any) matched, nor on how much of a token was right.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any, Final

from codeq.auth.base import Authenticator, ConfigReader, Side
from codeq.auth.identity import Identity, identity_from_claims
from codeq.errors import Unauthorized

__all__ = ["StaticAuthenticator", "static_label", "token_digest"]

HASH_PREFIX: Final = "sha256:"
_HEX64: Final = re.compile(r"^[0-9a-fA-F]{64}$")
CONFIG_KEYS: Final = ("tokens", "tenantFromSubject")


def token_digest(token: str) -> bytes:
    """SHA-256 of the token's UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def static_label(digest: bytes) -> str:
    """The subject of a static token without ``sub``: ``static-`` + 8 hex of its hash."""
    return f"static-{digest.hex()[:8]}"


class StaticAuthenticator(Authenticator):
    """Constant-time lookup of a presented token among ``(digest, identity)`` entries."""

    def __init__(self, entries: list[tuple[bytes, Identity]]) -> None:
        if not entries:
            raise ValueError("a static authenticator needs at least one token")
        self._entries = list(entries)

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        name: str,
        side: Side,
        tenant_from_subject: bool,
    ) -> StaticAuthenticator:
        """Build from ``{"tokens": {...}, "tenantFromSubject"?: bool}``; raises AuthConfigError."""
        reader = ConfigReader(config, name)
        reader.check_known(CONFIG_KEYS)
        override = reader.boolean("tenantFromSubject")
        if override is not None:
            tenant_from_subject = override
        tokens = reader.mapping("tokens")
        if not tokens:
            raise reader.error("tokens", "the static provider needs at least one token")
        entries: list[tuple[bytes, Identity]] = []
        seen: set[bytes] = set()
        for position, (key, claims) in enumerate(tokens.items(), start=1):
            where = f"tokens (entry #{position})"
            digest = _entry_digest(key, reader, where)
            if digest in seen:
                raise reader.error(where, "the same token is listed twice")
            seen.add(digest)
            if not isinstance(claims, Mapping):
                raise reader.error(where, "expected a mapping of claims")
            try:
                identity = identity_from_claims(
                    claims,
                    tenant_from_subject=tenant_from_subject,
                    producer=side == "producer",
                    worker=side == "worker",
                    default_subject=static_label(digest),
                )
            except Unauthorized as exc:
                raise reader.error(f"{where} [{static_label(digest)}]", exc.message) from None
            entries.append((digest, identity))
        return cls(entries)

    async def authenticate(self, token: str) -> Identity:
        presented = token_digest(token)
        found: Identity | None = None
        for digest, identity in self._entries:
            if hmac.compare_digest(presented, digest):
                found = identity
        if found is None:
            raise Unauthorized("unknown token")
        return found


def _entry_digest(key: object, reader: ConfigReader, where: str) -> bytes:
    if not isinstance(key, str) or not key:
        raise reader.error(where, "a token must be a non-empty string")
    if key.lower().startswith(HASH_PREFIX):
        hexdigest = key[len(HASH_PREFIX) :]
        if not _HEX64.match(hexdigest):
            raise reader.error(where, "expected 'sha256:' followed by 64 hex digits")
        return bytes.fromhex(hexdigest)
    if not all("!" <= ch <= "~" for ch in key):
        # parse_bearer accepts only visible ASCII, so such a token could never be presented
        raise reader.error(where, "a token must be visible ASCII without spaces")
    return token_digest(key)
