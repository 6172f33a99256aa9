"""codeq.auth against real keys, real JWTs and a real JWKS server on 127.0.0.1.

Keys, signers and the JWKS server (a ``ThreadingHTTPServer`` that counts its requests, so
refresh behaviour is asserted on what actually went over the wire) are in
:mod:`tests.jwt_helpers`. Refresh windows are driven by an injected clock, never by sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.algorithms import RSAAlgorithm

from codeq.auth import (
    WORKER_SCOPES,
    Auth,
    AuthConfigError,
    Authenticator,
    Identity,
    JwksAuthenticator,
    build_auth,
    build_authenticator,
    identity_from_claims,
    parse_bearer,
)
from codeq.auth.jwks import parse_jwks
from codeq.errors import Unauthorized
from codeq.settings import Settings, SettingsError
from tests.jwt_helpers import (
    ISSUER,
    PRODUCER_AUD,
    WORKER_AUD,
    JwksServer,
    Signer,
    b64url,
    ec_signer,
    ed_signer,
    handmade_token,
    rsa_signer,
)

# --------------------------------------------------------------------------------------------
# Keys, claims, the JWKS server fixture, a clock
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> Signer:
    return rsa_signer("rsa-1")


@pytest.fixture(scope="module")
def ec_key() -> Signer:
    return ec_signer("ec-1")


@pytest.fixture(scope="module")
def ed_key() -> Signer:
    return ed_signer("ed-1")


@pytest.fixture(scope="module")
def signers(rsa_key: Signer, ec_key: Signer, ed_key: Signer) -> dict[str, Signer]:
    return {"RS256": rsa_key, "ES256": ec_key, "EdDSA": ed_key}


def claims(**overrides: Any) -> dict[str, Any]:
    """Worker claims valid now; an override of ``None`` removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "worker-1",
        "tenantId": "acme",
        "aud": WORKER_AUD,
        "iss": ISSUER,
        "iat": now,
        "exp": now + 300,
        "scope": "codeq:claim codeq:result",
        "eventTypes": ["render", "Build"],
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def worker_jwks(
    server: JwksServer, clock: ManualClock | None = None, **config: Any
) -> JwksAuthenticator:
    authenticator = build_authenticator(
        "jwks",
        {"jwksUrl": server.url, "issuer": ISSUER, **config},
        side="worker",
        settings=Settings(),
        clock=clock or ManualClock(),
    )
    assert isinstance(authenticator, JwksAuthenticator)
    return authenticator


@pytest.fixture
async def worker_auth(
    jwks_server: JwksServer, signers: dict[str, Signer]
) -> AsyncIterator[JwksAuthenticator]:
    jwks_server.serve(*signers.values())
    async with aclosing(worker_jwks(jwks_server)) as authenticator:
        yield authenticator


async def reason(authenticator: Authenticator, token: str) -> str:
    """The message of the Unauthorized the token gets; checks it does not echo the token."""
    with pytest.raises(Unauthorized) as info:
        await authenticator.authenticate(token)
    assert info.value.status == 401
    assert token not in info.value.message
    return info.value.message


# --------------------------------------------------------------------------------------------
# jwks: valid tokens
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_valid_token_of_each_algorithm_gives_the_identity(
    worker_auth: JwksAuthenticator, signers: dict[str, Signer], alg: str
) -> None:
    token = signers[alg].sign(claims(workerGroup="gpu", role="reader"))
    identity = await worker_auth.authenticate(token)
    assert identity == Identity(
        subject="worker-1",
        tenant="acme",
        scopes=frozenset({"codeq:claim", "codeq:result"}),
        event_types=("render", "Build"),
        role="reader",
        worker_group="gpu",
        producer=False,
        worker=True,
    )
    assert identity.allows_command("BUILD") and not identity.allows_command("deploy")


async def test_build_auth_wires_jwks_for_both_sides_through_the_header(
    jwks_server: JwksServer, rsa_key: Signer, ec_key: Signer
) -> None:
    jwks_server.serve(rsa_key, ec_key)
    settings = Settings(
        producer_auth_provider="jwks",
        producer_auth_config={"jwksUrl": jwks_server.url, "audience": PRODUCER_AUD},
        worker_auth_provider="jwks",
        worker_auth_config={"jwksUrl": jwks_server.url, "issuer": ISSUER},
    )
    producer_token = ec_key.sign(claims(aud=PRODUCER_AUD, sub="billing", eventTypes=None))
    worker_token = rsa_key.sign(claims())
    async with aclosing(build_auth(settings)) as auth:
        assert auth.dev_token is None and not auth.dev_mode
        producer = await auth.for_producer(f"Bearer {producer_token}")
        assert (producer.subject, producer.producer, producer.worker) == ("billing", True, False)
        assert producer.event_types == ()
        worker = await auth.for_worker(f"bearer {worker_token}")
        assert (worker.subject, worker.producer, worker.worker) == ("worker-1", False, True)
        # read routes take either
        assert (await auth.for_any(f"Bearer {producer_token}")).producer
        assert (await auth.for_any(f"Bearer {worker_token}")).worker
        # a worker token is not a producer token (audience), and vice versa
        with pytest.raises(Unauthorized, match="wrong audience"):
            await auth.for_producer(f"Bearer {worker_token}")
        with pytest.raises(Unauthorized, match="wrong audience"):
            await auth.for_worker(f"Bearer {producer_token}")
        with pytest.raises(Unauthorized, match="nor worker token"):
            await auth.for_any("Bearer not.a.jwt")


