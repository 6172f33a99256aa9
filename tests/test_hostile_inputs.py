"""Hostile input, route by route (issue 15): every case below is answered 4xx with the JSON
error shape — ``{"error": <non-empty message>, "code": <machine code>}``, naming the field when
it is a field's fault — and leaves the store exactly as it was (every key and value under the
test's prefix, streams included) with no artifact file written.

Each case runs against a world of real tasks on Redis and on KVRocks: a pending task, a task
in progress (claimed by ``WORKER``), a dead-lettered task, another tenant's task, a webhook
endpoint, a replay job of it and a worker subscription, so an id in a path can be a real one with
a hostile body. Every ``/v1`` operation the OpenAPI document lists has cases here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from codeq.store.keys import KeySchema
from codeq.store.redis_store import RedisStore
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import SERVERS, make_store
from tests.test_api import (
    ADMIN,
    NO_SCOPE,
    ONLY_RENDER,
    OTHER_TENANT,
    PRODUCER,
    WORKER,
    WORKER_B,
    auth,
    make_settings,
)

MAX_BODY = 256 * 1024
MAX_PAYLOAD = 16 * 1024
MAX_ARTIFACT = 2048
DEPTH = 64  # maxJsonDepth's default
PUBLIC_URL = "https://8.8.8.8/hook"  # an address literal: no DNS, not private

T = "/v1/codeq/tasks"
A = "/v1/codeq/admin"
SUBS = "/v1/codeq/workers/subscriptions"
EPS = "/v1/codeq/webhooks/endpoints"
DLV = "/v1/codeq/deliveries"
WH = "/v1/codeq/webhooks"
RECENT = (datetime.now(UTC) - timedelta(hours=1)).isoformat()  # within the delivery retention
UNKNOWN_ID = "01900000-0000-7000-8000-000000000000"  # well-formed, never created

_UNSET: Any = object()


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    token: str | None = PRODUCER
    json: Any = _UNSET
    content: bytes | None = None
    headers: dict[str, str] | list[tuple[str, str | bytes]] = field(default_factory=dict)
    status: int = 400
    field: str | None = None  # the field a 400's message must name
    code: str = "invalid_request"  # a 400's code
    xfail: str | None = None  # a route this change does not own still gets it wrong


def deep(levels: int) -> Any:
    value: Any = 1
    for i in range(levels):
        value = [value] if i % 2 else {"k": value}
    return value


def deep_raw(levels: int, around: bytes = b"%s") -> bytes:
    """``levels`` nested arrays inside ``around`` (too deep for a JSON encoder to write)."""
    return around.replace(b"%s", b"[" * levels + b"1" + b"]" * levels)


def text(n: int) -> str:
    return "x" * n


FAR = (datetime.now(UTC) + timedelta(days=400)).isoformat()
CREATE = {"command": "RENDER", "payload": {"n": 1}}
W = WORKER


def create(**extra: Any) -> dict[str, Any]:
    return {**CREATE, **extra}


CASES: list[Case] = [
    # -- create: types --------------------------------------------------------------------
    Case("create-no-command", "POST", T, json={"payload": 1}, field="command"),
    Case("create-no-payload", "POST", T, json={"command": "RENDER"}, field="payload"),
    Case("create-null-payload", "POST", T, json=create(payload=None), field="payload"),
    Case("create-command-int", "POST", T, json=create(command=5), field="command"),
    Case("create-command-list", "POST", T, json=create(command=["RENDER"]), field="command"),
    Case("create-priority-str", "POST", T, json=create(priority="high"), field="priority"),
    Case("create-priority-float", "POST", T, json=create(priority=1.5), field="priority"),
    Case("create-priority-bool", "POST", T, json=create(priority=True), field="priority"),
    Case("create-attempts-str", "POST", T, json=create(maxAttempts="5"), field="maxAttempts"),
    Case("create-delay-float", "POST", T, json=create(delaySeconds=1.5), field="delaySeconds"),
    Case("create-body-array", "POST", T, json=[CREATE]),
    Case("create-body-string", "POST", T, json="RENDER"),
    Case("create-body-null", "POST", T, content=b"null"),
    Case("create-body-empty", "POST", T, content=b""),
    Case("create-body-truncated", "POST", T, content=b'{"command": "RENDER", '),
    Case("create-body-trailing", "POST", T, content=b'{"command":"R","payload":1} x'),
    Case("create-body-nan", "POST", T, content=b'{"command":"R","payload":NaN}'),
    # -- create: ranges -------------------------------------------------------------------
    Case("create-attempts-0", "POST", T, json=create(maxAttempts=0), field="maxAttempts"),
    Case("create-attempts-neg", "POST", T, json=create(maxAttempts=-1), field="maxAttempts"),
    Case("create-attempts-1001", "POST", T, json=create(maxAttempts=1001), field="maxAttempts"),
    Case("create-attempts-2^53", "POST", T, json=create(maxAttempts=2**53), field="maxAttempts"),
    Case("create-attempts-2^64", "POST", T, json=create(maxAttempts=2**64), field="maxAttempts"),
    Case(
        "create-attempts-1e400",
        "POST",
        T,
        content=b'{"command":"R","payload":1,"maxAttempts":1e400}',
    ),
    Case("create-delay-neg", "POST", T, json=create(delaySeconds=-1), field="delaySeconds"),
    Case(
        "create-delay-1y+1",
        "POST",
        T,
        json=create(delaySeconds=365 * 86400 + 1),
        field="delaySeconds",
    ),
    Case("create-delay-1e12", "POST", T, json=create(delaySeconds=10**12), field="delaySeconds"),
    Case("create-delay-2^63", "POST", T, json=create(delaySeconds=2**63), field="delaySeconds"),
    Case("create-priority-2^31", "POST", T, json=create(priority=2**31), field="priority"),
    Case(
        "create-priority--2^31-1", "POST", T, json=create(priority=-(2**31) - 1), field="priority"
    ),
    Case("create-priority-2^70", "POST", T, json=create(priority=2**70), field="priority"),
    Case("create-runat-year1", "POST", T, json=create(runAt="0001-01-01T00:00:00Z"), field="runAt"),
    Case("create-runat-1969", "POST", T, json=create(runAt="1969-12-31T23:59:59Z"), field="runAt"),
    Case("create-runat-9999", "POST", T, json=create(runAt="9999-12-31T23:59:59Z"), field="runAt"),
    Case("create-runat-400d", "POST", T, json=create(runAt=FAR), field="runAt"),
    Case("create-runat-words", "POST", T, json=create(runAt="tomorrow"), field="runAt"),
    Case(
        "create-runat-month13", "POST", T, json=create(runAt="2026-13-01T00:00:00Z"), field="runAt"
    ),
    Case("create-runat-number", "POST", T, json=create(runAt=1767225600), field="runAt"),
    # -- create: strings and ids ---------------------------------------------------------
    Case("create-command-empty", "POST", T, json=create(command=""), field="command"),
    Case("create-command-129", "POST", T, json=create(command=text(129)), field="command"),
    Case("create-command-space", "POST", T, json=create(command="a b"), field="command"),
    Case("create-command-slash", "POST", T, json=create(command="../x"), field="command"),
    Case("create-command-nul", "POST", T, json=create(command="a\x00b"), field="command"),
    Case("create-command-unicode", "POST", T, json=create(command="RENDÉR"), field="command"),
    Case(
        "create-command-fullwidth", "POST", T, json=create(command="ＲＥＮＤＥＲ"), field="command"
    ),
    Case("create-command-newline", "POST", T, json=create(command="RENDER\n"), field="command"),
    Case("create-idem-empty", "POST", T, json=create(idempotencyKey=""), field="idempotencyKey"),
    Case(
        "create-idem-257", "POST", T, json=create(idempotencyKey=text(257)), field="idempotencyKey"
    ),
    Case("create-idem-int", "POST", T, json=create(idempotencyKey=7), field="idempotencyKey"),
    Case("create-webhook-ftp", "POST", T, json=create(webhook="ftp://x/y"), field="webhook"),
    Case(
        "create-webhook-js", "POST", T, json=create(webhook="javascript:alert(1)"), field="webhook"
    ),
    Case(
        "create-webhook-long",
        "POST",
        T,
        json=create(webhook="https://a.example/" + text(2100)),
        field="webhook",
    ),
    Case("create-webhook-empty", "POST", T, json=create(webhook=""), field="webhook"),
    Case(
        "create-webhook-loopback",
        "POST",
        T,
        json=create(webhook="http://169.254.169.254/latest/meta-data/"),  # loopback is allowed
        field="webhook",  # in these tests' settings; cloud metadata never is
    ),
    # a task's webhook gets the check every webhook target gets (issue 15 item 6)
    Case(
        "create-webhook-crlf",
        "POST",
        T,
        json=create(webhook="https://a.example/x\r\nY: 1"),
        field="webhook",
    ),
    Case(
        "create-webhook-nul",
        "POST",
        T,
        json=create(webhook="https://a.example/a\x00b"),
        field="webhook",
    ),
    Case(
        "create-webhook-space",
        "POST",
        T,
        json=create(webhook="https://a.example/a b"),
        field="webhook",
    ),
    Case(
        "create-webhook-6to4",
        "POST",
        T,
        json=create(webhook="http://[2002:c0a8:101::1]/h"),
        field="webhook",
    ),
    Case(
        "create-webhook-teredo",
        "POST",
        T,
        json=create(webhook="http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/h"),
        field="webhook",
    ),
    Case(
        "create-webhook-nat64",
        "POST",
        T,
        json=create(webhook="http://[64:ff9b::10.0.0.1]/h"),
        field="webhook",
    ),
    # -- create: sizes, depth, encodings, headers ----------------------------------------
    Case("create-payload-over", "POST", T, json=create(payload=text(MAX_PAYLOAD + 10)), status=413),
    Case("create-body-over", "POST", T, json=create(payload=text(MAX_BODY)), status=413),
    Case("create-depth-65", "POST", T, json=create(payload=deep(DEPTH))),
    Case("create-depth-1000", "POST", T, content=deep_raw(1000, b'{"command":"R","payload":%s}')),
    Case("create-depth-unknown-field", "POST", T, json={**CREATE, "extra": deep(200)}),
    Case("create-open-brackets", "POST", T, content=b'{"command":"R","payload":' + b"[" * 100_000),
    Case("create-bad-utf8", "POST", T, content=b'{"command":"RENDER","payload":"\xff\xfe"}'),
    Case(
        "create-bad-utf8-ignored",
        "POST",
        T,
        content=b'{"command":"RENDER","payload":1,"x":"\xc3("}',
    ),
    Case("create-utf16", "POST", T, content='{"command":"RENDER","payload":1}'.encode("utf-16")),
    Case("create-lone-surrogate", "POST", T, content=b'{"command":"RENDER","payload":"\\ud800"}'),
    Case(
        "create-text-plain",
        "POST",
        T,
        content=b'{"command":"R","payload":1}',
        headers={"content-type": "text/plain"},
        status=415,
    ),
    Case(
        "create-form",
        "POST",
        T,
        content=b"command=R&payload=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
        status=415,
    ),
    Case(
        "create-multipart",
        "POST",
        T,
        content=b"--b\r\n\r\n{}\r\n--b--",
        headers={"content-type": "multipart/form-data; boundary=b"},
        status=415,
    ),
    Case("create-cl-negative", "POST", T, content=b"{}", headers={"content-length": "-1"}),
    Case("create-cl-letters", "POST", T, content=b"{}", headers={"content-length": "abc"}),
    Case("create-cl-float", "POST", T, content=b"{}", headers={"content-length": "2.0"}),
    Case(
        "create-cl-huge",
        "POST",
        T,
        content=b"{}",
        headers={"content-length": "99999999999999999999999"},
    ),
    Case(
        "create-cl-over",
        "POST",
        T,
        content=b"{}",
        headers={"content-length": str(MAX_BODY + 1)},
        status=413,
    ),
    Case(
        "create-cl-twice",
        "POST",
        T,
        content=b"{}",
        headers=[("content-length", "2"), ("content-length", "3")],
    ),
    Case("create-no-auth", "POST", T, token=None, json=CREATE, status=401),
    Case("create-bad-token", "POST", T, token="nope", json=CREATE, status=401),
    Case("create-huge-token", "POST", T, token=text(20_000), json=CREATE, status=401),
    Case(
        "create-token-ctl",
        "POST",
        T,
        token=None,
        json=CREATE,
        headers={"authorization": "Bearer a\tb"},
        status=401,
    ),
    Case(
        "create-token-latin1",
        "POST",
        T,
        token=None,
        json=CREATE,
        headers=[("authorization", b"Bearer \xe9\xff")],
        status=401,
    ),
    Case(
        "create-basic-auth",
        "POST",
        T,
        token=None,
        json=CREATE,
        headers={"authorization": "Basic dXNlcjpwYXNz"},
        status=401,
    ),
    Case("create-worker-token", "POST", T, token=W, json=CREATE, status=401),
    Case(
        "create-hostile-request-id",
        "POST",
        T,
        json=create(maxAttempts=0),
        headers={"x-request-id": "a\r\nb" + text(300)},
        field="maxAttempts",
    ),
    # -- batch ----------------------------------------------------------------------------
    Case("batch-no-tasks", "POST", f"{T}/batch", json={}, field="tasks"),
    Case("batch-tasks-object", "POST", f"{T}/batch", json={"tasks": CREATE}, field="tasks"),
    Case("batch-tasks-1001", "POST", f"{T}/batch", json={"tasks": [CREATE] * 1001}, field="tasks"),
    Case("batch-item-not-object", "POST", f"{T}/batch", json={"tasks": [CREATE, 5]}, field="tasks"),
    Case("batch-depth", "POST", f"{T}/batch", json={"tasks": [create(payload=deep(DEPTH))]}),
    Case(
        "batch-body-over",
        "POST",
        f"{T}/batch",
        json={"tasks": [create(payload=text(MAX_BODY))]},
        status=413,
    ),
    Case("batch-bad-utf8", "POST", f"{T}/batch", content=b'{"tasks":[{"command":"\xff"}]}'),
    Case(
        "batch-text-plain",
        "POST",
        f"{T}/batch",
        content=b'{"tasks":[]}',
        headers={"content-type": "text/plain"},
        status=415,
    ),
    Case(
        "batch-cl-negative", "POST", f"{T}/batch", content=b"{}", headers={"content-length": "-5"}
    ),
    Case("batch-worker-token", "POST", f"{T}/batch", token=W, json={"tasks": [CREATE]}, status=401),
    # -- claim ----------------------------------------------------------------------------
    Case(
        "claim-lease-0",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": ["RENDER"], "leaseSeconds": 0},
        field="leaseSeconds",
    ),
    Case(
        "claim-lease-86401",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": ["RENDER"], "leaseSeconds": 86401},
        field="leaseSeconds",
    ),
    Case(
        "claim-lease-2^53",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": ["RENDER"], "leaseSeconds": 2**53},
        field="leaseSeconds",
    ),
    Case(
        "claim-lease-str",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": ["RENDER"], "leaseSeconds": "60"},
        field="leaseSeconds",
    ),
    Case(
        "claim-wait-neg",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": ["RENDER"], "waitSeconds": -1},
        field="waitSeconds",
    ),
    Case(
        "claim-wait-31",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": ["RENDER"], "waitSeconds": 31},
        field="waitSeconds",
    ),
    Case(
        "claim-wait-1e400",
        "POST",
        f"{T}/claim",
        token=W,
        content=b'{"commands":["RENDER"],"waitSeconds":1e400}',
    ),
    Case(
        "claim-commands-empty",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": []},
        field="commands",
    ),
    Case(
        "claim-commands-string",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": "RENDER"},
        field="commands",
    ),
    Case(
        "claim-commands-int",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": [1]},
        field="commands",
    ),
    Case(
        "claim-commands-space",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": ["a b"]},
        field="commands",
    ),
    Case(
        "claim-commands-129",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": [text(129)]},
        field="commands",
    ),
    Case(
        "claim-commands-101",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": [f"C{i}" for i in range(101)]},
        field="commands",
    ),
    Case(
        "claim-commands-25000",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": [f"C{i}" for i in range(25_000)]},
        field="commands",
    ),
    Case(
        "claim-depth",
        "POST",
        f"{T}/claim",
        token=W,
        json={"commands": ["RENDER"], "x": deep(DEPTH)},
    ),
    Case("claim-body-array", "POST", f"{T}/claim", token=W, json=["RENDER"]),
    Case("claim-bad-utf8", "POST", f"{T}/claim", token=W, content=b'{"commands":["\xff"]}'),
    Case(
        "claim-text-plain",
        "POST",
        f"{T}/claim",
        token=W,
        content=b"{}",
        headers={"content-type": "text/plain"},
        status=415,
    ),
    Case(
        "claim-cl-letters",
        "POST",
        f"{T}/claim",
        token=W,
        content=b"{}",
        headers={"content-length": "x"},
    ),
    Case(
        "claim-no-scope",
        "POST",
        f"{T}/claim",
        token=NO_SCOPE,
        json={"commands": ["RENDER"]},
        status=403,
    ),
    Case(
        "claim-not-allowed",
        "POST",
        f"{T}/claim",
        token=ONLY_RENDER,
        json={"commands": ["OTHER"]},
        status=403,
    ),
    Case(
        "claim-producer-token",
        "POST",
        f"{T}/claim",
        token=PRODUCER,
        json={"commands": ["RENDER"]},
        status=401,
    ),
    # -- heartbeat ------------------------------------------------------------------------
    Case(
        "hb-extend-0",
        "POST",
        f"{T}/{{inprog}}/heartbeat",
        token=W,
        json={"extendSeconds": 0},
        field="extendSeconds",
    ),
    Case(
        "hb-extend-86401",
        "POST",
        f"{T}/{{inprog}}/heartbeat",
        token=W,
        json={"extendSeconds": 86401},
        field="extendSeconds",
    ),
    Case(
        "hb-extend-2^53",
        "POST",
        f"{T}/{{inprog}}/heartbeat",
        token=W,
        json={"extendSeconds": 2**53},
        field="extendSeconds",
    ),
    Case(
        "hb-extend-float",
        "POST",
        f"{T}/{{inprog}}/heartbeat",
        token=W,
        json={"extendSeconds": 1.5},
        field="extendSeconds",
    ),
    Case(
        "hb-extend-str",
        "POST",
        f"{T}/{{inprog}}/heartbeat",
        token=W,
        json={"extendSeconds": "60"},
        field="extendSeconds",
    ),
    Case(
        "hb-lease-65",
        "POST",
        f"{T}/{{inprog}}/heartbeat",
        token=W,
        json={"leaseId": text(65)},
        field="leaseId",
    ),
    Case(
        "hb-lease-int",
        "POST",
        f"{T}/{{inprog}}/heartbeat",
        token=W,
        json={"leaseId": 5},
        field="leaseId",
    ),
    Case(
        "hb-wrong-lease",
        "POST",
        f"{T}/{{inprog}}/heartbeat",
        token=W,
        json={"leaseId": "0" * 32},
        status=409,
    ),
    Case("hb-depth", "POST", f"{T}/{{inprog}}/heartbeat", token=W, json={"x": deep(DEPTH)}),
    Case("hb-not-owner", "POST", f"{T}/{{inprog}}/heartbeat", token=WORKER_B, json={}, status=403),
    Case("hb-id-dotdot", "POST", f"{T}/%2e%2e/heartbeat", token=W, json={}, status=404),
    Case("hb-id-unknown", "POST", f"{T}/{UNKNOWN_ID}/heartbeat", token=W, json={}, status=404),
    Case("hb-id-upper", "POST", f"{T}/{{inprog_upper}}/heartbeat", token=W, json={}, status=404),
    Case("hb-id-foreign", "POST", f"{T}/{{foreign}}/heartbeat", token=W, json={}, status=404),
    Case("hb-pending", "POST", f"{T}/{{pending}}/heartbeat", token=W, json={}, status=409),
    # -- abandon --------------------------------------------------------------------------
    Case(
        "abandon-lease-65",
        "POST",
        f"{T}/{{inprog}}/abandon",
        token=W,
        json={"leaseId": text(65)},
        field="leaseId",
    ),
    Case(
        "abandon-lease-list",
        "POST",
        f"{T}/{{inprog}}/abandon",
        token=W,
        json={"leaseId": []},
        field="leaseId",
    ),
    Case(
        "abandon-wrong-lease",
        "POST",
        f"{T}/{{inprog}}/abandon",
        token=W,
        json={"leaseId": "f" * 32},
        status=409,
    ),
    Case("abandon-body-string", "POST", f"{T}/{{inprog}}/abandon", token=W, json="x"),
    Case(
        "abandon-bad-utf8",
        "POST",
        f"{T}/{{inprog}}/abandon",
        token=W,
        content=b'{"leaseId":"\xc3"}',
    ),
    Case("abandon-id-nul", "POST", f"{T}/a%00b/abandon", token=W, json={}, status=404),
    Case("abandon-id-long", "POST", f"{T}/{text(5000)}/abandon", token=W, json={}, status=404),
    Case(
        "abandon-id-unicode",
        "POST",
        f"{T}/%E2%80%AE{UNKNOWN_ID[:30]}/abandon",
        token=W,
        json={},
        status=404,
    ),
    Case(
        "abandon-not-owner", "POST", f"{T}/{{inprog}}/abandon", token=WORKER_B, json={}, status=403
    ),
    Case(
        "abandon-no-scope", "POST", f"{T}/{{inprog}}/abandon", token=NO_SCOPE, json={}, status=403
    ),
    # -- nack -----------------------------------------------------------------------------
    Case(
        "nack-delay-neg",
        "POST",
        f"{T}/{{inprog}}/nack",
        token=W,
        json={"delaySeconds": -1},
        field="delaySeconds",
    ),
    Case(
        "nack-delay-1y+1",
        "POST",
        f"{T}/{{inprog}}/nack",
        token=W,
        json={"delaySeconds": 365 * 86400 + 1},
        field="delaySeconds",
    ),
    Case(
        "nack-delay-1e15",
        "POST",
        f"{T}/{{inprog}}/nack",
        token=W,
        json={"delaySeconds": 1e15},
        field="delaySeconds",
    ),
    Case(
        "nack-delay-1e400",
        "POST",
        f"{T}/{{inprog}}/nack",
        token=W,
        content=b'{"delaySeconds":1e400}',
    ),
    Case(
        "nack-delay-str",
        "POST",
        f"{T}/{{inprog}}/nack",
        token=W,
        json={"delaySeconds": "5"},
        field="delaySeconds",
    ),
    Case(
        "nack-reason-4097",
        "POST",
        f"{T}/{{inprog}}/nack",
        token=W,
        json={"reason": text(4097)},
        field="reason",
    ),
    Case(
        "nack-reason-int",
        "POST",
        f"{T}/{{inprog}}/nack",
        token=W,
        json={"reason": 7},
        field="reason",
    ),
    Case(
        "nack-lease-65",
        "POST",
        f"{T}/{{inprog}}/nack",
        token=W,
        json={"leaseId": text(65)},
        field="leaseId",
    ),
    Case(
        "nack-wrong-lease",
        "POST",
        f"{T}/{{inprog}}/nack",
        token=W,
        json={"leaseId": "e" * 32},
        status=409,
    ),
    Case(
        "nack-depth", "POST", f"{T}/{{inprog}}/nack", token=W, json={"reason": "r", "x": deep(300)}
    ),
    Case("nack-id-dotdot", "POST", f"{T}/%2e%2e/nack", token=W, json={}, status=404),
    Case("nack-dead", "POST", f"{T}/{{dead}}/nack", token=W, json={}, status=409),
    # -- result ---------------------------------------------------------------------------
    Case(
        "result-no-status",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"result": {}},
        field="status",
    ),
    Case(
        "result-status-bogus",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "DONE", "result": {}},
        field="status",
    ),
    Case(
        "result-status-lower",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "completed", "result": {}},
        field="status",
    ),
    Case(
        "result-result-array",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "COMPLETED", "result": [1]},
        field="result",
    ),
    Case(
        "result-result-missing",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "COMPLETED"},
        field="result",
    ),
    Case(
        "result-failed-no-error",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "FAILED"},
        field="error",
    ),
    Case(
        "result-error-empty",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "FAILED", "error": ""},
        field="error",
    ),
    Case(
        "result-error-4097",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "FAILED", "error": text(4097)},
        field="error",
    ),
    Case(
        "result-over-payload",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "COMPLETED", "result": {"x": text(MAX_PAYLOAD)}},
        status=413,
    ),
    Case(
        "result-depth",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "COMPLETED", "result": {"x": deep(DEPTH)}},
    ),
    Case(
        "result-artifacts-object",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "COMPLETED", "result": {}, "artifacts": {"name": "a"}},
        field="artifacts",
    ),
    Case(
        "result-artifacts-101",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [{"name": f"a{i}", "url": PUBLIC_URL} for i in range(101)],
        },
        field="artifacts",
    ),
    Case(
        "result-artifact-no-name",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "COMPLETED", "result": {}, "artifacts": [{"url": PUBLIC_URL}]},
        field="name",
    ),
    Case(
        "result-artifact-empty-name",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "COMPLETED", "result": {}, "artifacts": [{"name": "", "url": PUBLIC_URL}]},
        field="name",
    ),
    Case(
        "result-artifact-name-256",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [{"name": text(256), "contentBase64": "aGk="}],
        },
        field="name",
    ),
    Case(
        "result-artifact-nothing",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={"status": "COMPLETED", "result": {}, "artifacts": [{"name": "a"}]},
        field="artifacts[0]",
    ),
    Case(
        "result-artifact-bad-b64",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [{"name": "a", "contentBase64": "!!!"}],
        },
        field="artifacts[0]",
    ),
    Case(
        "result-artifact-too-big",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [{"name": "a", "contentBase64": "QUFB" * (MAX_ARTIFACT // 3 + 1)}],
        },
        status=413,
    ),
    Case(
        "result-artifact-url-long",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [{"name": "a", "url": PUBLIC_URL + text(2100)}],
        },
        field="url",
    ),
    Case(
        "result-artifact-dup",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [
                {"name": "a.png", "contentBase64": "aGk="},
                {"name": "a.png", "contentBase64": "aGk="},
            ],
        },
        status=409,
    ),
    Case(
        "result-artifact-dup-path",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [
                {"name": "x/a.png", "contentBase64": "aGk="},
                {"name": "../a.png", "url": PUBLIC_URL},
            ],
        },
        status=409,
    ),
    Case(
        "result-artifact-dup-case",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [
                {"name": "A.PNG", "contentBase64": "aGk="},
                {"name": "a.png", "contentBase64": "aGk="},
            ],
        },
        status=409,
    ),
    Case(
        "result-id-dotdot-artifact",
        "POST",
        f"{T}/%2e%2e/result",
        token=W,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [{"name": "a", "contentBase64": "aGk="}],
        },
        status=404,
    ),
    Case(
        "result-id-slashes-artifact",
        "POST",
        f"{T}/..%2F..%2Fx/result",
        token=W,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [{"name": "a", "contentBase64": "aGk="}],
        },
        status=404,
    ),
    Case(
        "result-id-dot-artifact",
        "POST",
        f"{T}/%2e/result",
        token=W,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [{"name": "a", "contentBase64": "aGk="}],
        },
        status=404,
    ),
    Case(
        "result-not-owner-artifact",
        "POST",
        f"{T}/{{inprog}}/result",
        token=WORKER_B,
        json={
            "status": "COMPLETED",
            "result": {},
            "artifacts": [{"name": "a", "contentBase64": "aGk="}],
        },
        status=403,
    ),
    Case(
        "result-dead",
        "POST",
        f"{T}/{{dead}}/result",
        token=W,
        json={"status": "COMPLETED", "result": {}},
        status=409,
    ),
    Case(
        "result-bad-utf8",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        content=b'{"status":"FAILED","error":"\xff"}',
    ),
    Case(
        "result-text-plain",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        content=b'{"status":"FAILED","error":"e"}',
        headers={"content-type": "text/xml"},
        status=415,
    ),
    Case(
        "result-cl-negative",
        "POST",
        f"{T}/{{inprog}}/result",
        token=W,
        content=b"{}",
        headers={"content-length": "-2"},
    ),
    # -- reads ----------------------------------------------------------------------------
    Case("get-id-dotdot", "GET", f"{T}/%2e%2e", status=404),
    Case("get-id-nonuuid", "GET", f"{T}/not-a-task", status=404),
    Case("get-id-long", "GET", f"{T}/{text(3000)}", status=404),
    Case("get-id-newline", "GET", f"{T}/{UNKNOWN_ID}%0A", status=404),
    Case("get-id-foreign", "GET", f"{T}/{{foreign}}", status=404),
    Case("get-no-auth", "GET", f"{T}/{{pending}}", token=None, status=401),
    Case("get-result-pending", "GET", f"{T}/{{pending}}/result", status=404),
    Case("get-result-dotdot", "GET", f"{T}/%2e%2e/result", status=404),
    Case("get-result-foreign", "GET", f"{T}/{{foreign}}/result", status=404),
    Case("unknown-route", "GET", f"{T}/{{pending}}/nope", status=404),
    Case("wrong-method", "PUT", T, json=CREATE, status=405),
    # -- admin ----------------------------------------------------------------------------
    Case("admin-not-admin", "GET", f"{A}/queues", token=PRODUCER, status=403),
    Case("admin-worker-not-admin", "POST", f"{A}/tasks/cleanup", token=W, json={}, status=403),
    Case("admin-queue-space", "GET", f"{A}/queues/a%20b", token=ADMIN, field="command"),
    Case("admin-queue-129", "GET", f"{A}/queues/{text(129)}", token=ADMIN, field="command"),
    Case("admin-queue-slash", "GET", f"{A}/queues/a%2Fb%2F..", token=ADMIN, status=404),
    Case("admin-queue-unicode", "GET", f"{A}/queues/R%C3%89NDER", token=ADMIN, field="command"),
    Case("admin-dlq-limit-0", "GET", f"{A}/queues/SEND/dlq?limit=0", token=ADMIN, field="limit"),
    Case(
        "admin-dlq-limit-1001", "GET", f"{A}/queues/SEND/dlq?limit=1001", token=ADMIN, field="limit"
    ),
    Case(
        "admin-dlq-limit-huge",
        "GET",
        f"{A}/queues/SEND/dlq?limit=99999999999999999999999",
        token=ADMIN,
        field="limit",
    ),
    Case(
        "admin-dlq-limit-words", "GET", f"{A}/queues/SEND/dlq?limit=ten", token=ADMIN, field="limit"
    ),
    Case(
        "admin-dlq-cursor-long",
        "GET",
        f"{A}/queues/SEND/dlq?cursor={text(200)}",
        token=ADMIN,
        field="cursor",
    ),
    Case(
        "admin-dlq-cursor-bad",
        "GET",
        f"{A}/queues/SEND/dlq?cursor=zz:1",
        token=ADMIN,
        field="cursor",
    ),
    Case(
        "admin-dlq-cursor-partition",
        "GET",
        f"{A}/queues/SEND/dlq?cursor=99:",
        token=ADMIN,
        field="cursor",
    ),
    Case(
        "admin-requeue-empty",
        "POST",
        f"{A}/queues/SEND/dlq/requeue",
        token=ADMIN,
        json={},
        field="ids",
    ),
    Case(
        "admin-requeue-ids-string",
        "POST",
        f"{A}/queues/SEND/dlq/requeue",
        token=ADMIN,
        json={"ids": "x"},
        field="ids",
    ),
    Case(
        "admin-requeue-ids-int",
        "POST",
        f"{A}/queues/SEND/dlq/requeue",
        token=ADMIN,
        json={"ids": [1]},
        field="ids",
    ),
    Case(
        "admin-requeue-ids-1001",
        "POST",
        f"{A}/queues/SEND/dlq/requeue",
        token=ADMIN,
        json={"ids": [UNKNOWN_ID] * 1001},
        field="ids",
    ),
    Case(
        "admin-requeue-id-65",
        "POST",
        f"{A}/queues/SEND/dlq/requeue",
        token=ADMIN,
        json={"ids": [text(65)]},
        field="ids",
    ),
    Case(
        "admin-requeue-all-str",
        "POST",
        f"{A}/queues/SEND/dlq/requeue",
        token=ADMIN,
        json={"all": "yes"},
        field="all",
    ),
    Case(
        "admin-requeue-bad-command",
        "POST",
        f"{A}/queues/a%20b/dlq/requeue",
        token=ADMIN,
        json={"all": True},
        field="command",
    ),
    Case(
        "admin-requeue-depth",
        "POST",
        f"{A}/queues/SEND/dlq/requeue",
        token=ADMIN,
        json={"all": True, "x": deep(DEPTH)},
    ),
    Case(
        "admin-cleanup-limit-0",
        "POST",
        f"{A}/tasks/cleanup",
        token=ADMIN,
        json={"limit": 0},
        field="limit",
    ),
    Case(
        "admin-cleanup-limit-100001",
        "POST",
        f"{A}/tasks/cleanup",
        token=ADMIN,
        json={"limit": 100_001},
        field="limit",
    ),
    Case(
        "admin-cleanup-limit-2^53",
        "POST",
        f"{A}/tasks/cleanup",
        token=ADMIN,
        json={"limit": 2**53},
        field="limit",
    ),
    Case(
        "admin-cleanup-limit-str",
        "POST",
        f"{A}/tasks/cleanup",
        token=ADMIN,
        json={"limit": "10"},
        field="limit",
    ),
    Case(
        "admin-cleanup-before-words",
        "POST",
        f"{A}/tasks/cleanup",
        token=ADMIN,
        json={"before": "tomorrow"},
        field="before",
    ),
    Case(
        "admin-cleanup-before-year1",
        "POST",
        f"{A}/tasks/cleanup",
        token=ADMIN,
        json={"before": "0001-01-01T00:00:00Z"},
        field="before",
    ),
    Case(
        "admin-cleanup-before-9999",
        "POST",
        f"{A}/tasks/cleanup",
        token=ADMIN,
        json={"before": "9999-12-31T23:59:59Z"},
        field="before",
    ),
    Case(
        "admin-cleanup-before-int",
        "POST",
        f"{A}/tasks/cleanup",
        token=ADMIN,
        json={"before": 12345},
        field="before",
    ),
    Case(
        "admin-cleanup-text-plain",
        "POST",
        f"{A}/tasks/cleanup",
        token=ADMIN,
        content=b"{}",
        headers={"content-type": "text/plain"},
        status=415,
    ),
    Case(
        "admin-cleanup-cl-negative",
        "POST",
        f"{A}/tasks/cleanup",
        token=ADMIN,
        content=b"{}",
        headers={"content-length": "-1"},
    ),
    Case(
        "admin-cleanup-depth",
        "POST",
        f"{A}/tasks/cleanup",
        token=ADMIN,
        content=deep_raw(1000, b'{"x":%s}'),
    ),
    Case(
        "admin-cleanup-body-over",
        "POST",
        f"{A}/tasks/cleanup",
        token=ADMIN,
        json={"x": text(MAX_BODY)},
        status=413,
    ),
    # -- worker subscriptions -------------------------------------------------------------
    Case("sub-no-url", "POST", SUBS, token=W, json={}, field="callbackUrl"),
    Case(
        "sub-url-ftp", "POST", SUBS, token=W, json={"callbackUrl": "ftp://x/y"}, field="callbackUrl"
    ),
    Case(
        "sub-url-space",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": "https://8.8.8.8/a b"},
        field="callbackUrl",
    ),
    Case(
        "sub-url-crlf",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": "https://8.8.8.8/a\r\nX: y"},
        field="callbackUrl",
    ),
    Case(
        "sub-url-long",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": PUBLIC_URL + text(2100)},
        field="callbackUrl",
    ),
    Case(
        "sub-ttl-0",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": PUBLIC_URL, "eventTypes": ["RENDER"], "ttlSeconds": 0},
        field="ttlSeconds",
    ),
    Case(
        "sub-ttl-86401",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": PUBLIC_URL, "eventTypes": ["RENDER"], "ttlSeconds": 86401},
        field="ttlSeconds",
    ),
    Case(
        "sub-ttl-2^53",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": PUBLIC_URL, "eventTypes": ["RENDER"], "ttlSeconds": 2**53},
        field="ttlSeconds",
    ),
    Case(
        "sub-ttl-str",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": PUBLIC_URL, "eventTypes": ["RENDER"], "ttlSeconds": "300"},
        field="ttlSeconds",
    ),
    Case(
        "sub-interval-neg",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": PUBLIC_URL, "eventTypes": ["RENDER"], "minIntervalSeconds": -1},
        field="minIntervalSeconds",
    ),
    Case(
        "sub-interval-3601",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": PUBLIC_URL, "eventTypes": ["RENDER"], "minIntervalSeconds": 3601},
        field="minIntervalSeconds",
    ),
    Case(
        "sub-mode-bogus",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": PUBLIC_URL, "eventTypes": ["RENDER"], "deliveryMode": "bogus"},
        field="deliveryMode",
    ),
    Case(
        "sub-types-string",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": PUBLIC_URL, "eventTypes": "RENDER"},
        field="eventTypes",
    ),
    Case(
        "sub-types-bad-command",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": PUBLIC_URL, "eventTypes": ["a b"]},
        field="eventTypes",
    ),
    Case(
        "sub-types-10000",
        "POST",
        SUBS,
        token=W,
        json={"callbackUrl": PUBLIC_URL, "eventTypes": [f"C{i}" for i in range(10_000)]},
        field="eventTypes",
    ),
    Case(
        "sub-group-long",
        "POST",
        SUBS,
        token=W,
        json={
            "callbackUrl": PUBLIC_URL,
            "eventTypes": ["RENDER"],
            "deliveryMode": "group",
            "groupId": text(100_000),
        },
        field="groupId",
    ),
    Case(
        "sub-not-allowed",
        "POST",
        SUBS,
        token=ONLY_RENDER,
        json={"callbackUrl": PUBLIC_URL, "eventTypes": ["OTHER"]},
        status=403,
    ),
    Case("sub-depth", "POST", SUBS, token=W, json={"callbackUrl": PUBLIC_URL, "x": deep(DEPTH)}),
    Case(
        "sub-text-plain",
        "POST",
        SUBS,
        token=W,
        content=b"{}",
        headers={"content-type": "text/plain"},
        status=415,
    ),
    Case(
        "sub-renew-ttl-0",
        "POST",
        f"{SUBS}/{{sub}}/heartbeat",
        token=W,
        json={"ttlSeconds": 0},
        field="ttlSeconds",
    ),
    Case(
        "sub-renew-ttl-big",
        "POST",
        f"{SUBS}/{{sub}}/heartbeat",
        token=W,
        json={"ttlSeconds": 10**12},
        field="ttlSeconds",
    ),
    Case("sub-renew-unknown", "POST", f"{SUBS}/sub_0000/heartbeat", token=W, json={}, status=404),
    Case("sub-renew-dotdot", "POST", f"{SUBS}/%2e%2e/heartbeat", token=W, json={}, status=404),
    Case("sub-delete-unknown", "DELETE", f"{SUBS}/sub_{text(3000)}", token=W, status=404),
    Case("sub-no-scope", "GET", SUBS, token=NO_SCOPE, status=403),
    # -- webhook endpoints ----------------------------------------------------------------
    Case("ep-no-url", "POST", EPS, json={"eventTypes": ["*"]}, field="url"),
    Case("ep-url-ftp", "POST", EPS, json={"url": "ftp://x/y", "eventTypes": ["*"]}, field="url"),
    Case(
        "ep-url-loopback",
        "POST",
        EPS,
        json={"url": "http://[2002:a9fe:a9fe::1]/x", "eventTypes": ["*"]},  # 6to4 of metadata
        field="url",
    ),
    Case(
        "ep-url-metadata",
        "POST",
        EPS,
        json={"url": "http://169.254.169.254/latest", "eventTypes": ["*"]},
        field="url",
    ),
    Case(
        "ep-url-nul",
        "POST",
        EPS,
        json={"url": "https://8.8.8.8/a\x00b", "eventTypes": ["*"]},
        field="url",
    ),
    Case(
        "ep-types-empty",
        "POST",
        EPS,
        json={"url": PUBLIC_URL, "eventTypes": []},
        field="eventTypes",
    ),
    Case(
        "ep-types-bogus",
        "POST",
        EPS,
        json={"url": PUBLIC_URL, "eventTypes": ["task.bogus"]},
        field="eventTypes",
    ),
    Case(
        "ep-types-int", "POST", EPS, json={"url": PUBLIC_URL, "eventTypes": [1]}, field="eventTypes"
    ),
    Case(
        "ep-types-10000",
        "POST",
        EPS,
        json={"url": PUBLIC_URL, "eventTypes": ["task.completed"] * 10_000},
        field="eventTypes",
    ),
    Case(
        "ep-commands-bad",
        "POST",
        EPS,
        json={"url": PUBLIC_URL, "eventTypes": ["*"], "commands": ["a b"]},
        field="commands",
    ),
    Case(
        "ep-description-long",
        "POST",
        EPS,
        json={"url": PUBLIC_URL, "eventTypes": ["*"], "description": text(100_000)},
        field="description",
    ),
    Case("ep-depth", "POST", EPS, json={"url": PUBLIC_URL, "eventTypes": ["*"], "x": deep(DEPTH)}),
    Case("ep-cl-letters", "POST", EPS, content=b"{}", headers={"content-length": "ten"}),
    Case("ep-get-unknown", "GET", f"{EPS}/ep_0000", status=404),
    Case("ep-get-dotdot", "GET", f"{EPS}/%2e%2e", status=404),
    Case("ep-patch-url", "PATCH", f"{EPS}/{{endpoint}}", json={"url": "ftp://x/y"}, field="url"),
    Case(
        "ep-patch-types",
        "PATCH",
        f"{EPS}/{{endpoint}}",
        json={"eventTypes": ["nope"]},
        field="eventTypes",
    ),
    Case(
        "ep-patch-enabled-str",
        "PATCH",
        f"{EPS}/{{endpoint}}",
        json={"enabled": "yes"},
        field="enabled",
    ),
    Case("ep-patch-unknown", "PATCH", f"{EPS}/ep_0000", json={"enabled": True}, status=404),
    Case(
        "ep-patch-foreign",
        "PATCH",
        f"{EPS}/{{endpoint}}",
        token=OTHER_TENANT,
        json={"enabled": False},
        status=404,
    ),
    Case("ep-delete-foreign", "DELETE", f"{EPS}/{{endpoint}}", token=OTHER_TENANT, status=404),
    Case("ep-rotate-unknown", "POST", f"{EPS}/ep_0000/rotate-secret", status=404),
    Case(
        "ep-rotate-foreign",
        "POST",
        f"{EPS}/{{endpoint}}/rotate-secret",
        token=OTHER_TENANT,
        status=404,
    ),
    Case("ep-deliveries-unknown", "GET", f"{EPS}/{text(500)}/deliveries", status=404),
    Case("ep-worker-token", "GET", EPS, token=W, status=401),
    # -- deliveries -----------------------------------------------------------------------
    Case("dlv-get-unknown", "GET", f"{DLV}/msg_0_0000", status=404),
    Case("dlv-get-dotdot", "GET", f"{DLV}/%2e%2e", status=404),
    Case("dlv-get-long", "GET", f"{DLV}/{text(3000)}", status=404),
    Case("dlv-retry-unknown", "POST", f"{DLV}/msg_0_0000/retry", status=404),
    Case("dlv-retry-nul", "POST", f"{DLV}/msg%00/retry", status=404),
    Case("dlv-no-auth", "GET", f"{DLV}/msg_0_0000", token=None, status=401),
    Case("dlv-dlq-not-admin", "GET", f"{A}/deliveries/dlq", status=403),
    Case("dlv-dlq-limit-0", "GET", f"{A}/deliveries/dlq?limit=0", token=ADMIN, field="limit"),
    Case(
        "dlv-dlq-limit-huge",
        "GET",
        f"{A}/deliveries/dlq?limit=10000000000000000000000",
        token=ADMIN,
        field="limit",
    ),
    Case(
        "dlv-replay-limit-0",
        "POST",
        f"{A}/deliveries/dlq/replay",
        token=ADMIN,
        json={"limit": 0},
        field="limit",
    ),
    Case(
        "dlv-replay-limit-big",
        "POST",
        f"{A}/deliveries/dlq/replay",
        token=ADMIN,
        json={"limit": 2**53},
        field="limit",
    ),
    Case(
        "dlv-replay-ids-str",
        "POST",
        f"{A}/deliveries/dlq/replay",
        token=ADMIN,
        json={"ids": "x"},
        field="ids",
    ),
    Case(
        "dlv-replay-ids-10000",
        "POST",
        f"{A}/deliveries/dlq/replay",
        token=ADMIN,
        json={"ids": ["msg_0_x"] * 10_001},  # the cap is 10,000
        field="ids",
    ),
    Case(
        "dlv-replay-depth",
        "POST",
        f"{A}/deliveries/dlq/replay",
        token=ADMIN,
        json={"x": deep(DEPTH)},
    ),
    Case(
        "dlv-replay-text-plain",
        "POST",
        f"{A}/deliveries/dlq/replay",
        token=ADMIN,
        content=b"{}",
        headers={"content-type": "text/plain"},
        status=415,
    ),
    # -- task actions and reads beside the lifecycle ----------------------------------------
    Case("cancel-dotdot", "POST", f"{T}/%2e%2e/cancel", json={}, status=404),
    Case("cancel-foreign", "POST", f"{T}/{{foreign}}/cancel", json={}, status=404),
    Case(
        "cancel-reason-long",
        "POST",
        f"{T}/{{pending}}/cancel",
        json={"reason": text(5000)},
        field="reason",
    ),
    Case(
        "cancel-reason-int", "POST", f"{T}/{{pending}}/cancel", json={"reason": 5}, field="reason"
    ),
    Case("cancel-in-progress", "POST", f"{T}/{{inprog}}/cancel", json={}, status=409),
    Case("list-priority-10", "GET", f"{T}?priority=10", field="priority"),
    Case("list-priority-neg", "GET", f"{T}?priority=-1", field="priority"),
    Case("list-limit-0", "GET", f"{T}?limit=0", field="limit"),
    Case("list-status-bad", "GET", f"{T}?status=NOPE", field="status"),
    Case("list-created-words", "GET", f"{T}?createdAfter=garbage", field="createdAfter"),
    Case("list-unknown-param", "GET", f"{T}?bogus=1", field="bogus"),
    Case("list-cursor-forged", "GET", f"{T}?cursor=%00%ff", field="cursor", code="invalid_cursor"),
    Case("task-deliveries-dotdot", "GET", f"{T}/%2e%2e/deliveries", status=404),
    Case("task-deliveries-foreign", "GET", f"{T}/{{foreign}}/deliveries", status=404),
    Case("task-deliveries-upper", "GET", f"{T}/{{inprog_upper}}/deliveries", status=404),
    Case("task-history-dotdot", "GET", f"{T}/%2e%2e/history", status=404),
    Case("task-history-foreign", "GET", f"{T}/{{foreign}}/history", status=404),
    Case("task-history-long", "GET", f"{T}/{text(600)}/history", status=404),
    # -- deliveries: listing and counts ------------------------------------------------------
    Case("dlv-list-taskid-dotdot", "GET", f"{DLV}?taskId=..", field="taskId"),
    Case("dlv-list-limit-0", "GET", f"{DLV}?limit=0", field="limit"),
    Case("dlv-list-status-bad", "GET", f"{DLV}?status=NOPE", field="status"),
    Case(
        "dlv-list-reversed",
        "GET",
        f"{DLV}?createdAfter=2026-01-01T00:00:00Z&createdBefore=2025-01-01T00:00:00Z",
        field="createdBefore",
    ),
    Case("dlv-list-unknown-param", "GET", f"{DLV}?bogus=1", field="bogus"),
    Case(
        "dlv-list-cursor-forged", "GET", f"{DLV}?cursor=xyz", field="cursor", code="invalid_cursor"
    ),
    Case(
        "dlv-counts-endpoint-long",
        "GET",
        f"{DLV}/counts?endpointId={text(129)}",
        field="endpointId",
    ),
    Case("dlv-counts-unknown-param", "GET", f"{DLV}/counts?bogus=1", field="bogus"),
    Case("dlv-counts-no-auth", "GET", f"{DLV}/counts", token=None, status=401),
    # -- webhook endpoints: secret, test send, recover, stats ---------------------------------
    Case("ep-secret-unknown", "GET", f"{EPS}/ep_0000/secret", status=404),
    Case("ep-secret-foreign", "GET", f"{EPS}/{{endpoint}}/secret", token=OTHER_TENANT, status=404),
    Case("ep-secret-worker", "GET", f"{EPS}/{{endpoint}}/secret", token=W, status=401),
    Case("ep-test-unknown", "POST", f"{EPS}/ep_0000/test", status=404),
    Case("ep-test-foreign", "POST", f"{EPS}/{{endpoint}}/test", token=OTHER_TENANT, status=404),
    Case("ep-test-dotdot", "POST", f"{EPS}/%2e%2e/test", status=404),
    Case("ep-recover-no-since", "POST", f"{EPS}/{{endpoint}}/recover", json={}, field="since"),
    Case(
        "ep-recover-since-words",
        "POST",
        f"{EPS}/{{endpoint}}/recover",
        json={"since": "yesterday"},
        field="since",
    ),
    Case(
        "ep-recover-no-tz",
        "POST",
        f"{EPS}/{{endpoint}}/recover",
        json={"since": "2026-01-01T00:00:00"},
        field="since",
    ),
    Case(
        "ep-recover-reversed",
        "POST",
        f"{EPS}/{{endpoint}}/recover",
        json={"since": RECENT, "until": "2020-01-01T00:00:00Z"},
        field="until",
    ),
    Case(
        "ep-recover-too-wide",
        "POST",
        f"{EPS}/{{endpoint}}/recover",
        json={"since": "2000-01-01T00:00:00Z"},
        field="since",
    ),
    Case(
        "ep-recover-unknown-field",
        "POST",
        f"{EPS}/{{endpoint}}/recover",
        json={"since": RECENT, "bogus": 1},
        field="bogus",
    ),
    Case(
        "ep-recover-foreign",
        "POST",
        f"{EPS}/{{endpoint}}/recover",
        token=OTHER_TENANT,
        json={"since": RECENT},
        status=404,
    ),
    Case(
        "ep-recover-depth",
        "POST",
        f"{EPS}/{{endpoint}}/recover",
        json={"since": RECENT, "x": deep(DEPTH)},
    ),
    Case("ep-stats-unknown", "GET", f"{EPS}/ep_0000/stats", status=404),
    Case("ep-stats-foreign", "GET", f"{EPS}/{{endpoint}}/stats", token=OTHER_TENANT, status=404),
    Case("ep-stats-long", "GET", f"{EPS}/{text(3000)}/stats", status=404),
    # -- replay jobs --------------------------------------------------------------------------
    Case("replays-list-worker", "GET", f"{WH}/replays", token=W, status=401),
    Case("replays-list-no-auth", "GET", f"{WH}/replays", token=None, status=401),
    Case("replay-no-from", "POST", f"{WH}/replays", json={}, field="createdAfter"),
    Case(
        "replay-from-words",
        "POST",
        f"{WH}/replays",
        json={"createdAfter": "nope"},
        field="createdAfter",
    ),
    Case(
        "replay-status-pending",
        "POST",
        f"{WH}/replays",
        json={"createdAfter": RECENT, "status": "pending"},
        field="status",
    ),
    Case(
        "replay-unknown-field",
        "POST",
        f"{WH}/replays",
        json={"createdAfter": RECENT, "statuses": ["dead"]},
        field="statuses",
    ),
    Case(
        "replay-too-wide",
        "POST",
        f"{WH}/replays",
        json={"createdAfter": "2000-01-01T00:00:00Z"},
        field="createdAfter",
    ),
    Case(
        "replay-reversed",
        "POST",
        f"{WH}/replays",
        json={"createdAfter": RECENT, "createdBefore": "2020-01-01T00:00:00Z"},
        field="createdBefore",
    ),
    Case(
        "replay-endpoint-long",
        "POST",
        f"{WH}/replays",
        json={"createdAfter": RECENT, "endpointId": text(129)},
        field="endpointId",
    ),
    Case(
        "replay-endpoint-unknown",
        "POST",
        f"{WH}/replays",
        json={"createdAfter": RECENT, "endpointId": "ep_0000"},
        status=404,
    ),
    Case("replay-body-array", "POST", f"{WH}/replays", json=[RECENT]),
    Case("replay-get-unknown", "GET", f"{WH}/replays/rpl_{'0' * 24}", status=404),
    Case("replay-get-dotdot", "GET", f"{WH}/replays/%2e%2e", status=404),
    Case("replay-get-foreign", "GET", f"{WH}/replays/{{replay}}", token=OTHER_TENANT, status=404),
    Case("replay-cancel-unknown", "POST", f"{WH}/replays/rpl_{'0' * 24}/cancel", status=404),
    Case(
        "replay-cancel-foreign",
        "POST",
        f"{WH}/replays/{{replay}}/cancel",
        token=OTHER_TENANT,
        status=404,
    ),
    Case("replay-cancel-long", "POST", f"{WH}/replays/{text(3000)}/cancel", status=404),
    # -- any token --------------------------------------------------------------------------
    Case("event-types-no-auth", "GET", f"{WH}/event-types", token=None, status=401),
    Case("event-types-bad-token", "GET", f"{WH}/event-types", token="not-a-token", status=401),
    Case("whoami-no-auth", "GET", "/v1/codeq/whoami", token=None, status=401),
]


def _params() -> list[Any]:
    out = []
    for case in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
        out.append(pytest.param(case, id=case.id, marks=marks))
    return out


def test_the_table_is_large_and_ids_are_unique() -> None:
    assert len(CASES) >= 150
    assert len({c.id for c in CASES}) == len(CASES)


def _route_of(path: str, templates: list[str]) -> str | None:
    """The documented path a request path is served by: the most specific template it matches
    (``tasks/claim`` before ``tasks/{task_id}``, as the router prefers a literal segment)."""
    path = path.split("?", 1)[0]
    matching = [t for t in templates if re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", t), path)]
    return min(matching, key=lambda t: t.count("{"), default=None)


def test_every_api_operation_has_a_case(tmp_path: Path) -> None:
    """Every operation under ``/v1`` in the OpenAPI document (taken from the app, so a new
    route is missed the day it is added) is answered by at least one case."""
    app = create_app(
        make_settings(tmp_path, "hxdoc"), store=RedisStore.embedded(KeySchema("hxdoc")),
        close_store=True,
    )  # fmt: skip
    paths: dict[str, Any] = app.openapi_schema.to_schema()["paths"]
    templates = [p for p in paths if p.startswith("/v1/")]
    documented = {(m.upper(), p) for p in templates for m in paths[p]}
    covered = {(c.method, _route_of(c.path, templates)) for c in CASES}
    assert documented - covered == set(), "operations without a hostile case"
    assert len(documented) >= 44


# -- the world each case runs against ------------------------------------------------------


@dataclass
class World:
    client: ApiClient
    store: RedisStore
    artifacts: Path
    ids: dict[str, str]


async def snapshot(store: RedisStore) -> dict[bytes, Any]:
    """Every key under the store's prefix with its whole value (by type; TTLs aside)."""
    client: Any = store.client
    out: dict[bytes, Any] = {}
    async for key in client.scan_iter(match=f"{store.keys.prefix}:*", count=1000):
        kind = await client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        value: Any
        if kind == "string":
            value = await client.get(key)
        elif kind == "hash":
            value = await client.hgetall(key)
        elif kind == "list":
            value = await client.lrange(key, 0, -1)
        elif kind == "set":
            value = sorted(await client.smembers(key))
        elif kind == "zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = await client.xrange(key)
        else:
            value = kind
        out[key if isinstance(key, bytes) else key.encode()] = (kind, value)
    return out


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def _ok(client: ApiClient, method: str, path: str, token: str, **kw: Any) -> Any:
    r = await client.request(method, path, headers=auth(token), **kw)
    assert r.status_code < 300, (path, r.status_code, r.text)
    return r.json() if r.content else None


