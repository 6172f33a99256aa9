"""Webhook signatures (spec 03): Standard Webhooks and the original codeQ's headers.

``sign()`` is what the deliverers put on every request; ``verify()`` is for receivers::

    from codeq.webhooks import verify
    verify(request.headers, raw_body, secret="whsec_...")   # raises WebhookVerificationError

Key bytes: a ``whsec_<base64>`` secret signs with the decoded bytes, any other string with its
UTF-8 bytes (as the original did); both header sets use the same key bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Mapping, Sequence

__all__ = [
    "WebhookVerificationError",
    "generate_secret",
    "key_bytes",
    "sign",
    "verify",
]


class WebhookVerificationError(ValueError):
    """The request is not a genuine, fresh codeQ webhook."""


def key_bytes(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[6:], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a whsec_ secret must be base64 after the prefix") from exc
    return secret.encode("utf-8")


def generate_secret() -> str:
    """A new signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(_secrets.token_bytes(32)).decode()


def _v1(key: bytes, msg_id: str, ts: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def _legacy(key: bytes, ts: int, body: bytes) -> str:
    return hmac.new(key, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()


def sign(
    body: bytes, *, secrets: Sequence[str], msg_id: str, timestamp: int | None = None
) -> dict[str, str]:
    """Every signature header for ``body``: one ``v1,`` entry per secret (the first is the
    current one; others are rotated secrets still in their grace period)."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign")
    ts = int(time.time()) if timestamp is None else timestamp
    keys = [key_bytes(s) for s in secrets]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(f"v1,{_v1(k, msg_id, ts, body)}" for k in keys),
        "X-CodeQ-Timestamp": str(ts),
        "X-CodeQ-Signature": _legacy(keys[0], ts, body),
    }


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secret: str | Sequence[str],
    *,
    tolerance: int = 300,
    now: float | None = None,
) -> None:
    """Check a received webhook: Standard Webhooks headers when present, else the original's
    ``X-CodeQ-*`` pair. Raises :class:`WebhookVerificationError`."""
    h = {k.lower(): v for k, v in headers.items()}
    keys = [key_bytes(s) for s in ([secret] if isinstance(secret, str) else secret)]
    standard = "webhook-signature" in h
    raw_ts = h.get("webhook-timestamp") if standard else h.get("x-codeq-timestamp")
    if raw_ts is None:
        raise WebhookVerificationError("missing timestamp header")
    try:
        ts = int(raw_ts)
    except ValueError:
        raise WebhookVerificationError("invalid timestamp header") from None
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        raise WebhookVerificationError("timestamp outside the tolerance")
    if standard:
        msg_id = h.get("webhook-id")
        if not msg_id:
            raise WebhookVerificationError("missing webhook-id header")
        given = [
            entry.split(",", 1)[1]
            for entry in h["webhook-signature"].split()
            if entry.startswith("v1,")
        ]
        for key in keys:
            expected = _v1(key, msg_id, ts, body)
            if any(hmac.compare_digest(expected, g) for g in given):
                return
        raise WebhookVerificationError("no matching signature")
    legacy = h.get("x-codeq-signature")
    if not legacy:
        raise WebhookVerificationError("missing signature header")
    if any(hmac.compare_digest(_legacy(k, ts, body), legacy.lower()) for k in keys):
        return
    raise WebhookVerificationError("no matching signature")