async def test_default_http_client_is_used_and_closed(
    jwks_server: JwksServer, rsa_key: Signer
) -> None:
    jwks_server.serve(rsa_key)
    made: list[httpx.AsyncClient] = []

    def factory() -> httpx.AsyncClient:
        made.append(httpx.AsyncClient(timeout=5))
        return made[-1]

    settings = Settings(
        worker_auth_provider="jwks",
        worker_auth_config={"jwksUrl": jwks_server.url},
    )
    auth = build_auth(settings, http_client_factory=factory)
    assert made == []  # nothing is fetched before the first token
    assert (await auth.for_worker(f"Bearer {rsa_key.sign(claims())}")).tenant == "acme"
    await auth.aclose()
    assert len(made) == 1 and made[0].is_closed
    assert jwks_server.requests == 1


# --------------------------------------------------------------------------------------------
# jwks: refusals
# --------------------------------------------------------------------------------------------


async def test_expired_token(worker_auth: JwksAuthenticator, rsa_key: Signer) -> None:
    now = int(time.time())
    token = rsa_key.sign(claims(iat=now - 3600, exp=now - 120))  # beyond the 60 s skew
    assert await reason(worker_auth, token) == "token expired"
    within_skew = rsa_key.sign(claims(iat=now - 3600, exp=now - 10))
    assert (await worker_auth.authenticate(within_skew)).subject == "worker-1"


async def test_token_without_exp_is_refused(worker_auth: JwksAuthenticator, ec_key: Signer) -> None:
    assert await reason(worker_auth, ec_key.sign(claims(exp=None))) == "token has no 'exp' claim"


async def test_nbf_in_the_future_beyond_skew(
    worker_auth: JwksAuthenticator, ed_key: Signer
) -> None:
    now = int(time.time())
    assert await reason(worker_auth, ed_key.sign(claims(nbf=now + 600))) == "token not yet valid"
    assert await reason(worker_auth, ed_key.sign(claims(iat=now + 600))) == "token not yet valid"
    ok = await worker_auth.authenticate(ed_key.sign(claims(nbf=now + 30)))  # within the skew
    assert ok.tenant == "acme"


async def test_config_clock_skew_overrides_the_setting(
    jwks_server: JwksServer, rsa_key: Signer
) -> None:
    jwks_server.serve(rsa_key)
    token = rsa_key.sign(claims(nbf=int(time.time()) + 30))
    async with aclosing(worker_jwks(jwks_server, allowedClockSkewSeconds=0)) as strict:
        assert await reason(strict, token) == "token not yet valid"


async def test_wrong_audience_and_wrong_issuer(
    worker_auth: JwksAuthenticator, rsa_key: Signer
) -> None:
    assert await reason(worker_auth, rsa_key.sign(claims(aud="other-service"))) == "wrong audience"
    assert await reason(worker_auth, rsa_key.sign(claims(aud=None))) == "token has no 'aud' claim"
    assert await reason(worker_auth, rsa_key.sign(claims(iss="https://evil/"))) == "wrong issuer"
    assert await reason(worker_auth, rsa_key.sign(claims(iss=None))) == "token has no 'iss' claim"


async def test_bad_signature_from_another_key_with_the_same_kid(
    worker_auth: JwksAuthenticator, rsa_key: Signer
) -> None:
    impostor = rsa_signer(rsa_key.kid)
    assert await reason(worker_auth, impostor.sign(claims())) == "bad signature"
    good = rsa_key.sign(claims())
    head, _, signature = good.split(".")
    tampered_payload = b64url(json.dumps(claims(tenantId="victim")).encode())
    assert await reason(worker_auth, f"{head}.{tampered_payload}.{signature}") == "bad signature"


async def test_alg_none_is_refused(worker_auth: JwksAuthenticator, rsa_key: Signer) -> None:
    for header in ({"alg": "none"}, {"alg": "none", "kid": rsa_key.kid}, {"alg": "None"}):
        token = handmade_token(header, claims(), b"")
        assert token.endswith(".")
        assert await reason(worker_auth, token) == "algorithm not allowed"


async def test_hs256_signed_with_the_public_key_is_refused(
    worker_auth: JwksAuthenticator, rsa_key: Signer
) -> None:
    public_pem = rsa_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": rsa_key.kid}
    unsigned = handmade_token(header, claims(), b"").rstrip(".")
    signature = hmac.new(public_pem, unsigned.encode(), hashlib.sha256).digest()
    assert await reason(worker_auth, f"{unsigned}.{b64url(signature)}") == "algorithm not allowed"


