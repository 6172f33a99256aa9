"""Settings: YAML + environment → one validated, frozen object, with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec
import pytest
from redis.connection import UnixDomainSocketConnection, parse_url

from codeq.domain import BackoffPolicy
from codeq.settings import (
    CONFIG_PATH_ENV,
    MASK,
    SECRET_FIELDS,
    RateLimit,
    RateLimits,
    Settings,
    SettingsError,
)

# Values tests treat as secrets: none of them may ever be printed.
HIDDEN_REDIS = "r3dis-S3CRET"
HIDDEN_HMAC = "hmac-S3CRET-value"
HIDDEN_BEARER = "tok-S3CRET-value"


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(
    path: str | os.PathLike[str] | None = None, environ: dict[str, str] | None = None
) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        Settings.load(path, environ)
    return info.value


def mapping_error(data: dict[str, Any]) -> SettingsError:
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping(data)
    return info.value


def assert_one_line(error: SettingsError) -> str:
    message = str(error)
    assert "\n" not in message
    assert message
    return message


# ---- defaults and sources --------------------------------------------------------------------


def test_defaults() -> None:
    s = Settings.load()
    assert s == Settings()
    assert (s.port, s.host, s.env, s.log_level, s.log_format) == (
        8080,
        "127.0.0.1",
        "dev",
        "info",
        None,
    )
    assert s.key_prefix == "codeq"
    assert s.partitions == 1
    assert s.default_lease_seconds == 300
    assert s.max_attempts_default == 5
    assert s.backoff_policy is BackoffPolicy.EXP_FULL_JITTER
    assert (s.backoff_base_seconds, s.backoff_max_seconds) == (5.0, 900.0)
    assert s.dlq_retention_seconds == 604800
    assert s.webhook_retry_schedule == [5, 30, 120, 600, 1800, 3600, 7200, 14400]
    assert s.webhook_allowed_cidrs == []
    assert s.rate_limit == RateLimits()
    assert s.tenant_from_subject is True
    assert s.tracing_sample_ratio == 1.0
    assert s.store_kind == "local"
    assert s.redis_url() is None


def test_load_never_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARTITIONS", "7")
    monkeypatch.setenv(CONFIG_PATH_ENV, "/nonexistent/config.yaml")
    assert Settings.load().partitions == 1
    assert Settings.load(environ=None).partitions == 1
    assert Settings.load(environ={"PARTITIONS": "7"}).partitions == 7


def test_default_lists_are_not_shared() -> None:
    a, b = Settings(), Settings()
    a.webhook_retry_schedule.append(1)
    assert b.webhook_retry_schedule == [5, 30, 120, 600, 1800, 3600, 7200, 14400]


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(AttributeError):
        s.partitions = 2  # type: ignore[misc]
    assert s.partitions == 1


def test_yaml_loading(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
port: 9000
env: prod
logLevel: WARNING
logFormat: json
keyPrefix: q1
partitions: 8
defaultLeaseSeconds: 60
backoffPolicy: linear
backoffBaseSeconds: 1
backoffMaxSeconds: 30.5
webhookRetrySchedule: [1, 2, 3]
webhookAllowedCidrs: [10.0.0.0/8, "fd00::/8"]
webhookRequireHttps: yes
rateLimit:
  producer: {requestsPerMinute: 600, burstSize: 50}
redisAddr: kv.internal:6666
""",
    )
    s = Settings.load(path)
    assert s.port == 9000
    assert s.env == "prod"
    assert s.log_level == "warning"
    assert s.log_format == "json"
    assert (s.key_prefix, s.partitions, s.default_lease_seconds) == ("q1", 8, 60)
    assert s.backoff_policy is BackoffPolicy.LINEAR
    assert (s.backoff_base_seconds, s.backoff_max_seconds) == (1.0, 30.5)
    assert s.webhook_retry_schedule == [1, 2, 3]
    assert s.webhook_allowed_cidrs == ["10.0.0.0/8", "fd00::/8"]
    assert s.webhook_require_https is True
    assert s.rate_limit.producer == RateLimit(requests_per_minute=600, burst_size=50)
    assert s.rate_limit.worker is None
    assert s.store_kind == "redis"
    assert s.redis_url() == "redis://kv.internal:6666/0"


def test_yaml_path_may_be_a_str(tmp_path: Path) -> None:
    path = write(tmp_path, "partitions: 3\n")
    assert Settings.load(str(path)).partitions == 3


def test_empty_yaml_file_gives_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "# nothing here\n")
    assert Settings.load(path) == Settings()


