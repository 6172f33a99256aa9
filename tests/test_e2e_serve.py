"""End to end: a real ``codeq serve`` process on a socket, embedded, on real Redis and on
KVRocks (the product's own store)."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from tests.receivers import Receiver, receiver
from tests.served import TOKEN, polls_waiting, serve
from tests.servers import KvrocksServer, RedisServer, free_port, wait_for
from tests.test_deliveries import SECRET


def round_trip(base: str) -> None:
    h = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=base, headers=h, timeout=15) as c:
        r = c.post("/v1/codeq/tasks", json={"command": "HELLO", "payload": {"x": 1}})
        assert r.status_code == 202
        task_id = r.json()["id"]
        r = c.post("/v1/codeq/tasks/claim", json={"commands": ["HELLO"]})
        assert r.status_code == 200 and r.json()["leaseId"]
        lease = r.json()["leaseId"]
        r = c.post(
            f"/v1/codeq/tasks/{task_id}/result",
            json={"status": "COMPLETED", "result": {"ok": True}, "leaseId": lease},
        )
        assert r.status_code == 200
        assert c.get(f"/v1/codeq/tasks/{task_id}").json()["status"] == "COMPLETED"
        assert c.get(f"/v1/codeq/tasks/{task_id}/result").json()["result"]["result"] == {"ok": True}
        r = c.post(
            f"/v1/codeq/tasks/{task_id}/result",
            json={"status": "COMPLETED", "result": {}, "leaseId": lease},
        )
        assert r.status_code == 409
        started = time.monotonic()
        r = c.post("/v1/codeq/tasks/claim", json={"commands": ["HELLO"], "waitSeconds": 2})
        assert r.status_code == 204 and 1.8 <= time.monotonic() - started < 4


@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_serve_round_trip(backend: str, request: pytest.FixtureRequest) -> None:
    env: dict[str, str] = {}
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        env = {"REDIS_ADDR": f"127.0.0.1:{server.port}", "KEY_PREFIX": f"e2e{free_port()}"}
    with serve(env) as served:
        round_trip(served.base)
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(15) == 0
        assert served.stdout().count(TOKEN) >= 1  # printed for the user on stdout...
        assert TOKEN not in served.stderr()  # ...and never logged
        access = [json.loads(line) for line in served.stderr().splitlines() if '"path"' in line]
        assert any(a.get("path") == "/v1/codeq/tasks" and a.get("status") == 202 for a in access)


def test_long_poll_wakes_within_milliseconds_of_a_create(redis_server: RedisServer) -> None:
    env = {"REDIS_ADDR": f"127.0.0.1:{redis_server.port}", "KEY_PREFIX": f"wk{free_port()}"}
    h = {"Authorization": f"Bearer {TOKEN}"}
    import threading

    with serve(env) as served:
        base = served.base
        results: dict[str, float] = {}

        def poll() -> None:
            r = httpx.post(
                f"{base}/v1/codeq/tasks/claim",
                headers=h,
                timeout=15,
                json={"commands": ["WAKE"], "waitSeconds": 10},
            )
            results["status"] = r.status_code
            results["answered"] = time.monotonic()

        latencies = []
        producer = httpx.Client(base_url=base, headers=h, timeout=5)  # warm connection
        assert producer.get("/healthz").status_code == 200
        for _ in range(5):
            results.clear()
            t = threading.Thread(target=poll)
            t.start()
            polls_waiting(base, 1)
            created = time.monotonic()  # before the create is sent: the strict measure
            producer.post("/v1/codeq/tasks", json={"command": "WAKE", "payload": 1})
            t.join(15)
            assert results["status"] == 200
            latencies.append(results["answered"] - created)
        producer.close()
        assert max(latencies) < 0.05, latencies


def test_sigterm_answers_open_long_polls(redis_server: RedisServer) -> None:
    env = {"REDIS_ADDR": f"127.0.0.1:{redis_server.port}", "KEY_PREFIX": f"st{free_port()}"}
    import threading

    with serve(env) as served:
        base, proc = served.base, served.proc
        out: dict[str, int] = {}

        def poll() -> None:
            r = httpx.post(
                f"{base}/v1/codeq/tasks/claim",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=20,
                json={"commands": ["NEVER"], "waitSeconds": 30},
            )
            out["status"] = r.status_code

        t = threading.Thread(target=poll)
        t.start()
        polls_waiting(base, 1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        t.join(20)
        assert out.get("status") == 204
        assert proc.wait(15) == 0
        assert time.monotonic() - started < 5


def test_serve_on_kvrocks_delivers_a_signed_callback_and_an_event_subscription(
    kvrocks_server: KvrocksServer,
) -> None:
    """create → claim → result on ``codeq serve`` over KVRocks; the result callback and the
    endpoint's event arrive signed at real receivers on loopback."""
    env = {
        "REDIS_ADDR": f"127.0.0.1:{kvrocks_server.port}",
        "KEY_PREFIX": f"kv{free_port()}",
        "WEBHOOK_HMAC_SECRET": SECRET,
    }
    h = {"Authorization": f"Bearer {TOKEN}"}

    def arrived(r: Receiver, n: int) -> None:
        wait_for(lambda: r.count() >= n, timeout=20, message=f"{n} webhook(s) at {r.url}")

    with serve(env) as served, receiver() as callbacks, receiver() as subscriber:
        with httpx.Client(base_url=served.base, headers=h, timeout=15) as c:
            r = c.post(
                "/v1/codeq/webhooks/endpoints",
                json={"url": subscriber.url, "eventTypes": ["task.completed"]},
            )
            assert r.status_code == 201, r.text
            endpoint_secret = r.json()["secret"]
            r = c.post(
                "/v1/codeq/tasks",
                json={"command": "HELLO", "payload": {"x": 1}, "webhook": callbacks.url},
            )
            assert r.status_code == 202, r.text
            task_id = r.json()["id"]
            r = c.post("/v1/codeq/tasks/claim", json={"commands": ["HELLO"]})
            assert r.status_code == 200 and r.json()["id"] == task_id
            r = c.post(
                f"/v1/codeq/tasks/{task_id}/result",
                json={
                    "status": "COMPLETED",
                    "result": {"ok": True},
                    "leaseId": r.json()["leaseId"],
                },
            )
            assert r.status_code == 200, r.text
            arrived(callbacks, 1)
            arrived(subscriber, 1)
        [callback] = callbacks.received
        assert json.loads(callback.body)["taskId"] == task_id
        Webhook(SECRET).verify(callback.body, callback.headers)
        [event] = subscriber.received
        data = json.loads(event.body)
        assert data["type"] == "task.completed" and data["data"]["id"] == task_id
        Webhook(endpoint_secret).verify(event.body, event.headers)