async def test_header_alg_must_match_the_key_type(
    worker_auth: JwksAuthenticator, rsa_key: Signer, ec_key: Signer, jwks_server: JwksServer
) -> None:
    # signed with the EC key but naming the RSA key's kid
    token = ec_key.sign(claims(), kid=rsa_key.kid)
    assert await reason(worker_auth, token) == "algorithm does not match the key"
    # an allowed algorithm the key does not declare (RSA key with alg RS256, token PS256)
    async with aclosing(worker_jwks(jwks_server, algorithms=["RS256", "PS256"])) as both:
        ps = rsa_key.sign(claims(), alg="PS256")
        assert await reason(both, ps) == "algorithm does not match the key"
        assert (await both.authenticate(rsa_key.sign(claims()))).subject == "worker-1"


async def test_algorithm_outside_the_allow_list(
    jwks_server: JwksServer, rsa_key: Signer, ec_key: Signer
) -> None:
    jwks_server.serve(rsa_key, ec_key)
    async with aclosing(worker_jwks(jwks_server, algorithms=["ES256"])) as only_ec:
        assert await reason(only_ec, rsa_key.sign(claims())) == "algorithm not allowed"
        assert (await only_ec.authenticate(ec_key.sign(claims()))).tenant == "acme"


async def test_malformed_tokens(worker_auth: JwksAuthenticator) -> None:
    for token in ("not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.!!!.sig"):
        assert await reason(worker_auth, token) == "malformed token"


async def test_weak_rsa_key_is_refused(jwks_server: JwksServer) -> None:
    weak = rsa_signer("weak", bits=1024)
    jwks_server.serve(weak)
    with warnings.catch_warnings():  # PyJWT warns when *signing* with a short key
        warnings.simplefilter("ignore")
        token = weak.sign(claims())
    async with aclosing(worker_jwks(jwks_server)) as authenticator:
        assert await reason(authenticator, token) == "signing key too weak"


async def test_token_without_kid_uses_the_only_fitting_key(
    jwks_server: JwksServer, ec_key: Signer
) -> None:
    other_ec = ec_signer("ec-2")
    token = jwt.encode(claims(), ec_key.private, algorithm="ES256")  # no kid header
    jwks_server.serve(ec_key)
    async with aclosing(worker_jwks(jwks_server)) as single:
        assert (await single.authenticate(token)).subject == "worker-1"
    jwks_server.serve(ec_key, other_ec)
    async with aclosing(worker_jwks(jwks_server)) as ambiguous:
        assert await reason(ambiguous, token) == "unknown key"


# --------------------------------------------------------------------------------------------
# jwks: fetching and refreshing
# --------------------------------------------------------------------------------------------


async def test_unknown_kid_refetches_once_per_window(
    jwks_server: JwksServer, rsa_key: Signer
) -> None:
    clock = ManualClock()
    jwks_server.serve(rsa_key)
    rotated = ec_signer("ec-rotated")
    later = ed_signer("ed-later")
    async with aclosing(worker_jwks(jwks_server, clock)) as authenticator:
        assert (await authenticator.authenticate(rsa_key.sign(claims()))).tenant == "acme"
        assert jwks_server.requests == 1
        # a known kid does not fetch again
        await authenticator.authenticate(rsa_key.sign(claims(sub="w2")))
        assert jwks_server.requests == 1

        # the IdP rotates; past the window, the unknown kid costs exactly one refetch
        jwks_server.serve(rsa_key, rotated)
        clock.advance(61)
        assert (await authenticator.authenticate(rotated.sign(claims()))).subject == "worker-1"
        assert jwks_server.requests == 2

        # a second unknown kid inside the window: no refetch, refused
        jwks_server.serve(rsa_key, rotated, later)
        clock.advance(10)
        assert await reason(authenticator, later.sign(claims())) == "unknown key"
        assert jwks_server.requests == 2

        # once the window has passed it is fetched and accepted
        clock.advance(51)
        assert (await authenticator.authenticate(later.sign(claims()))).tenant == "acme"
        assert jwks_server.requests == 3


async def test_window_is_configurable(jwks_server: JwksServer, rsa_key: Signer) -> None:
    clock = ManualClock()
    jwks_server.serve(rsa_key)
    rotated = rsa_signer("rsa-2")
    config = {"jwksMinRefreshSeconds": 5}
    async with aclosing(worker_jwks(jwks_server, clock, **config)) as authenticator:
        await authenticator.authenticate(rsa_key.sign(claims()))
        jwks_server.serve(rotated)
        clock.advance(4)
        assert await reason(authenticator, rotated.sign(claims())) == "unknown key"
        clock.advance(1)
        assert (await authenticator.authenticate(rotated.sign(claims()))).tenant == "acme"
        assert jwks_server.requests == 2


