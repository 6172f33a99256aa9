"""Settings of a codeQ process: one frozen, typed object, loaded by one pure function.

    settings = Settings.load(path, environ=os.environ)

``Settings.load`` reads the YAML file at ``path`` (or at ``$CODEQ_CONFIG_PATH`` when no path is
given), overrides it with environment variables taken from ``environ`` — never from
``os.environ`` behind the caller's back; ``None`` means "no environment" — and converts the
result with msgspec. Nothing is read at import time.

YAML keys are camelCase (``defaultLeaseSeconds``); the environment variable of a key is its
UPPER_SNAKE form (``DEFAULT_LEASE_SECONDS``). Nested keys join with ``_``:
``rateLimit.producer.burstSize`` is ``RATE_LIMIT_PRODUCER_BURST_SIZE``. Environment values are
strings: bools accept true/false/1/0/yes/no/on/off (any case), lists are a comma list
(``5,30,120``) or a JSON list, mappings (``PERSISTENCE_CONFIG``, ``PRODUCER_AUTH_CONFIG``,
``WORKER_AUTH_CONFIG``) are a JSON object, and an empty value is null for an optional setting.
Numbers and choices are converted by msgspec (so a quoted number in the file is a number too).

Precedence, highest first: environment, YAML file, ``persistenceConfig`` (it fills a ``redis*``
setting only when that setting is not given directly), defaults. Special cases:

* ``KVROCKS_PASSWORD`` is read when ``REDIS_PASSWORD`` is absent from the environment.
* ``REDIS_ADDR`` or ``REDIS_URL`` in the environment replaces the file's connection target
  (both ``redisAddr`` and ``redisUrl``); setting both in one place is an error.
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` is used only when ``tracingOtlpEndpoint`` is set nowhere else.
* ``persistenceProvider: kvrocks`` is an alias of ``redis``; choices are case-insensitive.

The constraints live in the field types (``Annotated[int, Meta(ge=1, le=16384)]``) and msgspec
enforces them — also for a ``Settings`` built directly or by ``msgspec.structs.replace``. What a
type cannot say (one setting against another, an address that must parse) is
``Settings._check``. Every problem raises :class:`SettingsError` with a one-line message naming
the key, its environment variable and, when it came from the file, the file::

    invalid setting 'partitions' (env PARTITIONS): expected int in 1..16384, got '0'
    unknown setting 'partitons' in /etc/codeq/config.yaml (did you mean 'partitions'?)

Secret values never appear in error messages, in ``repr(settings)`` or in
:meth:`Settings.masked` (what ``codeq config show`` prints).
"""

from __future__ import annotations

import contextvars
import copy
import difflib
import functools
import ipaddress
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal, TypeVar
from urllib.parse import parse_qs, quote, urlsplit

import msgspec
import msgspec.inspect as mi
import yaml
from msgspec import Meta

from codeq.domain import BackoffPolicy
from codeq.webhooks import hmac_key_problem, parse_proxy_url

__all__ = [
    "CONFIG_PATH_ENV",
    "MASK",
    "SECRET_FIELDS",
    "AuthProvider",
    "LogFormat",
    "LogLevel",
    "PersistenceConfig",
    "PreviousSecret",
    "RateLimit",
    "RateLimits",
    "Settings",
    "SettingsError",
    "StoreKind",
    "setting_rows",
]

#: The environment variable naming the YAML file when ``Settings.load`` gets no path.
CONFIG_PATH_ENV: Final = "CODEQ_CONFIG_PATH"

#: What a secret is replaced with in ``masked()``, ``repr()`` and error messages.
MASK: Final = "***"

#: camelCase keys (as in YAML and in ``masked()``) whose whole value is secret. Besides these,
#: the password inside ``redisUrl`` and ``persistenceConfig`` (``password`` and ``url``) is
#: masked, and the whole user info of ``webhookProxyUrl`` (a proxy's user name can be a token).
SECRET_FIELDS: Final = frozenset(
    {"redisPassword", "webhookHmacSecret", "producerAuthConfig", "workerAuthConfig"}
)
#: camelCase keys holding a list of mappings whose ``secret`` is secret (the rest is shown).
_SECRET_ITEMS: Final = frozenset({"webhookHmacPreviousSecrets"})

# ---- the types --------------------------------------------------------------------------------

_FINITE: Final = sys.float_info.max  # as an upper bound: only inf and nan fail it
_NON_BLANK: Final = r"\S"
_URL_FORMS: Final = (
    "expected redis://host:port/db, rediss://host:port/db or unix:///path/to/redis.sock?db=N"
)