def test_env_overrides_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "partitions: 4\nport: 9000\nhost: 0.0.0.0\n")
    s = Settings.load(path, {"PARTITIONS": "16", "HOST": "10.1.2.3"})
    assert s.partitions == 16  # from the environment
    assert s.host == "10.1.2.3"  # from the environment
    assert s.port == 9000  # from the file
    assert s.default_lease_seconds == 300  # default


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "partitions: 5\n")
    s = Settings.load(environ={CONFIG_PATH_ENV: str(path), "PORT": "9001"})
    assert (s.partitions, s.port) == (5, 9001)


def test_explicit_path_wins_over_config_path_env(tmp_path: Path) -> None:
    explicit = write(tmp_path, "partitions: 2\n", "explicit.yaml")
    other = write(tmp_path, "partitions: 9\n", "other.yaml")
    assert Settings.load(explicit, {CONFIG_PATH_ENV: str(other)}).partitions == 2


def test_from_mapping_validates_and_does_not_mutate() -> None:
    data: dict[str, Any] = {
        "partitions": 3,
        "persistenceProvider": "KVRocks",
        "persistenceConfig": {"addr": "kv:1"},
        "rateLimit": {"admin": {"requestsPerMinute": 5, "burstSize": 1}},
    }
    before = repr(data)
    s = Settings.from_mapping(data)
    assert s.partitions == 3
    assert s.persistence_provider == "redis"
    assert s.redis_addr == "kv:1"
    assert s.rate_limit.admin == RateLimit(requests_per_minute=5, burst_size=1)
    assert repr(data) == before


# ---- unknown keys and wrong types ----------------------------------------------------------


def test_unknown_yaml_key_is_named_with_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "partitons: 4\n")
    error = load_error(path)
    assert str(error) == f"unknown setting 'partitons' in {path} (did you mean 'partitions'?)"
    assert error.key == "partitons"


def test_snake_case_yaml_key_suggests_camel_case(tmp_path: Path) -> None:
    path = write(tmp_path, "default_lease_seconds: 60\n")
    message = assert_one_line(load_error(path))
    assert message.startswith("unknown setting 'default_lease_seconds'")
    assert "did you mean 'defaultLeaseSeconds'" in message


def test_unknown_nested_key_is_named_with_its_path(tmp_path: Path) -> None:
    path = write(tmp_path, "rateLimit:\n  producer: {requestsPerMinute: 1, burstSize: 1, x: 2}\n")
    error = load_error(path)
    assert str(error).startswith(f"unknown setting 'rateLimit.producer.x' in {path}")
    assert error.key == "rateLimit.producer.x"


def test_wrong_type_in_yaml_names_key_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "partitions: many\n")
    error = load_error(path)
    assert str(error) == (
        f"invalid setting 'partitions' (env PARTITIONS) in {path}: "
        "expected int in 1..16384, got 'many'"
    )
    assert (error.key, error.env) == ("partitions", "PARTITIONS")


def test_wrong_type_in_env_names_key_and_env() -> None:
    error = load_error(environ={"DEFAULT_LEASE_SECONDS": "5m"})
    assert str(error) == (
        "invalid setting 'defaultLeaseSeconds' (env DEFAULT_LEASE_SECONDS): "
        "expected int in 1..86400, got '5m'"
    )
    assert (error.key, error.env) == ("defaultLeaseSeconds", "DEFAULT_LEASE_SECONDS")


def test_wrong_choice_lists_the_choices() -> None:
    message = assert_one_line(load_error(environ={"BACKOFF_POLICY": "random"}))
    assert message.startswith("invalid setting 'backoffPolicy' (env BACKOFF_POLICY): expected")
    for policy in BackoffPolicy:
        assert policy.value in message
    assert message.endswith("got 'random'")


def test_wrong_type_in_nested_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "rateLimit:\n  worker: {requestsPerMinute: lots, burstSize: 1}\n")
    error = load_error(path)
    assert error.key == "rateLimit.worker.requestsPerMinute"
    assert error.env == "RATE_LIMIT_WORKER_REQUESTS_PER_MINUTE"
    assert "(env RATE_LIMIT_WORKER_REQUESTS_PER_MINUTE)" in assert_one_line(error)


def test_top_level_yaml_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- partitions\n- 4\n")
    message = assert_one_line(load_error(path))
    assert str(path) in message
    assert "mapping" in message


def test_unparsable_yaml_is_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "partitions: [1,\nport: 2\n  bad: indent\n")
    message = assert_one_line(load_error(path))
    assert message.startswith(f"cannot parse config file {path} at line ")


def test_missing_file() -> None:
    message = assert_one_line(load_error("/nonexistent/codeq.yaml"))
    assert message.startswith("cannot read config file /nonexistent/codeq.yaml")


# ---- impossible values -----------------------------------------------------------------------


