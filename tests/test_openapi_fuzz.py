"""Schema fuzz test: schemathesis drives every operation of the served OpenAPI document.

A real ``codeq gateway`` process (HTTP only: no deliverer sends anything) on loopback, on the
suite's real Redis, with static producer, worker and admin tokens, each operation called with
the one it takes. For each operation schemathesis generates valid and invalid requests (path
and query parameters, bodies) from the document — with generated ids and with ids that exist
(tasks pending, leased, completed and dead, endpoints, subscriptions) — and checks every
answer: never a 5xx, and the status, the content type, the documented headers and the body
all as the document says. Bounded (``MAX_EXAMPLES`` per operation, no shrinking: about a
minute on two cores) and reproducible (fixed seed, derandomized, no example database).

Known bugs in code this test does not own are kept out by :data:`KNOWN_FAILURES`, each
narrow (one operation, one kind of input) and with its reason: remove an entry once its bug
is fixed, and the test checks that input again.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
import yaml
from schemathesis.core.failures import FailureGroup
from schemathesis.openapi.checks import JsonSchemaError, UndefinedStatusCode

from tests.served import Served, serve
from tests.servers import RedisServer
from tests.test_openapi import make_app

PRODUCER = "fuzz-producer-token"
WORKER = "fuzz-worker-token"
ADMIN = "fuzz-admin-token"
ALL_SCOPES = "codeq:claim codeq:heartbeat codeq:abandon codeq:nack codeq:result codeq:subscribe"

#: examples per operation (~31 operations); CODEQ_FUZZ_EXAMPLES overrides it for a longer run
#: (e.g. 1000 before a release)
MAX_EXAMPLES = int(os.environ.get("CODEQ_FUZZ_EXAMPLES", "200"))
SEED = 20261206

API = "/v1/codeq"
#: (method, path prefix) → the token the operation takes; everything else: the producer's
WORKER_OPERATIONS = (
    ("POST", f"{API}/tasks/claim"),
    ("POST", f"{API}/tasks/{{task_id}}/heartbeat"),
    ("POST", f"{API}/tasks/{{task_id}}/abandon"),
    ("POST", f"{API}/tasks/{{task_id}}/nack"),
    ("POST", f"{API}/tasks/{{task_id}}/result"),
    ("*", f"{API}/workers/"),
)


def token_for(method: str, path: str) -> str:
    if path.startswith(f"{API}/admin/"):
        return ADMIN
    for m, prefix in WORKER_OPERATIONS:
        if m in ("*", method) and path.startswith(prefix):
            return WORKER
    return PRODUCER


@dataclass(frozen=True)
class KnownFailure:
    """A bug found by this test in code it does not own: the inputs it concerns are not sent."""

    method: str
    path: str
    matches: Callable[[Any], bool]  # the schemathesis Case
    reason: str


#: Bugs found by this test in code it does not own, kept out until fixed. Each entry is one
#: operation and a predicate on the generated case that is as narrow as the bug, e.g.
#: ``KnownFailure("POST", f"{API}/tasks", lambda c: c.body.get("maxAttempts", 0) >= 2**53,
#: "500 and a task saved (issue 15 item 1)")``. Empty: the last run found none.
KNOWN_FAILURES: list[KnownFailure] = []


def known_failure(case: Any) -> KnownFailure | None:
    for k in KNOWN_FAILURES:
        if case.method.upper() == k.method and case.path == k.path and k.matches(case):
            return k
    return None


# --------------------------------------------------------------------------------------------
# The server under test
# --------------------------------------------------------------------------------------------


def _settings(prefix: str, artifacts: Path) -> dict[str, Any]:
    producer = {
        PRODUCER: {"sub": "fuzz-producer", "tenantId": "fuzz"},
        ADMIN: {"sub": "fuzz-admin", "tenantId": "fuzz", "role": "ADMIN"},
    }
    worker = {
        WORKER: {"sub": "fuzz-worker", "tenantId": "fuzz", "scope": ALL_SCOPES, "eventTypes": ["*"]}
    }
    return {
        "keyPrefix": prefix,
        "host": "127.0.0.1",
        "producerAuthProvider": "static",
        "producerAuthConfig": {"tokens": producer},
        "workerAuthProvider": "static",
        "workerAuthConfig": {"tokens": worker},
        "localArtifactsDir": str(artifacts),
        "maxBodyBytes": 64 * 1024,
        "maxPayloadBytes": 32 * 1024,
        # the cleanup route is limited, so its documented 429 is answered and checked too
        "rateLimit": {"admin": {"requestsPerMinute": 600, "burstSize": 20}},
        "logFormat": "json",
    }


def errors_logged(gateway: Served) -> str:
    lines = (gateway.stdout() + gateway.stderr()).splitlines()
    return "\n".join(line for line in lines if '"ERROR"' in line or "Traceback" in line)


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer) -> Iterator[Served]:
    """A real ``codeq gateway`` (HTTP only: no deliverer sends anything) on loopback."""
    with tempfile.TemporaryDirectory(prefix="codeq-fuzz-") as tmp:
        root = Path(tmp)
        config = root / "config.yaml"
        prefix = "fz" + os.urandom(5).hex()
        config.write_text(yaml.safe_dump(_settings(prefix, root / "artifacts")))
        env = {"REDIS_URL": redis_server.url}
        with serve(env, command="gateway", args=["--config", str(config)]) as served:
            yield served


def _config(base: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "base-url": base,
            "generation": {
                "mode": "all",  # valid and invalid input
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "no-shrink": True,
                "database": "none",
                # the token is ours (per operation), never generated, negated or dropped
                "with-security-parameters": False,
            },
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_headers_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
            },
            "request-timeout": 10,
        }
    )


@pytest.fixture(scope="module")
def api_schema(gateway: Served) -> Any:
    """The document the running gateway serves, loaded by schemathesis."""
    document = httpx.get(f"{gateway.base}/schema/openapi.json", timeout=10).json()
    return schemathesis.openapi.from_dict(document, config=_config(gateway.base))


def documented_operations() -> list[str]:
    """``METHOD /path`` of every operation in the app's document (built in process, so the
    test ids are known before the server starts; the server's copy is the one fuzzed).
    DELETEs come last, so the ids they remove are there for the other operations first."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_app(Path(tmp)).openapi_schema.paths or {}
    methods = ("get", "put", "post", "patch", "delete")
    found = [(m, path) for path, item in paths.items() for m in methods if getattr(item, m)]
    return [f"{m.upper()} {path}" for m, path in sorted(found, key=lambda f: f[0] == "delete")]