async def test_concurrent_unknown_kids_share_one_fetch(
    jwks_server: JwksServer, rsa_key: Signer
) -> None:
    clock = ManualClock()
    jwks_server.serve(rsa_key)
    rotated = ed_signer("ed-new")
    async with aclosing(worker_jwks(jwks_server, clock)) as authenticator:
        await authenticator.authenticate(rsa_key.sign(claims()))
        jwks_server.serve(rsa_key, rotated)
        clock.advance(120)
        tokens = [rotated.sign(claims(sub=f"w{i}")) for i in range(8)]
        identities = await asyncio.gather(*(authenticator.authenticate(t) for t in tokens))
        assert [i.subject for i in identities] == [f"w{i}" for i in range(8)]
        assert jwks_server.requests == 2


async def test_first_requests_share_the_initial_fetch(
    jwks_server: JwksServer, ec_key: Signer
) -> None:
    jwks_server.serve(ec_key)
    async with aclosing(worker_jwks(jwks_server)) as authenticator:
        tokens = [ec_key.sign(claims(sub=f"w{i}")) for i in range(6)]
        await asyncio.gather(*(authenticator.authenticate(t) for t in tokens))
        assert jwks_server.requests == 1


async def test_keys_older_than_max_age_are_refetched_and_revocation_applies(
    jwks_server: JwksServer, rsa_key: Signer, ec_key: Signer
) -> None:
    clock = ManualClock()
    jwks_server.serve(rsa_key, ec_key)
    async with aclosing(worker_jwks(jwks_server, clock, jwksMaxAgeSeconds=600)) as authenticator:
        await authenticator.authenticate(rsa_key.sign(claims()))
        jwks_server.serve(ec_key)  # the RSA key is withdrawn
        clock.advance(599)
        await authenticator.authenticate(rsa_key.sign(claims()))  # still cached
        assert jwks_server.requests == 1
        clock.advance(1)
        assert await reason(authenticator, rsa_key.sign(claims())) == "unknown key"
        assert jwks_server.requests == 2
        assert (await authenticator.authenticate(ec_key.sign(claims()))).tenant == "acme"


async def test_failed_fetch_is_retried_after_a_short_delay(
    jwks_server: JwksServer, rsa_key: Signer
) -> None:
    clock = ManualClock()
    jwks_server.serve(rsa_key)
    jwks_server.status = 500
    token = rsa_key.sign(claims())
    async with aclosing(worker_jwks(jwks_server, clock)) as authenticator:
        assert await reason(authenticator, token) == "signing keys unavailable"
        assert await reason(authenticator, token) == "signing keys unavailable"
        assert jwks_server.requests == 1  # not hammered
        jwks_server.status = 200
        clock.advance(5)
        assert (await authenticator.authenticate(token)).tenant == "acme"
        assert jwks_server.requests == 2


async def test_failed_refresh_keeps_the_cached_keys(
    jwks_server: JwksServer, rsa_key: Signer
) -> None:
    clock = ManualClock()
    jwks_server.serve(rsa_key)
    async with aclosing(worker_jwks(jwks_server, clock, jwksMaxAgeSeconds=60)) as authenticator:
        await authenticator.authenticate(rsa_key.sign(claims()))
        jwks_server.status = 503
        clock.advance(100)
        assert (await authenticator.authenticate(rsa_key.sign(claims()))).tenant == "acme"
        assert jwks_server.requests == 2


async def test_unreachable_jwks_url() -> None:
    server = JwksServer()
    url = server.url
    server.stop()  # nothing listens there any more
    authenticator = build_authenticator(
        "jwks", {"jwksUrl": url}, side="worker", settings=Settings(), clock=ManualClock()
    )
    async with aclosing(authenticator):
        assert await reason(authenticator, rsa_signer("x").sign(claims())) == (
            "signing keys unavailable"
        )


def test_parse_jwks_skips_unusable_entries(rsa_key: Signer, ec_key: Signer) -> None:
    private_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key.private))
    p384 = {k: v for k, v in ec_key.jwk.items() if k != "alg"} | {"kid": "ec-384", "crv": "P-384"}
    document = {
        "keys": [
            rsa_key.jwk,
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {**private_jwk, "kid": "private"},
            {**ec_key.jwk, "use": "enc"},
            p384,  # a curve no allowed algorithm uses
            "not a key",
        ]
    }
    table, skipped = parse_jwks(document, ["RS256", "ES256", "EdDSA"])
    assert list(table) == ["rsa-1"] and list(table["rsa-1"]) == ["RS256"]
    assert len(skipped) == 5
    assert any("symmetric" in s for s in skipped) and any("private" in s for s in skipped)
    with pytest.raises(ValueError, match="keys"):
        parse_jwks({"not": "a jwks"}, ["RS256"])


# --------------------------------------------------------------------------------------------
# jwks: the local file
# --------------------------------------------------------------------------------------------


