"""The ``codeq`` command (typer on click; rich output on a terminal, ``--json`` everywhere).

Server commands: ``serve`` (gateway + deliverers + sweeper; embedded store unless an address is
configured), ``gateway`` (HTTP only), ``deliver`` (deliverers + sweeper), ``config show``.
Client commands talk to a server through the SDK (:mod:`codeq.client`), with the profile of
:mod:`codeq.profiles`: ``init``, ``auth``, ``health``, ``task``, ``worker``, ``queue``,
``admin``, ``deliveries``, ``webhook``. Output: ``--output table|tsv|json`` (a table on a
terminal, tab-separated lines in a pipe; :class:`codeq.cli.common.Out`). Exit codes: 0 done,
1 error (``worker start --max-tasks``: a task failed), 2 usage, or a server that cannot be
reached.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated

import typer

from codeq.cli.common import (
    OUTPUTS,
    CliError,
    JsonFlag,
    Out,
    Output,
    State,
    fail,
    report_error,
    require_extra,
    state_of,
    unreachable_reason,
)
from codeq.cli.server import ServerOptions
from codeq.errors import CodeQError
from codeq.profiles import FIELDS, ProfileError, Profiles

__all__ = ["app", "main"]

app = typer.Typer(
    name="codeq",
    help="codeQ: a task queue and signed-webhook gateway.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _global(
    ctx: typer.Context,
    profile: Annotated[
        str | None, typer.Option(help="Profile of ~/.codeq/config.yaml [env CODEQ_PROFILE].")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Server URL [env CODEQ_BASE_URL; http://127.0.0.1:8080].")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="Bearer token for every route [env CODEQ_TOKEN].", show_default=False),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="json, table or tsv [env CODEQ_OUTPUT; table on a terminal, else tsv].",
            envvar="CODEQ_OUTPUT",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="HTTP timeout in seconds.")] = 10.0,
) -> None:
    ctx.obj = State(
        profile=profile,
        base_url=base_url,
        token=token,
        json=json_out,
        timeout=timeout,
        output=_output(output),
    )


def _output(value: str | None) -> Output | None:
    if value is None or value == "":
        return None
    for known in OUTPUTS:
        if value == known:
            return known
    fail(f"--output: expected json, table or tsv, got {value!r}", usage=True)


# -- server processes -----------------------------------------------------------------------

ConfigOpt = Annotated[
    str | None, typer.Option("--config", help="YAML settings file [env CODEQ_CONFIG_PATH].")
]
HostOpt = Annotated[str | None, typer.Option(help="Listen address [settings: 127.0.0.1].")]
PortOpt = Annotated[int | None, typer.Option(help="Listen port [settings: 8080].")]
WorkersOpt = Annotated[int, typer.Option(help="Server processes (more than 1 needs Redis).")]
ServerOpt = Annotated[str, typer.Option(help="ASGI server: uvicorn or granian.")]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        help="local: a private store process in --data-dir, kept across restarts (the default "
        "when no address is configured); memory: in-process, keeps nothing "
        "[env PERSISTENCE_PROVIDER]."
    ),
]
DataDirOpt = Annotated[
    str | None,
    typer.Option("--data-dir", help="Where local data is kept [env DATA_DIR; ./.codeq]."),
]


def _server_options(
    config: str | None,
    host: str | None,
    port: int | None,
    workers: int,
    server: str,
    store: str | None,
    data_dir: str | None,
) -> ServerOptions:
    if server not in ("uvicorn", "granian"):
        fail(f"--server: expected uvicorn or granian, got {server!r}", usage=True)
    if store not in (None, "local", "memory"):
        fail(f"--store: expected local or memory, got {store!r}", usage=True)
    if workers < 1:
        fail("--workers: must be >= 1", usage=True)
    if server == "granian":
        require_extra("granian", "--server granian")
    return ServerOptions(
        config=config,
        host=host,
        port=port,
        workers=workers,
        server="granian" if server == "granian" else "uvicorn",
        store="memory" if store == "memory" else "local" if store == "local" else None,
        data_dir=data_dir,
    )


def _server_command(name: str, *, with_sweeper: bool, summary: str) -> None:
    def command(
        config: ConfigOpt = None,
        host: HostOpt = None,
        port: PortOpt = None,
        workers: WorkersOpt = 1,
        server: ServerOpt = "uvicorn",
        store: StoreOpt = None,
        data_dir: DataDirOpt = None,
    ) -> None:
        require_extra("server", f"codeq {name}")
        from codeq.cli import server as srv

        options = _server_options(config, host, port, workers, server, store, data_dir)
        srv.serve(options, with_sweeper=with_sweeper)

    command.__doc__ = summary
    app.command(name)(command)


_server_command(
    "serve",
    with_sweeper=True,
    summary="Gateway + deliverers + sweeper in one process (on a private local store unless "
    "one is configured).",
)
_server_command("gateway", with_sweeper=False, summary="The HTTP gateway only.")


@app.command()
def deliver(config: ConfigOpt = None) -> None:
    """Webhook deliverers + sweeper, no HTTP (needs Redis)."""
    require_extra("server", "codeq deliver")
    from codeq.cli import server as srv

    srv.deliver(ServerOptions(config=config))


config_app = typer.Typer(help="Server settings.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(config: ConfigOpt = None, json_out: JsonFlag = False) -> None:
    """Print the effective server settings (file + environment), secrets masked."""
    from codeq.cli import server as srv

    settings = srv.load_settings(ServerOptions(config=config))
    print(json.dumps(settings.masked(), indent=2, sort_keys=True))


@app.command()
def version(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Print the version."""
    from codeq import __version__

    out = Out(ctx, json_out)
    if out.json:
        out.data({"version": __version__})
    else:
        print(f"codeq {__version__}")