def test_partitions_zero_from_env_matches_documented_message() -> None:
    error = load_error(environ={"PARTITIONS": "0"})
    assert str(error) == (
        "invalid setting 'partitions' (env PARTITIONS): expected int in 1..16384, got '0'"
    )


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"partitions": 0}, "partitions"),
        ({"partitions": 16385}, "partitions"),
        ({"port": 0}, "port"),
        ({"keyPrefix": "has space"}, "keyPrefix"),
        ({"keyPrefix": ""}, "keyPrefix"),
        ({"keyPrefix": "x" * 65}, "keyPrefix"),
        ({"defaultLeaseSeconds": 86401}, "defaultLeaseSeconds"),
        ({"maxAttemptsDefault": 0}, "maxAttemptsDefault"),
        ({"backoffBaseSeconds": 0}, "backoffBaseSeconds"),
        ({"backoffBaseSeconds": 10, "backoffMaxSeconds": 5}, "backoffMaxSeconds"),
        ({"requeueInspectLimit": 10001}, "requeueInspectLimit"),
        ({"sweepIntervalMs": 9}, "sweepIntervalMs"),
        ({"dlqRetentionSeconds": -1}, "dlqRetentionSeconds"),
        ({"maxPayloadBytes": 2048, "maxBodyBytes": 1024}, "maxPayloadBytes"),
        ({"webhookAllowedCidrs": ["10.0.0.0/33"]}, "webhookAllowedCidrs[0]"),
        ({"webhookAllowedCidrs": ["10.0.0.0/8", "nonsense"]}, "webhookAllowedCidrs[1]"),
        ({"webhookRetrySchedule": [5, -1]}, "webhookRetrySchedule[1]"),
        ({"redisUrl": "http://kv:6666"}, "redisUrl"),
        ({"redisUrl": "kv:6666"}, "redisUrl"),
        ({"redisAddr": "kv"}, "redisAddr"),
        ({"redisAddr": "kv:70000"}, "redisAddr"),
        ({"redisAddr": "kv:1", "redisUrl": "redis://kv:2"}, "redisUrl"),
        ({"redisAddr": "kv:1", "redisCluster": True, "redisDb": 3}, "redisDb"),
        ({"persistenceProvider": "redis"}, "persistenceProvider"),
        ({"persistenceProvider": "postgres"}, "persistenceProvider"),
        ({"tracingSampleRatio": 1.5}, "tracingSampleRatio"),
        ({"metricsPort": 8080}, "metricsPort"),
        ({"resultWebhookBaseBackoffSeconds": 10, "resultWebhookMaxBackoffSeconds": 1}, None),
        ({"producerAuthConfig": {"tokens": ["t"]}}, "producerAuthProvider"),
        ({"env": "staging"}, "env"),
        ({"webhookHmacSecret": ""}, "webhookHmacSecret"),
        ({"rateLimit": {"webhook": {"requestsPerMinute": 0, "burstSize": 1}}}, None),
    ],
)
def test_impossible_values_are_rejected_naming_the_key(
    data: dict[str, Any], key: str | None
) -> None:
    error = mapping_error(data)
    message = assert_one_line(error)
    expected_key = key or error.key
    assert expected_key is not None
    assert error.key == expected_key
    assert message.startswith(f"invalid setting '{expected_key}' (env {error.env}): ")
    assert error.env is not None
    assert error.env.isupper()


def test_nested_range_error_names_nested_key_and_env() -> None:
    error = mapping_error({"rateLimit": {"webhook": {"requestsPerMinute": 0, "burstSize": 1}}})
    assert error.key == "rateLimit.webhook.requestsPerMinute"
    assert error.env == "RATE_LIMIT_WEBHOOK_REQUESTS_PER_MINUTE"
    assert str(error).endswith("expected int >= 1, got 0")


def test_backoff_max_below_base_from_env(tmp_path: Path) -> None:
    path = write(tmp_path, "backoffMaxSeconds: 60\n")
    error = load_error(path, {"BACKOFF_BASE_SECONDS": "120"})
    assert error.key == "backoffMaxSeconds"
    assert str(error) == (
        f"invalid setting 'backoffMaxSeconds' (env BACKOFF_MAX_SECONDS) in {path}: "
        "expected finite number >= 120, got 60.0"
    )


def test_bad_cidr_from_env_names_the_item() -> None:
    error = load_error(environ={"WEBHOOK_ALLOWED_CIDRS": "10.0.0.0/8, 300.0.0.0/8"})
    assert str(error) == (
        "invalid setting 'webhookAllowedCidrs[1]' (env WEBHOOK_ALLOWED_CIDRS): "
        "expected a network like 10.0.0.0/8, got '300.0.0.0/8'"
    )


def test_bad_redis_url_scheme_does_not_print_the_password() -> None:
    error = load_error(environ={"REDIS_URL": f"http://:{HIDDEN_REDIS}@kv:6666/0"})
    message = assert_one_line(error)
    assert message.startswith("invalid setting 'redisUrl' (env REDIS_URL): expected redis://")
    assert HIDDEN_REDIS not in message
    assert MASK in message