# --------------------------------------------------------------------------------------------
# Real ids, so that the generated requests reach past "not found"
# --------------------------------------------------------------------------------------------

RECEIVER = "https://receiver.invalid/hook"  # accepted at create time; nothing here sends


@pytest.fixture(scope="module")
def known_ids(gateway: Served) -> dict[str, list[str]]:
    """Path parameter name → ids that exist: pending, leased (by the worker), completed and
    dead-lettered tasks, an endpoint, a subscription, the queues they are in."""
    with httpx.Client(base_url=gateway.base, timeout=10) as c:

        def call(token: str, method: str, url: str, body: Any = None) -> Any:
            r = c.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code < 300, f"{method} {url}: {r.status_code} {r.text}"
            return r.json() if r.content else None

        tasks = [
            call(PRODUCER, "POST", f"{API}/tasks", {"command": "FUZZ", "payload": {"n": n}})["id"]
            for n in range(30)
        ]
        dead = [
            call(
                PRODUCER,
                "POST",
                f"{API}/tasks",
                {"command": "FUZZ_DLQ", "payload": {"n": n}, "maxAttempts": 1},
            )["id"]
            for n in range(3)
        ]
        for _ in dead:
            leased = call(WORKER, "POST", f"{API}/tasks/claim", {"commands": ["FUZZ_DLQ"]})
            call(WORKER, "POST", f"{API}/tasks/{leased['id']}/nack", {"reason": "seed"})
        for n in range(20):
            leased = call(
                WORKER, "POST", f"{API}/tasks/claim", {"commands": ["FUZZ"], "leaseSeconds": 3600}
            )
            if n < 4:
                call(
                    WORKER,
                    "POST",
                    f"{API}/tasks/{leased['id']}/result",
                    {"status": "COMPLETED", "result": {"n": n}},
                )
        endpoints = [
            call(
                PRODUCER,
                "POST",
                f"{API}/webhooks/endpoints",
                {"url": RECEIVER, "eventTypes": ["*"]},
            )["id"]
            for _ in range(5)
        ]
        subscriptions = [
            call(
                WORKER,
                "POST",
                f"{API}/workers/subscriptions",
                {"callbackUrl": RECEIVER, "eventTypes": ["FUZZ"]},
            )["subscriptionId"]
            for _ in range(5)
        ]
    return {
        "task_id": tasks + dead,
        "command": ["FUZZ", "FUZZ_DLQ"],
        "endpoint_id": endpoints,
        "sub_id": subscriptions,
    }


