"""Webhook signatures (spec 03 "Signatures"): Standard Webhooks and the original codeQ's headers.

``sign()`` is what the deliverers put on every request; ``verify()`` is for receivers::

    from codeq.webhooks import verify
    verify(request.headers, raw_body, secret="whsec_...")   # raises WebhookVerificationError

Headers ``sign()`` returns:

- ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``: space-separated
  ``v1,<base64 HMAC-SHA256(key, f"{id}.{ts}.{body}")>`` entries, one per secret (current first,
  then rotated secrets still in their grace period), and one ``v1a,<base64 ed25519>`` entry
  over the same content per ed25519 signing key (``whsk_``) given (an endpoint with
  ``signatureScheme: ed25519`` signs with its keys alone, no HMAC);
- ``X-CodeQ-Timestamp`` and ``X-CodeQ-Signature`` = lowercase hex
  HMAC-SHA256(key of the first secret, f"{ts}.{body}"), for receivers of the original: signed
  with the newest secret only, never with a rotated one (a receiver of the original checks one
  signature), and absent when there is no HMAC secret (ed25519 only).

Key bytes: a ``whsec_<base64>`` secret signs with the decoded bytes, any other string with its
UTF-8 bytes (as the original did); both header sets use the same key bytes. Ed25519 keys are
``whsk_<base64 32-byte seed>`` (private) and ``whpk_<base64 32-byte key>`` (public).

Where webhooks may go: :func:`target_problem` is the one check of a webhook URL (the API runs
it at create/update, the deliverers before sending), :func:`address_problem` the one check of
an address (the deliverers run it on every address a name resolves to, as they connect).
What a subscriber may choose: :func:`secret_problem` checks a secret it brings,
:func:`headers_problem` the custom headers of an endpoint (never one of ours:
:func:`reserved_header`). What an operator configures: :func:`hmac_key_problem` checks the
global secrets (``webhookHmacSecret``, ``webhookHmacPreviousSecrets``), :func:`parse_proxy_url`
reads ``webhookProxyUrl`` (the settings' check and the proxy transport's reading of it).

Pure functions, no I/O. Errors: a bad key or secret is a ``ValueError``; a request that fails
verification raises :class:`WebhookVerificationError` (also a ``ValueError``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import ipaddress
import os
import re
import secrets as _secrets
import time
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
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

_SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
_SIGNING_KEY_PREFIX = "whsk_"
_PUBLIC_KEY_PREFIX = "whpk_"
# Plain unix seconds; int() alone would also take " 12 ", "1_2" and 4,000-digit numbers.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")

MAX_URL_LENGTH: Final = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# C0 and C1 controls, DEL, and every kind of space: urlsplit drops CR/LF/TAB silently, and a
# sender must never write them into a request line.
_BAD_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f\s]")
# What inet_aton (and so a resolver) reads as an IPv4 address although it is no dotted quad.
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOCALHOST = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))

#: A secret a subscriber brings: ``whsec_`` + base64 of this many bytes (Standard Webhooks).
MIN_SECRET_BYTES: Final = 24
MAX_SECRET_BYTES: Final = 64

#: Custom headers of an endpoint: how many, and how long names, values and all of them may be.
MAX_HEADERS: Final = 20
MAX_HEADER_NAME: Final = 128
MAX_HEADER_VALUE: Final = 2048
MAX_HEADERS_BYTES: Final = 8192
#: An RFC 9110 token: what a header name is (also the sender's check of every name it writes).
HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# A value is printable ASCII, spaces and tabs inside.
_HEADER_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e\t]*[\x21-\x7e])?")
# Headers codeQ writes itself (the signature, the message's framing, the attempt, the trace)
# or that change how the request travels: a custom header may not set, repeat or shadow them.
_RESERVED_HEADERS: Final = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "host",
        "content-length",
        "content-type",
        "content-encoding",  # the body is sent as it is: a receiver would try to decode it
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-connection",
        "user-agent",
        "traceparent",
        "tracestate",
    }
)
_RESERVED_PREFIX = "x-codeq-"


class WebhookVerificationError(ValueError):
    """The request is not a genuine, fresh codeQ webhook."""


def _b64decode(text: str, what: str) -> bytes:
    # Padding is optional, as in the Standard Webhooks reference library.
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} must be base64 after the prefix") from exc


def _plain_problem(ip: IPAddress) -> str | None:
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared address space"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    return None


def _embedded(ip: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]] | None:
    """The IPv4 addresses a translation address carries: packets to it end up there."""
    if ip in _SIX_TO_FOUR and ip.sixtofour is not None:
        return "6to4", [ip.sixtofour]
    if ip in _TEREDO and ip.teredo is not None:
        return "Teredo", list(ip.teredo)  # (server, client)
    if ip in _NAT64:
        return "NAT64", [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    return None


def address_problem(ip: IPAddress, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """What kind of address ``ip`` is when webhooks may not go there ("loopback", "private",
    "6to4 (loopback)", ...), or None.

    Refused unless inside one of ``allowed`` (``webhookAllowedCidrs``): loopback, link-local
    (cloud metadata), multicast, unspecified, shared (CGNAT), private and reserved addresses.
    An IPv4-mapped IPv6 address is judged as its IPv4 address; a 6to4 (2002::/16), Teredo
    (2001::/32) or NAT64 (64:ff9b::/96) address by the IPv4 addresses it carries.
    """
    if any(ip.version == net.version and ip in net for net in allowed):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_problem(ip.ipv4_mapped, allowed)
        embedded = _embedded(ip)
        if embedded is not None:
            kind, inner = embedded
            for v4 in inner:
                reason = _plain_problem(v4)
                if reason is not None:
                    return f"{kind} ({reason})"
            return None
    return _plain_problem(ip)


@functools.lru_cache(maxsize=64)
def _networks(cidrs: tuple[str, ...], loopback: bool) -> tuple[IPNetwork, ...]:
    found = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    if loopback:
        found += [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]
    return tuple(found)


def allowed_networks(cidrs: Iterable[str], *, loopback: bool = False) -> tuple[IPNetwork, ...]:
    """The networks of ``webhookAllowedCidrs`` (``ValueError`` on a bad one), plus the loopback
    ranges when ``loopback`` (dev mode: webhooks to this machine are the point)."""
    return _networks(tuple(cidrs), loopback)


def _literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # without an IPv6 zone
    except ValueError:
        return None


def _address_check(host: str, allowed: Sequence[IPNetwork]) -> str | None:
    name = host.removesuffix(".")  # "localhost." is the same name
    if name == "localhost" or name.endswith(".localhost"):  # always loopback (RFC 6761)
        if all(address_problem(ip, allowed) for ip in _LOCALHOST):
            return "must not be a loopback address"
        return None
    ip = _literal_address(host)
    reason = None if ip is None else address_problem(ip, allowed)
    return None if reason is None else f"must not be a {reason} address"


def target_problem(
    url: str, *, require_https: bool = False, allowed: Sequence[IPNetwork] | None = None
) -> str | None:
    """Why ``url`` cannot be a webhook target, or None: the one check of every webhook URL
    (task webhooks, worker subscriptions, endpoints), at create/update and before sending.

    Always: at most 2048 characters with no spaces or control characters (CR, LF, NUL, ...),
    ``http``/``https`` (only ``https`` with ``require_https``), a host that is a valid name or
    IP address (IPv4 in dotted decimal: ``127.1`` or ``2130706433`` would reach 127.0.0.1),
    a valid port other than 0. With ``allowed`` (the networks of ``webhookAllowedCidrs``, see
    :func:`allowed_networks`) an IP-address or ``localhost`` host must also pass
    :func:`address_problem`. Where a name resolves to is checked by the sender at every
    connection (its addresses are pinned), not here: names change.

    The answer completes "<field> ...", e.g. ``"must be an http(s) URL"``.
    """
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters"
    if _BAD_CHARS.search(url) or (
        not url.isascii() and any(unicodedata.category(c) == "Cf" for c in url)
    ):
        return "must not contain spaces or control characters"
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError:
        return "must be an http(s) URL with a valid port"
    if scheme not in ("http", "https"):
        return "must be an http(s) URL"
    if require_https and scheme != "https":
        return "must be an https URL (webhookRequireHttps)"
    if not host:
        return "must be an http(s) URL with a host"
    if "\\" in parts.netloc:
        return "must not have a backslash in its host part"
    if port == 0:
        return "must not use port 0"
    if ":" in host:  # from a bracketed IPv6 literal
        if _literal_address(host) is None:
            return "must have a valid IPv6 address"
    elif _literal_address(host) is None:  # a name
        if _NUMERIC_HOST.fullmatch(host):
            return "must write an IPv4 address as four decimal numbers"
        try:
            host.encode("idna")
        except UnicodeError:
            return "must have a valid host name"
    if allowed is not None:
        return _address_check(host, allowed)
    return None


@dataclass(frozen=True, slots=True, repr=False)
class ProxyURL:
    """``webhookProxyUrl`` read: where the proxy listens and its user info, percent-decoded
    (never shown: ``repr`` masks it)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        shown = "***@" if self.username is not None else ""
        return f"ProxyURL(http://{shown}{self.host}:{self.port})"