def test_nan_is_not_a_valid_number() -> None:
    error = load_error(environ={"WEBHOOK_TIMEOUT_SECONDS": "nan"})
    assert error.key == "webhookTimeoutSeconds"


def test_direct_construction_runs_range_checks() -> None:
    with pytest.raises(SettingsError, match=r"^invalid setting 'partitions' \(env PARTITIONS\)"):
        Settings(partitions=0)
    with pytest.raises(SettingsError, match="burstSize"):
        RateLimit(requests_per_minute=1, burst_size=0)


def test_replace_runs_the_same_checks() -> None:
    # What codeq serve --port does: the types' ranges and the cross-field rules still hold.
    s = Settings()
    with pytest.raises(SettingsError, match=r"^invalid setting 'port' \(env PORT\): expected int"):
        msgspec.structs.replace(s, port=70000)
    with pytest.raises(SettingsError, match=r"^invalid setting 'metricsPort'"):
        msgspec.structs.replace(s, metrics_port=9100, port=9100)
    assert msgspec.structs.replace(s, port=9000).port == 9000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"backoffMaxSeconds": float("inf")}, "expected finite number > 0, got inf"),
        ({"webhookRetrySchedule": [5, float("nan")]}, "expected finite number >= 0, got nan"),
        ({"host": "   "}, "expected non-blank string, got '   '"),
        ({"keyPrefix": "a b"}, "expected string matching ^[A-Za-z0-9_.-]{1,64}$, got 'a b'"),
        ({"tracingSampleRatio": 1.5}, "expected number in 0..1, got 1.5"),
        ({"partitions": 2.5}, "expected int in 1..16384, got 2.5"),
        ({"persistenceConfig": {"db": -1}}, "expected int >= 0, got -1"),
    ],
)
def test_the_message_states_the_type_and_its_range(data: dict[str, Any], message: str) -> None:
    assert assert_one_line(mapping_error(data)).endswith(message)


def test_non_finite_numbers_from_env_and_yaml(tmp_path: Path) -> None:
    assert load_error(environ={"BACKOFF_MAX_SECONDS": "inf"}).key == "backoffMaxSeconds"
    path = write(tmp_path, "shutdownGraceSeconds: .inf\n")
    assert load_error(path).key == "shutdownGraceSeconds"


def test_quoted_numbers_and_bools_in_yaml_are_converted(tmp_path: Path) -> None:
    # msgspec's lax conversion reads the environment's strings, and the file's quoted values.
    path = write(tmp_path, "port: '9000'\nredisCluster: 'true'\nredisAddr: kv:1\n")
    s = Settings.load(path)
    assert (s.port, s.redis_cluster) == (9000, True)


# ---- environment conversions -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("Yes", True),
        ("false", False),
        ("False", False),
        ("0", False),
        ("no", False),
        ("NO", False),
    ],
)
def test_bools_from_env(raw: str, expected: bool) -> None:
    s = Settings.load(environ={"WEBHOOK_REQUIRE_HTTPS": raw, "TRACING_ENABLED": raw})
    assert s.webhook_require_https is expected
    assert s.tracing_enabled is expected


def test_bad_bool_from_env() -> None:
    error = load_error(environ={"REDIS_CLUSTER": "sometimes"})
    assert str(error) == (
        "invalid setting 'redisCluster' (env REDIS_CLUSTER): "
        "expected bool (true/false/1/0/yes/no), got 'sometimes'"
    )


def test_numbers_from_env() -> None:
    s = Settings.load(
        environ={"BACKOFF_BASE_SECONDS": "0.5", "TRACING_SAMPLE_RATIO": "0.25", "METRICS_PORT": "9"}
    )
    assert (s.backoff_base_seconds, s.tracing_sample_ratio, s.metrics_port) == (0.5, 0.25, 9)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5,30,120", [5, 30, 120]),
        (" 5 , 30 ,", [5, 30]),
        ("[1, 2, 3]", [1, 2, 3]),
        ("", []),
    ],
)
def test_retry_schedule_list_from_env(raw: str, expected: list[int]) -> None:
    assert Settings.load(environ={"WEBHOOK_RETRY_SCHEDULE": raw}).webhook_retry_schedule == expected


def test_string_list_from_env() -> None:
    s = Settings.load(environ={"WEBHOOK_ALLOWED_CIDRS": "10.0.0.0/8,192.168.1.0/24"})
    assert s.webhook_allowed_cidrs == ["10.0.0.0/8", "192.168.1.0/24"]
    s = Settings.load(environ={"WEBHOOK_ALLOWED_CIDRS": '["fd00::/8"]'})
    assert s.webhook_allowed_cidrs == ["fd00::/8"]


