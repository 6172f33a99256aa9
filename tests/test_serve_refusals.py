"""`codeq serve` refuses, at start and in one sentence, what would otherwise fail in its worker
processes over and over or split its data between them (issue 15, item 14)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import RedisServer


def _serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "codeq.cli", "serve", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_workers_without_auth_on_a_public_address_stop_at_start(redis_server: RedisServer) -> None:
    done = _serve(
        "--workers", "2", "--host", "0.0.0.0", "--port", "1",
        env={"REDIS_ADDR": redis_server.url.removeprefix("redis://").split("/")[0]},
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "loopback" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "listening" not in done.stdout  # nothing was started


def test_workers_on_the_in_memory_store_stop_at_start() -> None:
    done = _serve("--workers", "2", "--port", "1", "--store", "memory", env={"REDIS_ADDR": ""})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "need a store the processes share" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_is_one_sentence_before_anything_starts(tmp_path: Path, workers: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        done = _serve(
            "--port", port, "--workers", workers, "--data-dir", str(tmp_path),
            env={"REDIS_ADDR": ""},
        )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == (
        f"codeq: port {port} on 127.0.0.1 is in use: stop what listens there, or choose "
        "another with --port"
    )
    assert "listening" not in done.stdout and "dev token" not in done.stdout
    assert not (tmp_path / "store").exists()  # the local store was not started either