_PROXY_FORMS: Final = "expected http://host:port or http://user:password@host:port"


def parse_proxy_url(url: str) -> ProxyURL:
    """``webhookProxyUrl`` read: ``http://[user[:password]@]host:port`` and no more (no TLS to
    the proxy: TLS to the target goes through its tunnel; no path, query or fragment). The
    one reading of it: the settings check it with this at load, the proxy transport connects
    with what it returns. ``ValueError`` with an "expected ..." phrase that never holds the
    user info."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a bad port
    except ValueError:
        raise ValueError(_PROXY_FORMS) from None
    if not url.lower().startswith("http://"):
        raise ValueError(
            f"{_PROXY_FORMS} (an http:// proxy: TLS to the target goes through its tunnel)"
        )
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError(_PROXY_FORMS)
    if not parts.hostname or port is None or not 1 <= port <= 65535:
        raise ValueError(_PROXY_FORMS)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(_PROXY_FORMS)
    username = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    return ProxyURL(host=parts.hostname, port=port, username=username, password=password)


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


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` cannot be a secret a subscriber brings, or None: it must be ``whsec_``
    followed by the base64 (padding optional) of 24 to 64 bytes. The answer completes
    "secret ...", e.g. ``"must start with whsec_"``."""
    if not secret.startswith(_SECRET_PREFIX):
        return "must start with whsec_ (whsec_ + base64 of 24 to 64 random bytes)"
    try:
        key = _b64decode(secret[len(_SECRET_PREFIX) :], "a whsec_ secret")
    except ValueError:
        return "must be whsec_ followed by base64"
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        return (
            f"must hold {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes after whsec_ "
            f"(it holds {len(key)})"
        )
    return None


