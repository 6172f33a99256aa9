"""Artifacts under hostile names, task ids and tenants (issue 15, item 5): every file written
lands directly in ``localArtifactsDir/<tenant>/<taskId>/``, names are unique per result (a
repeat is a 409 that writes nothing), and a malformed task id is a 404 before any file."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from codeq.ids import is_task_id
from gateway.app import create_app
from tests.asgi import ApiClient, serve_in_process
from tests.conftest import SERVERS, make_store
from tests.test_api import ALL_SCOPES, PRODUCER, WORKER, auth, make_settings, static

DOT_PRODUCER = "dot-producer"
DOT_WORKER = "dot-worker"
T = "/v1/codeq/tasks"
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")

HOSTILE_NAMES = [
    "..",
    "/",
    "../../../../etc/passwd",
    "a\x00b.txt",
    "y" * 255,
    "\u202egpj.exe",  # right-to-left override
    "\ufb01le.txt",  # the "fi" ligature
    "\uff0e\uff0e\uff0fsecret",  # fullwidth ../
    "C:\\Windows\\win.ini",
    ".hidden",
    "dir/sub/name.txt",
    "%2e%2e%2fescaped",
    "~",
    "con",
    "\tx\n",
]


@pytest.fixture(params=SERVERS)
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiClient]:
    prefix = "ha" + uuid.uuid4().hex[:10]
    worker = {"scope": ALL_SCOPES, "eventTypes": ["*"]}
    settings = make_settings(
        tmp_path,
        prefix,
        producerAuthConfig=static(
            {
                PRODUCER: {"sub": "p1", "tenantId": "acme"},
                DOT_PRODUCER: {"sub": "p2", "tenantId": ".."},
            }
        ),
        workerAuthConfig=static(
            {
                WORKER: {"sub": "w1", "tenantId": "acme", **worker},
                DOT_WORKER: {"sub": "w2", "tenantId": "..", **worker},
            }
        ),
    )
    app = create_app(settings, store=make_store(request, request.param, prefix), close_store=True)
    async with serve_in_process(app) as c:
        yield c


async def claimed(c: ApiClient, producer: str, worker: str) -> str:
    r = await c.post(T, json={"command": "RENDER", "payload": 1}, headers=auth(producer))
    assert r.status_code == 202, r.text
    r = await c.post(f"{T}/claim", json={"commands": ["RENDER"]}, headers=auth(worker))
    assert r.status_code == 200, r.text
    task_id: str = r.json()["id"]
    return task_id


def inline(name: str, content: bytes = b"hi") -> dict[str, Any]:
    return {"name": name, "contentBase64": base64.b64encode(content).decode()}


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def contents(paths: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in paths]


@pytest.mark.parametrize(
    ("producer", "worker", "folder"),
    [(PRODUCER, WORKER, "acme"), (DOT_PRODUCER, DOT_WORKER, "%2E%2E")],
    ids=["tenant-acme", "tenant-dotdot"],
)
async def test_hostile_names_stay_in_the_task_folder(
    client: ApiClient, tmp_path: Path, producer: str, worker: str, folder: str
) -> None:
    root = (tmp_path / "artifacts").resolve()
    task_id = await claimed(client, producer, worker)
    artifacts = [inline(name, f"content {i}".encode()) for i, name in enumerate(HOSTILE_NAMES)]
    r = await client.post(
        f"{T}/{task_id}/result",
        json={"status": "COMPLETED", "result": {}, "artifacts": artifacts},
        headers=auth(worker),
    )
    assert r.status_code == 200, r.text
    stored = r.json()["artifacts"]

    files = files_under(tmp_path)
    assert len(files) == len(HOSTILE_NAMES)
    task_folder = root / folder / task_id
    for path in files:
        assert path.resolve().parent == task_folder, path
        assert SAFE_NAME.match(path.name), path.name
    urls = [Path(unquote(urlsplit(a["url"]).path)) for a in stored]
    assert sorted(urls) == files
    # each file holds its own artifact's bytes
    assert contents(urls) == [f"content {i}".encode() for i in range(len(HOSTILE_NAMES))]


@pytest.mark.parametrize(
    "hostile_id",
    ["%2e%2e", "%2e", "..%2F..%2Fescape", "..%5C..", "%00", "x" * 300, "%E2%80%AE" + "a" * 36],
)
async def test_a_hostile_task_id_writes_nothing(
    client: ApiClient, tmp_path: Path, hostile_id: str
) -> None:
    r = await client.post(
        f"{T}/{hostile_id}/result",
        json={"status": "COMPLETED", "result": {}, "artifacts": [inline("a.txt")]},
        headers=auth(WORKER),
    )
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "not_found"
    assert files_under(tmp_path) == []
    assert not (tmp_path / "artifacts").exists() or list((tmp_path / "artifacts").iterdir()) == []


@pytest.mark.parametrize(
    "names",
    [["a.png", "a.png"], ["x/a.png", "../a.png"], ["A.PNG", "a.png"], ["..", "artifact-0"]],
    ids=["same", "same-basename", "same-ignoring-case", "same-after-sanitising"],
)
async def test_names_are_unique_per_result(
    client: ApiClient, tmp_path: Path, names: list[str]
) -> None:
    task_id = await claimed(client, PRODUCER, WORKER)
    r = await client.post(
        f"{T}/{task_id}/result",
        json={"status": "COMPLETED", "result": {}, "artifacts": [inline(n) for n in names]},
        headers=auth(WORKER),
    )
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "artifact_name_conflict"
    assert "artifacts[1].name" in r.json()["error"]
    assert files_under(tmp_path) == []
    task = await client.get(f"{T}/{task_id}", headers=auth(PRODUCER))
    assert task.json()["status"] == "IN_PROGRESS"  # nothing was recorded: it can still finish
    r = await client.post(
        f"{T}/{task_id}/result",
        json={"status": "COMPLETED", "result": {}, "artifacts": [inline(names[0])]},
        headers=auth(WORKER),
    )
    assert r.status_code == 200, r.text
    (written,) = files_under(tmp_path)
    assert written.parent.name == task_id and is_task_id(written.parent.name)
