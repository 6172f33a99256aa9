"""The ``jwks`` provider: JWT bearer tokens verified locally against a JSON Web Key Set.

    workerAuthConfig:
      jwksUrl: https://idp.example.com/.well-known/jwks.json   # or jwksFile: /etc/codeq/jwks.json
      issuer: https://idp.example.com/          # optional; a string or a list; checked when set
      audience: codeq-worker                    # a string or a list; see below
      algorithms: [RS256, ES256, EdDSA]         # the default; never none, never HS*
      jwksMinRefreshSeconds: 60                 # unknown kid: refetch at most this often
      jwksMaxAgeSeconds: 3600                   # refetch keys older than this (key revocation)
      allowedClockSkewSeconds: 60               # default: the allowedClockSkewSeconds setting
      tenantFromSubject: true                   # default: the tenantFromSubject setting

Verification is PyJWT's ``jwt.decode`` with a one-item algorithm list: the token header's
``alg``, which must be in the allow-list and match the key (``kty``/``crv``, and the JWK's own
``alg`` when it has one). ``exp`` is required; ``nbf``/``iat`` are checked when present; all with
the clock-skew leeway. ``audience`` defaults to ``codeq-worker`` for workers and is required for
producers (a token minted for another service of the same identity provider must not work here).

Keys: a ``jwksFile`` is read once, when the provider is built. A ``jwksUrl`` is fetched with
httpx on first use and cached. A token whose ``kid`` is not in the cache triggers a refetch, at
most once per ``jwksMinRefreshSeconds`` (counted from the last attempt; a failed attempt may be
retried after ``min(5 s, jwksMinRefreshSeconds)``); concurrent requests share one fetch (an
:class:`asyncio.Lock` plus a generation counter). Keys older than ``jwksMaxAgeSeconds`` are
refetched on the next request so a key removed from the set stops working; if that fetch fails
the cached keys stay in use. A token without ``kid`` is accepted only when exactly one cached key
fits its ``alg``.

JWKS entries that are symmetric (``kty: oct``), carry private key material, are not for
signatures (``use`` other than ``sig``) or fit no allowed algorithm are skipped with a warning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeAlias
from urllib.parse import urlsplit

import httpx
import jwt
from jwt.types import Options

from codeq.auth.base import Authenticator, ConfigReader, Side, is_loopback_host
from codeq.auth.identity import Identity, identity_from_claims
from codeq.errors import Unauthorized
from codeq.settings import Settings

__all__ = [
    "DEFAULT_ALGORITHMS",
    "DEFAULT_WORKER_AUDIENCE",
    "SUPPORTED_ALGORITHMS",
    "HttpClientFactory",
    "JwksAuthenticator",
    "KeyTable",
    "parse_jwks",
]

log = logging.getLogger("codeq.auth")

#: Builds the HTTP client used to fetch ``jwksUrl`` (the authenticator closes it in ``aclose``).
HttpClientFactory: TypeAlias = Callable[[], httpx.AsyncClient]

#: kid (``None`` for keys without one) → algorithm → key.
KeyTable: TypeAlias = dict[str | None, dict[str, jwt.PyJWK]]

DEFAULT_ALGORITHMS: Final = ("RS256", "ES256", "EdDSA")
DEFAULT_WORKER_AUDIENCE: Final = "codeq-worker"

#: Asymmetric algorithms that may be allowed, with the key type (and curves) each needs.
SUPPORTED_ALGORITHMS: Final[Mapping[str, tuple[str, frozenset[str] | None]]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}

CONFIG_KEYS: Final = (
    "jwksUrl",
    "jwksFile",
    "issuer",
    "audience",
    "algorithms",
    "jwksMinRefreshSeconds",
    "jwksMaxAgeSeconds",
    "allowedClockSkewSeconds",
    "tenantFromSubject",
)
DEFAULT_MIN_REFRESH_SECONDS: Final = 60.0
DEFAULT_MAX_AGE_SECONDS: Final = 3600.0
FAILED_FETCH_RETRY_SECONDS: Final = 5.0
FETCH_TIMEOUT_SECONDS: Final = 10.0
MAX_JWKS_BYTES: Final = 1024 * 1024
# identity encoding: the size cap then bounds what is parsed, not only what was transferred
_FETCH_HEADERS: Final = {"Accept": "application/json", "Accept-Encoding": "identity"}
_PRIVATE_MEMBERS: Final = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


class _FetchError(Exception):
    """The key set could not be fetched or parsed; the message is for the log."""


def parse_jwks(document: object, algorithms: Sequence[str]) -> tuple[KeyTable, list[str]]:
    """The usable keys of a JWKS document, and why each other entry was skipped.

    Raises ``ValueError`` when the document is not ``{"keys": [...]}``.
    """
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('expected a JSON object {"keys": [...]}')
    table: KeyTable = {}
    skipped: list[str] = []
    for index, jwk in enumerate(document["keys"]):
        label = f"key #{index}"
        if not isinstance(jwk, dict):
            skipped.append(f"{label}: not an object")
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            skipped.append(f"{label}: kid is not a string")
            continue
        label = f"key #{index} (kid {kid!r})"
        kty = jwk.get("kty")
        if kty == "oct":
            skipped.append(f"{label}: symmetric keys are never accepted")
            continue
        if jwk.get("use") not in (None, "sig"):
            skipped.append(f"{label}: not a signature key (use {jwk.get('use')!r})")
            continue
        if any(member in jwk for member in _PRIVATE_MEMBERS):
            skipped.append(f"{label}: holds private key material")
            continue
        declared = jwk.get("alg")
        usable = False
        for alg in algorithms:
            want_kty, curves = SUPPORTED_ALGORITHMS[alg]
            if (declared is not None and declared != alg) or kty != want_kty:
                continue
            if curves is not None and jwk.get("crv") not in curves:
                continue
            if alg in table.get(kid, {}):
                skipped.append(f"{label}: duplicate kid for {alg}")
                usable = True  # not "fits no algorithm"
                continue
            try:
                key = jwt.PyJWK(jwk, algorithm=alg)
            except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
                skipped.append(f"{label}: unreadable ({type(exc).__name__})")
                usable = True
                break
            table.setdefault(kid, {})[alg] = key
            usable = True
        if not usable:
            skipped.append(f"{label}: fits none of the allowed algorithms {list(algorithms)}")
    return table, skipped


class JwksAuthenticator(Authenticator):
    """Verifies JWTs against a key table, refreshed from ``jwks_url`` when one is given."""

    def __init__(
        self,
        *,
        side: Side,
        audience: Sequence[str],
        issuer: Sequence[str] | None = None,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        leeway: float = 60.0,
        tenant_from_subject: bool = True,
        keys: KeyTable | None = None,
        jwks_url: str | None = None,
        min_refresh_seconds: float = DEFAULT_MIN_REFRESH_SECONDS,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        http_client_factory: HttpClientFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if (keys is None) == (jwks_url is None):
            raise ValueError("give exactly one of keys and jwks_url")
        for alg in algorithms:
            if alg not in SUPPORTED_ALGORITHMS:
                raise ValueError(f"algorithm {alg!r} is not allowed")
        if not audience:
            raise ValueError("an audience is required")
        self.side: Side = side
        self._audience = list(audience)
        self._issuer = list(issuer) if issuer else None
        self._algorithms = tuple(algorithms)
        self._leeway = leeway
        self._tenant_from_subject = tenant_from_subject
        self._keys: KeyTable = dict(keys) if keys is not None else {}
        self._url = jwks_url
        self._min_refresh = min_refresh_seconds
        self._max_age = max(max_age_seconds, min_refresh_seconds)
        self._client_factory = http_client_factory or _default_client
        self._client: httpx.AsyncClient | None = None
        self._clock = clock
        self._lock = asyncio.Lock()
        self._generation = 0  # bumped by every fetch attempt
        self._fetched_at: float | None = None  # clock() of the last successful fetch
        self._next_attempt_at = float("-inf")
        self._options: Options = {
            "verify_signature": True,
            "verify_exp": True,
            "verify_nbf": True,
            "verify_iat": True,
            "verify_aud": True,
            "verify_iss": self._issuer is not None,
            "require": ["exp", "iss"] if self._issuer is not None else ["exp"],
            "enforce_minimum_key_length": True,
        }

    # ---- building ----------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        name: str,
        side: Side,
        settings: Settings,
        http_client_factory: HttpClientFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> JwksAuthenticator:
        """Build from a ``jwks`` provider config; raises :class:`AuthConfigError`."""
        reader = ConfigReader(config, name)
        reader.check_known(CONFIG_KEYS)
        algorithms = _algorithms(reader)
        audience = reader.strings("audience")
        if audience is None:
            if side != "worker":
                raise reader.error(
                    "audience",
                    "required for the jwks provider of producers (the 'aud' codeQ's producer "
                    "tokens are issued for)",
                )
            audience = [DEFAULT_WORKER_AUDIENCE]
        min_refresh = reader.number("jwksMinRefreshSeconds")
        min_refresh = DEFAULT_MIN_REFRESH_SECONDS if min_refresh is None else min_refresh
        max_age = reader.number("jwksMaxAgeSeconds", ge=min_refresh)
        skew = reader.number("allowedClockSkewSeconds")
        tenant_from_subject = reader.boolean("tenantFromSubject")
        url = reader.string("jwksUrl")
        file = reader.string("jwksFile")
        if (url is None) == (file is None):
            raise reader.error(None, "the jwks provider needs exactly one of jwksUrl and jwksFile")
        keys: KeyTable | None = None
        if url is not None:
            _check_url(reader, url, settings)
        elif file is not None:
            keys = _read_jwks_file(reader, file, algorithms)
        return cls(
            side=side,
            audience=audience,
            issuer=reader.strings("issuer"),
            algorithms=algorithms,
            leeway=float(settings.allowed_clock_skew_seconds) if skew is None else skew,
            tenant_from_subject=(
                settings.tenant_from_subject if tenant_from_subject is None else tenant_from_subject
            ),
            keys=keys,
            jwks_url=url,
            min_refresh_seconds=min_refresh,
            max_age_seconds=DEFAULT_MAX_AGE_SECONDS if max_age is None else max_age,
            http_client_factory=http_client_factory,
            clock=clock,
        )

    # ---- verifying ---------------------------------------------------------------------------

    async def authenticate(self, token: str) -> Identity:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise Unauthorized("algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("malformed token")
        key = await self._key(kid, alg)
        claims = self._decode(token, key, alg)
        return identity_from_claims(
            claims,
            tenant_from_subject=self._tenant_from_subject,
            producer=self.side == "producer",
            worker=self.side == "worker",
        )

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("token not yet valid") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("bad signature") from None
        except jwt.InvalidAlgorithmError:
            raise Unauthorized("algorithm not allowed") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token has no '{exc.claim}' claim") from None
        except jwt.InvalidKeyError:
            raise Unauthorized("signing key too weak") from None
        except jwt.DecodeError:
            raise Unauthorized("malformed token") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token ({type(exc).__name__})") from None
        return claims

    # ---- keys --------------------------------------------------------------------------------

    def _lookup(self, kid: str | None, alg: str) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid, {}).get(alg)
        fitting = [by_alg[alg] for by_alg in self._keys.values() if alg in by_alg]
        return fitting[0] if len(fitting) == 1 else None

    async def _key(self, kid: str | None, alg: str) -> jwt.PyJWK:
        if self._url is not None and (
            self._fetched_at is None or self._clock() - self._fetched_at >= self._max_age
        ):
            await self._refresh()
        key = self._lookup(kid, alg)
        if key is None and self._url is not None and kid is not None and kid not in self._keys:
            await self._refresh()  # an unknown kid: maybe the keys were rotated
            key = self._lookup(kid, alg)
        if key is None:
            if self._url is not None and self._fetched_at is None:
                raise Unauthorized("signing keys unavailable")
            if kid is not None and kid in self._keys:
                raise Unauthorized("algorithm does not match the key")
            raise Unauthorized("unknown key")
        return key

    async def _refresh(self) -> None:
        """Fetch the key set unless a fetch ran while waiting, or the last one is too recent."""
        generation = self._generation
        async with self._lock:
            if generation != self._generation or self._clock() < self._next_attempt_at:
                return
            await self._fetch()

    async def _fetch(self) -> None:
        assert self._url is not None
        started = self._clock()
        ok = False
        try:
            document = await self._download(self._url)
            table, skipped = parse_jwks(document, self._algorithms)
        except (_FetchError, ValueError) as exc:
            log.warning("fetching the JWKS from %s failed: %s", _url_for_log(self._url), exc)
        else:
            for reason in skipped:
                log.warning("JWKS from %s: %s skipped", _url_for_log(self._url), reason)
            if not table:
                log.warning("JWKS from %s holds no usable key", _url_for_log(self._url))
            self._keys = table
            self._fetched_at = started
            ok = True
        finally:
            self._generation += 1
            wait = self._min_refresh if ok else min(self._min_refresh, FAILED_FETCH_RETRY_SECONDS)
            self._next_attempt_at = started + wait

    async def _download(self, url: str) -> object:
        if self._client is None:
            self._client = self._client_factory()
        body = bytearray()
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_SECONDS):
                async with self._client.stream("GET", url, headers=_FETCH_HEADERS) as response:
                    if response.status_code != 200:
                        raise _FetchError(f"HTTP {response.status_code}")
                    async for chunk in response.aiter_bytes():
                        body.extend(chunk)
                        if len(body) > MAX_JWKS_BYTES:
                            raise _FetchError(f"response larger than {MAX_JWKS_BYTES} bytes")
        except TimeoutError:
            raise _FetchError(f"no complete answer within {FETCH_TIMEOUT_SECONDS:g} s") from None
        except httpx.HTTPError as exc:
            raise _FetchError(type(exc).__name__) from None
        try:
            return json.loads(body)
        except ValueError:
            raise _FetchError("the answer is not JSON") from None

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _default_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False)


def _url_for_log(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # no credentials in the log
    return f"{parts.scheme}://{host}{parts.path}"


def _algorithms(reader: ConfigReader) -> tuple[str, ...]:
    names = reader.strings("algorithms")
    if names is None:
        return DEFAULT_ALGORITHMS
    for alg in names:
        if alg.lower() == "none" or alg.upper().startswith("HS"):
            raise reader.error(
                "algorithms",
                f"'{alg}' is never allowed (unsigned and symmetric algorithms let anyone who "
                "knows the public key forge tokens)",
            )
        if alg not in SUPPORTED_ALGORITHMS:
            raise reader.error(
                "algorithms",
                f"unsupported algorithm '{alg}'; supported: {', '.join(SUPPORTED_ALGORITHMS)}",
            )
    return tuple(dict.fromkeys(names))


def _check_url(reader: ConfigReader, url: str, settings: Settings) -> None:
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        _ = parts.port
    except ValueError:
        raise reader.error("jwksUrl", "not a valid URL") from None
    if parts.scheme not in ("http", "https") or not hostname:
        raise reader.error("jwksUrl", "expected an http:// or https:// URL")
    if parts.scheme == "http" and settings.env == "prod" and not is_loopback_host(hostname):
        raise reader.error(
            "jwksUrl", "must be https in env prod (keys fetched over plain http can be forged)"
        )


def _read_jwks_file(reader: ConfigReader, file: str, algorithms: Sequence[str]) -> KeyTable:
    try:
        with open(file, encoding="utf-8") as fh:
            document = json.load(fh)
    except OSError as exc:
        raise reader.error("jwksFile", f"cannot read {file}: {exc.strerror or exc}") from None
    except ValueError:
        raise reader.error("jwksFile", f"{file} is not JSON") from None
    try:
        table, skipped = parse_jwks(document, algorithms)
    except ValueError as exc:
        raise reader.error("jwksFile", f"{file}: {exc}") from None
    for reason in skipped:
        log.warning("JWKS file %s: %s skipped", file, reason)
    if not table:
        raise reader.error("jwksFile", f"{file} holds no key usable with {list(algorithms)}")
    return table
