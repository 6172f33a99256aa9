"""Webhook signatures (spec 03 "Signatures"): Standard Webhooks and the original codeQ's headers.

``sign()`` is what the deliverers put on every request; ``verify()`` is for receivers::

    from codeq.webhooks import verify
    verify(request.headers, raw_body, secret="whsec_...")   # raises WebhookVerificationError

Headers ``sign()`` returns:

- ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``: space-separated
  ``v1,<base64 HMAC-SHA256(key, f"{id}.{ts}.{body}")>`` entries, one per secret (current first,
  then rotated secrets still in their grace period), and ``v1a,<base64 ed25519>`` over the same
  content when an ed25519 signing key (``whsk_``) is given;
- ``X-CodeQ-Timestamp`` and ``X-CodeQ-Signature`` = lowercase hex
  HMAC-SHA256(key of the first secret, f"{ts}.{body}"), for receivers of the original.

Key bytes: a ``whsec_<base64>`` secret signs with the decoded bytes, any other string with its
UTF-8 bytes (as the original did); both header sets use the same key bytes. Ed25519 keys are
``whsk_<base64 32-byte seed>`` (private) and ``whpk_<base64 32-byte key>`` (public).

Pure functions, no I/O. Errors: a bad key or secret is a ``ValueError``; a request that fails
verification raises :class:`WebhookVerificationError` (also a ``ValueError``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import re
import secrets as _secrets
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "WebhookVerificationError",
    "generate_secret",
    "generate_signing_key",
    "key_bytes",
    "sign",
    "target_problem",
    "verify",
]

_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
_SIGNING_KEY_PREFIX = "whsk_"
_PUBLIC_KEY_PREFIX = "whpk_"
# Plain unix seconds; int() alone would also take " 12 ", "1_2" and 4,000-digit numbers.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


class WebhookVerificationError(ValueError):
    """The request is not a genuine, fresh codeQ webhook."""


def _b64decode(text: str, what: str) -> bytes:
    # Padding is optional, as in the Standard Webhooks reference library.
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} must be base64 after the prefix") from exc


def target_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook target, or None: scheme, host and port (what the sender
    needs to connect). Where the host resolves to is checked at every attempt, not here."""
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError:
        return "must be an http(s) URL with a valid port"
    if scheme not in ("http", "https"):
        return "must be an http(s) URL"
    if not host:
        return "must be an http(s) URL with a host"
    if port == 0:
        return "must not use port 0"
    if ":" not in host:  # a name or an IPv4 literal (IPv6 literals need no DNS form)
        try:
            host.encode("idna")
        except UnicodeError:
            return "must have a valid host name"
    return None


@functools.lru_cache(maxsize=1024)  # a deliverer signs with the same few secrets all day
def key_bytes(secret: str) -> bytes:
    """The HMAC key of ``secret``: base64-decoded for ``whsec_``, else its UTF-8 bytes."""
    if secret.startswith(_SECRET_PREFIX):
        key = _b64decode(secret[len(_SECRET_PREFIX) :], "a whsec_ secret")
    else:
        key = secret.encode("utf-8")
    if not key:
        raise ValueError("a webhook secret may not be empty")
    return key


def _signing_key(key: str) -> Ed25519PrivateKey:
    if not key.startswith(_SIGNING_KEY_PREFIX):
        raise ValueError("an ed25519 signing key starts with whsk_")
    seed = _b64decode(key[len(_SIGNING_KEY_PREFIX) :], "a whsk_ signing key")
    if len(seed) != 32:
        raise ValueError("a whsk_ signing key holds a 32-byte ed25519 seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


def _public_key(key: str) -> Ed25519PublicKey:
    if not key.startswith(_PUBLIC_KEY_PREFIX):
        raise ValueError("an ed25519 public key starts with whpk_")
    raw = _b64decode(key[len(_PUBLIC_KEY_PREFIX) :], "a whpk_ public key")
    if len(raw) != 32:
        raise ValueError("a whpk_ public key holds 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return _SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(32)).decode()


def generate_signing_key() -> tuple[str, str]:
    """A new ed25519 key pair: (``whsk_<base64 seed>``, ``whpk_<base64 public key>``)."""
    seed = _secrets.token_bytes(32)
    public = (
        Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw)
    )
    return (
        _SIGNING_KEY_PREFIX + base64.b64encode(seed).decode(),
        _PUBLIC_KEY_PREFIX + base64.b64encode(public).decode(),
    )


def _signed_content(msg_id: str, ts: int, body: bytes) -> bytes:
    return f"{msg_id}.{ts}.".encode() + body


def _v1(key: bytes, content: bytes) -> bytes:
    return hmac.digest(key, content, "sha256")  # one-shot, in C


def _legacy(key: bytes, ts: int, body: bytes) -> bytes:
    return hmac.digest(key, f"{ts}.".encode() + body, "sha256")


def sign(
    body: bytes,
    *,
    secrets: Sequence[str],
    msg_id: str,
    timestamp: int | None = None,
    ed25519_key: str | None = None,
) -> dict[str, str]:
    """Every signature header for ``body``, the exact bytes sent.

    ``secrets`` gives one ``v1,`` entry each, in order; the first is the current one and also
    keys ``X-CodeQ-Signature``. ``ed25519_key`` (``whsk_...``) adds a ``v1a,`` entry.
    ``timestamp`` defaults to now, in unix seconds.
    """
    if isinstance(secrets, str):
        raise TypeError("secrets is a sequence of secrets, not one string")
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    ts = int(time.time()) if timestamp is None else timestamp
    keys = [key_bytes(s) for s in secrets]
    content = _signed_content(msg_id, ts, body)
    entries = [f"v1,{base64.b64encode(_v1(k, content)).decode()}" for k in keys]
    if ed25519_key is not None:
        signature = _signing_key(ed25519_key).sign(content)
        entries.append(f"v1a,{base64.b64encode(signature).decode()}")
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(entries),
        "X-CodeQ-Timestamp": str(ts),
        "X-CodeQ-Signature": _legacy(keys[0], ts, body).hex(),
    }


