"""The generated reference pages match the code, and the SDK guide's examples run."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from codeq import reference
from codeq.settings import Settings
from tests.served import TOKEN, Served, serve

DOCS = Path(__file__).resolve().parent.parent / "docs"
REGENERATE = "regenerate it with `python -m codeq.reference {}` > docs/{}"


def test_configuration_reference_is_generated_from_the_settings() -> None:
    page = (DOCS / "configuration.md").read_text()
    assert page == reference.settings_markdown(), REGENERATE.format("settings", "configuration.md")
    undocumented = [key for key, *_rest, text in reference.settings_rows() if not text]
    assert undocumented == []
    assert len(reference.settings_rows()) >= len(Settings.__struct_fields__)


def test_the_type_column_shows_the_constraints_of_the_type() -> None:
    kinds = {key: kind for key, _env, kind, *_rest in reference.settings_rows()}
    assert kinds["partitions"] == "int in 1..16384"
    assert kinds["metricsPort"] == "int in 1..65535"
    assert kinds["backoffBaseSeconds"] == "finite number > 0"
    assert kinds["webhookRetrySchedule"] == "list of finite number >= 0"
    assert kinds["tracingSampleRatio"] == "number in 0..1"
    assert kinds["persistenceProvider"] == "one of local, memory, redis"


def test_cli_reference_is_generated_from_the_command_tree() -> None:
    page = (DOCS / "cli.md").read_text()
    assert page == reference.cli_markdown(), REGENERATE.format("cli", "cli.md")
    for command in ("task create", "worker start", "webhook listen", "deliveries replay"):
        assert f"### codeq {command}\n" in page


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serve({}) as s:
        yield s


def test_the_sdk_guide_examples_run(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (DOCS / "sdk.md").read_text()
    code = "\n".join(re.findall(r"^```python\n(.*?)^```$", text, re.S | re.M))
    monkeypatch.setenv("CODEQ_BASE_URL", served.base)
    monkeypatch.setenv("CODEQ_TOKEN", TOKEN)
    exec(compile(code, "docs/sdk.md", "exec"), {"__name__": "sdk_docs"})  # noqa: S102
    printed = capsys.readouterr().out
    # What the guide's comments say each print shows.
    for shown in (
        "PENDING",
        "3 []",
        "COMPLETED",
        "{'url': 's3://thumbs/cat.png'}",
        "404 not_found",
        "1 1",
        "whsec_",
    ):
        assert shown in printed
