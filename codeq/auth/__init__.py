"""Authentication: bearer tokens → :class:`Identity`, for producer and worker routes.

    auth = build_auth(settings, environ=os.environ)     # raises AuthConfigError
    identity = await auth.for_producer(request.headers.get("authorization"))
    identity = await auth.for_worker(...)               # worker routes
    identity = await auth.for_any(...)                  # read routes: producer or worker
    await auth.aclose()

Providers: ``static`` (:mod:`codeq.auth.static`) and ``jwks`` (:mod:`codeq.auth.jwks`); the
wiring, dev mode and the prod checks are in :mod:`codeq.auth.providers`; claims → identity in
:mod:`codeq.auth.identity`. Every failure to authenticate is a :class:`codeq.errors.Unauthorized`
with a short reason that never contains the token. Scope and command checks (403) are the
caller's, with :meth:`Identity.has_scope`, :meth:`Identity.allows_command` and
:attr:`Identity.is_admin`.
"""

from __future__ import annotations

from codeq.auth.base import AuthConfigError, Authenticator, RejectingAuthenticator
from codeq.auth.identity import (
    ADMIN_ALL_SCOPE,
    ADMIN_SCOPE,
    WORKER_SCOPES,
    Identity,
    identity_from_claims,
)
from codeq.auth.jwks import HttpClientFactory, JwksAuthenticator
from codeq.auth.providers import (
    DEV_TOKEN_ENV,
    Auth,
    as_worker,
    build_auth,
    build_authenticator,
    parse_bearer,
)
from codeq.auth.static import StaticAuthenticator

__all__ = [
    "ADMIN_ALL_SCOPE",
    "ADMIN_SCOPE",
    "DEV_TOKEN_ENV",
    "WORKER_SCOPES",
    "Auth",
    "AuthConfigError",
    "Authenticator",
    "HttpClientFactory",
    "Identity",
    "JwksAuthenticator",
    "RejectingAuthenticator",
    "StaticAuthenticator",
    "as_worker",
    "build_auth",
    "build_authenticator",
    "identity_from_claims",
    "parse_bearer",
]
