"""What every CLI command shares: the global options, the client, the output.

Output goes one of three ways (``--output``): ``table`` (rich tables, for people; the default
on a terminal), ``tsv`` (a header line, then one tab-separated line per row, full values, no
box drawing; the default when stdout is a pipe or a file) or ``json`` (one JSON document;
``--json`` says the same). Notes and progress bars go to stderr, so stdout stays data.

Start-up is kept short (spec 05): httpx (through the SDK) and rich load when a command first
needs them, not when the CLI starts.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import msgspec
import typer

from codeq.errors import CodeQError
from codeq.profiles import Profile, ProfileError, resolve

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from codeq.client import CodeQClient
    from codeq.settings import Settings

__all__ = [
    "DISTRIBUTION",
    "EXTRAS",
    "OUTPUTS",
    "CliError",
    "Extra",
    "JsonFlag",
    "Out",
    "Output",
    "Progress",
    "State",
    "fail",
    "missing_extra",
    "parse_json",
    "progress",
    "require_extra",
    "require_extras_of",
    "split_commands",
    "state_of",
    "unreachable_reason",
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


Output = Literal["json", "table", "tsv"]
OUTPUTS: tuple[Output, ...] = ("json", "table", "tsv")


class CliError(Exception):
    """An error to report on one line and exit 1 (2 with ``usage=True``, or ``exit_code``)."""

    def __init__(self, message: str, *, usage: bool = False, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.usage = usage
        self.exit_code = exit_code if exit_code is not None else 2 if usage else 1


def fail(message: str, *, usage: bool = False) -> NoReturn:
    raise CliError(message, usage=usage)


def unreachable_reason(exc: BaseException) -> str | None:
    """Why the server could not be reached ("connection refused", "timed out", ...), when
    ``exc`` says it could not be (its cause is a network error); None for an answer the
    server gave, a 503 included."""
    seen: set[int] = set()
    cause = exc.__cause__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "unknown host"
        if isinstance(cause, TimeoutError) or "Timeout" in type(cause).__name__:
            return "timed out"
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    if exc.__cause__ is not None and "Connect" in type(exc.__cause__).__name__:
        return "cannot connect"
    return None


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
    output: Output | None = None

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
        """The SDK client of the effective profile. A server that cannot be reached stops the
        command with one sentence (exit 2), not the SDK's 503."""
        from codeq.client import CodeQClient

        options = self.client_options()
        try:
            with CodeQClient(**options, retries=retries) as client:
                yield client
        except CodeQError as exc:
            reason = unreachable_reason(exc)
            if reason is None:
                raise
            raise CliError(f"cannot reach {options['base_url']}: {reason}", exit_code=2) from None


def state_of(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    if not isinstance(obj, State):
        obj = State()
        ctx.find_root().obj = obj
    return obj


def builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


class Out:
    """A command's output: rich tables on a terminal, tab-separated lines in a pipe, or one
    JSON document (see the module docstring)."""

    def __init__(self, ctx: typer.Context, json_flag: bool) -> None:
        state = state_of(ctx)
        chosen: Output | None = "json" if json_flag or state.json else state.output
        if chosen is None:
            chosen = "table" if sys.stdout.isatty() else "tsv"
        self.format: Output = chosen
        self.json = chosen == "json"

    @cached_property
    def console(self) -> Console:
        from rich.console import Console

        return Console(highlight=False, soft_wrap=True)

    @cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False, soft_wrap=True)

    def data(self, value: Any, human: Callable[[Any], None] | None = None) -> None:
        plain = builtins(value)
        if self.json:
            sys.stdout.write(json.dumps(plain, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        elif human is not None:
            human(plain)
        elif self.format == "table" and self.console.is_terminal:
            self.console.print_json(data=plain)
        else:
            print(json.dumps(plain, indent=2, ensure_ascii=False))

    def line(self, text: str) -> None:
        if self.json:
            return
        if self.format == "table":
            self.console.print(text)
        else:
            print(text)

    def note(self, text: str) -> None:
        """Progress and hints: stderr, so stdout stays clean for pipes."""
        self.err.print(text)

    def table(self, rows: Sequence[Mapping[str, Any]], columns: Iterable[str], title: str) -> None:
        cols = list(columns)
        if self.format != "table":
            _tsv([cols, *([row.get(c) for c in cols] for row in rows)])
            return
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, title_justify="left")
        for col in cols:
            table.add_column(col, overflow="fold")  # wrapped, never cut: ids stay whole
        for row in rows:
            table.add_row(*(Text(_cell(row.get(c))) for c in cols))  # values, not markup
        self.console.print(table)

    def page(self, answer: Any, key: str, columns: Iterable[str], title: str) -> None:
        """One page of a listing (``answer[key]``, ``nextCursor``): its table and, when there
        is more, the option that goes on; or the answer as JSON."""

        def human(d: Any) -> None:
            self.table(d[key], columns, title)
            if d.get("nextCursor"):
                self.note(f"more: --cursor {d['nextCursor']}")

        self.data(answer, human)

    def record(self, row: Mapping[str, Any], title: str | None = None) -> None:
        shown = [(key, value) for key, value in row.items() if value is not None]
        if self.format != "table":
            _tsv(shown)
            return
        from rich.table import Table
        from rich.text import Text

        table = Table(show_header=False, title=title, title_justify="left", box=None)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in shown:
            table.add_row(Text(key), Text(_cell(value)))
        self.console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _tsv(rows: Iterable[Sequence[Any]]) -> None:
    """One line per row, tab-separated; a tab, newline or backslash inside a value is written
    as ``\\t``, ``\\n``, ``\\\\`` so a line is always a row."""
    escape = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
    for row in rows:
        sys.stdout.write("\t".join(_cell(v).translate(escape) for v in row) + "\n")
    sys.stdout.flush()


class Progress:
    """A progress bar on stderr (see :func:`progress`)."""

    def __init__(self, bar: RichProgress, task: TaskID) -> None:
        self._bar, self._task = bar, task

    def advance(self, n: int = 1, *, failed: int | None = None) -> None:
        """``n`` more items done; ``failed``: how many have failed so far."""
        fields: dict[str, Any] = {} if failed is None else {"failed": failed}
        self._bar.update(self._task, advance=n, **fields)

    def total(self, total: int | None) -> None:
        """Set (or learn late) how many items there are."""
        self._bar.update(self._task, total=total)


@contextmanager
def progress(out: Out, label: str, total: int | None = None) -> Iterator[Progress]:
    """A bar for a long operation: ``label``, the bar, ``done/total`` and how many failed.
    Live on a terminal; in a pipe only its last state is written, once, at the end.

        with progress(out, "requeueing", total=len(ids)) as bar:
            for chunk in chunks:
                ...
                bar.advance(len(chunk), failed=failed)
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
    from rich.progress import Progress as RichProgress

    bar = RichProgress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        console=out.err,
        transient=False,
    )
    with bar:
        yield Progress(bar, bar.add_task(label, total=total, failed=0))


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
