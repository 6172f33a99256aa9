"""Settings of a codeQ process: one frozen object, loaded by one pure function.

    settings = Settings.load(path, environ=os.environ)

``Settings.load`` reads the YAML file at ``path`` (or at ``$CODEQ_CONFIG_PATH`` when no path is
given), overrides it with environment variables taken from ``environ`` — never from
``os.environ`` behind the caller's back; ``None`` means "no environment" — and validates the
result. Nothing is read at import time.

YAML keys are camelCase (``defaultLeaseSeconds``); the environment variable of a key is its
UPPER_SNAKE form (``DEFAULT_LEASE_SECONDS``). Nested keys join with ``_``:
``rateLimit.producer.burstSize`` is ``RATE_LIMIT_PRODUCER_BURST_SIZE``. Environment values are
strings and are converted: bools accept true/false/1/0/yes/no/on/off (any case), lists are a
comma list (``5,30,120``) or a JSON list, mappings (``PERSISTENCE_CONFIG``,
``PRODUCER_AUTH_CONFIG``, ``WORKER_AUTH_CONFIG``) are a JSON object. An empty value means null
for an optional setting and an empty list for a list.

Precedence, highest first: environment, YAML file, ``persistenceConfig`` (it fills a ``redis*``
setting only when that setting is not given directly), defaults. Special cases:

* ``KVROCKS_PASSWORD`` is read when ``REDIS_PASSWORD`` is absent from the environment.
* ``REDIS_ADDR`` or ``REDIS_URL`` in the environment replaces the file's connection target
  (both ``redisAddr`` and ``redisUrl``); setting both in one place is an error.
* ``OTEL_EXPORTER_OTLP_ENDPOINT`` is used only when ``tracingOtlpEndpoint`` is set nowhere else.
* ``persistenceProvider: kvrocks`` is an alias of ``redis``.

Every problem raises :class:`SettingsError` with a one-line message naming the key, its
environment variable and, when it came from the file, the file::

    invalid setting 'partitions' (env PARTITIONS): expected int >= 1, got '0'
    unknown setting 'partitons' in /etc/codeq/config.yaml (did you mean 'partitions'?)

Secret values never appear in error messages, in ``repr(settings)`` or in
:meth:`Settings.masked` (what ``codeq config show`` prints).
"""

from __future__ import annotations

import copy
import difflib
import functools
import ipaddress
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import msgspec
import msgspec.inspect as mi
import yaml

from codeq.domain import BackoffPolicy

__all__ = [
    "CONFIG_PATH_ENV",
    "MASK",
    "SECRET_FIELDS",
    "RateLimit",
    "RateLimits",
    "Settings",
    "SettingsError",
]

#: The environment variable naming the YAML file when ``Settings.load`` gets no path.
CONFIG_PATH_ENV: Final = "CODEQ_CONFIG_PATH"

#: What a secret is replaced with in ``masked()``, ``repr()`` and error messages.
MASK: Final = "***"

#: camelCase keys (as in YAML and in ``masked()``) whose whole value is secret. Besides these,
#: the password inside ``redisUrl`` and ``persistenceConfig`` (``password`` and ``url``) is masked.
SECRET_FIELDS: Final = frozenset(
    {"redisPassword", "webhookHmacSecret", "producerAuthConfig", "workerAuthConfig"}
)

_KEY_PREFIX_RE: Final = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_PERSISTENCE_KEYS: Final = {
    "addr": "redisAddr",
    "url": "redisUrl",
    "password": "redisPassword",
    "cluster": "redisCluster",
    "db": "redisDb",
    "poolSize": "redisPoolSize",
}
_DEFAULT_RETRY_SCHEDULE: Final = (5, 30, 120, 600, 1800, 3600, 7200, 14400)


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


class _Nothing:
    """Marks "no value" where ``None`` is a value."""

    def __repr__(self) -> str:
        return "<nothing>"


