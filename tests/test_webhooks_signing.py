"""Webhook signatures (spec 03 "Signatures"): ``codeq.webhooks.sign``/``verify``, checked against
independent HMAC/ed25519 computations, the Standard Webhooks test vector and the reference
``standardwebhooks`` package."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as TheirError

import codeq.webhooks
from codeq.webhooks import (
    WebhookVerificationError,
    generate_secret,
    generate_signing_key,
    key_bytes,
    sign,
    verify,
)

BODY = b'{"event":"task.completed","id":"t-1","n":1}'
MSG_ID = "msg_2Zc4kH0x"
TS = 1_700_000_000

# The Standard Webhooks specification's published vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def _entries(headers: dict[str, str], version: str) -> list[str]:
    return [
        e.split(",", 1)[1]
        for e in headers["webhook-signature"].split()
        if e.split(",")[0] == version
    ]


def _b64_hmac(key: bytes, data: bytes) -> str:
    return base64.b64encode(hmac.new(key, data, hashlib.sha256).digest()).decode()


# --- the contract, computed independently ----------------------------------------------------


def test_the_standard_webhooks_test_vector() -> None:
    headers = sign(VECTOR_BODY, secrets=[VECTOR_SECRET], msg_id=VECTOR_ID, timestamp=VECTOR_TS)
    assert headers["webhook-signature"] == VECTOR_SIGNATURE
    verify(headers, VECTOR_BODY, VECTOR_SECRET, now=VECTOR_TS)


def test_sign_returns_both_header_sets() -> None:
    headers = sign(BODY, secrets=[generate_secret()], msg_id=MSG_ID, timestamp=TS)
    assert set(headers) == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "X-CodeQ-Timestamp",
        "X-CodeQ-Signature",
    }
    assert headers["webhook-id"] == MSG_ID
    assert headers["webhook-timestamp"] == headers["X-CodeQ-Timestamp"] == str(TS)


def test_timestamp_defaults_to_now() -> None:
    before = int(time.time())
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID)
    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())
    verify(headers, BODY, "s")


def test_a_whsec_secret_signs_with_its_decoded_bytes() -> None:
    raw = bytes(range(32))
    secret = "whsec_" + base64.b64encode(raw).decode()
    headers = sign(BODY, secrets=[secret], msg_id=MSG_ID, timestamp=TS)
    assert _entries(headers, "v1") == [_b64_hmac(raw, f"{MSG_ID}.{TS}.".encode() + BODY)]
    expected_legacy = hmac.new(raw, f"{TS}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert headers["X-CodeQ-Signature"] == expected_legacy


@pytest.mark.parametrize("secret", ["plain-secret", "sécret-ünïcode", "whsec"])
def test_any_other_secret_signs_with_its_utf8_bytes(secret: str) -> None:
    headers = sign(BODY, secrets=[secret], msg_id=MSG_ID, timestamp=TS)
    key = secret.encode("utf-8")
    assert key_bytes(secret) == key
    assert _entries(headers, "v1") == [_b64_hmac(key, f"{MSG_ID}.{TS}.".encode() + BODY)]
    assert (
        headers["X-CodeQ-Signature"]
        == hmac.new(key, f"{TS}.".encode() + BODY, hashlib.sha256).hexdigest()
    )
    verify(headers, BODY, secret, now=TS)


def test_legacy_header_is_lowercase_hex_of_ts_dot_body() -> None:
    secret = "legacy-secret"
    headers = sign(BODY, secrets=[secret], msg_id=MSG_ID, timestamp=TS)
    signed = str(TS).encode() + b"." + BODY
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    assert headers["X-CodeQ-Signature"] == expected
    assert expected == expected.lower() and len(expected) == 64


def test_an_unpadded_whsec_secret_is_accepted() -> None:
    raw = b"\x01" * 31  # base64 of 31 bytes ends in one "="
    padded = "whsec_" + base64.b64encode(raw).decode()
    assert key_bytes(padded.rstrip("=")) == key_bytes(padded) == raw


@pytest.mark.parametrize("secret", ["whsec_not*base64", "whsec_", ""])
def test_a_bad_or_empty_secret_is_a_value_error(secret: str) -> None:
    with pytest.raises(ValueError, match="secret"):
        sign(BODY, secrets=[secret], msg_id=MSG_ID, timestamp=TS)


def test_sign_needs_a_secret_and_a_sequence() -> None:
    with pytest.raises(ValueError, match="at least one secret"):
        sign(BODY, secrets=[], msg_id=MSG_ID, timestamp=TS)
    with pytest.raises(TypeError, match="sequence"):
        sign(BODY, secrets="whsec_abc", msg_id=MSG_ID, timestamp=TS)


# --- round trips and rotation ----------------------------------------------------------------


@pytest.mark.parametrize(
    "secret", [generate_secret(), "a-plain-string-secret"], ids=["generated", "plain"]
)
def test_round_trip(secret: str) -> None:
    headers = sign(BODY, secrets=[secret], msg_id=MSG_ID, timestamp=TS)
    verify(headers, BODY, secret, now=TS)
    verify(headers, BODY, [secret], now=TS)


def test_rotation_signs_once_per_secret_and_either_verifies() -> None:
    current, previous = generate_secret(), generate_secret()
    headers = sign(BODY, secrets=[current, previous], msg_id=MSG_ID, timestamp=TS)
    content = f"{MSG_ID}.{TS}.".encode() + BODY
    assert _entries(headers, "v1") == [
        _b64_hmac(key_bytes(current), content),
        _b64_hmac(key_bytes(previous), content),
    ]
    verify(headers, BODY, current, now=TS)
    verify(headers, BODY, previous, now=TS)
    verify(headers, BODY, [generate_secret(), previous], now=TS)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(headers, BODY, generate_secret(), now=TS)


def test_the_legacy_header_uses_the_first_secret() -> None:
    current, previous = "current", "previous"
    headers = sign(BODY, secrets=[current, previous], msg_id=MSG_ID, timestamp=TS)
    legacy = {k: v for k, v in headers.items() if k.startswith("X-CodeQ")}
    verify(legacy, BODY, current, now=TS)
    with pytest.raises(WebhookVerificationError):
        verify(legacy, BODY, previous, now=TS)


# --- tampering, freshness, header handling ---------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("body", None),
        ("webhook-id", "msg_other"),
        ("webhook-timestamp", str(TS + 1)),
        ("webhook-signature", "v1," + base64.b64encode(b"\0" * 32).decode()),
    ],
)
def test_tampering_fails(field: str, value: str | None) -> None:
    secret = generate_secret()
    headers = sign(BODY, secrets=[secret], msg_id=MSG_ID, timestamp=TS)
    body = BODY
    if field == "body":
        body = BODY.replace(b'"n":1', b'"n":2')
    else:
        assert value is not None
        headers[field] = value
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(headers, body, secret, now=TS)


@pytest.mark.parametrize(("field", "value"), [("body", None), ("X-CodeQ-Timestamp", str(TS - 1))])
def test_tampering_with_the_legacy_pair_fails(field: str, value: str | None) -> None:
    headers = sign(BODY, secrets=["s3cret"], msg_id=MSG_ID, timestamp=TS)
    legacy = {k: v for k, v in headers.items() if k.startswith("X-CodeQ")}
    body = BODY + b" " if field == "body" else BODY
    if value is not None:
        legacy[field] = value
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(legacy, body, "s3cret", now=TS)


@pytest.mark.parametrize("legacy_only", [False, True])
@pytest.mark.parametrize(
    ("offset", "ok", "message"),
    [
        (0, True, ""),
        (300, True, ""),
        (-300, True, ""),
        (301, False, "too old"),
        (-301, False, "too new"),
        (86_400, False, "too old"),
        (-86_400, False, "too new"),
    ],
)
def test_freshness(legacy_only: bool, offset: int, ok: bool, message: str) -> None:
    """``offset``: how long after signing the receiver checks (negative: the sender's clock is
    ahead)."""
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS)
    if legacy_only:
        headers = {k: v for k, v in headers.items() if k.startswith("X-CodeQ")}
    if ok:
        verify(headers, BODY, "s", now=TS + offset)
    else:
        with pytest.raises(WebhookVerificationError, match=message):
            verify(headers, BODY, "s", now=TS + offset)


def test_tolerance_is_configurable() -> None:
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS)
    verify(headers, BODY, "s", now=TS + 3_000, tolerance=3_600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(headers, BODY, "s", now=TS + 11, tolerance=10)


def test_a_freshly_signed_message_verifies_against_the_clock() -> None:
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID)
    verify(headers, BODY, "s")
    stale = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=int(time.time()) - 600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(stale, BODY, "s")


@pytest.mark.parametrize("raw", ["", "abc", "1.5", " ", "1_700_000_000", "9" * 5000, "-5"])
def test_a_malformed_timestamp_fails(raw: str) -> None:
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS)
    headers["webhook-timestamp"] = raw
    with pytest.raises(WebhookVerificationError, match="timestamp"):
        verify(headers, BODY, "s", now=TS)


def test_header_names_are_case_insensitive() -> None:
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS)
    verify({k.upper(): v for k, v in headers.items()}, BODY, "s", now=TS)
    legacy = {k.lower(): v for k, v in headers.items() if k.startswith("X-CodeQ")}
    verify(legacy, BODY, "s", now=TS)


def test_standard_headers_are_preferred_over_the_legacy_pair() -> None:
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS)
    headers["webhook-signature"] = "v1," + base64.b64encode(b"x" * 32).decode()
    # The legacy pair is still valid, but a present webhook-signature decides.
    with pytest.raises(WebhookVerificationError, match="webhook-signature"):
        verify(headers, BODY, "s", now=TS)


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ({"webhook-id"}, "webhook-id"),
        ({"webhook-timestamp"}, "webhook-timestamp"),
        ({"webhook-id", "webhook-timestamp"}, "webhook-id, webhook-timestamp"),
        ({"webhook-signature", "X-CodeQ-Signature"}, "X-CodeQ-Signature"),
        ({"webhook-signature", "X-CodeQ-Timestamp"}, "X-CodeQ-Timestamp"),
        ({"webhook-signature", "X-CodeQ-Signature", "X-CodeQ-Timestamp"}, "missing signature"),
    ],
)
def test_missing_headers_are_named(drop: set[str], message: str) -> None:
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS)
    kept = {k: v for k, v in headers.items() if k not in drop}
    with pytest.raises(WebhookVerificationError, match=message):
        verify(kept, BODY, "s", now=TS)


@pytest.mark.parametrize(
    "signature", ["", "v1", "v1,", "v1,!!!", "v1,é", "v2,abc", "garbage", "v1,a,b"]
)
def test_junk_signature_entries_fail_cleanly(signature: str) -> None:
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS)
    headers["webhook-signature"] = signature
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(headers, BODY, "s", now=TS)


@pytest.mark.parametrize("signature", ["", "zz", "é" * 64, "00" * 32])
def test_junk_legacy_signatures_fail_cleanly(signature: str) -> None:
    headers = {"X-CodeQ-Timestamp": str(TS), "X-CodeQ-Signature": signature}
    with pytest.raises(WebhookVerificationError):
        verify(headers, BODY, "s", now=TS)


def test_junk_entries_do_not_hide_a_good_one() -> None:
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS)
    headers["webhook-signature"] = "v1,!!! v9,abc  v1a,xyz " + headers["webhook-signature"]
    verify(headers, BODY, "s", now=TS)


def test_the_verification_error_is_a_value_error() -> None:
    assert issubclass(WebhookVerificationError, ValueError)


# --- ed25519 (v1a) ---------------------------------------------------------------------------


def test_generated_keys_have_the_documented_shape() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert generate_secret() != secret
    private, public = generate_signing_key()
    assert private.startswith("whsk_") and len(base64.b64decode(private[5:])) == 32
    assert public.startswith("whpk_") and len(base64.b64decode(public[5:])) == 32
    assert generate_signing_key() != (private, public)


def test_v1a_signs_the_same_content_with_ed25519() -> None:
    private, public = generate_signing_key()
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS, ed25519_key=private)
    entries = headers["webhook-signature"].split()
    assert [e.split(",")[0] for e in entries] == ["v1", "v1a"]
    # Independently, with cryptography directly: raises InvalidSignature on mismatch.
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public[5:]))
    key.verify(base64.b64decode(_entries(headers, "v1a")[0]), f"{MSG_ID}.{TS}.".encode() + BODY)


def test_v1a_verifies_with_the_public_key_and_fails_with_another() -> None:
    private, public = generate_signing_key()
    _, other_public = generate_signing_key()
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS, ed25519_key=private)
    # A receiver without the HMAC secret relies on the v1a entry alone.
    verify(headers, BODY, [], public_key=public, now=TS)
    verify(headers, BODY, "not-the-secret", public_key=public, now=TS)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(headers, BODY, [], public_key=other_public, now=TS)
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(headers, BODY + b"x", [], public_key=public, now=TS)


def test_v1a_is_ignored_without_a_public_key() -> None:
    private, _ = generate_signing_key()
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS, ed25519_key=private)
    headers["webhook-signature"] = " ".join(f"v1a,{e}" for e in _entries(headers, "v1a"))
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(headers, BODY, "s", now=TS)


@pytest.mark.parametrize(
    "key",
    [
        "whpk_" + base64.b64encode(b"\1" * 32).decode(),  # wrong kind
        "whsk_" + base64.b64encode(b"\1" * 31).decode(),
        "whsk_***",
        "whsec_" + base64.b64encode(b"\1" * 32).decode(),
    ],
)
def test_a_bad_signing_key_is_a_value_error(key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS, ed25519_key=key)


@pytest.mark.parametrize(
    "key",
    ["whsk_" + base64.b64encode(b"\1" * 32).decode(), "whpk_abc", "whpk_***"],
)
def test_a_bad_public_key_is_a_value_error(key: str) -> None:
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS)
    with pytest.raises(ValueError, match="key"):
        verify(headers, BODY, "s", public_key=key, now=TS)


def test_verify_needs_a_secret_or_a_public_key() -> None:
    headers = sign(BODY, secrets=["s"], msg_id=MSG_ID, timestamp=TS)
    with pytest.raises(ValueError, match="secret or a public key"):
        verify(headers, BODY, [], now=TS)


# --- interoperability with the reference ``standardwebhooks`` package -----------------------


def test_the_reference_library_accepts_our_signatures() -> None:
    secret = generate_secret()
    headers = sign(BODY, secrets=[secret], msg_id=MSG_ID)  # it checks against the real clock
    assert Webhook(secret).verify(BODY, headers) == {"event": "task.completed", "id": "t-1", "n": 1}


def test_the_reference_library_accepts_rotated_and_v1a_entries() -> None:
    current, previous = generate_secret(), generate_secret()
    private, _ = generate_signing_key()
    headers = sign(BODY, secrets=[current, previous], msg_id=MSG_ID, ed25519_key=private)
    Webhook(current).verify(BODY, headers)
    Webhook(previous).verify(BODY, headers)
    with pytest.raises(TheirError):
        Webhook(generate_secret()).verify(BODY, headers)
    with pytest.raises(TheirError):
        Webhook(current).verify(BODY + b" ", headers)


def test_we_accept_the_reference_librarys_signatures() -> None:
    secret = generate_secret()
    when = datetime.fromtimestamp(TS, tz=UTC)
    payload = BODY.decode()
    headers = {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TS),
        "webhook-signature": Webhook(secret).sign(MSG_ID, when, payload),
    }
    verify(headers, payload.encode(), secret, now=TS)
    assert (
        headers["webhook-signature"]
        == sign(BODY, secrets=[secret], msg_id=MSG_ID, timestamp=TS)["webhook-signature"]
    )
    with pytest.raises(WebhookVerificationError):
        verify(headers, payload.encode(), generate_secret(), now=TS)


def test_the_reference_library_agrees_on_the_test_vector() -> None:
    when = datetime.fromtimestamp(VECTOR_TS, tz=UTC)
    assert Webhook(VECTOR_SECRET).sign(VECTOR_ID, when, VECTOR_BODY.decode()) == VECTOR_SIGNATURE


# --- public surface --------------------------------------------------------------------------


def test_public_surface() -> None:
    assert sorted(codeq.webhooks.__all__) == [
        "WebhookVerificationError",
        "generate_secret",
        "generate_signing_key",
        "headers_problem",
        "key_bytes",
        "public_key_of",
        "secret_problem",
        "sign",
        "target_problem",
        "verify",
    ]
    for name in codeq.webhooks.__all__:
        assert hasattr(codeq.webhooks, name), name


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://hooks.example.com/x?y=1", None),
        ("http://127.0.0.1:9/x", None),
        ("http://[::1]:9/x", None),
        ("http://bücher.example/x", None),
        ("ftp://hooks.example.com/x", "must be an http(s) URL"),
        ("http:///x", "must be an http(s) URL with a host"),
        ("http://x.example:99999/", "must be an http(s) URL with a valid port"),
        ("http://x.example:0/", "must not use port 0"),
        ("http://a..b.example/", "must have a valid host name"),
        ("http://" + "a" * 64 + ".example/", "must have a valid host name"),
    ],
)
def test_target_problem(url: str, problem: str | None) -> None:
    assert codeq.webhooks.target_problem(url) == problem