def hmac_key_problem(secret: str) -> str | None:
    """Why ``secret`` cannot sign with HMAC, or None: the check of the global secrets
    (``webhookHmacSecret``, ``webhookHmacPreviousSecrets``) as :func:`sign` will read them
    (:func:`key_bytes`), so a bad one stops the start rather than every attempt. Any text
    signs with its UTF-8 bytes; a ``whsec_`` secret must hold base64; an ed25519 signing key
    (``whsk_``) is not an HMAC secret. The answer completes "... but it ...", and never holds
    the secret."""
    if is_signing_key(secret):
        return "is an ed25519 signing key (whsk_...)"
    try:
        key_bytes(secret)
    except ValueError:
        return "starts with whsec_ and holds no base64 key after it"
    return None


def reserved_header(name: str) -> bool:
    """Whether ``name`` is a header codeQ sets itself (the signature headers, ``X-CodeQ-*``,
    the message's framing, ``User-Agent``, the trace context): a custom header may not."""
    lower = name.lower()
    return lower in _RESERVED_HEADERS or lower.startswith(_RESERVED_PREFIX)


def has_user_info(url: str) -> bool:
    """Whether ``url`` carries user info (``user:password@host``): the sender sends it as
    ``Authorization: Basic`` (deliverers/http1.py), so a custom ``Authorization`` never goes
    with it."""
    try:
        return urlsplit(url).username is not None
    except ValueError:  # no URL anything is sent to
        return False