#: Body fields that generated text almost never gets right, and a value the app accepts: in
#: half the cases the generated value is replaced, so the requests get past validation.
PLAUSIBLE = {
    "url": RECEIVER,
    "callbackUrl": RECEIVER,
    "webhook": RECEIVER,
    "commands": ["FUZZ"],
    "eventTypes": ["*"],
}


def plausible(case: Any) -> Any:
    if isinstance(case.body, dict):
        for key, value in PLAUSIBLE.items():
            if key in case.body:
                case.body[key] = value
    return case


def cases(operation: Any, known: dict[str, list[str]]) -> Any:
    """Valid and invalid requests for ``operation``: with generated path parameters and with
    ids that exist, with generated bodies and with plausible ones."""
    st = hypothesis.strategies
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    options = [operation.as_strategy(mode) for mode in modes]
    names = re.findall(r"\{(\w+)\}", operation.path)
    if names and all(known.get(name) for name in names):
        real = st.fixed_dictionaries({name: st.sampled_from(known[name]) for name in names})
        for mode in modes:
            options.append(
                real.flatmap(lambda p, m=mode: operation.as_strategy(m, path_parameters=p))
            )
    generated = st.one_of(options)
    return st.one_of(generated, generated.map(plausible))


CLAIM = ("POST", f"{API}/tasks/claim")
#: the longest long poll a fuzzed claim may wait: a valid ``waitSeconds`` (up to 30) on an
#: empty queue would spend the whole budget waiting
MAX_WAIT = 0.05


@pytest.mark.parametrize("label", documented_operations())
def test_every_operation_answers_as_documented(
    label: str, api_schema: Any, gateway: Served, known_ids: dict[str, list[str]]
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, f"{label}: not in the served document"
    method, path = operation.method.upper(), operation.path
    token = token_for(method, path)
    sent: list[int] = []

    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],  # no shrinking
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    @hypothesis.given(case=cases(operation, known_ids))
    def fuzz(case: Any) -> None:
        if known_failure(case) is not None:
            hypothesis.reject()
        if (method, path) == CLAIM and isinstance(case.body, dict):
            wait = case.body.get("waitSeconds")
            if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > MAX_WAIT:
                case.body["waitSeconds"] = MAX_WAIT
        response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"})
        sent.append(response.status_code)
        # the token fits the operation: a 401 means this test lost its coverage, not a bug
        assert response.status_code != 401, f"{label}: {response.text}"

    try:
        fuzz()
    except BaseException as exc:
        exc.add_note(f"gateway errors logged:\n{errors_logged(gateway)[-4000:]}")
        raise
    assert sent, f"{label}: no request was sent"


# --------------------------------------------------------------------------------------------
# The checks bite
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lie",
    ["an undocumented status", "a body other than documented"],
)
def test_a_document_that_lies_fails_the_checks(lie: str, gateway: Served) -> None:
    """The same checks, against a copy of the document with one lie in it: the fuzz test
    above can fail."""
    document = httpx.get(f"{gateway.base}/schema/openapi.json", timeout=10).json()
    if lie == "an undocumented status":
        del document["paths"][f"{API}/tasks/{{task_id}}"]["get"]["responses"]["404"]
    else:
        document["components"]["schemas"]["ErrorOut"]["properties"]["code"] = {"type": "integer"}
    lying = schemathesis.openapi.from_dict(document, config=_config(gateway.base))
    case = lying[f"{API}/tasks/{{task_id}}"]["GET"].Case(path_parameters={"task_id": "missing"})
    with pytest.raises(FailureGroup) as failed:
        case.call_and_validate(headers={"Authorization": f"Bearer {PRODUCER}"})
    kind = UndefinedStatusCode if lie == "an undocumented status" else JsonSchemaError
    assert failed.group_contains(kind), failed.value