def test_bad_list_from_env() -> None:
    error = load_error(environ={"WEBHOOK_RETRY_SCHEDULE": "5,soon"})
    assert str(error) == (
        "invalid setting 'webhookRetrySchedule[1]' (env WEBHOOK_RETRY_SCHEDULE): "
        "expected finite number >= 0, got 'soon'"
    )
    error = load_error(environ={"WEBHOOK_RETRY_SCHEDULE": "[5, 30"})
    assert error.key == "webhookRetrySchedule"
    assert str(error).endswith("(comma-separated or a JSON list), got '[5, 30'")


def test_empty_env_value_clears_an_optional_setting(tmp_path: Path) -> None:
    path = write(tmp_path, "metricsPort: 9100\n")
    assert Settings.load(path).metrics_port == 9100
    assert Settings.load(path, {"METRICS_PORT": ""}).metrics_port is None


def test_auth_config_from_env_json() -> None:
    s = Settings.load(
        environ={
            "PRODUCER_AUTH_PROVIDER": "jwks",
            "PRODUCER_AUTH_CONFIG": '{"jwksUrl": "https://idp/jwks", "audience": "codeq"}',
            "WORKER_AUTH_PROVIDER": "static",
            "WORKER_AUTH_CONFIG": '{"tokens": ["x"]}',
            "ALLOW_PRODUCER_AS_WORKER": "yes",
        }
    )
    assert s.producer_auth_provider == "jwks"
    assert s.producer_auth_config == {"jwksUrl": "https://idp/jwks", "audience": "codeq"}
    assert s.worker_auth_provider == "static"
    assert s.worker_auth_config == {"tokens": ["x"]}
    assert s.allow_producer_as_worker is True


def test_auth_config_that_is_not_json_is_masked_in_the_error() -> None:
    error = load_error(
        environ={"WORKER_AUTH_PROVIDER": "static", "WORKER_AUTH_CONFIG": f"tokens={HIDDEN_BEARER}"}
    )
    assert error.key == "workerAuthConfig"
    assert HIDDEN_BEARER not in str(error)


# ---- store and redis ---------------------------------------------------------------------------


def test_persistence_config_json_fills_redis_settings() -> None:
    s = Settings.load(
        environ={
            "PERSISTENCE_CONFIG": (
                '{"addr": "kv:6666", "password": "pw", "db": 2, "poolSize": 8, "cluster": false}'
            )
        }
    )
    assert (s.redis_addr, s.redis_password, s.redis_db, s.redis_pool_size) == (
        "kv:6666",
        "pw",
        2,
        8,
    )
    assert s.redis_cluster is False
    assert s.store_kind == "redis"
    assert s.redis_url() == "redis://:pw@kv:6666/2"


def test_direct_redis_settings_win_over_persistence_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "redisUrl: redis://direct:1\npersistenceConfig: {addr: 'pc:2', db: 0, poolSize: 4}\n",
    )
    s = Settings.load(path, {"REDIS_POOL_SIZE": "9"})
    assert s.redis_addr is None  # the connection target was given directly, as redisUrl
    assert s.redis_url() == "redis://direct:1"
    assert s.redis_pool_size == 9


def test_persistence_config_unknown_key_is_named() -> None:
    error = load_error(environ={"PERSISTENCE_CONFIG": '{"adress": "kv:1"}'})
    assert str(error) == (
        "unknown setting 'persistenceConfig.adress' (env PERSISTENCE_CONFIG) (did you mean 'addr'?)"
    )


def test_persistence_config_wrong_type_names_the_inner_key() -> None:
    error = load_error(environ={"PERSISTENCE_CONFIG": '{"addr": "kv:1", "db": "two"}'})
    assert str(error) == (
        "invalid setting 'persistenceConfig.db' (env PERSISTENCE_CONFIG): expected int, got 'two'"
    )


def test_persistence_config_that_is_not_json_does_not_leak_it() -> None:
    error = load_error(environ={"PERSISTENCE_CONFIG": f'{{"password": "{HIDDEN_REDIS}"'})
    assert error.key == "persistenceConfig"
    assert HIDDEN_REDIS not in str(error)


def test_kvrocks_password_is_the_fallback_of_redis_password() -> None:
    base = {"REDIS_ADDR": "kv:6666"}
    kvrocks_only = Settings.load(environ={**base, "KVROCKS_PASSWORD": "k"})
    assert kvrocks_only.redis_url() == "redis://:k@kv:6666/0"
    both = Settings.load(environ={**base, "KVROCKS_PASSWORD": "k", "REDIS_PASSWORD": "r"})
    assert both.redis_url() == "redis://:r@kv:6666/0"
    neither = Settings.load(environ=base)
    assert neither.redis_password is None
    assert neither.redis_url() == "redis://kv:6666/0"