def headers_problem(headers: Mapping[str, str], *, url: str | None = None) -> str | None:
    """Why ``headers`` cannot be an endpoint's custom headers, or None: the one check of them.

    At most :data:`MAX_HEADERS`; each name an RFC 9110 token of at most
    :data:`MAX_HEADER_NAME` characters, not :func:`reserved_header` and not repeated in
    another case; each value printable ASCII (spaces and tabs inside, never CR, LF, NUL or
    another control character), at most :data:`MAX_HEADER_VALUE` characters; all of them at
    most :data:`MAX_HEADERS_BYTES`. With ``url`` (given in the same request): no
    ``Authorization`` when it has user info (:func:`has_user_info`; set apart, the sender drops
    the header instead). The answer completes "headers ...".
    """
    if len(headers) > MAX_HEADERS:
        return f"must be at most {MAX_HEADERS} headers"
    seen: set[str] = set()
    size = 0
    for name, value in headers.items():
        shown = repr(name[:64])
        if not HEADER_NAME.fullmatch(name) or len(name) > MAX_HEADER_NAME:
            return (
                f"{shown} is not a header name (an RFC 9110 token of at most "
                f"{MAX_HEADER_NAME} characters)"
            )
        if reserved_header(name):
            return f"{shown} is set by codeQ and cannot be a custom header"
        if name.lower() in seen:
            return f"{shown} is given twice"
        seen.add(name.lower())
        if len(value) > MAX_HEADER_VALUE:
            return f"the value of {shown} must be at most {MAX_HEADER_VALUE} characters"
        if value and not _HEADER_VALUE.fullmatch(value):
            return (
                f"the value of {shown} must be printable ASCII without control characters "
                "(no CR, LF or NUL) nor spaces at either end"
            )
        size += len(name) + len(value) + 4  # "Name: value\r\n"
    if size > MAX_HEADERS_BYTES:
        return f"must be at most {MAX_HEADERS_BYTES} bytes in all"
    if url is not None and "authorization" in seen and has_user_info(url):
        return (
            "'Authorization' cannot go with a url that has user info (user:password@): "
            "the url's credentials are sent as Authorization"
        )
    return None


#: the development signing secret's file in ``dataDir``
DEV_SIGNING_FILE = "webhook-secret"