@pytest_asyncio.fixture(params=SERVERS, scope="module", loop_scope="module")
async def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[World]:
    """One world per server for the whole table: each case compares the store before and
    after its own request, so the cases cannot hide each other's changes (and a world per
    case was nine tenths of the table's time)."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    prefix = "hx" + uuid.uuid4().hex[:10]
    store = make_store(request, request.param, prefix)
    settings = make_settings(
        tmp_path,
        prefix,
        maxBodyBytes=MAX_BODY,
        maxPayloadBytes=MAX_PAYLOAD,
        maxArtifactBytes=MAX_ARTIFACT,
    )
    app = create_app(settings, store=store, close_store=True)
    async with serve_in_process(app) as c:
        ids: dict[str, str] = {}
        ids["pending"] = (await _ok(c, "POST", T, PRODUCER, json=CREATE))["id"]
        ids["foreign"] = (await _ok(c, "POST", T, OTHER_TENANT, json=CREATE))["id"]
        await _ok(c, "POST", T, PRODUCER, json={"command": "SEND", "payload": 1, "maxAttempts": 1})
        dead = await _ok(c, "POST", f"{T}/claim", WORKER, json={"commands": ["SEND"]})
        await _ok(c, "POST", f"{T}/{dead['id']}/nack", WORKER, json={"reason": "x"})
        ids["dead"] = dead["id"]
        inprog = await _ok(c, "POST", f"{T}/claim", WORKER, json={"commands": ["RENDER"]})
        ids["inprog"] = inprog["id"]
        ids["inprog_upper"] = inprog["id"].upper()
        assert inprog["id"] == ids["pending"]
        ids["pending"] = (await _ok(c, "POST", T, PRODUCER, json=CREATE))["id"]
        endpoint = {"url": PUBLIC_URL, "eventTypes": ["task.completed"]}
        ids["endpoint"] = (await _ok(c, "POST", EPS, PRODUCER, json=endpoint))["id"]
        sub = {"callbackUrl": PUBLIC_URL, "eventTypes": ["RENDER"]}
        ids["sub"] = (await _ok(c, "POST", SUBS, WORKER, json=sub))["subscriptionId"]
        replay = {"createdAfter": RECENT, "endpointId": ids["endpoint"]}
        ids["replay"] = (await _ok(c, "POST", f"{WH}/replays", PRODUCER, json=replay))["id"]
        yield World(client=c, store=store, artifacts=tmp_path / "artifacts", ids=ids)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", _params())
async def test_hostile_input_is_refused_and_changes_nothing(world: World, case: Case) -> None:
    before = await snapshot(world.store)
    headers = dict(auth(case.token)) if case.token is not None else {}
    extra = case.headers if isinstance(case.headers, list) else list(case.headers.items())
    kwargs: dict[str, Any] = {}
    if case.json is not _UNSET:
        kwargs["json"] = case.json
    elif case.content is not None:
        kwargs["content"] = case.content
    path = case.path.format(**world.ids)
    r = await world.client.request(case.method, path, headers=[*headers.items(), *extra], **kwargs)

    assert r.status_code == case.status, r.text[:300]
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and set(body) >= {"error", "code"}, body
    assert isinstance(body["error"], str) and body["error"], body
    assert isinstance(body["code"], str) and body["code"], body
    if case.status == 400:
        assert body["code"] == case.code, body
    if case.field is not None:
        assert case.field in body["error"], body
    assert await snapshot(world.store) == before
    assert files_under(world.artifacts) == []
