"""Webhooks are signed by default (issue 15, item 13): with no webhookHmacSecret, `codeq serve`
makes a development secret once, keeps it in dataDir, prints it at start, and `codeq webhook
secret` prints it again; webhooks go unsigned only when webhookUnsigned says so, and never in
prod."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from codeq.auth.base import AuthConfigError
from codeq.auth.providers import build_auth
from codeq.settings import Settings
from codeq.webhooks import DEV_SIGNING_FILE, development_secret, signing_secret
from tests.receivers import Receiver, receiver
from tests.served import TOKEN, serve
from tests.servers import wait_for


def test_the_development_secret_is_made_once_and_kept(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ThreadPoolExecutor(20) as pool:  # twenty processes' worth of first starts at once
        made = set(pool.map(lambda _: development_secret(str(data)), range(20)))
    assert len(made) == 1
    (secret,) = made
    assert secret.startswith("whsec_")
    Webhook(secret)  # a secret Standard Webhooks libraries take
    path = data / DEV_SIGNING_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in data.iterdir()] == [DEV_SIGNING_FILE]  # nothing left aside
    assert development_secret(str(data)) == secret


def test_what_signs_webhooks(tmp_path: Path) -> None:
    assert signing_secret("whsec_given", unsigned=True, data_dir=str(tmp_path)) == "whsec_given"
    assert signing_secret(None, unsigned=True, data_dir=str(tmp_path)) is None
    assert not (tmp_path / DEV_SIGNING_FILE).exists()
    made = signing_secret(None, unsigned=False, data_dir=str(tmp_path))
    assert made == (tmp_path / DEV_SIGNING_FILE).read_text().strip()


def test_unsigned_webhooks_are_refused_in_prod() -> None:
    settings = Settings.from_mapping(
        {
            "env": "prod",
            "producerAuthProvider": "static",
            "producerAuthConfig": {"tokens": [{"token": "p" * 24, "sub": "p", "tenantId": "a"}]},
            "workerAuthProvider": "static",
            "workerAuthConfig": {"tokens": [{"token": "w" * 24, "sub": "w", "tenantId": "a"}]},
            "webhookHmacSecret": "whsec_c2VjcmV0LWZvci10aGUtcHJvZC10ZXN0LTMyYg==",
            "webhookUnsigned": True,
        }
    )
    with pytest.raises(AuthConfigError, match="webhookUnsigned"):
        build_auth(settings)


def _callback(base: str, hook: str) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        r = c.post("/v1/codeq/tasks", json={"command": "HI", "payload": {}, "webhook": hook})
        assert r.status_code == 202, r.text
        claimed = c.post("/v1/codeq/tasks/claim", json={"commands": ["HI"]}).json()
        r = c.post(
            f"/v1/codeq/tasks/{claimed['id']}/result",
            json={"status": "COMPLETED", "result": {}, "leaseId": claimed["leaseId"]},
        )
        assert r.status_code == 200, r.text


def _secret_command(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeq.cli", "webhook", "secret"],
        env={**os.environ, "DATA_DIR": str(data), "WEBHOOK_HMAC_SECRET": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _arrived(r: Receiver) -> None:
    wait_for(lambda: r.count() >= 1, timeout=20, message=f"a webhook at {r.url}")


def test_serve_signs_with_the_development_secret_it_prints(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"DATA_DIR": str(data), "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8"}
    with serve(env) as served, receiver() as hook:
        printed = [ln for ln in served.stdout().splitlines() if "webhook secret" in ln]
        assert len(printed) == 1 and str(data) in printed[0]
        secret = printed[0].split("webhook secret: ", 1)[1].split()[0]
        _callback(served.base, hook.url)
        _arrived(hook)
    [callback] = hook.received
    Webhook(secret).verify(callback.body, callback.headers)  # raises when it does not match
    assert json.loads(callback.body)["status"] == "COMPLETED"
    shown = _secret_command(data)
    assert shown.returncode == 0 and shown.stdout.strip() == secret
    # the next start signs with the same one
    with serve(env) as served:
        assert f"webhook secret: {secret}" in served.stdout()


def test_unsigned_only_when_asked(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        "DATA_DIR": str(data),
        "WEBHOOK_UNSIGNED": "true",
        "WEBHOOK_ALLOWED_CIDRS": "127.0.0.0/8",
    }
    with serve(env) as served, receiver() as hook:
        assert "unsigned" in served.stdout()
        _callback(served.base, hook.url)
        _arrived(hook)
    [callback] = hook.received
    assert "webhook-signature" not in {k.lower() for k in callback.headers}
    assert not (data / DEV_SIGNING_FILE).exists()  # no secret was made