@app.command()
def health(
    ctx: typer.Context,
    wait: Annotated[
        float, typer.Option(help="Wait up to this many seconds for the server to be ready.")
    ] = 0.0,
    json_out: JsonFlag = False,
) -> None:
    """Is the server ready (/readyz)? Exit 0 when it is."""
    out = Out(ctx, json_out)
    deadline = time.monotonic() + wait
    with state_of(ctx).client(retries=0) as cq:
        while True:
            status = cq.ready()
            if status == "ready":
                answer = {"baseUrl": cq.base_url, "status": status}
                out.data(answer, lambda d: print(f"{d['baseUrl']}: ready"))
                return
            if time.monotonic() >= deadline:
                fail(f"{cq.base_url} is not ready: {status}")
            time.sleep(0.2)


# -- profiles -------------------------------------------------------------------------------

auth_app = typer.Typer(help="Tokens of a profile (~/.codeq/config.yaml).", no_args_is_help=True)
app.add_typer(auth_app, name="auth")

TokenOpt = Annotated[str | None, typer.Option(help="Token for every route.", show_default=False)]
ProducerOpt = Annotated[str | None, typer.Option(help="Producer token.", show_default=False)]
WorkerOpt = Annotated[str | None, typer.Option(help="Worker token.", show_default=False)]
AdminOpt = Annotated[str | None, typer.Option(help="Admin token.", show_default=False)]


def _profiles() -> Profiles:
    try:
        return Profiles.at(os.environ)
    except ProfileError as exc:
        fail(str(exc))


def _profile_name(ctx: typer.Context, profiles: Profiles) -> str:
    return state_of(ctx).profile or os.environ.get("CODEQ_PROFILE") or profiles.current


@app.command()
def init(
    ctx: typer.Context,
    base_url: Annotated[str | None, typer.Option(help="Server URL.")] = None,
    token: TokenOpt = None,
    producer_token: ProducerOpt = None,
    worker_token: WorkerOpt = None,
    admin_token: AdminOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Create or update a profile (asks on a terminal for what is not given)."""
    out = Out(ctx, json_out)
    profiles = _profiles()
    name = _profile_name(ctx, profiles)
    stored = profiles.get(name)
    url = base_url or state_of(ctx).base_url
    interactive = sys.stdin.isatty() and not out.json
    if url is None:
        default = str(stored.get("baseUrl") or "http://127.0.0.1:8080")
        url = typer.prompt("Server URL", default=default) if interactive else default
    if token is None and not (producer_token or worker_token or admin_token):
        token = state_of(ctx).token
        if token is None and interactive and not stored.get("token"):
            token = typer.prompt("Token (empty for none)", default="", show_default=False) or None
    values = {
        "baseUrl": url,
        "token": token,
        "producerToken": producer_token,
        "workerToken": worker_token,
        "adminToken": admin_token,
    }
    profiles.update(name, {k: v for k, v in values.items() if v}, make_current=True)
    profiles.save()
    out.data(
        {"profile": name, "path": str(profiles.path), "baseUrl": url},
        lambda d: print(f"profile {name!r} saved in {profiles.path} (server {url})"),
    )


@auth_app.command("set")
def auth_set(
    ctx: typer.Context,
    token: TokenOpt = None,
    producer_token: ProducerOpt = None,
    worker_token: WorkerOpt = None,
    admin_token: AdminOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Store tokens in the profile."""
    values = {
        "token": token or state_of(ctx).token,
        "producerToken": producer_token,
        "workerToken": worker_token,
        "adminToken": admin_token,
    }
    given = {k: v for k, v in values.items() if v}
    if not given:
        fail(
            "give at least one of --token, --producer-token, --worker-token, --admin-token",
            usage=True,
        )
    profiles = _profiles()
    name = _profile_name(ctx, profiles)
    profiles.update(name, given)
    profiles.save()
    Out(ctx, json_out).data(
        {"profile": name, "set": sorted(given)},
        lambda d: print(f"profile {name!r}: set {', '.join(sorted(given))}"),
    )


@auth_app.command("show")
def auth_show(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """The effective server URL and tokens (masked), with where they come from."""
    out = Out(ctx, json_out)
    shown = state_of(ctx).resolved().masked()
    out.data(shown, lambda d: out.record(d, title="effective profile (flag > env > file)"))


@auth_app.command("clear")
def auth_clear(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Remove every token from the profile."""
    profiles = _profiles()
    name = _profile_name(ctx, profiles)
    profiles.update(name, {k: None for k in FIELDS if k != "baseUrl"})
    profiles.save()
    Out(ctx, json_out).data(
        {"profile": name, "cleared": True}, lambda d: print(f"profile {name!r}: tokens cleared")
    )


def _register() -> None:
    from codeq.cli import deliveries, hooks, tasks, work

    tasks.register(app)
    deliveries.register(app)
    work.register(app)
    hooks.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 done, 1 error, 2 usage)."""
    command = typer.main.get_command(app)
    try:
        # Standalone: click prints usage errors (exit 2) and help (exit 0) itself.
        command.main(args=argv, prog_name="codeq", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except CliError as exc:
        print(f"codeq: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # codeq.settings.SettingsError among them
        print(f"codeq: {exc}", file=sys.stderr)
        return 2
    except CodeQError as exc:
        reason = unreachable_reason(exc)
        if reason is not None:  # a client made outside State.client (the worker's)
            print(f"codeq: cannot reach the server: {reason}", file=sys.stderr)
            return 2
        print(f"codeq: {report_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