async def test_jwks_file_provider(tmp_path: Path, signers: dict[str, Signer]) -> None:
    file = tmp_path / "jwks.json"
    file.write_text(json.dumps({"keys": [s.jwk for s in signers.values()]}))
    settings = Settings(
        producer_auth_provider="jwks",
        producer_auth_config={"jwksFile": str(file), "audience": [PRODUCER_AUD, "other"]},
    )
    async with aclosing(build_auth(settings)) as auth:
        for signer in signers.values():
            identity = await auth.for_producer(f"Bearer {signer.sign(claims(aud=PRODUCER_AUD))}")
            assert (identity.tenant, identity.producer) == ("acme", True)
        # an unknown kid with a file provider is simply unknown
        stranger = rsa_signer("stranger")
        with pytest.raises(Unauthorized, match="unknown key"):
            await auth.for_producer(f"Bearer {stranger.sign(claims(aud=PRODUCER_AUD))}")
        # no worker provider: every worker token is refused
        with pytest.raises(Unauthorized, match="no worker auth provider is configured"):
            await auth.for_worker(f"Bearer {signers['RS256'].sign(claims())}")


def test_jwks_file_problems_are_reported_at_build_time(tmp_path: Path, rsa_key: Signer) -> None:
    def build(config: dict[str, Any]) -> None:
        build_authenticator("jwks", config, side="worker", settings=Settings())

    with pytest.raises(AuthConfigError, match="cannot read"):
        build({"jwksFile": str(tmp_path / "missing.json")})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AuthConfigError, match="not JSON"):
        build({"jwksFile": str(bad)})
    symmetric = tmp_path / "sym.json"
    symmetric.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}))
    with pytest.raises(AuthConfigError, match="no key usable"):
        build({"jwksFile": str(symmetric)})
    rsa_only = tmp_path / "rsa.json"
    rsa_only.write_text(json.dumps({"keys": [rsa_key.jwk]}))
    with pytest.raises(AuthConfigError, match="no key usable"):
        build({"jwksFile": str(rsa_only), "algorithms": ["ES256"]})


# --------------------------------------------------------------------------------------------
# jwks: config validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"jwksUrl": "http://127.0.0.1/j", "algorithms": ["RS256", "HS256"]}, "never allowed"),
        ({"jwksUrl": "http://127.0.0.1/j", "algorithms": ["none"]}, "never allowed"),
        ({"jwksUrl": "http://127.0.0.1/j", "algorithms": "hs512"}, "never allowed"),
        ({"jwksUrl": "http://127.0.0.1/j", "algorithms": ["XS1"]}, "unsupported algorithm"),
        ({"jwksUrl": "http://127.0.0.1/j", "algorithms": []}, "algorithms"),
        ({}, "exactly one of jwksUrl and jwksFile"),
        ({"jwksUrl": "http://127.0.0.1/j", "jwksFile": "/x"}, "exactly one of"),
        ({"jwksUrl": "ftp://idp/jwks"}, "http:// or https://"),
        ({"jwksUrl": "http://127.0.0.1/j", "audiance": "x"}, "did you mean 'audience'"),
        ({"jwksUrl": "http://127.0.0.1/j", "jwksMinRefreshSeconds": -1}, "jwksMinRefresh"),
        ({"jwksUrl": "http://127.0.0.1/j", "jwksMaxAgeSeconds": 10}, "jwksMaxAgeSeconds"),
        ({"jwksUrl": "http://127.0.0.1/j", "tenantFromSubject": "yes"}, "true or false"),
    ],
)
def test_bad_jwks_config_is_refused(config: dict[str, Any], message: str) -> None:
    with pytest.raises(AuthConfigError, match=message) as info:
        build_authenticator("jwks", config, side="worker", settings=Settings())
    assert "workerAuthConfig" in str(info.value)
    assert isinstance(info.value, SettingsError)


def test_producer_jwks_requires_an_audience() -> None:
    with pytest.raises(AuthConfigError, match=r"producerAuthConfig\.audience"):
        build_authenticator(
            "jwks", {"jwksUrl": "http://127.0.0.1/j"}, side="producer", settings=Settings()
        )


def test_plain_http_jwks_url_only_on_loopback_in_prod() -> None:
    prod = Settings(env="prod")
    with pytest.raises(AuthConfigError, match="must be https"):
        build_authenticator(
            "jwks", {"jwksUrl": "http://idp.example/j"}, side="worker", settings=prod
        )
    for url in ("https://idp.example/j", "http://127.0.0.1:9/j", "http://localhost/j"):
        authenticator = build_authenticator("jwks", {"jwksUrl": url}, side="worker", settings=prod)
        assert isinstance(authenticator, JwksAuthenticator)


# --------------------------------------------------------------------------------------------
# static tokens
# --------------------------------------------------------------------------------------------

PLAIN = "plain-token-0123456789"
HASHED = "hashed-token-abcdefghij"
HASHED_KEY = "sha256:" + hashlib.sha256(HASHED.encode()).hexdigest()


def static_settings(**overrides: Any) -> Settings:
    return Settings(
        producer_auth_provider="static",
        producer_auth_config={
            "tokens": {
                PLAIN: {"sub": "billing", "tenantId": "acme", "scope": "codeq:admin"},
                HASHED_KEY: {"organizationId": "globex", "eventTypes": "*"},
            }
        },
        **overrides,
    )


