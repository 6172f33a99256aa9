"""Logs never carry tokens, secrets or payloads (spec 04/05): a real ``codeq serve`` run at
debug level, with every kind of secret in play, is captured and searched."""

from __future__ import annotations

import base64
import json
import secrets

import httpx

from codeq.client import CodeQClient, Unauthorized
from tests.receivers import receiver
from tests.served import serve
from tests.servers import wait_for


def test_a_debug_run_logs_no_token_secret_or_payload() -> None:
    producer = "ptok-" + secrets.token_hex(12)
    worker = "wtok-" + secrets.token_hex(12)
    hmac_secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    payload_marker = "payload-" + secrets.token_hex(8)
    result_marker = "result-" + secrets.token_hex(8)
    reason_marker = "reason-" + secrets.token_hex(8)
    scopes = "codeq:claim codeq:heartbeat codeq:result codeq:nack codeq:abandon"
    env = {
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "json",
        "PRODUCER_AUTH_PROVIDER": "static",
        "PRODUCER_AUTH_CONFIG": json.dumps(
            {"tokens": {producer: {"sub": "p1", "tenantId": "acme", "scope": "codeq:admin"}}}
        ),
        "WORKER_AUTH_PROVIDER": "static",
        "WORKER_AUTH_CONFIG": json.dumps(
            {
                "tokens": {
                    worker: {"sub": "w1", "tenantId": "acme", "scope": scopes, "eventTypes": ["*"]}
                }
            }
        ),
        "WEBHOOK_HMAC_SECRET": hmac_secret,
        "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
    }
    endpoint_secret = ""
    with receiver() as hooks, serve(env) as s:
        with CodeQClient(s.base, producer_token=producer, worker_token=worker) as cq:
            # The endpoint first: it sees every later event (deliverers cache endpoints 1 s).
            endpoint = cq.create_endpoint(hooks.url, ["task.completed"])
            endpoint_secret = endpoint["secret"]
            task = cq.create_task("SECRETIVE", {"marker": payload_marker}, webhook=hooks.url)
            nacked = cq.create_task("SECRETIVE", {"marker": payload_marker}, max_attempts=1)
            first = cq.claim(["SECRETIVE"])
            second = cq.claim(["SECRETIVE"])
            assert first is not None and second is not None
            by_id = {first.id: first, second.id: second}
            cq.heartbeat(by_id[task.id])
            cq.complete(by_id[task.id], {"marker": result_marker})
            cq.nack(by_id[nacked.id], reason=reason_marker)
        # Rejected credentials are not echoed either.
        with CodeQClient(s.base, token=producer + "x", retries=0) as stranger:
            try:
                stranger.get_task(task.id)
            except Unauthorized:
                pass
            else:
                raise AssertionError("a wrong token was accepted")
        httpx.post(
            f"{s.base}/v1/codeq/tasks",
            content=b"{not json " + payload_marker.encode(),
            headers={"Authorization": f"Bearer {producer}"},
        )
        # The callback and the endpoint delivery both arrive: the secrets were in use.
        wait_for(lambda: hooks.count() >= 2, timeout=20, message="webhooks not delivered")
        s.proc.terminate()
        s.proc.wait(20)
        out, err = s.stdout(), s.stderr()

    captured = out + err
    lines = [line for line in err.splitlines() if line.startswith("{")]
    assert len(lines) >= 8, err  # the run was logged: access lines at least
    for line in lines:
        record = json.loads(line)
        assert {"ts", "level", "msg"} <= set(record)
    access = [json.loads(line) for line in lines if '"codeq.access"' in line]
    assert access and all(a.get("requestId") for a in access)
    # Each line says whose request it was and which task (fast path and Litestar routes alike).
    routes = {(a["method"], a["path"].replace(task.id, "{id}")): a for a in access
              if a.get("taskId") == task.id}  # fmt: skip
    for key in [("POST", "/v1/codeq/tasks"), ("POST", "/v1/codeq/tasks/{id}/result")]:
        assert routes[key]["tenant"] == "acme", sorted(routes)
    for needle in (
        producer,
        worker,
        hmac_secret,
        endpoint_secret,
        payload_marker,
        result_marker,
        reason_marker,
    ):
        assert needle not in captured, f"{needle[:8]}… appears in the logs"
