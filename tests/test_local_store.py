"""The default store: with nothing configured, ``codeq serve`` runs a private store process of
its own in the data directory, supervises it, and stops it with the service (issue 16 item 1).

Real processes throughout: ``codeq serve`` subprocesses, the OS's ``redis-server`` and the
project's KVRocks binary as the private store.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from codeq.store.local import LocalStore, LocalStoreError
from tests.conftest import require_kvrocks
from tests.served import TOKEN, serve
from tests.servers import free_port, wait_for

HEADERS = {"Authorization": f"Bearer {TOKEN}"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _store_pid(data_dir: Path) -> int:
    return int((data_dir / "store" / "store.pid").read_text())


def _create(base: str, n: int, command: str = "KEEP") -> list[str]:
    ids = []
    with httpx.Client(base_url=base, headers=HEADERS, timeout=10) as c:
        for i in range(n):
            r = c.post("/v1/codeq/tasks", json={"command": command, "payload": {"i": i}})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
    return ids


def _missing(base: str, ids: list[str]) -> list[str]:
    with httpx.Client(base_url=base, headers=HEADERS, timeout=10) as c:
        return [i for i in ids if c.get(f"/v1/codeq/tasks/{i}").status_code != 200]


def _local_env(data_dir: Path, **more: str) -> dict[str, str]:
    # Nothing names a store: the default applies.
    return {"DATA_DIR": str(data_dir), "REDIS_URL": "", "PERSISTENCE_PROVIDER": "", **more}


@pytest.mark.parametrize("binary", ["redis-server", "kvrocks"])
def test_kill_9_of_serve_and_a_restart_keep_every_acknowledged_task(
    tmp_path: Path, binary: str
) -> None:
    extra = {} if binary == "redis-server" else {"LOCAL_STORE_BINARY": require_kvrocks()}
    env = _local_env(tmp_path, **extra)
    with serve(env) as first:
        assert "(store: local)" in first.stdout()
        ids = _create(first.base, 200)
        store_pid = _store_pid(tmp_path)
        assert _alive(store_pid)
        first.proc.kill()  # kill -9: no shutdown code runs in codeq serve
        first.proc.wait()
        # The store is tied to its supervisor: it stops (flushing its files) on its own.
        wait_for(lambda: not _alive(store_pid), timeout=20, message="store outlived serve")
    with serve(env) as second:
        assert _store_pid(tmp_path) != store_pid
        assert _missing(second.base, ids) == []
        more = _create(second.base, 5)
        assert _missing(second.base, more) == []


def test_a_graceful_stop_stops_the_store(tmp_path: Path) -> None:
    with serve(_local_env(tmp_path)) as served:
        store_pid = _store_pid(tmp_path)
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(20) == 0
    assert not _alive(store_pid)
    assert not (tmp_path / "store" / "store.pid").exists()


def test_two_services_on_one_data_dir_are_refused(tmp_path: Path) -> None:
    with serve(_local_env(tmp_path)) as served:
        env = {**os.environ, **_local_env(tmp_path)}
        out = subprocess.run(
            [sys.executable, "-m", "codeq.cli", "serve", "--port", str(free_port())],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert out.returncode == 2, out.stderr
        assert "in use by another codeq serve" in out.stderr
        assert "Traceback" not in out.stderr
        assert _missing(served.base, _create(served.base, 1)) == []


def test_a_store_left_running_by_a_dead_supervisor_is_stopped_before_a_new_one(
    tmp_path: Path,
) -> None:
    old = LocalStore(tmp_path)
    old.start()
    try:
        client_pid = old.pid
        assert client_pid is not None
        # What a supervisor that died leaves behind: its lock released, its store running.
        assert old._lock is not None
        old._lock.close()
        old._lock = None
        with LocalStore(tmp_path) as new:
            assert new.pid != client_pid
            assert not _alive(client_pid)
    finally:
        old.stop()


@pytest.mark.parametrize(
    ("binary", "says"),
    [
        ("/nonexistent/redis-server", "cannot be run"),
        ("/bin/true", "neither redis-server nor KVRocks"),
    ],
)
def test_a_store_binary_that_is_not_one_is_refused_in_one_sentence(
    tmp_path: Path, binary: str, says: str
) -> None:
    with pytest.raises(LocalStoreError, match=says):
        LocalStore(tmp_path, binary).start()
    env = {**os.environ, **_local_env(tmp_path, LOCAL_STORE_BINARY=binary)}
    out = subprocess.run(
        [sys.executable, "-m", "codeq.cli", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert says in out.stderr and "Traceback" not in out.stderr


def test_memory_is_an_explicit_choice_that_says_it_keeps_nothing(tmp_path: Path) -> None:
    with serve(_local_env(tmp_path, PERSISTENCE_PROVIDER="memory")) as served:
        assert "keeps nothing" in served.stdout()
        assert "(store: memory)" in served.stdout()
        assert _missing(served.base, _create(served.base, 1)) == []
    assert not (tmp_path / "store").exists()


def test_worker_processes_share_the_local_store(tmp_path: Path) -> None:
    with serve(_local_env(tmp_path), args=["--workers", "2"]) as served:
        ids = _create(served.base, 40)  # spread over both processes by the kernel
        assert _missing(served.base, ids) == []
        store_pid = _store_pid(tmp_path)
    assert not _alive(store_pid)


def test_deliver_without_a_shared_store_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, **_local_env(tmp_path)}
    env.pop("REDIS_ADDR", None)
    out = subprocess.run(
        [sys.executable, "-m", "codeq.cli", "deliver"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "codeq deliver needs the store the gateways use" in out.stderr
    assert not (tmp_path / "store").exists()
