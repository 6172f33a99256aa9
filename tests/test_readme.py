"""The README's examples run as written: its shell blocks in a fresh shell (only the checkout's
virtualenv, as the README says to activate it), its Python blocks as scripts, against a real
``codeq serve`` started with the README's token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.served import serve

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)
TOKEN = "mytoken"  # the README's


def _blocks(kind: str) -> list[str]:
    return [body for lang, body in FENCE.findall(README.read_text()) if lang == kind]


def _fresh_env(tmp_path: Path) -> dict[str, str]:
    """A shell as a newcomer opens one: no virtualenv on PATH, no codeQ variables."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEQ_", "REDIS_", "VIRTUAL"))}
    return env | {"HOME": str(tmp_path), "PATH": path, "COLUMNS": "120"}


def test_the_readme_examples_run_as_written(tmp_path: Path) -> None:
    shell = [b for b in _blocks("sh") if "curl" in b or "codeq task" in b]
    python = _blocks("python")
    assert len(shell) == 2 and len(python) == 2  # the curl walk-through, the CLI, the SDK, engine
    activate = str(Path(sys.executable).parent / "activate")
    with serve({"CODEQ_DEV_TOKEN": TOKEN}) as served:
        port = served.base.rsplit(":", 1)[1]
        for block in shell:
            script = block.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
            script = script.replace("source .venv/bin/activate", f"source {activate}")
            env = _fresh_env(tmp_path) | {"CODEQ_BASE_URL": served.base}
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, (block, done.stdout, done.stderr)
            if "curl" in block:
                assert '"status":"COMPLETED"' in done.stdout
        for code in python:
            done = subprocess.run(
                [sys.executable, "-c", code.replace("127.0.0.1:8080", f"127.0.0.1:{port}")],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, (code, done.stdout, done.stderr)