async def test_static_plain_and_hashed_tokens() -> None:
    async with aclosing(build_auth(static_settings())) as auth:
        plain = await auth.for_producer(f"Bearer {PLAIN}")
        assert (plain.subject, plain.tenant, plain.producer, plain.is_admin) == (
            "billing",
            "acme",
            True,
            True,
        )
        hashed = await auth.for_producer(f"Bearer {HASHED}")
        expected_subject = "static-" + hashlib.sha256(HASHED.encode()).hexdigest()[:8]
        assert hashed.subject == expected_subject and hashed.tenant == "globex"
        assert hashed.event_types == ("*",) and hashed.allows_command("anything")
        # the hash itself is not a token
        for wrong in (HASHED_KEY, HASHED_KEY[7:], PLAIN + "x", PLAIN[:-1], "Plain-token"):
            with pytest.raises(Unauthorized, match="unknown token") as info:
                await auth.for_producer(f"Bearer {wrong}")
            assert wrong not in info.value.message


async def test_static_token_without_sub_or_tenant_uses_the_label() -> None:
    settings = Settings(
        worker_auth_provider="static",
        worker_auth_config={"tokens": {PLAIN: {"scope": "codeq:claim"}}},
    )
    async with aclosing(build_auth(settings)) as auth:
        identity = await auth.for_worker(f"Bearer {PLAIN}")
        label = "static-" + hashlib.sha256(PLAIN.encode()).hexdigest()[:8]
        assert (identity.subject, identity.tenant, identity.worker) == (label, label, True)


@pytest.mark.parametrize(
    ("tokens", "message"),
    [
        ({}, "at least one token"),
        ({"sha256:abc": {"tenantId": "t"}}, "64 hex digits"),
        ({"has space": {"tenantId": "t"}}, "visible ASCII"),
        ({PLAIN: "not claims"}, "mapping of claims"),
        ({PLAIN: {"tenantId": ""}}, "tenantId"),
        ({PLAIN: {"sub": "x", "eventTypes": 3}}, "eventTypes"),
        ({PLAIN: {}, "sha256:" + hashlib.sha256(PLAIN.encode()).hexdigest(): {}}, "twice"),
    ],
)
def test_bad_static_config_is_refused(tokens: dict[str, Any], message: str) -> None:
    with pytest.raises(AuthConfigError, match=message) as info:
        build_authenticator("static", {"tokens": tokens}, side="producer", settings=Settings())
    assert PLAIN not in str(info.value)


def test_static_token_without_tenant_and_tenant_from_subject_off() -> None:
    config = {"tokens": {PLAIN: {"sub": "p"}}, "tenantFromSubject": False}
    with pytest.raises(AuthConfigError, match="no tenant in token"):
        build_authenticator("static", config, side="producer", settings=Settings())


# --------------------------------------------------------------------------------------------
# claims → identity
# --------------------------------------------------------------------------------------------


def test_tenant_claim_precedence() -> None:
    order = ["tenantId", "tenant_id", "organizationId", "organization_id"]
    for present in range(len(order)):
        claim_set = {"sub": "s"} | {name: f"t-{name}" for name in order[present:]}
        identity = identity_from_claims(
            claim_set, tenant_from_subject=True, producer=True, worker=False
        )
        assert identity.tenant == f"t-{order[present]}"
    from_sub = identity_from_claims(
        {"sub": "s"}, tenant_from_subject=True, producer=True, worker=False
    )
    assert from_sub.tenant == "s"
    with pytest.raises(Unauthorized, match="no tenant in token"):
        identity_from_claims({"sub": "s"}, tenant_from_subject=False, producer=True, worker=False)


async def test_tenant_from_subject_off_refuses_jwt_without_tenant(
    jwks_server: JwksServer, rsa_key: Signer
) -> None:
    jwks_server.serve(rsa_key)
    no_tenant = rsa_key.sign(claims(tenantId=None))
    async with aclosing(worker_jwks(jwks_server)) as default:
        assert (await default.authenticate(no_tenant)).tenant == "worker-1"
    async with aclosing(worker_jwks(jwks_server, tenantFromSubject=False)) as off:
        assert await reason(off, no_tenant) == "no tenant in token"
        assert (
            await off.authenticate(rsa_key.sign(claims(tenantId=None, tenant_id="t2")))
        ).tenant == "t2"
    settings = Settings(
        tenant_from_subject=False,
        worker_auth_provider="jwks",
        worker_auth_config={"jwksUrl": jwks_server.url},
    )
    async with aclosing(build_auth(settings)) as auth:
        with pytest.raises(Unauthorized, match="no tenant in token"):
            await auth.for_worker(f"Bearer {no_tenant}")