def development_secret(data_dir: str) -> str:
    """The development signing secret kept in ``data_dir``: made once (readable by its owner
    only) and read from then on, so webhooks are signed by default and receivers keep
    verifying across restarts. Several processes starting at once agree on one: the file
    appears whole (written aside, then linked into place) or not at all."""
    path = Path(data_dir) / DEV_SIGNING_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{DEV_SIGNING_FILE}.{os.getpid()}.{_secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(generate_secret() + "\n")
    try:
        os.link(aside, path)  # fails when another process was first: theirs stands
    except FileExistsError:
        pass
    finally:
        aside.unlink()
    return path.read_text().strip()


def signing_secret(hmac_secret: str | None, *, unsigned: bool, data_dir: str) -> str | None:
    """What result callbacks and notifications are signed with: ``webhookHmacSecret``; else,
    unless ``webhookUnsigned`` says otherwise, the development secret of ``data_dir``."""
    if hmac_secret:
        return hmac_secret
    if unsigned:
        return None
    return development_secret(data_dir)


def generate_signing_key() -> tuple[str, str]:
    """A new ed25519 key pair: (``whsk_<base64 seed>``, ``whpk_<base64 public key>``)."""
    private = _SIGNING_KEY_PREFIX + base64.b64encode(_secrets.token_bytes(32)).decode()
    return private, public_key_of(private)


def public_key_of(signing_key: str) -> str:
    """The public key (``whpk_...``) of an ed25519 signing key (``whsk_...``): what a receiver
    verifies ``v1a`` entries with. ``ValueError`` for anything but a signing key."""
    public = _signing_key(signing_key).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return _PUBLIC_KEY_PREFIX + base64.b64encode(public).decode()


def is_signing_key(key: str) -> bool:
    """Whether ``key`` is an ed25519 signing key (``whsk_``) rather than an HMAC secret."""
    return key.startswith(_SIGNING_KEY_PREFIX)


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
    ed25519_key: str | Sequence[str] | None = None,
) -> dict[str, str]:
    """Every signature header for ``body``, the exact bytes sent.

    ``secrets`` gives one ``v1,`` entry each, in order: the current one first, then rotated
    ones in their overlap window, so a receiver holding any of them verifies. Only the first
    (the newest) keys ``X-CodeQ-Signature``: the original's header carries one signature.
    ``ed25519_key`` (one ``whsk_...`` key or several, during a rotation) adds one ``v1a,``
    entry each; with keys and no secrets the message is signed with ed25519 alone and has no
    ``X-CodeQ-*`` pair. ``timestamp`` defaults to now, in unix seconds.
    """
    if isinstance(secrets, str):
        raise TypeError("secrets is a sequence of secrets, not one string")
    signing_keys = [ed25519_key] if isinstance(ed25519_key, str) else list(ed25519_key or ())
    if not secrets and not signing_keys:
        raise ValueError("at least one secret (or an ed25519 signing key) is needed to sign")
    ts = int(time.time()) if timestamp is None else timestamp
    keys = [key_bytes(s) for s in secrets]
    content = _signed_content(msg_id, ts, body)
    entries = [f"v1,{base64.b64encode(_v1(k, content)).decode()}" for k in keys]
    for private in signing_keys:
        signature = _signing_key(private).sign(content)
        entries.append(f"v1a,{base64.b64encode(signature).decode()}")
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(entries),
    }
    if keys:
        headers["X-CodeQ-Timestamp"] = str(ts)
        headers["X-CodeQ-Signature"] = _legacy(keys[0], ts, body).hex()
    return headers


def _ed25519_valid(verifier: Ed25519PublicKey, signature: bytes, content: bytes) -> bool:
    try:
        verifier.verify(signature, content)
    except InvalidSignature:
        return False
    return True


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
    public_key: str | Sequence[str] | None = None,
) -> None:
    """Check a received webhook, or raise :class:`WebhookVerificationError`.

    Uses the Standard Webhooks headers when ``webhook-signature`` is present, else the
    original's ``X-CodeQ-Timestamp``/``X-CodeQ-Signature`` pair; names are case-insensitive.
    Passes when any ``v1`` entry matches any of ``secret`` (one secret or several, e.g. during
    rotation) or, with ``public_key`` (``whpk_...``, one or several), any ``v1a`` entry
    verifies. The timestamp must be within ``tolerance`` seconds of ``now`` (default: the
    current time), either way.
    """
    h = {k.lower(): v for k, v in headers.items()}
    keys = [key_bytes(s) for s in ([secret] if isinstance(secret, str) else secret)]
    publics = [public_key] if isinstance(public_key, str) else list(public_key or ())
    verifiers = [_public_key(p) for p in publics]
    if not keys and not verifiers:
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
            if version == "v1a" and any(_ed25519_valid(v, given, content) for v in verifiers):
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