def test_kvrocks_password_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "redisAddr: kv:1\nredisPassword: from-file\n")
    assert Settings.load(path).redis_url() == "redis://:from-file@kv:1/0"
    assert Settings.load(path, {"KVROCKS_PASSWORD": "env"}).redis_url() == "redis://:env@kv:1/0"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({}, "local"),
        ({"persistenceProvider": "local"}, "local"),
        ({"persistenceProvider": "memory"}, "memory"),
        ({"persistenceProvider": "memory", "redisAddr": "kv:1"}, "memory"),
        ({"redisAddr": "kv:1"}, "redis"),
        ({"redisUrl": "rediss://kv:1"}, "redis"),
        ({"persistenceProvider": "redis", "redisAddr": "kv:1"}, "redis"),
        ({"persistenceProvider": "kvrocks", "redisAddr": "kv:1"}, "redis"),
        ({"persistenceConfig": {"addr": "kv:1"}}, "redis"),
    ],
)
def test_store_kind(data: dict[str, Any], kind: str) -> None:
    assert Settings.from_mapping(data).store_kind == kind


def test_kvrocks_alias_from_env() -> None:
    s = Settings.load(environ={"PERSISTENCE_PROVIDER": "kvrocks", "REDIS_ADDR": "kv:6666"})
    assert s.persistence_provider == "redis"
    assert s.store_kind == "redis"


def test_redis_url_quotes_the_password() -> None:
    tricky = "p@ss:w/rd %?#"
    s = Settings.load(environ={"REDIS_ADDR": "kv.local:6666", "REDIS_PASSWORD": tricky})
    url = s.redis_url()
    assert url == "redis://:p%40ss%3Aw%2Frd%20%25%3F%23@kv.local:6666/0"
    parts = urlsplit(url)
    assert parts.password is not None
    assert unquote(parts.password) == tricky
    assert (parts.hostname, parts.port, parts.path) == ("kv.local", 6666, "/0")


def test_redis_url_from_addr_with_db_and_ipv6() -> None:
    assert Settings.from_mapping({"redisAddr": "[::1]:6379", "redisDb": 3}).redis_url() == (
        "redis://[::1]:6379/3"
    )


def test_redis_url_inserts_password_when_the_url_has_none() -> None:
    s = Settings.from_mapping({"redisUrl": "rediss://kv:6666", "redisPassword": "a/b"})
    assert s.redis_url() == "rediss://:a%2Fb@kv:6666"
    with_user = Settings.from_mapping({"redisUrl": "redis://app@kv:1/2", "redisPassword": "pw"})
    assert with_user.redis_url() == "redis://app:pw@kv:1/2"


def test_redis_url_keeps_its_own_password_and_gains_the_db() -> None:
    s = Settings.from_mapping(
        {"redisUrl": "redis://:own@kv:6666", "redisPassword": "other", "redisDb": 4}
    )
    assert s.redis_url() == "redis://:own@kv:6666/4"


@pytest.mark.parametrize(
    ("data", "url"),
    [
        ({"redisUrl": "unix:///run/codeq/store.sock"}, "unix:///run/codeq/store.sock"),
        ({"redisUrl": "unix:///s.sock?db=2", "redisDb": 2}, "unix:///s.sock?db=2"),
        ({"redisUrl": "unix:///s.sock", "redisDb": 3}, "unix:///s.sock?db=3"),
        ({"redisUrl": "unix:///s.sock?timeout=1", "redisDb": 3}, "unix:///s.sock?timeout=1&db=3"),
        ({"redisUrl": "unix:///s.sock", "redisPassword": "p@ss/1"}, "unix://:p%40ss%2F1@/s.sock"),
        ({"redisUrl": "unix://:own@/s.sock", "redisPassword": "other"}, "unix://:own@/s.sock"),
    ],
)
def test_redis_url_may_name_a_unix_socket(data: dict[str, Any], url: str) -> None:
    s = Settings.from_mapping(data)
    assert s.store_kind == "redis"
    assert s.redis_url() == url


def test_a_unix_socket_url_reads_back_in_redis_py() -> None:
    s = Settings.load(
        environ={"REDIS_URL": "unix:///tmp/codeq.sock", "REDIS_PASSWORD": "p@ss", "REDIS_DB": "4"}
    )
    url = s.redis_url()
    assert url is not None
    assert parse_url(url) == {
        "path": "/tmp/codeq.sock",
        "password": "p@ss",
        "db": 4,
        "connection_class": UnixDomainSocketConnection,
    }
    assert s.masked()["redisUrl"] == "unix:///tmp/codeq.sock"
    shown = Settings.from_mapping({"redisUrl": f"unix://:{HIDDEN_REDIS}@/s.sock"}).masked()
    assert shown["redisUrl"] == f"unix://:{MASK}@/s.sock"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"redisUrl": "unix://relative/s.sock"}, "redisUrl"),
        ({"redisUrl": "unix:/s.sock"}, "redisUrl"),
        ({"redisUrl": "unix:///s.sock?db=two"}, "redisUrl"),
        ({"redisUrl": "unix:///s.sock?protocol=3"}, "redisUrl"),
        ({"redisUrl": "unix:///s.sock?db=2", "redisDb": 3}, "redisDb"),
        ({"redisUrl": "unix:///s.sock", "redisCluster": True}, "redisUrl"),
    ],
)
def test_bad_unix_socket_urls(data: dict[str, Any], key: str) -> None:
    error = mapping_error(data)
    assert error.key == key
    assert assert_one_line(error).startswith(f"invalid setting '{key}'")


