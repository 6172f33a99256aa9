"""From settings to an :class:`Auth`: the providers of both sides, dev mode, the prod checks.

Rules applied by :func:`build_auth`, in order:

1. (``Settings`` itself refuses ``<side>AuthConfig`` without ``<side>AuthProvider``, so a
   half-configured side never falls into dev mode.) A provider without its config is an error.
2. ``env: prod`` requires ``producerAuthProvider``, ``workerAuthProvider`` and
   ``webhookHmacSecret``, and refuses ``allowProducerAsWorker`` (a dev-only setting).
3. Neither provider configured → dev mode: only on a loopback ``host``; one static token
   (``CODEQ_DEV_TOKEN`` from ``environ``, else random) valid as producer, worker (every worker
   scope, every command) and admin (``codeq:admin``) of tenant ``default``, subject ``dev``.
4. Otherwise each configured side gets its provider; a side without a provider rejects every
   token ("no worker auth provider is configured") — with ``allowProducerAsWorker`` producer
   tokens still reach worker routes.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from codeq.auth.base import (
    AuthConfigError,
    Authenticator,
    RejectingAuthenticator,
    Side,
    is_loopback_host,
)
from codeq.auth.identity import ADMIN_SCOPE, WORKER_SCOPES, Identity
from codeq.auth.jwks import HttpClientFactory, JwksAuthenticator
from codeq.auth.static import StaticAuthenticator, token_digest
from codeq.errors import Unauthorized
from codeq.settings import Settings

__all__ = [
    "DEV_SUBJECT",
    "DEV_TENANT",
    "DEV_TOKEN_ENV",
    "MAX_TOKEN_LENGTH",
    "Auth",
    "as_worker",
    "build_auth",
    "build_authenticator",
    "parse_bearer",
]

DEV_TOKEN_ENV: Final = "CODEQ_DEV_TOKEN"  # noqa: S105 - the name of a variable
DEV_TENANT: Final = "default"
DEV_SUBJECT: Final = "dev"
MAX_TOKEN_LENGTH: Final = 16384
_VISIBLE_ASCII: Final = re.compile(r"[!-~]+")


def parse_bearer(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (scheme in any case).

    Raises :class:`Unauthorized` when the header is missing or empty, is another scheme, has no
    token, or the token is longer than 16 KiB or holds anything but visible ASCII (so a token
    with spaces, or a third word, is refused).
    """
    if header is None or not header.strip():
        raise Unauthorized("missing Authorization header")
    parts = header.strip().split(None, 1)
    if parts[0].lower() != "bearer":
        raise Unauthorized("expected a Bearer token in the Authorization header")
    if len(parts) < 2:
        raise Unauthorized("missing bearer token")
    token = parts[1].strip()
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthorized("bearer token too long")
    if not _VISIBLE_ASCII.fullmatch(token):
        raise Unauthorized("malformed bearer token")
    return token


def as_worker(identity: Identity) -> Identity:
    """A producer identity allowed on worker routes (``allowProducerAsWorker``).

    Adds every worker scope; a token without ``eventTypes`` may take every command.
    """
    return msgspec.structs.replace(
        identity,
        worker=True,
        scopes=identity.scopes | WORKER_SCOPES,
        event_types=identity.event_types or ("*",),
    )


class Auth:
    """What the gateway holds: one authenticator per side, and the dev token when in dev mode."""

    def __init__(
        self,
        producer: Authenticator,
        worker: Authenticator,
        *,
        allow_producer_as_worker: bool = False,
        dev_token: str | None = None,
    ) -> None:
        self.producer = producer
        self.worker = worker
        self.allow_producer_as_worker = allow_producer_as_worker
        self.dev_token = dev_token

    @property
    def dev_mode(self) -> bool:
        return self.dev_token is not None

    def __repr__(self) -> str:  # never show the dev token
        return (
            f"Auth(producer={type(self.producer).__name__}, worker={type(self.worker).__name__},"
            f" allow_producer_as_worker={self.allow_producer_as_worker}, dev_mode={self.dev_mode})"
        )

    async def for_producer(self, authorization_header: str | None) -> Identity:
        """The caller of a producer route; raises :class:`Unauthorized`."""
        return await self.producer.authenticate(parse_bearer(authorization_header))

    async def for_worker(self, authorization_header: str | None) -> Identity:
        """The caller of a worker route; with ``allowProducerAsWorker`` a producer token too."""
        token = parse_bearer(authorization_header)
        try:
            return await self.worker.authenticate(token)
        except Unauthorized as worker_error:
            if not self.allow_producer_as_worker or self.producer is self.worker:
                raise
            try:
                identity = await self.producer.authenticate(token)
            except Unauthorized as producer_error:
                raise Unauthorized(
                    f"not a valid worker token ({worker_error.message})"
                    f" nor producer token ({producer_error.message})"
                ) from None
        return as_worker(identity)

    async def for_any(self, authorization_header: str | None) -> Identity:
        """The caller of a read route: a producer token, else a worker token."""
        token = parse_bearer(authorization_header)
        try:
            return await self.producer.authenticate(token)
        except Unauthorized as producer_error:
            if self.worker is self.producer:
                raise
            try:
                return await self.worker.authenticate(token)
            except Unauthorized as worker_error:
                raise Unauthorized(
                    f"not a valid producer token ({producer_error.message})"
                    f" nor worker token ({worker_error.message})"
                ) from None

    async def aclose(self) -> None:
        try:
            await self.producer.aclose()
        finally:
            if self.worker is not self.producer:
                await self.worker.aclose()


