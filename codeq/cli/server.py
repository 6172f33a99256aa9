"""The server processes of the ``codeq`` command: ``serve``, ``gateway`` and ``deliver``.

Their options arrive as :class:`ServerOptions`, built by the typer commands in :mod:`codeq.cli`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal

from codeq.cli.common import require_extras_of

if TYPE_CHECKING:
    from codeq.settings import Settings

__all__ = ["ServerOptions", "deliver", "load_settings", "serve"]


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """The command line of a server command; ``None`` leaves the setting to the file and the
    environment."""

    config: str | None = None
    host: str | None = None
    port: int | None = None
    workers: int = 1
    server: Literal["uvicorn", "granian"] = "uvicorn"
    store: Literal["local", "memory"] | None = None
    data_dir: str | None = None


KEEP_ALIVE_SECONDS = 75


def load_settings(args: ServerOptions) -> Settings:
    from codeq.settings import Settings

    environ = dict(os.environ)
    # The command line wins over the file and the environment; given as environment values so
    # the settings' one loader checks them and names the option's setting in its errors.
    if args.store is not None:
        environ["PERSISTENCE_PROVIDER"] = args.store
    if args.data_dir is not None:
        environ["DATA_DIR"] = args.data_dir
    if args.host is not None:
        environ["HOST"] = args.host
    if args.port is not None:
        environ["PORT"] = str(args.port)
    return Settings.load(args.config, environ=environ)


@contextlib.contextmanager
def local_store(settings: Settings) -> Iterator[Settings]:
    """With ``persistenceProvider: local``: start the private store, hand out settings that
    point at it (and put its address in the environment, for worker processes), stop it
    after the block. Other settings pass through unchanged."""
    if settings.store_kind != "local":
        if settings.store_kind == "memory":
            print(
                "codeq: persistenceProvider memory keeps nothing: every task is gone when "
                "this process stops",
                flush=True,
            )
        yield settings
        return
    import asyncio

    import msgspec

    from codeq.store.local import LocalStore

    store = LocalStore(settings.data_dir, settings.local_store_binary)
    url = store.start()
    try:
        print(f"codeq store: {store.describe()}", flush=True)
        private = msgspec.structs.replace(
            settings,
            persistence_provider="redis",
            persistence_config=None,
            redis_addr=None,
            redis_url_setting=url,
            redis_password=None,
            redis_cluster=False,
            redis_db=0,
        )
        asyncio.run(_list_waiting_apart(private))
        for name in ("REDIS_ADDR", "REDIS_PASSWORD", "KVROCKS_PASSWORD", "PERSISTENCE_CONFIG"):
            os.environ.pop(name, None)
        os.environ["PERSISTENCE_PROVIDER"] = "redis"
        os.environ["REDIS_URL"] = url
        yield private
    finally:
        store.stop()


async def _list_waiting_apart(settings: Settings) -> None:
    """The private store lists delayed tasks apart (codeq.store.upkeep): its lock keeps every
    other service, of any release, off it, so no older script can run beside this one."""
    from codeq.errors import CodeQError
    from codeq.store.factory import open_store

    store = open_store(settings)
    try:
        await store.list_waiting_apart()
    except CodeQError as exc:  # optional: listings are whole either way
        print(f"codeq store: not switched to list delayed tasks apart: {exc}", flush=True)
    finally:
        await store.close()


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "lifespan": "on",
        "log_config": None,
        "access_log": False,
        # httptools, answering what its parser refuses with the API's JSON error shape
        "http": "gateway.http_protocol:JsonErrorHttpToolsProtocol",
        "loop": "uvloop",
        # Client addresses are not used; trusting X-Forwarded-* is opt-in.
        "proxy_headers": False,
        "timeout_graceful_shutdown": int(settings.shutdown_grace_seconds),
        # Longer than clients and load balancers keep idle connections (httpx 5 s, ours 2 s,
        # most LBs 60 s), so a request never lands on a connection the server is closing.
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    }


def _print_dev_token(token: str, host: str, port: int) -> None:
    # Printed once to the terminal on purpose (dev mode, loopback only); never logged.
    print(f"codeq dev token: {token}", flush=True)
    print(
        f"  try: curl -s -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' "
        f'-d \'{{"command":"HELLO","payload":{{}}}}\' '
        f"http://{host}:{port}/v1/codeq/tasks",
        flush=True,
    )


def _check_store(settings: Settings) -> None:
    """One sentence and exit 2 (``SettingsError``) for a store these settings cannot use, before
    anything starts; an unreachable store only warns (the service answers 503 until it is up)."""
    import asyncio

    from codeq.store import check_store

    asyncio.run(check_store(settings))


def _print_signing(settings: Settings) -> None:
    """Where the webhooks' signatures come from, once at start. The development secret is
    printed, as the dev token is (it is made on this machine, for this machine's receivers:
    `codeq webhook secret` prints it again); a configured one never is."""
    from codeq.webhooks import DEV_SIGNING_FILE, signing_secret

    if settings.webhook_hmac_secret:
        return
    if settings.webhook_unsigned:
        print("codeq webhooks: unsigned (webhookUnsigned is set)", flush=True)
        return
    secret = signing_secret(None, unsigned=False, data_dir=settings.data_dir)
    path = os.path.join(settings.data_dir, DEV_SIGNING_FILE)
    print(f"codeq webhook secret: {secret} (development; kept in {path})", flush=True)


def listen_socket(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound before anything is printed or started: a port in
    use is one sentence (exit 2), and "listening" is printed only when it is true."""
    address = host.strip("[]")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((address, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ValueError(
                f"port {port} on {host} is in use: stop what listens there, or choose another "
                "with --port"
            ) from None
        raise ValueError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)  # worker processes accept on it
    return sock


def serve(args: ServerOptions, *, with_sweeper: bool) -> int:
    configured = load_settings(args)
    require_extras_of(configured)
    if args.server != "uvicorn" or args.workers != 1:
        _check_workers(configured)
    sock = listen_socket(configured.host, configured.port)
    if args.server == "granian":  # granian binds its own: only the check stays
        sock.close()
    with sock, local_store(configured) as settings:
        _check_store(settings)
        if with_sweeper:  # codeq serve delivers webhooks (codeq gateway does not)
            _print_signing(settings)
        name = "serve" if with_sweeper else "gateway"
        kind = configured.store_kind
        if args.server == "uvicorn" and args.workers == 1:
            _serve_in_process(settings, sock, with_sweeper=with_sweeper, name=name, kind=kind)
        else:
            _serve_workers(args, settings, sock, with_sweeper=with_sweeper, name=name, kind=kind)
    return 0


def _check_workers(settings: Settings) -> None:
    """Several processes share one store: refuse the in-process one, and ask the auth setup
    here (a refusal inside a worker would only kill it, and its supervisor would start it
    again, forever)."""
    from codeq.auth.providers import build_auth

    if settings.store_kind == "memory":
        raise ValueError(
            "--workers/--server granian need a store the processes share: the default local "
            "store, or REDIS_ADDR (not persistenceProvider memory)"
        )
    build_auth(settings, environ=os.environ)


def _serve_in_process(
    settings: Settings, sock: socket.socket, *, with_sweeper: bool, name: str, kind: str
) -> None:
    import uvicorn

    from codeq.logs import configure_logging
    from gateway.app import create_app, gateway_of

    configure_logging(settings.log_level, settings.log_format)
    app = create_app(
        settings,
        run_sweeper=with_sweeper,
        run_deliverers=with_sweeper,
        environ=dict(os.environ),
    )
    gw = gateway_of(app)
    if gw.auth.dev_token:
        _print_dev_token(gw.auth.dev_token, settings.host, settings.port)
    config = uvicorn.Config(app, **_uvicorn_options(settings))

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Open long polls answer now (204) instead of holding the shutdown for 30 s.
            gw.shutting_down.set()
            gw.waker.close()
            super().handle_exit(sig, frame)

    print(
        f"codeq {name} listening on http://{settings.host}:{settings.port} (store: {kind})",
        flush=True,
    )
    # uvicorn re-raises the signal it caught once it has shut down; a graceful stop on
    # SIGTERM is a success, so that re-raise lands on a handler that does nothing.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    Server(config).run(sockets=[sock])


def _serve_workers(
    args: ServerOptions,
    settings: Settings,
    sock: socket.socket,
    *,
    with_sweeper: bool,
    name: str,
    kind: str,
) -> None:
    """Several worker processes (or granian): each builds its app from the environment, so
    the effective host, port, config path and dev token are put there first."""
    from codeq.auth.base import is_loopback_host

    os.environ["HOST"] = settings.host
    os.environ["PORT"] = str(settings.port)
    if args.config:
        os.environ["CODEQ_CONFIG_PATH"] = args.config
    dev = settings.producer_auth_provider is None and settings.worker_auth_provider is None
    if dev and is_loopback_host(settings.host):
        import secrets

        token = os.environ.get("CODEQ_DEV_TOKEN", "").strip() or secrets.token_urlsafe(24)
        os.environ["CODEQ_DEV_TOKEN"] = token
        _print_dev_token(token, settings.host, settings.port)
    target = "gateway.app:serve_app" if with_sweeper else "gateway.app:gateway_app"
    print(
        f"codeq {name} listening on http://{settings.host}:{settings.port} "
        f"({args.server}, {args.workers} workers, store: {kind})",
        flush=True,
    )
    if args.server == "granian":
        from granian.constants import Interfaces, Loops  # its extra was checked by the CLI
        from granian.server import Server as Granian

        Granian(
            target,
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
            workers=args.workers,
            factory=True,
            loop=Loops.uvloop,
            log_enabled=False,
            workers_kill_timeout=int(settings.shutdown_grace_seconds) or None,
        ).serve()
        return
    import uvicorn

    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        target, factory=True, workers=args.workers, **_uvicorn_options(settings)
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the workers have stopped
        Multiprocess(config, sockets=[sock]).run()  # as uvicorn.run, on the bound socket


def deliver(args: ServerOptions) -> int:
    """Deliverers + sweeper, no HTTP: the webhook side of a deployment."""
    import asyncio

    from codeq.engine import Engine, EngineConfig
    from codeq.logs import configure_logging
    from codeq.store import open_store
    from codeq.sweeper import Sweeper
    from deliverers.runner import Deliverer

    settings = load_settings(args)
    require_extras_of(settings)
    configure_logging(settings.log_level, settings.log_format)
    if settings.store_kind != "redis":
        raise ValueError(
            "codeq deliver needs the store the gateways use: set REDIS_ADDR (or redisUrl); "
            "`codeq serve` delivers from its own store"
        )
    _check_store(settings)
    _print_signing(settings)

    async def run() -> None:
        store = open_store(settings)
        deliverer = Deliverer(store, settings)
        sweeper = Sweeper(
            Engine(store.tasks, EngineConfig.from_settings(settings)),
            deliveries=store.deliveries,
            delivery_retention_seconds=settings.webhook_delivery_retention_seconds,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await deliverer.start()
        sweeping = asyncio.create_task(sweeper.run())
        print(f"codeq deliver running as consumer {deliverer.consumer}", flush=True)
        await stop.wait()
        sweeper.stop()
        await sweeping
        await deliverer.stop(grace=settings.shutdown_grace_seconds)
        await store.close()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(run())
    else:
        uvloop.run(run())
    return 0