def test_scopes_event_types_and_admin_flags() -> None:
    def make(**claim_set: Any) -> Identity:
        return identity_from_claims(
            {"sub": "s", "tenantId": "t", **claim_set},
            tenant_from_subject=True,
            producer=False,
            worker=True,
        )

    both = make(scope="codeq:claim  codeq:nack", scp=["codeq:result"])
    assert both.scopes == {"codeq:claim", "codeq:nack", "codeq:result"}
    assert both.has_scope("codeq:nack") and not both.has_scope("codeq:admin")
    assert make(scp="a b").scopes == {"a", "b"}
    assert make().scopes == frozenset() and make().event_types == ()
    assert not make().allows_command("x")
    assert make(eventTypes="*").event_types == ("*",)
    assert make(eventTypes=["a", "a", "B"]).event_types == ("a", "B")
    assert make(scope="codeq:admin").is_admin and not make(scope="codeq:admin").is_super_admin
    assert make(scope="codeq:admin:all").is_super_admin and make(scope="codeq:admin:all").is_admin
    assert make(role="admin").is_admin and make(role="ADMIN").is_admin
    assert not make(role="operator").is_admin and not make().is_admin
    for bad in (
        {"eventTypes": [1]},
        {"scope": 5},
        {"role": ["ADMIN"]},
        {"sub": ""},
        {"sub": 7},
        {"tenantId": "x" * 300},
        {"workerGroup": "a\nb"},
    ):
        with pytest.raises(Unauthorized):
            make(**bad)
    with pytest.raises(Unauthorized, match="no 'sub'"):
        identity_from_claims(
            {"tenantId": "t"}, tenant_from_subject=True, producer=True, worker=False
        )


# --------------------------------------------------------------------------------------------
# allowProducerAsWorker, one-sided configuration
# --------------------------------------------------------------------------------------------


def two_sided(allow: bool) -> Settings:
    return Settings(
        allow_producer_as_worker=allow,
        producer_auth_provider="static",
        producer_auth_config={"tokens": {PLAIN: {"sub": "p", "tenantId": "acme", "scope": "x"}}},
        worker_auth_provider="static",
        worker_auth_config={"tokens": {HASHED_KEY: {"sub": "w", "tenantId": "acme"}}},
    )


async def test_allow_producer_as_worker_adds_the_worker_scopes() -> None:
    async with aclosing(build_auth(two_sided(True))) as auth:
        identity = await auth.for_worker(f"Bearer {PLAIN}")
        assert identity.subject == "p" and identity.producer and identity.worker
        assert identity.scopes == WORKER_SCOPES | {"x"}
        assert identity.event_types == ("*",)
        worker = await auth.for_worker(f"Bearer {HASHED}")  # real worker tokens still work
        assert worker.scopes == frozenset() and not worker.producer
        with pytest.raises(Unauthorized, match="nor producer token") as info:
            await auth.for_worker("Bearer neither-token")
        assert "neither-token" not in info.value.message
        with pytest.raises(Unauthorized):  # the flag does not make workers producers
            await auth.for_producer(f"Bearer {HASHED}")


async def test_without_the_flag_a_producer_token_is_refused_on_worker_routes() -> None:
    async with aclosing(build_auth(two_sided(False))) as auth:
        with pytest.raises(Unauthorized, match="unknown token"):
            await auth.for_worker(f"Bearer {PLAIN}")
        assert (await auth.for_any(f"Bearer {PLAIN}")).producer
        assert (await auth.for_any(f"Bearer {HASHED}")).worker


async def test_one_sided_config_rejects_the_other_side() -> None:
    async with aclosing(build_auth(static_settings())) as auth:
        with pytest.raises(Unauthorized, match="no worker auth provider is configured"):
            await auth.for_worker(f"Bearer {PLAIN}")
        assert (await auth.for_any(f"Bearer {PLAIN}")).subject == "billing"
    settings = static_settings(allow_producer_as_worker=True)
    async with aclosing(build_auth(settings)) as auth:
        identity = await auth.for_worker(f"Bearer {PLAIN}")
        assert identity.worker and identity.has_scope("codeq:claim")


# --------------------------------------------------------------------------------------------
# dev mode and prod
# --------------------------------------------------------------------------------------------


async def test_dev_token_from_the_environment_is_producer_worker_and_admin() -> None:
    auth = build_auth(Settings(), environ={"CODEQ_DEV_TOKEN": "dev-secret-42"})
    async with aclosing(auth):
        assert auth.dev_token == "dev-secret-42" and auth.dev_mode
        assert "dev-secret-42" not in repr(auth)
        header = "Bearer dev-secret-42"
        for identity in (
            await auth.for_producer(header),
            await auth.for_worker(header),
            await auth.for_any(header),
        ):
            assert (identity.subject, identity.tenant) == ("dev", "default")
            assert identity.producer and identity.worker and identity.is_admin
            assert not identity.is_super_admin
            assert identity.scopes >= WORKER_SCOPES
            assert identity.allows_command("whatever")
        for wrong in ("Bearer dev-secret-43", "Bearer x", None):
            with pytest.raises(Unauthorized):
                await auth.for_producer(wrong)