def test_env_redis_addr_replaces_the_file_url(tmp_path: Path) -> None:
    path = write(tmp_path, "redisUrl: redis://from-file:1\n")
    s = Settings.load(path, {"REDIS_ADDR": "from-env:2"})
    assert s.redis_url_setting is None
    assert s.redis_url() == "redis://from-env:2/0"


# ---- tracing -----------------------------------------------------------------------------------


def test_otel_endpoint_is_only_a_fallback(tmp_path: Path) -> None:
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "TRACING_ENABLED": "1"}
    s = Settings.load(environ=otel)
    assert (s.tracing_enabled, s.tracing_otlp_endpoint) == (True, "http://otel:4318")
    s = Settings.load(environ={**otel, "TRACING_OTLP_ENDPOINT": "http://mine:4318"})
    assert s.tracing_otlp_endpoint == "http://mine:4318"
    path = write(tmp_path, "tracingOtlpEndpoint: http://file:4318\n")
    assert Settings.load(path, otel).tracing_otlp_endpoint == "http://file:4318"


# ---- rate limits -------------------------------------------------------------------------------


def test_rate_limit_from_env() -> None:
    s = Settings.load(
        environ={
            "RATE_LIMIT_PRODUCER_REQUESTS_PER_MINUTE": "600",
            "RATE_LIMIT_PRODUCER_BURST_SIZE": "20",
            "RATE_LIMIT_ADMIN_REQUESTS_PER_MINUTE": "10",
            "RATE_LIMIT_ADMIN_BURST_SIZE": "2",
        }
    )
    assert s.rate_limit.producer == RateLimit(requests_per_minute=600, burst_size=20)
    assert s.rate_limit.admin == RateLimit(requests_per_minute=10, burst_size=2)
    assert s.rate_limit.worker is None
    assert s.rate_limit.webhook is None


def test_rate_limit_env_merges_into_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "rateLimit:\n  worker: {requestsPerMinute: 100, burstSize: 10}\n")
    s = Settings.load(path, {"RATE_LIMIT_WORKER_BURST_SIZE": "30"})
    assert s.rate_limit.worker == RateLimit(requests_per_minute=100, burst_size=30)


def test_rate_limit_half_given_names_the_missing_key() -> None:
    error = load_error(environ={"RATE_LIMIT_WEBHOOK_BURST_SIZE": "5"})
    assert str(error) == (
        "invalid setting 'rateLimit.webhook.requestsPerMinute' "
        "(env RATE_LIMIT_WEBHOOK_REQUESTS_PER_MINUTE): required when 'rateLimit.webhook' is set"
    )


def test_rate_limit_bad_env_value() -> None:
    error = load_error(
        environ={
            "RATE_LIMIT_WORKER_REQUESTS_PER_MINUTE": "60",
            "RATE_LIMIT_WORKER_BURST_SIZE": "0",
        }
    )
    assert str(error) == (
        "invalid setting 'rateLimit.worker.burstSize' (env RATE_LIMIT_WORKER_BURST_SIZE): "
        "expected int >= 1, got '0'"
    )


# ---- secrets -------------------------------------------------------------------------------


def secret_settings() -> Settings:
    return Settings.load(
        environ={
            "REDIS_URL": f"redis://app:{HIDDEN_REDIS}@kv:6666/0",
            "REDIS_PASSWORD": HIDDEN_REDIS,
            "PERSISTENCE_CONFIG": f'{{"password": "{HIDDEN_REDIS}", "poolSize": 4}}',
            "WEBHOOK_HMAC_SECRET": HIDDEN_HMAC,
            "PRODUCER_AUTH_PROVIDER": "static",
            "PRODUCER_AUTH_CONFIG": f'{{"tokens": ["{HIDDEN_BEARER}"]}}',
            "WORKER_AUTH_PROVIDER": "jwks",
            "WORKER_AUTH_CONFIG": f'{{"clientSecret": "{HIDDEN_BEARER}"}}',
        }
    )


def test_secret_fields_are_camel_case_keys_of_the_masked_dict() -> None:
    assert {"redisPassword", "webhookHmacSecret"} <= SECRET_FIELDS
    assert set(Settings().masked()) >= SECRET_FIELDS