Port = Annotated[int, Meta(ge=1, le=65535)]
Count = Annotated[int, Meta(ge=1)]
Positive = Annotated[float, Meta(gt=0, le=_FINITE)]
NonNegative = Annotated[float, Meta(ge=0, le=_FINITE)]
Text = Annotated[str, Meta(pattern=_NON_BLANK)]

StoreKind = Literal["local", "memory", "redis"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "text"]
AuthProvider = Literal["static", "jwks"]

_DEFAULT_RETRY_SCHEDULE: Final = (5, 30, 120, 600, 1800, 3600, 7200, 14400)
_HMAC_EXPECTED: Final = "expected an HMAC secret (whsec_ + base64, or any other text)"


class SettingsError(ValueError):
    """A setting is unknown, unreadable, of the wrong type or out of range.

    ``str(error)`` is one line meant for an operator. ``key`` is the camelCase key (dotted when
    nested, e.g. ``rateLimit.producer.burstSize``) and ``env`` its environment variable, when
    the problem is about one setting.
    """

    def __init__(self, message: str, *, key: str | None = None, env: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.env = env


class _Invalid(ValueError):
    """Raised by ``_check`` (msgspec wraps it); reworded with where the value came from."""

    def __init__(self, key: str, expected: str, value: object) -> None:
        super().__init__(f"{key}: {expected}")
        self.key, self.expected, self.value = key, expected, value


# Set while msgspec converts: a section built any other way is converted once more (below).
_CONVERTING: Final = contextvars.ContextVar("_CONVERTING", default=False)


class _Section(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """A frozen, camelCase part of the settings that refuses unknown keys."""

    def __post_init__(self) -> None:
        if _CONVERTING.get():
            self._check()
        else:  # built directly or replaced: msgspec checks constraints only when converting
            _convert(msgspec.to_builtins(self), type(self), {})

    def _check(self) -> None:
        """The rules no type can express; raise :class:`_Invalid`."""


class RateLimit(_Section, frozen=True, kw_only=True):
    """A token bucket: ``requestsPerMinute`` refill rate, ``burstSize`` capacity."""

    requests_per_minute: Count
    burst_size: Count


class RateLimits(_Section, frozen=True, kw_only=True):
    """Rate limits per kind of caller; ``None`` means unlimited."""

    producer: RateLimit | None = None
    worker: RateLimit | None = None
    webhook: RateLimit | None = None
    admin: RateLimit | None = None


class PreviousSecret(_Section, frozen=True, kw_only=True):
    """A global signing secret that was replaced (``webhookHmacPreviousSecrets``): it keeps
    signing result callbacks and notifications beside ``webhookHmacSecret`` (one more ``v1``
    entry) until ``expiresAt``, an RFC 3339 time with its zone; then it is ignored."""

    secret: Text
    expires_at: Annotated[datetime, Meta(tz=True)]

    def _check(self) -> None:
        if problem := hmac_key_problem(self.secret):
            raise _Invalid("secret", f"{_HMAC_EXPECTED} but it {problem}", self.secret)


class PersistenceConfig(_Section, frozen=True, kw_only=True, omit_defaults=True):
    """The original's connection mapping (one JSON object in ``PERSISTENCE_CONFIG``): each value
    fills the ``redis*`` setting of the same name (``poolSize`` → ``redisPoolSize``) when that
    setting is not given directly, and is checked there."""

    addr: str | None = None
    url: str | None = None
    password: str | None = None
    cluster: bool | None = None
    db: int | None = None
    pool_size: int | None = None


class Settings(_Section, frozen=True, kw_only=True):
    """Every setting of a codeQ process. Build it with :meth:`load` or :meth:`from_mapping`;
    built directly, it is checked the same way but ``persistenceConfig`` is not applied."""

    # Serving
    port: Port = 8080
    host: Text = "127.0.0.1"
    env: Literal["dev", "prod"] = "dev"
    log_level: LogLevel = "info"
    log_format: LogFormat | None = None  # None: the process picks

    # Store
    persistence_provider: StoreKind | None = None
    persistence_config: PersistenceConfig | None = None
    redis_addr: str | None = None
    redis_url_setting: str | None = msgspec.field(default=None, name="redisUrl")
    redis_password: str | None = None
    redis_cluster: bool = False
    redis_db: Annotated[int, Meta(ge=0)] = 0
    redis_pool_size: Count = 64
    redis_connect_timeout_seconds: Positive = 2.0
    redis_socket_timeout_seconds: Positive = 5.0
    key_prefix: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "codeq"
    partitions: Annotated[int, Meta(ge=1, le=16384)] = 1
    local_store_binary: str | None = None  # None: redis-server on PATH

    # Tasks
    default_lease_seconds: Annotated[int, Meta(ge=1, le=86400)] = 300
    max_attempts_default: Count = 5
    backoff_policy: BackoffPolicy = BackoffPolicy.EXP_FULL_JITTER
    backoff_base_seconds: Positive = 5.0
    backoff_max_seconds: Positive = 900.0
    requeue_inspect_limit: Annotated[int, Meta(ge=1, le=10000)] = 200
    sweep_interval_ms: Annotated[int, Meta(ge=10)] = 500
    task_retention_seconds: Count = 86400
    dlq_retention_seconds: Annotated[int, Meta(ge=0)] = 604800  # 0 keeps dead letters forever
    idempotency_ttl_seconds: Count = 86400
    event_retention_seconds: Count = 3600

    # Sizes
    max_body_bytes: Count = 1048576
    # Under msgspec's decoder recursion limit (about 900 levels), so a body at the limit is
    # still decoded, and an answer, never a RecursionError.
    max_json_depth: Annotated[int, Meta(ge=2, le=512)] = 64
    # Requests one gateway process works on at once; more are shed with 503 + Retry-After
    # before their latency grows without bound (long polls count only until they park).
    max_in_flight_requests: Annotated[int, Meta(ge=1, le=100000)] = 128
    # The hot task routes served by the HTTP protocol itself, without ASGI (gateway.direct).
    direct_routes: bool = True
    max_payload_bytes: Count = 524288
    max_artifact_bytes: Count = 10485760
    local_artifacts_dir: Text = "./.codeq/artifacts"
    data_dir: Text = "./.codeq"

    # Webhooks and delivery
    webhook_hmac_secret: Text | None = None
    # Rotation of the global secret: the old one signs beside the new until its expiry.
    webhook_hmac_previous_secrets: list[PreviousSecret] = msgspec.field(default_factory=list)
    webhook_unsigned: bool = False
    webhook_timeout_seconds: Positive = 10.0
    webhook_retry_schedule: list[NonNegative] = msgspec.field(
        default_factory=lambda: list(_DEFAULT_RETRY_SCHEDULE)
    )
    webhook_allowed_cidrs: list[str] = msgspec.field(default_factory=list)
    webhook_require_https: bool = False
    # An HTTP proxy all webhook traffic goes through (deliverers/proxy.py): http://host:port.
    webhook_proxy_url: str | None = None
    result_webhook_max_attempts: Count | None = None
    result_webhook_base_backoff_seconds: Positive | None = None
    result_webhook_max_backoff_seconds: Positive | None = None
    delivery_concurrency: Count = 256
    delivery_per_host_concurrency: Count = 16
    delivery_attempts_kept: Count = 20
    # How long a delivery record is kept once it ended (succeeded, dead or gone): 1 minute to
    # 365 days. The sweeper prunes older ones; a delivery still due is never pruned.
    webhook_delivery_retention_seconds: Annotated[int, Meta(ge=60, le=31_536_000)] = 2_592_000
    consumer_ttl_seconds: Count = 30
    event_max_receives: Count = 5
    endpoint_disable_after_hours: Positive = 72.0
    subscription_min_interval_seconds: Positive = 5.0
    subscription_cleanup_interval_seconds: Positive = 60.0

    # Auth
    producer_auth_provider: AuthProvider | None = None
    producer_auth_config: dict[str, Any] | None = None
    worker_auth_provider: AuthProvider | None = None
    worker_auth_config: dict[str, Any] | None = None
    allow_producer_as_worker: bool = False
    allowed_clock_skew_seconds: Annotated[int, Meta(ge=0)] = 60
    tenant_from_subject: bool = True
    rate_limit: RateLimits = msgspec.field(default_factory=RateLimits)

    # Process
    shutdown_grace_seconds: NonNegative = 20.0
    metrics_port: Port | None = None
    tracing_enabled: bool = False
    tracing_otlp_endpoint: Text | None = None
    tracing_sample_ratio: Annotated[float, Meta(ge=0, le=1)] = 1.0

    def _check(self) -> None:
        addr, url, db = self.redis_addr, self.redis_url_setting, self.redis_db
        if addr is not None and _split_addr(addr) is None:
            raise _Invalid("redisAddr", "expected 'host:port' with a port in 1..65535", addr)
        if url is not None:
            if problem := _url_problem(url):
                raise _Invalid("redisUrl", problem, url)
            if addr is not None:
                raise _Invalid("redisUrl", "expected only one of redisAddr and redisUrl", url)
            if (url_db := _url_db(url)) is not None and db not in (0, url_db):
                raise _Invalid("redisDb", f"expected 0 or {url_db} (the database in redisUrl)", db)
            if self.redis_cluster and url.lower().startswith("unix:"):
                raise _Invalid("redisUrl", "expected redis:// or rediss:// with redisCluster", url)
        if self.redis_cluster and db != 0:
            raise _Invalid("redisDb", "expected 0 when redisCluster is true", db)
        if self.persistence_provider == "redis" and not (addr or url):
            expected = "expected redisAddr or redisUrl to be set for 'redis'"
            raise _Invalid("persistenceProvider", expected, "redis")
        if self.backoff_max_seconds < self.backoff_base_seconds:
            expected = f"expected finite number >= {_num(self.backoff_base_seconds)}"
            raise _Invalid("backoffMaxSeconds", expected, self.backoff_max_seconds)
        if self.max_payload_bytes > self.max_body_bytes:
            expected = f"expected int <= maxBodyBytes ({self.max_body_bytes})"
            raise _Invalid("maxPayloadBytes", expected, self.max_payload_bytes)
        for i, cidr in enumerate(self.webhook_allowed_cidrs):
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                expected = "expected a network like 10.0.0.0/8"
                raise _Invalid(f"webhookAllowedCidrs[{i}]", expected, cidr) from None
        if self.webhook_proxy_url is not None:
            try:
                parse_proxy_url(self.webhook_proxy_url)
            except ValueError as exc:
                raise _Invalid("webhookProxyUrl", str(exc), self.webhook_proxy_url) from None
        hmac_secret = self.webhook_hmac_secret
        if hmac_secret is not None and (problem := hmac_key_problem(hmac_secret)):
            raise _Invalid("webhookHmacSecret", f"{_HMAC_EXPECTED} but it {problem}", hmac_secret)
        base, cap = (
            self.result_webhook_base_backoff_seconds,
            self.result_webhook_max_backoff_seconds,
        )
        if base is not None and cap is not None and cap < base:
            expected = f"expected finite number >= {_num(base)}"
            raise _Invalid("resultWebhookMaxBackoffSeconds", expected, cap)
        for role, provider, config in (
            ("producer", self.producer_auth_provider, self.producer_auth_config),
            ("worker", self.worker_auth_provider, self.worker_auth_config),
        ):
            if config is not None and provider is None:
                expected = f"expected static or jwks when {role}AuthConfig is set"
                raise _Invalid(f"{role}AuthProvider", expected, None)
        if self.webhook_hmac_previous_secrets and not self.webhook_hmac_secret:
            expected = "expected webhookHmacSecret to be set as well (the current secret)"
            raise _Invalid("webhookHmacPreviousSecrets", expected, None)
        if self.metrics_port == self.port:
            expected = f"expected a port other than port ({self.port})"
            raise _Invalid("metricsPort", expected, self.metrics_port)

    # ---- loading -----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Read ``path`` (or ``environ[CODEQ_CONFIG_PATH]``), override with ``environ``, convert.

        Pure apart from reading that one file: pass ``os.environ`` explicitly to use the
        process environment. Raises :class:`SettingsError`.
        """
        env: Mapping[str, str] = {} if environ is None else environ
        if path is None and env.get(CONFIG_PATH_ENV):
            path = env[CONFIG_PATH_ENV]
        data: dict[str, Any] = {}
        origins: dict[str, _Origin] = {}
        if path is not None:
            file = os.fspath(path)
            data = _read_yaml(file)
            origins = {str(key): _Origin(file=file) for key in data}
        _apply_environ(data, origins, env)
        return _build(data, origins)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Settings:
        """Convert a YAML-shaped mapping (camelCase keys); no file, no environment."""
        if not isinstance(data, Mapping):
            raise SettingsError(f"settings must be a mapping, got {type(data).__name__}")
        return _build(copy.deepcopy(dict(data)), {})

    # ---- derived values ----------------------------------------------------------------------

    @property
    def store_kind(self) -> StoreKind:
        """``redis`` when an address is configured; else ``local``, the private store process
        that ``codeq serve`` starts in ``dataDir``; ``memory`` only when asked for."""
        if self.persistence_provider is not None:
            return self.persistence_provider
        if self.redis_addr or self.redis_url_setting:
            return "redis"
        return "local"

    def redis_url(self) -> str | None:
        """The URL to connect to, with the password inserted and URL-quoted; ``None`` if unset.

        Built as ``redis://[:password@]host:port/db`` from ``redisAddr``, or ``redisUrl`` with
        ``redisPassword`` inserted when the URL carries none (``unix://:password@/path``, the
        form redis-py reads) and ``redisDb`` added when the URL names no database (``/db``, or
        ``?db=`` for a ``unix://`` URL).
        """
        password = self.redis_password or None
        if self.redis_url_setting:
            return _complete_url(self.redis_url_setting, password, self.redis_db)
        if self.redis_addr:
            auth = f":{_quote(password)}@" if password else ""
            return f"redis://{auth}{self.redis_addr.strip()}/{self.redis_db}"
        return None

    # ---- showing -----------------------------------------------------------------------------

    def masked(self) -> dict[str, Any]:
        """The effective settings as a camelCase dict, with every secret replaced by ``MASK``."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return {key: _masked_value(key, value) for key, value in out.items()}

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{name}={value!r}' for name, value in _masked_items(self))})"

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return list(_masked_items(self))


_PERSISTENCE_KEYS: Final = {
    field.encode_name: f"redis{field.encode_name[0].upper()}{field.encode_name[1:]}"
    for field in msgspec.structs.fields(PersistenceConfig)
}


def setting_rows() -> list[tuple[str, str, str]]:
    """(key, environment variable, expected type with its range) of every setting, in order:
    what ``docs/configuration.md`` lists."""
    return [(key, _env_name(key), _describe(t)) for key, t in _leaves().items()]


# ---- redis addresses --------------------------------------------------------------------------


def _split_addr(addr: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` → (host, port); ``None`` when it is neither."""
    host, sep, port = addr.strip().rpartition(":")
    if not sep or not host or (":" in host and not (host.startswith("[") and host.endswith("]"))):
        return None
    return (host, int(port)) if port.isdigit() and 1 <= int(port) <= 65535 else None


def _url_db(url: str) -> int | None:
    """The database a redis URL names (``?db=N`` wins, as in redis-py; else ``/N`` for a TCP
    URL), ``None`` when it names none; ValueError when it is not a number."""
    parts = urlsplit(url)
    text = parse_qs(parts.query).get("db", [""])[0]
    if not text and parts.scheme != "unix":
        text = parts.path.replace("/", "")
    if text and not text.isdigit():
        raise ValueError(url)
    return int(text) if text else None


def _url_problem(url: str) -> str | None:
    """What is wrong with a ``redisUrl`` (as an "expected ..." phrase), ``None`` if nothing."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
        _url_db(url)
    except ValueError:
        return _URL_FORMS
    if not url.lower().startswith(f"{parts.scheme}://"):
        return _URL_FORMS
    if parts.scheme in ("redis", "rediss"):
        ok = bool(parts.hostname)
    else:  # a Unix socket: an absolute path and no host
        ok = parts.scheme == "unix" and not parts.hostname and parts.path.startswith("/")
    if not ok:
        return _URL_FORMS
    if parse_qs(parts.query).get("protocol", ["2"]) != ["2"]:
        return "expected no protocol option (codeQ speaks RESP2 to every store)"
    return None


def _quote(password: str) -> str:
    return quote(password, safe="")


def _with_password(netloc: str, password: str) -> str:
    """``netloc`` with ``password`` (quoted, or the mask) as its userinfo's password."""
    userinfo, at, hostport = netloc.rpartition("@")
    user = userinfo.partition(":")[0] if at else ""
    return f"{user}:{password}@{hostport}"


def _unsplit(scheme: str, netloc: str, path: str, query: str, fragment: str) -> str:
    # Not urlunsplit: it writes unix:///path (no host) as unix:/path.
    return f"{scheme}://{netloc}{path}{'?' * bool(query)}{query}{'#' * bool(fragment)}{fragment}"


def _complete_url(url: str, password: str | None, db: int) -> str:
    scheme, netloc, path, query, fragment = parts = urlsplit(url)
    if password and not parts.password:
        netloc = _with_password(netloc, _quote(password))
    if db and _url_db(url) is None:
        if scheme == "unix":
            query = f"{query}&db={db}" if query else f"db={db}"
        else:
            path = f"/{db}"
    return _unsplit(scheme, netloc, path, query, fragment)


def _mask_url(url: str) -> str:
    try:
        scheme, netloc, path, query, fragment = parts = urlsplit(url)
        if not parts.password:
            return url
    except ValueError:
        return MASK
    return _unsplit(scheme, _with_password(netloc, MASK), path, query, fragment)


def _mask_user_info(url: str) -> str:
    """``url`` with all before its host (user name and password) shown as ``***@``; for text
    that is no URL too, so an error message never shows it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" not in rest:
        return url
    return f"{scheme}{sep}{MASK}@{rest.rpartition('@')[2]}"


# ---- showing secrets --------------------------------------------------------------------------


def _masked_value(key: str, value: Any) -> Any:
    """``value`` of the camelCase setting ``key`` (dotted inside ``persistenceConfig``), fit to
    show."""
    if value is None:
        return None
    if key in _SECRET_ITEMS and isinstance(value, list):  # expiries are no secret
        return [{**v, "secret": MASK} if isinstance(v, dict) else MASK for v in value]
    if key in SECRET_FIELDS or key == "persistenceConfig.password":
        return MASK
    if key in ("redisUrl", "persistenceConfig.url") and isinstance(value, str):
        return _mask_url(value)
    if key == "webhookProxyUrl" and isinstance(value, str):
        return _mask_user_info(value)
    if key == "persistenceConfig" and isinstance(value, dict):
        return {sub: _masked_value(f"{key}.{sub}", v) for sub, v in value.items()}
    return value


def _masked_items(settings: Settings) -> Iterator[tuple[str, Any]]:
    for field in msgspec.structs.fields(settings):
        value = getattr(settings, field.name)
        if isinstance(value, PersistenceConfig):
            value = msgspec.to_builtins(value)
        yield field.name, _masked_value(field.encode_name, value)


def _show(keys: tuple[str, ...], value: object) -> str:
    """``value`` for an error message: secrets masked, one line, not too long."""
    for key in keys:
        secret = re.split(r"[.\[]", key)[0] in SECRET_FIELDS | _SECRET_ITEMS
        if key == "persistenceConfig" or secret:
            return repr(MASK)  # the whole mapping, or what did not parse as one
        value = _masked_value(key, value)
    text = "null" if value is None else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


# ---- keys, environment variables and types ---------------------------------------------------

_CAMEL_BOUNDARY: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_INDEX: Final = re.compile(r"\[\d+\]")
_PATH_TOKEN: Final = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_AT: Final = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


def _unwrap(t: mi.Type) -> mi.Type:
    """``X | None`` → ``X``."""
    if isinstance(t, mi.UnionType):
        options = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if len(options) == 1:
            return options[0]
    return t


@functools.cache
def _leaves() -> dict[str, mi.Type]:
    """Every key with an environment variable (dotted camelCase) and its type. ``rateLimit`` is
    walked; ``persistenceConfig`` is one JSON variable, as in the original."""
    out: dict[str, mi.Type] = {}

    def walk(struct: mi.StructType, prefix: str) -> None:
        for field in struct.fields:
            key, sub = f"{prefix}{field.encode_name}", _unwrap(field.type)
            if isinstance(sub, mi.StructType) and sub.cls is not PersistenceConfig:
                walk(sub, f"{key}.")
            else:
                out[key] = field.type

    settings = mi.type_info(Settings)
    assert isinstance(settings, mi.StructType)
    walk(settings, "")
    return out


def _env_name(key: str) -> str:
    """``rateLimit.producer.burstSize`` → ``RATE_LIMIT_PRODUCER_BURST_SIZE``; a key inside a
    JSON setting (``persistenceConfig.db``) → that setting's variable."""
    names = _INDEX.sub("", key).split(".")
    while len(names) > 1 and ".".join(names[:-1]) in _leaves():
        names.pop()
    return "_".join(_CAMEL_BOUNDARY.sub("_", name).upper() for name in names)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _range(t: mi.IntType | mi.FloatType) -> str:
    le = None if t.le == _FINITE else t.le
    if t.ge is not None and le is not None:
        return f" in {_num(t.ge)}..{_num(le)}"
    bounds = ((">", t.gt), (">=", t.ge), ("<", t.lt), ("<=", le))
    return "".join(f" {op} {_num(v)}" for op, v in bounds if v is not None)


def _describe(t: mi.Type) -> str:
    """A type as an operator reads it, ranges included: ``int in 1..16384``."""
    if isinstance(t, mi.UnionType):
        return " or ".join(_describe(x) for x in t.types if not isinstance(x, mi.NoneType))
    if isinstance(t, mi.BoolType):
        return "bool"
    if isinstance(t, mi.IntType):
        return f"int{_range(t)}"
    if isinstance(t, mi.FloatType):
        return f"{'finite ' if t.le == _FINITE else ''}number{_range(t)}"
    if isinstance(t, mi.StrType):
        if t.pattern == _NON_BLANK:
            return "non-blank string"
        return f"string matching {t.pattern}" if t.pattern else "string"
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(str(v) for v in t.values)
    if isinstance(t, mi.EnumType):
        return "one of " + ", ".join(str(m.value) for m in t.cls)
    if isinstance(t, mi.ListType):
        return f"list of {_describe(t.item_type)}"
    if isinstance(t, mi.DateTimeType):
        return "RFC 3339 time with its zone" if t.tz else "RFC 3339 time"
    return "mapping"  # dicts and structs


# ---- loading ----------------------------------------------------------------------------------

_MISSING: Final = object()  # "no value", where None is one


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a value came from, for error messages."""

    file: str | None = None  # the YAML file, when the value came from it
    env: str | None = None  # the environment variable that set it
    key: str | None = None  # the key to name, when not the setting's own (persistenceConfig.db)
    raw: str | None = None  # the text as given in the environment


def _read_yaml(file: str) -> dict[str, Any]:
    try:
        with open(file, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise SettingsError(f"cannot read config file {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"cannot read config file {file}: not UTF-8 text") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(exc, "problem", None) or type(exc).__name__).split())
        raise SettingsError(f"cannot parse config file {file}{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise SettingsError(
            f"config file {file} must hold a mapping of settings, got {type(loaded).__name__}"
        )
    return loaded


def _env_value(raw: str, t: mi.Type) -> Any:
    """One environment string in the shape msgspec converts (numbers stay text: msgspec's lax
    mode reads them); ValueError with an "expected ..." phrase when it cannot be."""
    text = raw.strip()
    optional = isinstance(t, mi.UnionType) and any(isinstance(x, mi.NoneType) for x in t.types)
    if not text and optional:
        return None
    t = _unwrap(t)
    if isinstance(t, mi.BoolType):
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise ValueError("expected bool (true/false/1/0/yes/no)")
    if isinstance(t, mi.ListType):
        if not text.startswith("["):
            return [item.strip() for item in text.split(",") if item.strip()]
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if not isinstance(items, list):
            raise ValueError(f"expected {_describe(t)} (comma-separated or a JSON list)")
        return items
    if isinstance(t, mi.DictType | mi.StructType):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return value
    return raw if isinstance(t, mi.StrType) else text


def _apply_environ(
    data: dict[str, Any], origins: dict[str, _Origin], env: Mapping[str, str]
) -> None:
    if "REDIS_ADDR" in env or "REDIS_URL" in env:
        for key in ("redisAddr", "redisUrl"):  # the environment's target replaces the file's
            data.pop(key, None)
            origins.pop(key, None)
    for key, t in _leaves().items():
        var = _env_name(key)
        if var not in env and key == "redisPassword":
            var = "KVROCKS_PASSWORD"
        if var not in env:
            continue
        origins[key] = _Origin(env=var, raw=env[var])
        try:
            value = _env_value(env[var], t)
        except ValueError as exc:
            raise _error(key, str(exc), env[var], origins) from None
        node = data
        *parents, name = key.split(".")
        for parent in parents:
            child = node.setdefault(parent, {})
            if child is None:
                child = node[parent] = {}
            if not isinstance(child, dict):
                break  # the file has a non-mapping here; conversion names it
            node = child
        else:
            node[name] = value
    otel = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if otel and data.get("tracingOtlpEndpoint") is None:
        data["tracingOtlpEndpoint"] = otel
        origins["tracingOtlpEndpoint"] = _Origin(env="OTEL_EXPORTER_OTLP_ENDPOINT", raw=otel)


def _build(data: dict[str, Any], origins: dict[str, _Origin]) -> Settings:
    # Choices are case-insensitive; kvrocks is redis.
    for key, t in _leaves().items():
        if isinstance(data.get(key), str) and isinstance(_unwrap(t), mi.LiteralType | mi.EnumType):
            data[key] = data[key].strip().lower()
    if data.get("persistenceProvider") == "kvrocks":
        data["persistenceProvider"] = "redis"
    # persistenceConfig fills the redis* settings not given directly.
    config = data.get("persistenceConfig")
    if isinstance(config, dict):
        file = origins["persistenceConfig"].file if "persistenceConfig" in origins else None
        target_given = data.get("redisAddr") is not None or data.get("redisUrl") is not None
        for sub, key in _PERSISTENCE_KEYS.items():
            if config.get(sub) is None or data.get(key) is not None:
                continue
            if key in ("redisAddr", "redisUrl") and target_given:
                continue
            data[key] = config[sub]
            origins[key] = _Origin(
                file=file, env="PERSISTENCE_CONFIG", key=f"persistenceConfig.{sub}"
            )
    return _convert(data, Settings, origins)


_S = TypeVar("_S", bound=_Section)


def _convert(data: dict[str, Any], cls: type[_S], origins: Mapping[str, _Origin]) -> _S:
    token = _CONVERTING.set(True)
    try:
        return msgspec.convert(data, cls, strict=False)
    except msgspec.ValidationError as exc:
        raise _translate(exc, cls, data, origins) from None
    finally:
        _CONVERTING.reset(token)


# ---- errors -----------------------------------------------------------------------------------


def _origin_of(origins: Mapping[str, _Origin], key: str) -> _Origin | None:
    """The origin of ``key`` or of the nearest enclosing key that has one."""
    names = _INDEX.sub("", key).split(".")
    for end in range(len(names), 0, -1):
        found = origins.get(".".join(names[:end]))
        if found is not None:
            return found
    return None


def _error(key: str, expected: str, value: object, origins: Mapping[str, _Origin]) -> SettingsError:
    """``invalid setting 'key' (env VAR) in FILE: expected ..., got ...``."""
    origin = _origin_of(origins, key)
    shown = origin.key if origin is not None and origin.key else key
    env = origin.env if origin is not None and origin.env else _env_name(shown)
    where = f" in {origin.file}" if origin is not None and origin.file else ""
    if origin is not None and origin.raw is not None and origins.get(key) is origin:
        value = origin.raw  # the text as typed
    got = "" if value is _MISSING else f", got {_show((key, shown), value)}"
    message = f"invalid setting {shown!r} (env {env}){where}: {expected}{got}"
    return SettingsError(message, key=shown, env=env)


def _hint(name: str, options: list[str]) -> str:
    camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name.lower())
    close = [camel] if camel != name and camel in options else []
    close = close or difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _translate(
    exc: msgspec.ValidationError,
    cls: type[_Section],
    data: dict[str, Any],
    origins: Mapping[str, _Origin],
) -> SettingsError:
    """msgspec's ``Expected `int`, got `str` - at `$.partitions``` → a SettingsError."""
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches every string
    parts: list[str | int] = [
        name or int(index) for name, index in _PATH_TOKEN.findall(match["path"] or "")
    ]
    prefix = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    at = f"{prefix}." if prefix else ""
    t: mi.Type | None = mi.type_info(cls)
    value: Any = data
    for part in parts:  # the type and the value msgspec stopped at
        t = _unwrap(t) if t is not None else None
        if isinstance(t, mi.StructType):
            t = next((f.type for f in t.fields if f.encode_name == part), None)
        else:
            t = t.item_type if isinstance(t, mi.ListType) else None
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            value = _MISSING
    if isinstance(exc.__cause__, _Invalid):
        cause = exc.__cause__
        return _error(at + cause.key, cause.expected, cause.value, origins)
    if unknown := re.fullmatch(r"Object contains unknown field `(.+)`", match["msg"]):
        key = at + unknown[1]
        origin = _origin_of(origins, key)
        env = origin.env if origin is not None else None
        where = f" (env {env})" if env else ""
        where += f" in {origin.file}" if origin is not None and origin.file else ""
        struct = _unwrap(t) if t is not None else None
        names = [f.encode_name for f in struct.fields] if isinstance(struct, mi.StructType) else []
        message = f"unknown setting {key!r}{where}{_hint(unknown[1], names)}"
        return SettingsError(message, key=key, env=env)
    if missing := re.fullmatch(r"Object missing required field `(.+)`", match["msg"]):
        return _error(at + missing[1], f"required when {prefix!r} is set", _MISSING, origins)
    if t is None or not parts:  # not about one setting (a whole mapping of the wrong type)
        expected = match["msg"].replace("`", "")
        return _error(prefix or "settings", expected[:1].lower() + expected[1:], _MISSING, origins)
    return _error(prefix, f"expected {_describe(t)}", value, origins)