async def test_dev_token_is_random_without_the_environment() -> None:
    first = build_auth(Settings(host="localhost"))
    second = build_auth(Settings(host="::1"), environ={"CODEQ_DEV_TOKEN": "  "})
    assert first.dev_token and second.dev_token
    assert len(first.dev_token) >= 32 and first.dev_token != second.dev_token
    assert (await first.for_worker(f"Bearer {first.dev_token}")).tenant == "default"
    with pytest.raises(Unauthorized):
        await first.for_worker(f"Bearer {second.dev_token}")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "example.com", "127.example.com"])
def test_dev_mode_refuses_a_non_loopback_host(host: str) -> None:
    with pytest.raises(AuthConfigError, match="not a loopback address") as info:
        build_auth(Settings(host=host), environ={"CODEQ_DEV_TOKEN": "t"})
    assert info.value.key == "host"


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1.2.3", "localhost", "LOCALHOST", "::1", "[::1]"]
)
def test_dev_mode_accepts_loopback_hosts(host: str) -> None:
    assert build_auth(Settings(host=host)).dev_mode


def test_dev_token_must_be_a_valid_bearer_token() -> None:
    with pytest.raises(AuthConfigError, match="CODEQ_DEV_TOKEN"):
        build_auth(Settings(), environ={"CODEQ_DEV_TOKEN": "two words"})


def test_configured_auth_is_not_dev_mode_even_on_a_public_host() -> None:
    auth = build_auth(static_settings(host="0.0.0.0"), environ={"CODEQ_DEV_TOKEN": "t"})
    assert auth.dev_token is None


def test_prod_without_providers_is_refused() -> None:
    with pytest.raises(AuthConfigError, match="producerAuthProvider") as info:
        build_auth(Settings(env="prod", webhook_hmac_secret="s" * 32))
    assert "workerAuthProvider" in str(info.value)
    assert "webhookHmacSecret" not in str(info.value)
    with pytest.raises(AuthConfigError, match="workerAuthProvider"):
        build_auth(static_settings(env="prod", webhook_hmac_secret="s" * 32))


def prod_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "env": "prod",
        "host": "0.0.0.0",
        "webhook_hmac_secret": "s" * 32,
        "producer_auth_provider": "static",
        "producer_auth_config": {"tokens": {HASHED_KEY: {"tenantId": "acme"}}},
        "worker_auth_provider": "jwks",
        "worker_auth_config": {"jwksUrl": "https://idp.example/jwks.json"},
    }
    values.update(overrides)
    return Settings(**values)


def test_prod_without_webhook_secret_is_refused() -> None:
    with pytest.raises(AuthConfigError, match="webhookHmacSecret"):
        build_auth(prod_settings(webhook_hmac_secret=None))


async def test_prod_with_everything_set_builds() -> None:
    async with aclosing(build_auth(prod_settings())) as auth:
        assert not auth.dev_mode
        assert (await auth.for_producer(f"Bearer {HASHED}")).tenant == "acme"


def test_prod_refuses_allow_producer_as_worker() -> None:
    with pytest.raises(AuthConfigError, match="allowProducerAsWorker"):
        build_auth(prod_settings(allow_producer_as_worker=True))


def test_provider_without_config_is_refused() -> None:
    with pytest.raises(AuthConfigError, match=r"producerAuthConfig \(env PRODUCER_AUTH_CONFIG\)"):
        build_auth(Settings(producer_auth_provider="static"))


# --------------------------------------------------------------------------------------------
# parse_bearer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER a.b-c_d~e+f/g=", "a.b-c_d~e+f/g="),
        ("  Bearer   abc  ", "abc"),
        ("Bearer\tabc", "abc"),
    ],
)
def test_parse_bearer_accepts(header: str, token: str) -> None:
    assert parse_bearer(header) == token


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing Authorization header"),
        ("", "missing Authorization header"),
        ("   ", "missing Authorization header"),
        ("Bearer", "missing bearer token"),
        ("Bearer    ", "missing bearer token"),
        ("Basic dXNlcjpwYXNz", "expected a Bearer token"),
        ("abc", "expected a Bearer token"),
        ("Bearerabc", "expected a Bearer token"),
        ("Bearer abc def", "malformed bearer token"),
        ("Bearer tökén", "malformed bearer token"),
        ("Bearer a\x00b", "malformed bearer token"),
        ("Bearer " + "a" * 20000, "too long"),
    ],
)
def test_parse_bearer_refuses(header: str | None, message: str) -> None:
    with pytest.raises(Unauthorized, match=message) as info:
        parse_bearer(header)
    assert info.value.status == 401 and info.value.code == "unauthorized"


async def test_missing_header_is_401_on_every_route() -> None:
    auth: Auth = build_auth(Settings(), environ={"CODEQ_DEV_TOKEN": "t"})
    for route in (auth.for_producer, auth.for_worker, auth.for_any):
        with pytest.raises(Unauthorized, match="missing Authorization header"):
            await route(None)