def test_masked_hides_every_secret() -> None:
    s = secret_settings()
    assert s.webhook_hmac_secret == HIDDEN_HMAC  # the object itself keeps the real value
    shown = s.masked()
    for secret in (HIDDEN_REDIS, HIDDEN_HMAC, HIDDEN_BEARER):
        assert secret not in repr(shown)
    for key in SECRET_FIELDS:
        assert shown[key] == MASK
    assert shown["redisUrl"] == f"redis://app:{MASK}@kv:6666/0"
    assert shown["persistenceConfig"] == {"password": MASK, "poolSize": 4}


def test_masked_is_the_effective_camel_case_settings() -> None:
    s = Settings.load(environ={"PARTITIONS": "3", "BACKOFF_POLICY": "fixed"})
    shown = s.masked()
    assert shown["partitions"] == 3
    assert shown["backoffPolicy"] == "fixed"
    assert shown["redisPassword"] is None  # an unset secret shows as unset
    assert shown["rateLimit"] == {"producer": None, "worker": None, "webhook": None, "admin": None}
    assert Settings.from_mapping({k: v for k, v in shown.items() if v is not None}) == s


def test_repr_hides_secrets() -> None:
    text = repr(secret_settings())
    for secret in (HIDDEN_REDIS, HIDDEN_HMAC, HIDDEN_BEARER):
        assert secret not in text
    assert "webhook_hmac_secret='***'" in text


def test_errors_do_not_print_secrets(tmp_path: Path) -> None:
    path = write(tmp_path, f"webhookHmacSecret: [{HIDDEN_HMAC}]\n")
    message = assert_one_line(load_error(path))
    assert "webhookHmacSecret" in message
    assert HIDDEN_HMAC not in message


# ---- the global signing secrets are checked as they will sign ------------------------------

GOOD_WHSEC = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BAD_WHSEC = "whsec_S3CRET!not*base64"
SIGNING_KEY = "whsk_" + "S3CRETS3CRETS3CRETS3CRETS3CRETS3CRETS3CRETA="
LATER = "2999-01-01T00:00:00Z"


def test_global_secrets_that_sign_are_taken() -> None:
    s = Settings.from_mapping(
        {
            "webhookHmacSecret": "any text signs with its UTF-8 bytes",
            "webhookHmacPreviousSecrets": [
                {"secret": GOOD_WHSEC, "expiresAt": LATER},
                {"secret": "older plain text", "expiresAt": LATER},
            ],
        }
    )
    assert [p.secret for p in s.webhook_hmac_previous_secrets] == [GOOD_WHSEC, "older plain text"]


@pytest.mark.parametrize(
    ("data", "key", "why"),
    [
        ({"webhookHmacSecret": BAD_WHSEC}, "webhookHmacSecret", "no base64 key"),
        ({"webhookHmacSecret": "whsec_"}, "webhookHmacSecret", "no base64 key"),
        ({"webhookHmacSecret": SIGNING_KEY}, "webhookHmacSecret", "ed25519 signing key"),
        (
            {
                "webhookHmacSecret": GOOD_WHSEC,
                "webhookHmacPreviousSecrets": [
                    {"secret": GOOD_WHSEC, "expiresAt": LATER},
                    {"secret": BAD_WHSEC, "expiresAt": LATER},
                ],
            },
            "webhookHmacPreviousSecrets[1].secret",
            "no base64 key",
        ),
        (
            {
                "webhookHmacSecret": GOOD_WHSEC,
                "webhookHmacPreviousSecrets": [{"secret": SIGNING_KEY, "expiresAt": LATER}],
            },
            "webhookHmacPreviousSecrets[0].secret",
            "ed25519 signing key",
        ),
    ],
)
def test_a_global_secret_that_cannot_sign_stops_the_start(
    data: dict[str, Any], key: str, why: str
) -> None:
    """Refused at load, naming the exact field, rather than failing inside every attempt."""
    error = mapping_error(data)
    message = assert_one_line(error)
    assert error.key == key
    assert message.startswith(f"invalid setting '{key}' (env {error.env}): expected an HMAC")
    assert why in message
    assert "S3CRET" not in message


def test_a_global_secret_from_the_environment_is_checked_too() -> None:
    error = load_error(
        None,
        {
            "WEBHOOK_HMAC_SECRET": GOOD_WHSEC,
            "WEBHOOK_HMAC_PREVIOUS_SECRETS": (
                f'[{{"secret": "{GOOD_WHSEC}", "expiresAt": "{LATER}"}},'
                f' {{"secret": "{BAD_WHSEC}", "expiresAt": "{LATER}"}}]'
            ),
        },
    )
    assert error.key == "webhookHmacPreviousSecrets[1].secret"
    assert error.env == "WEBHOOK_HMAC_PREVIOUS_SECRETS"
    assert "S3CRET" not in str(error)
