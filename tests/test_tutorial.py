"""docs/tutorial.md is executed: its ``sh`` blocks run in order in one shell, in a scratch
directory, and the outputs it shows in ``text`` blocks must appear. The docs cannot drift from
the code without this test failing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.servers import free_port

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)


def blocks(kind: str) -> list[str]:
    return [body for lang, body in FENCE.findall(TUTORIAL.read_text()) if lang == kind]


def normal(text: str) -> str:
    return " ".join(text.split())


def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    script = "\n".join(blocks("sh"))
    assert "codeq serve" in script and "codeq worker start" in script  # the page has its steps
    api_port, hook_port = str(free_port()), str(free_port())
    script = script.replace("8080", api_port).replace("9000", hook_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEQ_", "REDIS_"))}
    env |= {
        "HOME": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "COLUMNS": "120",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{_tail(tmp_path / 'serve.log')}"
    output = normal(done.stdout)
    shown = [
        line.replace("8080", api_port)
        for body in blocks("text")
        for line in body.splitlines()
        if line.strip() and "…" not in line and not line.lstrip().startswith(("{", "}", '"'))
    ]
    assert shown, "the tutorial shows no output to check"
    for line in shown:
        assert normal(line) in output, (
            f"the tutorial shows {line!r}; the run printed:\n{done.stdout}"
        )
    webhook = (tmp_path / "webhook.log").read_text()
    assert "verified" in webhook and "Hello, Linus!" in webhook
    assert (tmp_path / ".codeq" / "config.yaml").exists()


def _tail(path: Path) -> str:
    return path.read_text()[-3000:] if path.exists() else ""