def _decode_b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _decode_hex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _check_timestamp(raw: str, tolerance: int, now: float | None) -> int:
    if not _TIMESTAMP.fullmatch(raw.strip()):
        raise WebhookVerificationError(f"invalid timestamp header: {raw[:32]!r}")
    ts = int(raw)
    current = time.time() if now is None else now
    if ts < current - tolerance:
        raise WebhookVerificationError(
            f"timestamp too old: {current - ts:.0f} s ago, tolerance {tolerance} s"
        )
    if ts > current + tolerance:
        raise WebhookVerificationError(
            f"timestamp too new: {ts - current:.0f} s ahead, tolerance {tolerance} s"
        )
    return ts


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str | Sequence[str],
    *,
    tolerance: int = 300,
    now: float | None = None,
    public_key: str | None = None,
) -> None:
    """Check a received webhook, or raise :class:`WebhookVerificationError`.

    Uses the Standard Webhooks headers when ``webhook-signature`` is present, else the
    original's ``X-CodeQ-Timestamp``/``X-CodeQ-Signature`` pair; names are case-insensitive.
    Passes when any ``v1`` entry matches any of ``secret`` (one secret or several, e.g. during
    rotation) or, with ``public_key`` (``whpk_...``), any ``v1a`` entry verifies. The timestamp
    must be within ``tolerance`` seconds of ``now`` (default: the current time), either way.
    """
    h = {k.lower(): v for k, v in headers.items()}
    keys = [key_bytes(s) for s in ([secret] if isinstance(secret, str) else secret)]
    verifier = _public_key(public_key) if public_key is not None else None
    if not keys and verifier is None:
        raise ValueError("verify needs a secret or a public key")

    if "webhook-signature" in h:
        msg_id, raw_ts = h.get("webhook-id"), h.get("webhook-timestamp")
        if not msg_id or not raw_ts:
            missing = [n for n in ("webhook-id", "webhook-timestamp") if not h.get(n)]
            raise WebhookVerificationError(f"missing header: {', '.join(missing)}")
        ts = _check_timestamp(raw_ts, tolerance, now)
        content = _signed_content(msg_id, ts, body)
        expected = [_v1(k, content) for k in keys]
        for entry in h["webhook-signature"].split():
            version, _, encoded = entry.partition(",")
            given = _decode_b64(encoded)
            if given is None:
                continue
            # Every expected MAC is compared, so timing does not tell which secret matched.
            if version == "v1" and any([hmac.compare_digest(e, given) for e in expected]):
                return
            if version == "v1a" and verifier is not None:
                try:
                    verifier.verify(given, content)
                except InvalidSignature:
                    continue
                return
        raise WebhookVerificationError("no matching signature in webhook-signature")

    if "x-codeq-signature" in h or "x-codeq-timestamp" in h:
        raw_ts, legacy = h.get("x-codeq-timestamp"), h.get("x-codeq-signature")
        if not raw_ts or not legacy:
            missing = [
                n
                for n, v in (("X-CodeQ-Timestamp", raw_ts), ("X-CodeQ-Signature", legacy))
                if not v
            ]
            raise WebhookVerificationError(f"missing header: {', '.join(missing)}")
        ts = _check_timestamp(raw_ts, tolerance, now)
        given = _decode_hex(legacy.strip())
        if given is not None and any(
            [hmac.compare_digest(_legacy(k, ts, body), given) for k in keys]
        ):
            return
        raise WebhookVerificationError("no matching signature in X-CodeQ-Signature")

    raise WebhookVerificationError(
        "missing signature headers: expected webhook-id, webhook-timestamp and "
        "webhook-signature, or X-CodeQ-Timestamp and X-CodeQ-Signature"
    )
