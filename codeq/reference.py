"""Reference pages generated from the code: ``docs/configuration.md`` from the settings Struct,
``docs/cli.md`` from the CLI's command tree, and the event types of ``docs/webhooks.md`` (the
block between its ``<!-- event-types: ... -->`` and ``<!-- /event-types -->`` markers) from the
event-type catalog (:mod:`codeq.catalog`).

    python -m codeq.reference settings > docs/configuration.md
    python -m codeq.reference cli > docs/cli.md
    python -m codeq.reference event-types docs/webhooks.md   # rewrites the block in place

Tests regenerate each and compare, so the pages cannot drift from the code.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from pathlib import Path
from typing import Any

from codeq import catalog
from codeq import settings as settings_module

__all__ = [
    "DESCRIPTIONS",
    "EVENT_TYPES_END",
    "EVENT_TYPES_START",
    "cli_markdown",
    "event_types_markdown",
    "settings_markdown",
    "with_event_types",
]

#: One line per setting (``*`` matches one level of a dotted key).
DESCRIPTIONS: dict[str, str] = {
    "port": "HTTP port of the gateway.",
    "host": "Listen address. Dev mode (no auth settings) only listens on loopback.",
    "env": "`prod` makes missing security settings fatal at start-up.",
    "logLevel": "Lowest level logged.",
    "logFormat": "`json` (one object per line) or `text`; unset: text on a terminal, else JSON.",
    "persistenceProvider": "`redis` (Redis/KVRocks at `redisAddr`/`redisUrl`; `kvrocks` is an "
    "alias), `local` (a private store process that `codeq serve` starts, supervises and stops, "
    "its data in `dataDir`) or `memory` (in-process, keeps nothing; tests and demos). Unset: "
    "`redis` when an address is given, else `local`.",
    "localStoreBinary": "The server `persistenceProvider: local` runs: a `redis-server` or a "
    "KVRocks binary (told apart by `--version`). Unset: `redis-server` on `PATH`.",
    "persistenceConfig": "The original's JSON form: `addr`, `url`, `password`, `cluster`, `db`, "
    "`poolSize`; a `redis*` setting given directly wins.",
    "redisAddr": "`host:port` of Redis or KVRocks.",
    "redisUrl": (
        "`redis://` or `rediss://` URL instead of `redisAddr`, or a Unix socket "
        "(`unix:///path/to/redis.sock?db=N`). codeQ speaks RESP2 to every store (KVRocks' "
        "default): a `protocol` option other than 2 is refused."
    ),
    "redisPassword": "Password (env also `KVROCKS_PASSWORD`). Secret.",
    "redisCluster": "Talk Redis Cluster protocol (use with `partitions` > 1).",
    "redisDb": "Database number (0 in cluster mode; the URL's own, if it names one).",
    "redisPoolSize": "Connections per process.",
    "redisConnectTimeoutSeconds": "Connect timeout.",
    "redisSocketTimeoutSeconds": "Reply timeout; a store slower than this answers 503.",
    "keyPrefix": "Prefix of every key, so several deployments can share a store.",
    "partitions": "Hash-tag partitions of the key space (spread over a cluster's slots).",
    "defaultLeaseSeconds": "Lease of a claim that names none.",
    "maxAttemptsDefault": "Claims before the dead-letter queue, for tasks that name none.",
    "backoffPolicy": "Retry delay after a nack or an expired lease.",
    "backoffBaseSeconds": "First retry delay of the backoff policy.",
    "backoffMaxSeconds": "Cap of the retry delay; at least `backoffBaseSeconds`.",
    "requeueInspectLimit": "Bound on repair work per claim or sweep step.",
    "sweepIntervalMs": "How often the sweeper moves due delayed tasks and expired leases.",
    "taskRetentionSeconds": "Finished tasks are purged this long after they finish.",
    "dlqRetentionSeconds": "Dead tasks are purged after this; 0 keeps them.",
    "idempotencyTtlSeconds": "How long an `idempotencyKey` is remembered.",
    "eventRetentionSeconds": "Event stream entries older than this are trimmed "
    "(never past a consumer group's progress).",
    "maxBodyBytes": "Largest request body (413 above).",
    "maxInFlightRequests": "Requests one gateway process works on at once (long polls count "
    "until they start to wait); a request beyond it is answered 503 `overloaded` with "
    "`Retry-After: 1` at once, so latency stays bounded under overload (counted in "
    "`codeq_http_shed_total`, and a warning at most every 10 s says how many). Probes and "
    "`/metrics` are never shed.",
    "directRoutes": "Serve the hot task routes (create, claim, heartbeat, abandon, nack, "
    "result) from the HTTP protocol itself, without ASGI and Litestar's request machinery: the "
    "same handlers, checks and answers at about two thirds of the CPU. `false` sends every "
    "request through Litestar (for comparison). Off while tracing is on, and under granian.",
    "maxJsonDepth": "Deepest nesting of arrays and objects in a request body, the body itself "
    "counting as 1 (400 above).",
    "maxPayloadBytes": "Largest task payload or result; at most `maxBodyBytes`.",
    "maxArtifactBytes": "Largest inline (`contentBase64`) artifact.",
    "localArtifactsDir": "Where inline artifacts are written.",
    "webhookHmacSecret": "Signs result callbacks and notifications (`whsec_...` or any "
    "string). Required in prod. Secret.",
    "webhookTimeoutSeconds": "Timeout of one delivery attempt: the connect and the HTTP exchange, "
    "not the wait for a connection slot to a busy host (bounded on its own, webhooks.md).",
    "webhookRetrySchedule": "Delays between delivery attempts (seconds, jittered ±20%).",
    "webhookAllowedCidrs": "Private ranges webhooks may reach (the SSRF guard refuses "
    "loopback, private and link-local addresses otherwise).",
    "webhookRequireHttps": "Refuse `http://` webhook URLs.",
    "webhookProxyUrl": "An HTTP proxy every webhook goes through (`http://host:port`, optionally "
    "`http://user:password@host:port`: sent as `Proxy-Authorization`, never shown). Each target "
    "is still resolved and checked here, and the proxy is asked to `CONNECT` to the checked "
    "address (webhooks.md). Unset: straight to the target.",
    "webhookHmacPreviousSecrets": "Replaced global secrets, each `{secret, expiresAt}` "
    "(RFC 3339 with its zone): each keeps signing result callbacks and notifications beside "
    "`webhookHmacSecret` (one more `v1` signature) until it expires. Secret.",
    "webhookUnsigned": "Send result callbacks and notifications unsigned when no "
    "`webhookHmacSecret` is set (development only). Without it, a development secret is made "
    "once and kept in `dataDir`.",
    "dataDir": "Where the service keeps its local data: the private store's files "
    "(`persistenceProvider: local`) and the development webhook secret.",
    "resultWebhookMaxAttempts": "The original's setting: attempts of a result callback "
    "(replaces the schedule's length).",
    "resultWebhookBaseBackoffSeconds": "The original's setting: first callback retry delay.",
    "resultWebhookMaxBackoffSeconds": "The original's setting: cap of the callback delay "
    "(at least the base).",
    "deliveryConcurrency": "Deliveries in flight per deliverer process.",
    "deliveryPerHostConcurrency": "Deliveries in flight per target host.",
    "deliveryAttemptsKept": "Attempts kept in a delivery's log.",
    "webhookDeliveryRetentionSeconds": "How long a delivery record (with its attempts) is kept "
    "once it has ended (succeeded, dead or given up); the sweeper prunes older ones in bounded "
    "steps. A delivery still due is never pruned.",
    "consumerTtlSeconds": "A deliverer not seen for this long is dead; its work is taken over.",
    "eventMaxReceives": "An event read this many times without success is set aside (poison).",
    "endpointDisableAfterHours": "An endpoint failing for this long is disabled.",
    "subscriptionMinIntervalSeconds": "Default least time between two notifications "
    "of one subscription.",
    "subscriptionCleanupIntervalSeconds": "How often expired subscriptions are pruned.",
    "producerAuthProvider": "`static` or `jwks`; unset on both sides: dev mode.",
    "producerAuthConfig": "The provider's configuration (JSON in the environment). Secret.",
    "workerAuthProvider": "`static` or `jwks` for worker tokens.",
    "workerAuthConfig": "The worker provider's configuration. Secret.",
    "allowProducerAsWorker": "Producer tokens also work on worker routes (refused in prod).",
    "allowedClockSkewSeconds": "Leeway for JWT `exp`/`nbf`.",
    "tenantFromSubject": "A token without a tenant claim gets its subject as tenant.",
    "rateLimit.*.requestsPerMinute": "Token bucket refill rate of the scope "
    "(`producer`, `worker`, `webhook`, `admin`); unset: unlimited.",
    "rateLimit.*.burstSize": "Token bucket capacity of the scope.",
    "shutdownGraceSeconds": "On SIGTERM: how long in-flight requests and deliveries may finish.",
    "metricsPort": "Serve `/metrics` on this port as well (not `port`).",
    "tracingEnabled": "OpenTelemetry spans (needs the `tracing` extra).",
    "tracingOtlpEndpoint": "OTLP/HTTP endpoint (else `OTEL_EXPORTER_OTLP_ENDPOINT`).",
    "tracingSampleRatio": "Share of traces sampled.",
}


def describe(key: str) -> str | None:
    if key in DESCRIPTIONS:
        return DESCRIPTIONS[key]
    for pattern, text in DESCRIPTIONS.items():
        if "*" in pattern and fnmatch.fnmatchcase(key, pattern):
            return text
    return None


def _default_of(defaults: Any, key: str) -> str:
    value = defaults
    for part in key.split("."):
        if not isinstance(value, dict):
            return "—"
        value = value.get(part)
    if value is None:
        return "—"
    if key in settings_module.SECRET_FIELDS:
        return "—"
    text = json.dumps(value) if isinstance(value, list | dict | bool) else str(value)
    return f"`{text}`"


def settings_rows() -> list[tuple[str, str, str, str, str]]:
    """(key, env, type with its range, default, description) for every setting."""
    defaults = settings_module.Settings().masked()
    return [
        (key, env, kind, _default_of(defaults, key), describe(key) or "")
        for key, env, kind in settings_module.setting_rows()
    ]


def settings_markdown() -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `python -m codeq.reference settings`; tests/test_reference.py "
        "checks it -->",
        "",
        "Settings come from a YAML file (`--config` or `CODEQ_CONFIG_PATH`) with camelCase "
        "keys, overridden by environment variables (the key in UPPER_SNAKE case; nested keys "
        "join with `_`). An unknown key, a wrong type or an impossible value stops start-up "
        "with one line naming it. The type column is the type's own constraint: a value outside "
        "it is refused. `codeq config show` prints the effective settings with secrets masked.",
        "",
        "Environment values are strings: booleans take `true/false/1/0/yes/no/on/off`, lists "
        "a comma list or a JSON list, mappings a JSON object; an empty value unsets an optional "
        "setting. Choices are case-insensitive.",
        "",
        "| key | env | type | default | what it does |",
        "|---|---|---|---|---|",
    ]
    for key, env, kind, default, text in settings_rows():
        lines.append(f"| `{key}` | `{env}` | {kind} | {default} | {text} |")
    lines += [
        "",
        "Special cases: `REDIS_ADDR` or `REDIS_URL` in the environment replaces the file's "
        "connection target; `KVROCKS_PASSWORD` is read when `REDIS_PASSWORD` is absent; "
        "`OTEL_EXPORTER_OTLP_ENDPOINT` is used when `tracingOtlpEndpoint` is set nowhere else.",
        "",
    ]
    return "\n".join(lines)


def cli_markdown() -> str:
    import typer

    from codeq.cli import app

    root = typer.main.get_command(app)
    lines = [
        "# CLI reference",
        "",
        "<!-- generated by `python -m codeq.reference cli`; tests/test_reference.py checks it -->",
        "",
        "`codeq` is one command for the server processes and for talking to a server. Client "
        "commands find the server and tokens by precedence: flag > environment "
        "(`CODEQ_BASE_URL`, `CODEQ_TOKEN`, `CODEQ_PRODUCER_TOKEN`, `CODEQ_WORKER_TOKEN`, "
        "`CODEQ_ADMIN_TOKEN`, `CODEQ_PROFILE`) > the profile in `~/.codeq/config.yaml` "
        "(`CODEQ_CONFIG_DIR`) > default (`http://127.0.0.1:8080`).",
        "",
        "Output is a table or a record on a terminal and plain text in a pipe; `--json` "
        "(before or after the command) prints one JSON document instead. Exit codes: `0` done, "
        "`1` an error (the server's message and code on stderr), `2` a usage error.",
        "",
    ]

    # typer vendors its own click: commands and parameters are read by their attributes.
    def options(cmd: Any) -> list[str]:
        rows = []
        for p in cmd.params:
            if p.param_type_name == "argument":
                rows.append(f"| `{p.name.upper() if p.name else ''}` | argument | required |")
                continue
            if p.param_type_name != "option" or p.hidden:
                continue
            names = ", ".join(f"`{o}`" for o in p.opts)
            if p.is_flag or p.default is None or p.default == () or p.required:
                default = "required" if p.required else ""
            else:
                default = f"`{p.default}`"
            rows.append(f"| {names} | {(p.help or '').replace('|', '/')} | {default} |")
        if not rows:
            return []
        return ["| option | what | default |", "|---|---|---|", *rows, ""]

    def walk(cmd: Any, path: list[str]) -> None:
        if hasattr(cmd, "commands"):
            if path:
                lines.extend([f"## codeq {' '.join(path)}", "", cmd.help or "", ""])
            else:
                lines.extend(["## Global options", "", *options(cmd)])
            for name in cmd.commands:
                walk(cmd.commands[name], [*path, name])
            return
        lines.extend(
            [f"### codeq {' '.join(path)}", "", (cmd.help or "").strip(), "", *options(cmd)]
        )

    walk(root, [])
    return "\n".join(line.rstrip() for line in lines).rstrip() + "\n"


EVENT_TYPES_START = "<!-- event-types:"
EVENT_TYPES_END = "<!-- /event-types -->"


def event_types_markdown() -> str:
    """The event types of the catalog as the block of docs/webhooks.md: a table of when each
    is sent, then each one's example body (what ``GET /v1/codeq/webhooks/event-types`` serves,
    with the JSON schemas)."""
    entries = catalog.catalog().event_types
    lines = [
        f"{EVENT_TYPES_START} generated from codeq.catalog by `python -m codeq.reference "
        "event-types docs/webhooks.md`; tests/test_catalog.py checks it -->",
        "| event type | sent when |",
        "|---|---|",
        *(f"| `{e.type}` | {e.description} |" for e in entries),
        "",
        "An example of each body, as an endpoint receives it (`GET "
        "/v1/codeq/webhooks/event-types` gives the JSON schema of each as well):",
        "",
    ]
    for e in entries:
        example = json.dumps(e.example, indent=2, ensure_ascii=False)
        lines += [
            f"<details><summary><code>{e.type}</code></summary>",
            "",
            "```json",
            example,
            "```",
            "",
            "</details>",
            "",
        ]
    lines.append(EVENT_TYPES_END)
    return "\n".join(lines) + "\n"


def with_event_types(page: str) -> str:
    """``page`` (docs/webhooks.md) with its event-types block replaced by
    :func:`event_types_markdown`; ValueError when the page has no such block."""
    start = page.find(EVENT_TYPES_START)
    end = page.find(EVENT_TYPES_END, start + 1)
    if start < 0 or end < 0:
        raise ValueError(f"no {EVENT_TYPES_START} ... {EVENT_TYPES_END} block in the page")
    after = end + len(EVENT_TYPES_END)
    if page[after : after + 1] == "\n":
        after += 1
    return page[:start] + event_types_markdown() + page[after:]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["settings"]:
        sys.stdout.write(settings_markdown())
        return 0
    if args == ["cli"]:
        sys.stdout.write(cli_markdown())
        return 0
    if len(args) == 2 and args[0] == "event-types":
        path = Path(args[1])
        path.write_text(with_event_types(path.read_text()))
        return 0
    print("usage: python -m codeq.reference settings|cli|event-types PAGE", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