_NOTHING: Final = _Nothing()


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where a value came from, for error messages."""

    file: str | None = None  # the YAML file, when the value came from it
    env: str | None = None  # the variable to name, when not the key's own (KVROCKS_PASSWORD)
    key: str | None = None  # the key to name, when not the setting's own (persistenceConfig.db)
    raw: object = _NOTHING  # the text as given in the environment


class _InvalidValue(SettingsError):
    """Raised by the validators; ``Settings.load`` rewords it with where the value came from."""

    def __init__(self, key: str, expected: str, value: object) -> None:
        super().__init__(_invalid_message(key, expected, value, None), key=key, env=_env_name(key))
        self.setting = key
        self.expected = expected
        self.value = value


# --------------------------------------------------------------------------------------------
# The settings
# --------------------------------------------------------------------------------------------


class RateLimit(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """A token bucket: ``requestsPerMinute`` refill rate, ``burstSize`` capacity."""

    requests_per_minute: int
    burst_size: int

    def __post_init__(self) -> None:
        _check_int("requestsPerMinute", self.requests_per_minute, ge=1)
        _check_int("burstSize", self.burst_size, ge=1)


class RateLimits(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """Rate limits per kind of caller; ``None`` means unlimited."""

    producer: RateLimit | None = None
    worker: RateLimit | None = None
    webhook: RateLimit | None = None
    admin: RateLimit | None = None


class Settings(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """Every setting of a codeQ process. Build it with :meth:`load` or :meth:`from_mapping`.

    Constructing it directly runs the range checks but, as always with msgspec, not the type
    checks, and does not apply ``persistenceConfig``.
    """

    # Serving
    port: int = 8080
    host: str = "127.0.0.1"
    env: Literal["dev", "prod"] = "dev"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] | None = None  # None: the process picks

    # Store
    persistence_provider: Literal["local", "memory", "redis"] | None = None
    persistence_config: dict[str, Any] | None = None
    redis_addr: str | None = None
    redis_url_setting: str | None = msgspec.field(default=None, name="redisUrl")
    redis_password: str | None = None
    redis_cluster: bool = False
    redis_db: int = 0
    redis_pool_size: int = 64
    redis_connect_timeout_seconds: float = 2.0
    redis_socket_timeout_seconds: float = 5.0
    key_prefix: str = "codeq"
    partitions: int = 1
    local_store_binary: str | None = None  # None: redis-server on PATH

    # Tasks
    default_lease_seconds: int = 300
    max_attempts_default: int = 5
    backoff_policy: BackoffPolicy = BackoffPolicy.EXP_FULL_JITTER
    backoff_base_seconds: float = 5.0
    backoff_max_seconds: float = 900.0
    requeue_inspect_limit: int = 200
    sweep_interval_ms: int = 500
    task_retention_seconds: int = 86400
    dlq_retention_seconds: int = 604800  # 0 keeps dead letters forever
    idempotency_ttl_seconds: int = 86400
    event_retention_seconds: int = 3600

    # Sizes
    max_body_bytes: int = 1048576
    max_json_depth: int = 64
    max_payload_bytes: int = 524288
    max_artifact_bytes: int = 10485760
    local_artifacts_dir: str = "./.codeq/artifacts"
    data_dir: str = "./.codeq"

    # Webhooks and delivery
    webhook_hmac_secret: str | None = None
    webhook_unsigned: bool = False
    webhook_timeout_seconds: float = 10.0
    webhook_retry_schedule: list[float] = msgspec.field(
        default_factory=lambda: list(_DEFAULT_RETRY_SCHEDULE)
    )
    webhook_allowed_cidrs: list[str] = msgspec.field(default_factory=list)
    webhook_require_https: bool = False
    result_webhook_max_attempts: int | None = None
    result_webhook_base_backoff_seconds: float | None = None
    result_webhook_max_backoff_seconds: float | None = None
    delivery_concurrency: int = 256
    delivery_per_host_concurrency: int = 16
    delivery_attempts_kept: int = 20
    consumer_ttl_seconds: int = 30
    event_max_receives: int = 5
    endpoint_disable_after_hours: float = 72.0
    subscription_min_interval_seconds: float = 5.0
    subscription_cleanup_interval_seconds: float = 60.0

    # Auth
    producer_auth_provider: Literal["static", "jwks"] | None = None
    producer_auth_config: dict[str, Any] | None = None
    worker_auth_provider: Literal["static", "jwks"] | None = None
    worker_auth_config: dict[str, Any] | None = None
    allow_producer_as_worker: bool = False
    allowed_clock_skew_seconds: int = 60
    tenant_from_subject: bool = True
    rate_limit: RateLimits = msgspec.field(default_factory=RateLimits)

    # Process
    shutdown_grace_seconds: float = 20.0
    metrics_port: int | None = None
    tracing_enabled: bool = False
    tracing_otlp_endpoint: str | None = None
    tracing_sample_ratio: float = 1.0

    def __post_init__(self) -> None:
        _validate(self)

    # ---- loading -----------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        """Read ``path`` (or ``environ[CODEQ_CONFIG_PATH]``), override with ``environ``, validate.

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
            _check_unknown(data, _settings_type(), "", file)
        _apply_environ(data, origins, env)
        return _build(data, origins)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Settings:
        """Validate a YAML-shaped mapping (camelCase keys); no file, no environment."""
        if not isinstance(data, Mapping):
            raise SettingsError(f"settings must be a mapping, got {type(data).__name__}")
        copied: dict[str, Any] = copy.deepcopy(dict(data))
        _check_unknown(copied, _settings_type(), "", None)
        return _build(copied, {})

    # ---- derived values ----------------------------------------------------------------------

    @property
    def store_kind(self) -> Literal["local", "memory", "redis"]:
        """``redis`` when an address is configured; else ``local``, the private store process
        that ``codeq serve`` starts in ``dataDir``; ``memory`` only when asked for."""
        if self.persistence_provider is not None:
            return self.persistence_provider
        if self.redis_addr or self.redis_url_setting:
            return "redis"
        return "memory"  # becomes "local" once codeq serve starts the private store

    def redis_url(self) -> str | None:
        """The URL to connect to, with the password inserted and URL-quoted; ``None`` if unset.

        Built as ``redis://[:password@]host:port/db`` from ``redisAddr``, or ``redisUrl`` with
        ``redisPassword`` inserted when the URL carries none and ``redisDb`` appended when the
        URL names no database.
        """
        password = self.redis_password or None
        if self.redis_url_setting:
            return _complete_url(self.redis_url_setting, password, self.redis_db)
        if self.redis_addr:
            host, port = _split_addr(self.redis_addr)
            auth = f":{_quote(password)}@" if password else ""
            return f"redis://{auth}{host}:{port}/{self.redis_db}"
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


