"""What every CLI command shares: the global options, the client, the output."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from codeq.client import CodeQClient
from codeq.errors import CodeQError
from codeq.profiles import Profile, ProfileError, resolve

if TYPE_CHECKING:
    from codeq.settings import Settings

__all__ = [
    "DISTRIBUTION",
    "EXTRAS",
    "Extra",
    "JsonFlag",
    "Out",
    "State",
    "fail",
    "missing_extra",
    "parse_json",
    "require_extra",
    "require_extras_of",
    "split_commands",
    "state_of",
]

# The distribution on PyPI (pyproject.toml's project.name; tests/test_packaging.py checks both).
DISTRIBUTION = "codeq-tasks"

Extra = Literal["server", "memory", "listen", "granian", "tracing"]

# Each optional extra of the distribution, with the modules whose presence says it is installed.
EXTRAS: Mapping[Extra, tuple[str, ...]] = {
    "server": ("litestar", "uvicorn", "redis", "hiredis", "jwt", "prometheus_client", "httptools"),
    "memory": ("fakeredis", "lupa"),
    "listen": ("aiohttp",),
    "granian": ("granian",),
    "tracing": ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"),
}

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON (one document) instead of tables.")
]


class CliError(Exception):
    """An error to report on one line and exit 1 (2 with ``usage=True``)."""

    def __init__(self, message: str, *, usage: bool = False) -> None:
        super().__init__(message)
        self.usage = usage


def fail(message: str, *, usage: bool = False) -> NoReturn:
    raise CliError(message, usage=usage)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent package is missing
        return False


def missing_extra(extra: Extra, what: str) -> str | None:
    """The sentence to stop with when ``extra`` is not installed (None when it is): ``what``
    (a command, an option or a setting) names what needs it. Looks modules up without
    importing them, so a check costs nothing on the path that passes."""
    if all(_installed(module) for module in EXTRAS[extra]):
        return None
    return f"{what} needs the {extra} extra: pip install '{DISTRIBUTION}[{extra}]'"


def require_extra(extra: Extra, what: str) -> None:
    """Stop the command (exit 1) with one sentence naming the extra to install, before the
    first import that would fail with a traceback."""
    message = missing_extra(extra, what)
    if message is not None:
        fail(message)


def require_extras_of(settings: Settings) -> None:
    """The extras a server with these settings needs beyond ``server``: the embedded store and
    tracing. Called once the settings are loaded, before anything starts."""
    if settings.store_kind == "memory":
        require_extra("memory", "the embedded store (persistenceProvider memory)")
    if settings.tracing_enabled:
        require_extra("tracing", "tracingEnabled")


@dataclass
class State:
    """The global options (``codeq --profile p --base-url u ...``)."""

    profile: str | None = None
    base_url: str | None = None
    token: str | None = None
    json: bool = False
    timeout: float = 10.0

    def resolved(self) -> Profile:
        try:
            return resolve(
                os.environ,
                profile=self.profile,
                flags={"base_url": self.base_url, "token": self.token},
            )
        except ProfileError as exc:
            fail(str(exc))

    def client_options(self) -> dict[str, Any]:
        """Base URL, tokens and timeout of the effective profile, as client arguments."""
        p = self.resolved()
        return {
            "base_url": p.base_url,
            "token": p.token,
            "producer_token": p.producer_token,
            "worker_token": p.worker_token,
            "admin_token": p.admin_token,
            "timeout": self.timeout,
        }

    @contextmanager
    def client(self, *, retries: int = 3) -> Iterator[CodeQClient]:
        with CodeQClient(**self.client_options(), retries=retries) as client:
            yield client


def state_of(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if not isinstance(obj, State):
        obj = State()
        ctx.find_root().obj = obj
    return obj


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


class Out:
    """Human output (rich tables, colours on a TTY) or one JSON document with ``--json``."""

    def __init__(self, ctx: typer.Context, json_flag: bool) -> None:
        self.json = json_flag or state_of(ctx).json
        self.console = Console(highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def data(self, value: Any, human: Callable[[Any], None] | None = None) -> None:
        plain = builtins(value)
        if self.json:
            sys.stdout.write(json.dumps(plain, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif human is not None:
            human(plain)
        else:
            self.console.print_json(data=plain) if self.console.is_terminal else print(
                json.dumps(plain, indent=2, ensure_ascii=False)
            )

    def line(self, text: str) -> None:
        if not self.json:
            self.console.print(text)

    def note(self, text: str) -> None:
        """Progress and hints: stderr, so stdout stays clean for pipes."""
        self.err.print(text)

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Iterable[str], title: str) -> None:
        table = Table(title=title, title_justify="left")
        cols = list(columns)
        for col in cols:
            table.add_column(col)
        for row in rows:
            table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in cols))
        self.console.print(table)

    def record(self, row: Mapping[str, Any], title: str | None = None) -> None:
        table = Table(show_header=False, title=title, title_justify="left", box=None)
        table.add_column(style="bold")
        table.add_column()
        for key, value in row.items():
            if value is None:
                continue
            shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            table.add_row(key, shown)
        self.console.print(table)


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{what}: not valid JSON ({exc.msg} at char {exc.pos})", usage=True)


def split_commands(values: Sequence[str] | None) -> list[str]:
    """``-c A -c B`` and ``--events A,B`` both give ``[A, B]``."""
    out: list[str] = []
    for value in values or ():
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def report_error(exc: CodeQError) -> str:
    status = getattr(exc, "status", None)
    return f"error: {exc.message} ({exc.code}{f', HTTP {status}' if status else ''})"