def build_authenticator(
    provider: str,
    config: Mapping[str, Any] | None,
    *,
    side: Side,
    settings: Settings,
    http_client_factory: HttpClientFactory | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Authenticator:
    """The authenticator of one side; raises :class:`AuthConfigError`."""
    name = f"{side}AuthConfig"
    env = f"{side.upper()}_AUTH_CONFIG"
    if config is None:
        raise AuthConfigError(
            f"{side}AuthProvider is {provider!r} but {name} (env {env}) is not set",
            key=name,
            env=env,
        )
    if provider == "static":
        return StaticAuthenticator.from_config(
            config, name=name, side=side, tenant_from_subject=settings.tenant_from_subject
        )
    if provider == "jwks":
        return JwksAuthenticator.from_config(
            config,
            name=name,
            side=side,
            settings=settings,
            http_client_factory=http_client_factory,
            clock=clock,
        )
    raise AuthConfigError(
        f"unknown {side}AuthProvider {provider!r}: expected 'static' or 'jwks'",
        key=f"{side}AuthProvider",
        env=f"{side.upper()}_AUTH_PROVIDER",
    )


def build_auth(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    http_client_factory: HttpClientFactory | None = None,
) -> Auth:
    """Build both sides from the settings (see the module doc); raises :class:`AuthConfigError`.

    ``environ`` is read for ``CODEQ_DEV_TOKEN`` only; as with ``Settings.load``, ``None`` means
    no environment (pass ``os.environ`` explicitly). ``http_client_factory`` makes the client a
    ``jwksUrl`` is fetched with (default: httpx with a 10 s timeout, no redirects).
    """
    env: Mapping[str, str] = {} if environ is None else environ
    sides: tuple[Side, Side] = ("producer", "worker")
    providers = {
        "producer": settings.producer_auth_provider,
        "worker": settings.worker_auth_provider,
    }
    configs = {"producer": settings.producer_auth_config, "worker": settings.worker_auth_config}
    if settings.env == "prod":
        _check_prod(settings)
    if providers["producer"] is None and providers["worker"] is None:
        return _dev_auth(settings, env)
    built: dict[str, Authenticator] = {}
    for side in sides:
        provider = providers[side]
        if provider is None:
            built[side] = RejectingAuthenticator(
                f"no {side} auth provider is configured ({side}AuthProvider)"
            )
        else:
            built[side] = build_authenticator(
                provider,
                configs[side],
                side=side,
                settings=settings,
                http_client_factory=http_client_factory,
            )
    return Auth(
        built["producer"],
        built["worker"],
        allow_producer_as_worker=settings.allow_producer_as_worker,
    )


def _check_prod(settings: Settings) -> None:
    missing = []
    if settings.producer_auth_provider is None:
        missing.append("producerAuthProvider (env PRODUCER_AUTH_PROVIDER)")
    if settings.worker_auth_provider is None:
        missing.append("workerAuthProvider (env WORKER_AUTH_PROVIDER)")
    if not (settings.webhook_hmac_secret or "").strip():
        missing.append("webhookHmacSecret (env WEBHOOK_HMAC_SECRET)")
    if settings.webhook_unsigned:
        raise AuthConfigError(
            "webhookUnsigned (env WEBHOOK_UNSIGNED) is for development only and cannot be used "
            "with env 'prod'",
            key="webhookUnsigned",
            env="WEBHOOK_UNSIGNED",
        )
    if missing:
        raise AuthConfigError(
            f"env is 'prod' but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
            "not set: every security setting is required in prod",
            key="env",
            env="ENV",
        )
    if settings.allow_producer_as_worker:
        raise AuthConfigError(
            "allowProducerAsWorker (env ALLOW_PRODUCER_AS_WORKER) is for development only "
            "and cannot be used with env 'prod'",
            key="allowProducerAsWorker",
            env="ALLOW_PRODUCER_AS_WORKER",
        )


def _dev_auth(settings: Settings, environ: Mapping[str, str]) -> Auth:
    if not is_loopback_host(settings.host):
        raise AuthConfigError(
            f"no auth provider is configured (producerAuthProvider, workerAuthProvider) and "
            f"host {settings.host!r} is not a loopback address: refusing to serve without "
            "authentication; configure the auth providers, or bind to 127.0.0.1 for development",
            key="host",
            env="HOST",
        )
    token = environ.get(DEV_TOKEN_ENV, "").strip() or secrets.token_urlsafe(24)
    if len(token) > MAX_TOKEN_LENGTH or not all("!" <= ch <= "~" for ch in token):
        raise AuthConfigError(
            f"{DEV_TOKEN_ENV} must be visible ASCII without spaces, at most "
            f"{MAX_TOKEN_LENGTH} characters",
            env=DEV_TOKEN_ENV,
        )
    identity = Identity(
        subject=DEV_SUBJECT,
        tenant=DEV_TENANT,
        scopes=WORKER_SCOPES | {ADMIN_SCOPE},
        event_types=("*",),
        producer=True,
        worker=True,
    )
    authenticator = StaticAuthenticator([(token_digest(token), identity)])
    return Auth(
        authenticator,
        authenticator,
        allow_producer_as_worker=settings.allow_producer_as_worker,
        dev_token=token,
    )