# --------------------------------------------------------------------------------------------
# Validation (runs in __post_init__, so also for directly constructed Settings)
# --------------------------------------------------------------------------------------------


def _range_text(kind: str, ge: float | None, le: float | None, gt: float | None) -> str:
    if ge is not None and le is not None:
        return f"expected {kind} in {ge:g}..{le:g}"
    if gt is not None:
        return f"expected {kind} > {gt:g}"
    if ge is not None:
        return f"expected {kind} >= {ge:g}"
    return f"expected {kind} <= {le:g}" if le is not None else f"expected {kind}"


def _check_int(key: str, value: int, *, ge: int | None = None, le: int | None = None) -> None:
    if (ge is not None and value < ge) or (le is not None and value > le):
        raise _InvalidValue(key, _range_text("int", ge, le, None), value)


def _check_float(
    key: str,
    value: float,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
) -> None:
    ok = (
        math.isfinite(value)
        and (gt is None or value > gt)
        and (ge is None or value >= ge)
        and (le is None or value <= le)
    )
    if not ok:
        raise _InvalidValue(key, _range_text("finite number", ge, le, gt), value)


def _check_nonempty(key: str, value: str | None) -> None:
    if value is not None and not value.strip():
        raise _InvalidValue(key, "expected a non-empty string", value)


def _split_addr(addr: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` → (host, port); raises ValueError."""
    host, sep, port_text = addr.strip().rpartition(":")
    if not sep or not host or (":" in host and not (host.startswith("[") and host.endswith("]"))):
        raise ValueError(addr)
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(addr)
    return host, port


def _url_db(url: str) -> int | None:
    """The database number in a redis URL's path, ``None`` when it names none; ValueError."""
    path = urlsplit(url).path
    if path in ("", "/"):
        return None
    if not path[1:].isdigit():
        raise ValueError(url)
    return int(path[1:])


def _validate_redis(s: Settings) -> None:
    if s.persistence_config is not None:
        for sub in s.persistence_config:
            if sub not in _PERSISTENCE_KEYS:
                raise SettingsError(
                    f"unknown setting 'persistenceConfig.{sub}' (env PERSISTENCE_CONFIG)"
                    f"{_hint(str(sub), _PERSISTENCE_KEYS)}",
                    key=f"persistenceConfig.{sub}",
                    env="PERSISTENCE_CONFIG",
                )
    if s.redis_addr is not None:
        try:
            _split_addr(s.redis_addr)
        except ValueError:
            raise _InvalidValue(
                "redisAddr", "expected 'host:port' with a port in 1..65535", s.redis_addr
            ) from None
    url = s.redis_url_setting
    if url is not None:
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises ValueError on a bad port
            db = _url_db(url)
            ok = parts.scheme in ("redis", "rediss") and bool(parts.hostname)
        except ValueError:
            ok, db = False, None
        if not ok:
            raise _InvalidValue(
                "redisUrl", "expected redis://host:port/db or rediss://host:port/db", url
            )
        if parse_qs(parts.query).get("protocol", ["2"]) != ["2"]:
            raise _InvalidValue(
                "redisUrl", "expected no protocol option (codeQ speaks RESP2 to every store)", url
            )
        if db is not None and s.redis_db not in (0, db):
            raise _InvalidValue(
                "redisDb", f"expected 0 or {db} (the database in redisUrl)", s.redis_db
            )
        if s.redis_addr is not None:
            raise _InvalidValue("redisUrl", "expected only one of redisAddr and redisUrl", url)
    _check_int("redisDb", s.redis_db, ge=0)
    if s.redis_cluster and s.redis_db != 0:
        raise _InvalidValue("redisDb", "expected 0 when redisCluster is true", s.redis_db)
    _check_int("redisPoolSize", s.redis_pool_size, ge=1)
    _check_float("redisConnectTimeoutSeconds", s.redis_connect_timeout_seconds, gt=0)
    _check_float("redisSocketTimeoutSeconds", s.redis_socket_timeout_seconds, gt=0)
    if s.persistence_provider == "redis" and not (s.redis_addr or url):
        raise _InvalidValue(
            "persistenceProvider",
            "expected redisAddr or redisUrl to be set for 'redis'",
            s.persistence_provider,
        )


def _validate(s: Settings) -> None:
    _check_int("port", s.port, ge=1, le=65535)
    _check_nonempty("host", s.host)
    _validate_redis(s)
    if not _KEY_PREFIX_RE.match(s.key_prefix):
        raise _InvalidValue("keyPrefix", "expected 1-64 of A-Z a-z 0-9 _ . -", s.key_prefix)
    _check_int("partitions", s.partitions, ge=1, le=16384)

    _check_int("defaultLeaseSeconds", s.default_lease_seconds, ge=1, le=86400)
    _check_int("maxAttemptsDefault", s.max_attempts_default, ge=1)
    _check_float("backoffBaseSeconds", s.backoff_base_seconds, gt=0)
    _check_float("backoffMaxSeconds", s.backoff_max_seconds, ge=s.backoff_base_seconds)
    _check_int("requeueInspectLimit", s.requeue_inspect_limit, ge=1, le=10000)
    _check_int("sweepIntervalMs", s.sweep_interval_ms, ge=10)
    _check_int("taskRetentionSeconds", s.task_retention_seconds, ge=1)
    _check_int("dlqRetentionSeconds", s.dlq_retention_seconds, ge=0)
    _check_int("idempotencyTtlSeconds", s.idempotency_ttl_seconds, ge=1)
    _check_int("eventRetentionSeconds", s.event_retention_seconds, ge=1)

    _check_int("maxBodyBytes", s.max_body_bytes, ge=1)
    # Under msgspec's decoder recursion limit (about 900 levels), so a body at the limit is
    # still decoded, and an answer, never a RecursionError.
    _check_int("maxJsonDepth", s.max_json_depth, ge=2, le=512)
    _check_int("maxPayloadBytes", s.max_payload_bytes, ge=1, le=s.max_body_bytes)
    _check_int("maxArtifactBytes", s.max_artifact_bytes, ge=1)
    _check_nonempty("localArtifactsDir", s.local_artifacts_dir)
    _check_nonempty("dataDir", s.data_dir)

    _check_nonempty("webhookHmacSecret", s.webhook_hmac_secret)
    _check_float("webhookTimeoutSeconds", s.webhook_timeout_seconds, gt=0)
    for i, delay in enumerate(s.webhook_retry_schedule):
        _check_float(f"webhookRetrySchedule[{i}]", delay, ge=0)
    for i, cidr in enumerate(s.webhook_allowed_cidrs):
        try:
            ipaddress.ip_network(cidr)
        except ValueError:
            raise _InvalidValue(
                f"webhookAllowedCidrs[{i}]", "expected a network like 10.0.0.0/8", cidr
            ) from None
    if s.result_webhook_max_attempts is not None:
        _check_int("resultWebhookMaxAttempts", s.result_webhook_max_attempts, ge=1)
    base = s.result_webhook_base_backoff_seconds
    if base is not None:
        _check_float("resultWebhookBaseBackoffSeconds", base, gt=0)
    if s.result_webhook_max_backoff_seconds is not None:
        _check_float(
            "resultWebhookMaxBackoffSeconds",
            s.result_webhook_max_backoff_seconds,
            gt=0 if base is None else None,
            ge=base,
        )
    _check_int("deliveryConcurrency", s.delivery_concurrency, ge=1)
    _check_int("deliveryPerHostConcurrency", s.delivery_per_host_concurrency, ge=1)
    _check_int("deliveryAttemptsKept", s.delivery_attempts_kept, ge=1)
    _check_int("consumerTtlSeconds", s.consumer_ttl_seconds, ge=1)
    _check_int("eventMaxReceives", s.event_max_receives, ge=1)
    _check_float("endpointDisableAfterHours", s.endpoint_disable_after_hours, gt=0)
    _check_float("subscriptionMinIntervalSeconds", s.subscription_min_interval_seconds, gt=0)
    _check_float(
        "subscriptionCleanupIntervalSeconds", s.subscription_cleanup_interval_seconds, gt=0
    )

    for role, provider, config in (
        ("producer", s.producer_auth_provider, s.producer_auth_config),
        ("worker", s.worker_auth_provider, s.worker_auth_config),
    ):
        if config is not None and provider is None:
            raise _InvalidValue(
                f"{role}AuthProvider", f"expected static or jwks when {role}AuthConfig is set", None
            )
    _check_int("allowedClockSkewSeconds", s.allowed_clock_skew_seconds, ge=0)

    _check_float("shutdownGraceSeconds", s.shutdown_grace_seconds, ge=0)
    if s.metrics_port is not None:
        _check_int("metricsPort", s.metrics_port, ge=1, le=65535)
        if s.metrics_port == s.port:
            raise _InvalidValue(
                "metricsPort", f"expected a port other than port ({s.port})", s.metrics_port
            )
    _check_nonempty("tracingOtlpEndpoint", s.tracing_otlp_endpoint)
    _check_float("tracingSampleRatio", s.tracing_sample_ratio, ge=0, le=1)


# --------------------------------------------------------------------------------------------
# Names, masking, messages
# --------------------------------------------------------------------------------------------

_CAMEL_BOUNDARY: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_INDEX: Final = re.compile(r"\[\d+\]")
_PATH_TOKEN: Final = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_AT: Final = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _env_name(key: str) -> str:
    """``rateLimit.producer.burstSize`` → ``RATE_LIMIT_PRODUCER_BURST_SIZE``."""
    names = _INDEX.sub("", key).split(".")
    return "_".join(_CAMEL_BOUNDARY.sub("_", name).upper() for name in names)


def _root(key: str) -> str:
    return re.split(r"[.\[]", key, maxsplit=1)[0]


def _hint(name: str, candidates: Iterable[str]) -> str:
    options = list(candidates)
    camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name.lower())
    if camel != name and camel in options:
        return f" (did you mean {camel!r}?)"
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _quote(password: str) -> str:
    return quote(password, safe="")


def _complete_url(url: str, password: str | None, db: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if password and not parts.password:
        userinfo, at, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0] if at else ""
        netloc = f"{user}:{_quote(password)}@{hostport}"
    path = parts.path
    if path in ("", "/") and db:
        path = f"/{db}"
    return urlunsplit(parts._replace(netloc=netloc, path=path))


def _mask_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        if not parts.password:
            return url
    except ValueError:
        return MASK
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{hostport}"))


def _masked_value(key: str, value: Any) -> Any:
    """``value`` of the camelCase setting ``key``, fit to show."""
    if value is None:
        return None
    if key in SECRET_FIELDS:
        return MASK
    if key == "redisUrl" and isinstance(value, str):
        return _mask_url(value)
    if key == "persistenceConfig" and isinstance(value, dict):
        return {sub: _masked_value(f"persistenceConfig.{sub}", v) for sub, v in value.items()}
    if key == "persistenceConfig.password":
        return MASK
    if key == "persistenceConfig.url" and isinstance(value, str):
        return _mask_url(value)
    return value


def _masked_items(settings: Settings) -> Iterator[tuple[str, Any]]:
    for field in msgspec.structs.fields(settings):
        yield field.name, _masked_value(field.encode_name, getattr(settings, field.name))


def _show(keys: tuple[str, ...], value: object) -> str:
    """``value`` for an error message: secrets masked, one line, not too long."""
    for key in keys:
        if _root(key) in SECRET_FIELDS or key in (
            "persistenceConfig",
            "persistenceConfig.password",
        ):
            return repr(MASK)
        if key in ("redisUrl", "persistenceConfig.url") and isinstance(value, str):
            value = _mask_url(value)
    text = "null" if value is None else repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _problem(
    key: str, expected: str, value: object, origin: _Origin | None
) -> tuple[str, str, str]:
    """(message, key to name, environment variable to name)."""
    shown = origin.key if origin is not None and origin.key else key
    env = origin.env if origin is not None and origin.env else _env_name(shown)
    where = f" in {origin.file}" if origin is not None and origin.file else ""
    if origin is not None and origin.raw is not _NOTHING and not _INDEX.search(key):
        value = origin.raw  # the text as typed; an item of a list is shown as itself
    got = "" if value is _NOTHING else f", got {_show((key, shown), value)}"
    return f"invalid setting {shown!r} (env {env}){where}: {expected}{got}", shown, env


def _invalid_message(key: str, expected: str, value: object, origin: _Origin | None) -> str:
    return _problem(key, expected, value, origin)[0]


def _invalid(key: str, expected: str, value: object, origin: _Origin | None) -> SettingsError:
    message, shown, env = _problem(key, expected, value, origin)
    return SettingsError(message, key=shown, env=env)


def _origin_of(origins: Mapping[str, _Origin], key: str) -> _Origin | None:
    """The origin of ``key`` or of the nearest enclosing key that has one."""
    names = _INDEX.sub("", key).split(".")
    for end in range(len(names), 0, -1):
        found = origins.get(".".join(names[:end]))
        if found is not None:
            return found
    return None


# --------------------------------------------------------------------------------------------
# Types (from msgspec's own view of the structs)
# --------------------------------------------------------------------------------------------


@functools.cache
def _settings_type() -> mi.StructType:
    info = mi.type_info(Settings)
    if not isinstance(info, mi.StructType):  # pragma: no cover - msgspec guarantees it
        raise TypeError("Settings is not a Struct")
    return info


def _unwrap(t: mi.Type) -> mi.Type:
    """``X | None`` → ``X``."""
    if isinstance(t, mi.UnionType):
        options = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if len(options) == 1:
            return options[0]
    return t


def _struct_of(t: mi.Type) -> mi.StructType | None:
    t = _unwrap(t)
    return t if isinstance(t, mi.StructType) else None


@functools.cache
def _leaves() -> tuple[tuple[str, mi.Type], ...]:
    """Every settable key (dotted camelCase) with its type; nested structs are walked."""
    out: list[tuple[str, mi.Type]] = []

    def walk(struct: mi.StructType, prefix: str) -> None:
        for field in struct.fields:
            key = f"{prefix}{field.encode_name}"
            sub = _struct_of(field.type)
            if sub is not None:
                walk(sub, f"{key}.")
            else:
                out.append((key, field.type))

    walk(_settings_type(), "")
    return tuple(out)


def _describe(t: mi.Type | None) -> str:
    if isinstance(t, mi.UnionType):
        return " or ".join(_describe(x) for x in t.types if not isinstance(x, mi.NoneType))
    if isinstance(t, mi.BoolType):
        return "bool"
    if isinstance(t, mi.IntType):
        return "int"
    if isinstance(t, mi.FloatType):
        return "number"
    if isinstance(t, mi.StrType):
        return "string"
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(str(v) for v in t.values)
    if isinstance(t, mi.EnumType):
        return "one of " + ", ".join(str(m.value) for m in t.cls)
    if isinstance(t, mi.ListType):
        return f"list of {_describe(t.item_type)}"
    if isinstance(t, mi.DictType | mi.StructType):
        return "mapping"
    return "valid value"


def _parse_path(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _PATH_TOKEN.findall(path)]


def _key_of(parts: list[str | int]) -> str:
    key = ""
    for part in parts:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else part)
    return key


def _type_at(parts: list[str | int]) -> mi.Type | None:
    t: mi.Type = _settings_type()
    for part in parts:
        t = _unwrap(t)
        if isinstance(part, str) and isinstance(t, mi.StructType):
            found = [f.type for f in t.fields if f.encode_name == part]
            if not found:
                return None
            t = found[0]
        elif isinstance(part, int) and isinstance(t, mi.ListType):
            t = t.item_type
        else:
            return None
    return t


def _value_at(data: Any, parts: list[str | int]) -> object:
    for part in parts:
        found = (isinstance(part, str) and isinstance(data, dict) and part in data) or (
            isinstance(part, int) and isinstance(data, list) and 0 <= part < len(data)
        )
        if not found:
            return _NOTHING
        data = data[part]
    return data


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


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
        problem = str(getattr(exc, "problem", None) or type(exc).__name__)
        problem = " ".join(problem.split())
        raise SettingsError(f"cannot parse config file {file}{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise SettingsError(
            f"config file {file} must hold a mapping of settings, got {type(loaded).__name__}"
        )
    return loaded


def _check_unknown(
    data: Mapping[Any, Any], struct: mi.StructType, prefix: str, file: str | None
) -> None:
    known = {f.encode_name: f for f in struct.fields}
    for name, value in data.items():
        key = f"{prefix}{name}"
        field = known.get(name) if isinstance(name, str) else None
        if field is None:
            where = f" in {file}" if file else ""
            raise SettingsError(f"unknown setting {key!r}{where}{_hint(str(name), known)}", key=key)
        sub = _struct_of(field.type)
        if sub is not None and isinstance(value, Mapping):
            _check_unknown(value, sub, f"{key}.", file)


class _Expected(Exception):
    """An environment value did not parse; carries what was expected."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def _parse_env(raw: str, t: mi.Type) -> Any:
    """Convert one environment string to the YAML-shaped value of a setting of type ``t``."""
    text = raw.strip()
    if isinstance(t, mi.UnionType):
        if not text:
            return None
        t = _unwrap(t)
    if isinstance(t, mi.BoolType):
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise _Expected("expected bool (true/false/1/0/yes/no)")
    if isinstance(t, mi.IntType):
        try:
            return int(text)
        except ValueError:
            raise _Expected("expected int") from None
    if isinstance(t, mi.FloatType):
        try:
            return float(text)
        except ValueError:
            raise _Expected("expected number") from None
    if isinstance(t, mi.LiteralType | mi.EnumType):
        return text.lower()
    if isinstance(t, mi.ListType):
        return _parse_env_list(text, t)
    if isinstance(t, mi.DictType | mi.AnyType):
        try:
            value = json.loads(text)
        except ValueError:
            raise _Expected("expected a JSON object") from None
        if not isinstance(value, dict):
            raise _Expected("expected a JSON object")
        return value
    return raw  # strings are taken as given


def _parse_env_list(text: str, t: mi.ListType) -> list[Any]:
    expected = f"expected {_describe(t)} (comma-separated or a JSON list)"
    items: list[Any]
    if text.startswith("["):
        try:
            loaded = json.loads(text)
        except ValueError:
            raise _Expected(expected) from None
        if not isinstance(loaded, list):
            raise _Expected(expected)
        items = loaded
    else:
        items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return [_parse_env(item, t.item_type) if isinstance(item, str) else item for item in items]
    except _Expected:
        raise _Expected(expected) from None


def _set_path(data: dict[str, Any], key: str, value: Any) -> None:
    names = key.split(".")
    node = data
    for name in names[:-1]:
        child = node.get(name)
        if child is None:
            child = node[name] = {}
        if not isinstance(child, dict):
            return  # the file has a non-mapping here; conversion will name it
        node = child
    node[names[-1]] = value


def _apply_environ(
    data: dict[str, Any], origins: dict[str, _Origin], env: Mapping[str, str]
) -> None:
    if "REDIS_ADDR" in env or "REDIS_URL" in env:
        for key in ("redisAddr", "redisUrl"):  # the environment's target replaces the file's
            data.pop(key, None)
            origins.pop(key, None)
    for key, t in _leaves():
        var = _env_name(key)
        if var not in env and key == "redisPassword" and "KVROCKS_PASSWORD" in env:
            var = "KVROCKS_PASSWORD"
        if var not in env:
            continue
        raw = env[var]
        origin = _Origin(env=None if var == _env_name(key) else var, raw=raw)
        try:
            value = _parse_env(raw, t)
        except _Expected as exc:
            raise _invalid(key, exc.expected, raw, origin) from None
        _set_path(data, key, value)
        origins[key] = origin
    otel = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if otel and data.get("tracingOtlpEndpoint") is None:
        data["tracingOtlpEndpoint"] = otel
        origins["tracingOtlpEndpoint"] = _Origin(env="OTEL_EXPORTER_OTLP_ENDPOINT", raw=otel)


def _normalize(data: dict[str, Any]) -> None:
    """Case-fold choice values; ``kvrocks`` is ``redis``."""
    for field in _settings_type().fields:
        value = data.get(field.encode_name)
        if isinstance(value, str) and isinstance(_unwrap(field.type), mi.LiteralType | mi.EnumType):
            data[field.encode_name] = value.strip().lower()
    if data.get("persistenceProvider") == "kvrocks":
        data["persistenceProvider"] = "redis"


def _apply_persistence_config(data: dict[str, Any], origins: dict[str, _Origin]) -> None:
    """Fill ``redis*`` settings not given directly from the ``persistenceConfig`` mapping."""
    config = data.get("persistenceConfig")
    if not isinstance(config, dict):
        return  # absent, or the wrong type: conversion names it
    origin = origins.get("persistenceConfig")
    file = origin.file if origin is not None else None
    for sub in config:
        if sub not in _PERSISTENCE_KEYS:
            where = f" in {file}" if file else ""
            raise SettingsError(
                f"unknown setting 'persistenceConfig.{sub}' (env PERSISTENCE_CONFIG){where}"
                f"{_hint(str(sub), _PERSISTENCE_KEYS)}",
                key=f"persistenceConfig.{sub}",
                env="PERSISTENCE_CONFIG",
            )
    target_given = data.get("redisAddr") is not None or data.get("redisUrl") is not None
    for sub, key in _PERSISTENCE_KEYS.items():
        if config.get(sub) is None or data.get(key) is not None:
            continue
        if key in ("redisAddr", "redisUrl") and target_given:
            continue
        data[key] = config[sub]
        origins[key] = _Origin(file=file, env="PERSISTENCE_CONFIG", key=f"persistenceConfig.{sub}")


def _build(data: dict[str, Any], origins: dict[str, _Origin]) -> Settings:
    _normalize(data)
    _apply_persistence_config(data, origins)
    try:
        return msgspec.convert(data, Settings)
    except msgspec.ValidationError as exc:
        raise _translate(exc, data, origins) from None


def _translate(
    exc: msgspec.ValidationError, data: dict[str, Any], origins: Mapping[str, _Origin]
) -> SettingsError:
    """msgspec's ``Expected `int`, got `str` - at `$.partitions``` → a SettingsError."""
    match = _AT.match(str(exc))
    message = match["msg"] if match else str(exc)
    parts = _parse_path(match["path"] or "") if match else []
    prefix = _key_of(parts)
    cause = exc.__cause__
    if isinstance(cause, _InvalidValue):
        key = f"{prefix}.{cause.setting}" if prefix else cause.setting
        return _invalid(key, cause.expected, cause.value, _origin_of(origins, key))
    if isinstance(cause, SettingsError):
        return cause
    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", message)
    if unknown:
        key = f"{prefix}.{unknown[1]}" if prefix else unknown[1]
        origin = _origin_of(origins, key)
        where = f" in {origin.file}" if origin is not None and origin.file else ""
        return SettingsError(f"unknown setting {key!r}{where}", key=key)
    missing = re.fullmatch(r"Object missing required field `(.+)`", message)
    if missing:
        key = f"{prefix}.{missing[1]}" if prefix else missing[1]
        return _invalid(key, f"required when {prefix!r} is set", _NOTHING, _origin_of(origins, key))
    t = _type_at(parts)
    if t is not None and parts:
        expected = f"expected {_describe(t)}"
    else:
        expected = message.replace("`", "")
        expected = expected[:1].lower() + expected[1:]
    key = prefix or "settings"
    return _invalid(key, expected, _value_at(data, parts), _origin_of(origins, key))
