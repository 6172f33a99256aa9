"""Real Redis, Redis Cluster and KVRocks servers for the tests (test support, not a test file).

Every server is a subprocess of the test process, bound to 127.0.0.1 on a free port, with its
data and its log file in a temporary directory. Start-up waits by polling (PING answered, the
process is the one that answers, ``cluster_state:ok``) against a deadline; a timeout raises with
the tail of the server's log. Stopping sends SIGTERM, waits, and falls back to SIGKILL.

Servers do not outlive the test process: an ``atexit`` hook kills whatever is still running and
removes the temporary directories, and on Linux each server is started under
``setpriv --pdeathsig TERM`` (when available and when started from the main thread) so that it is
also signalled when the test process is killed outright.

    with RedisServer.start() as server:
        client = redis.Redis.from_url(server.url)
        ...
        server.stop()      # the store goes away...
        server.restart()   # ...and comes back on the same port, with the same dir

The binaries come from ``REDIS_SERVER_BIN`` / ``REDIS_CLI_BIN`` or ``PATH``; KVRocks from
``KVROCKS_BIN``, ``../shared/bin/kvrocks`` (the build provided with the project) or ``PATH``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import mmap
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, Self, TypeAlias, TypeVar

if TYPE_CHECKING:
    from redis.cluster import ClusterNode

__all__ = [
    "KVROCKS_MISSING",
    "KvrocksServer",
    "RedisCluster",
    "RedisServer",
    "ServerStartError",
    "free_port",
    "kvrocks_binary",
    "redis_cli_binary",
    "redis_server_binary",
    "wait_for",
]

HOST = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds a server gets to answer PING after it is launched
STOP_TIMEOUT = 10.0  # seconds a server gets to exit after SIGTERM before it is SIGKILLed
POLL_INTERVAL = 0.02
PROBE_TIMEOUT = 0.5  # socket timeout of one readiness probe (a miss is simply retried)
BIND_ATTEMPTS = 5  # fresh ports tried when the picked one was taken before the server bound it
CLUSTER_BUS_OFFSET = 10000  # Redis Cluster's bus listens on port + 10000
CLUSTER_SLOTS = 16384
LOG_TAIL_LINES = 40

REDIS_MISSING = (
    "redis-server not found: run `make test` (it installs it) or apt-get install redis-server"
)
REDIS_CLI_MISSING = (
    "redis-cli not found: run `make test` (it installs it) or apt-get install redis-tools"
)
STRICT_LUA_OPTION = "lua-strict-key-accessing"


class ServerStartError(RuntimeError):
    """A server exited or did not become ready in time; the message carries its log tail."""


class _PortInUseError(ServerStartError):
    """The server could not bind its port (someone took it between picking and binding)."""


class _ReplyError(Exception):
    """The server answered with a RESP error (``-ERR ...``, ``-LOADING ...``)."""


# --------------------------------------------------------------------------- helpers


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    interval: float = POLL_INTERVAL,
    message: str = "",
) -> None:
    """Poll ``predicate`` until it returns a truthy value; raise TimeoutError after ``timeout``.

    The predicate is called at least once, and once more at the deadline. Exceptions raised
    by the predicate propagate.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(message or f"condition not met within {timeout:g}s")
        time.sleep(min(interval, remaining))


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL when it has not ended within ``timeout`` s (one that has ended
    already is left as it is)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it).

    Another process may take it before the server binds it: the starters below retry on a
    new port when the server fails to bind.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _binary(env_var: str, name: str) -> str | None:
    configured = os.environ.get(env_var)
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise RuntimeError(f"{env_var}={configured!r} is not an executable file")
        return found
    return shutil.which(name)


def redis_server_binary() -> str:
    """Path of redis-server (``REDIS_SERVER_BIN`` or PATH); RuntimeError when missing."""
    found = _binary("REDIS_SERVER_BIN", "redis-server")
    if found is None:
        raise RuntimeError(REDIS_MISSING)
    return found


def redis_cli_binary() -> str:
    """Path of redis-cli (``REDIS_CLI_BIN``, PATH, or next to redis-server)."""
    found = _binary("REDIS_CLI_BIN", "redis-cli")
    if found is None:
        sibling = Path(redis_server_binary()).with_name("redis-cli")
        if sibling.is_file():
            found = str(sibling)
    if found is None:
        raise RuntimeError(REDIS_CLI_MISSING)
    return found


#: the KVRocks build provided with the project (``shared/bin`` beside the checkout)
SHARED_KVROCKS = Path(__file__).resolve().parents[2] / "shared" / "bin" / "kvrocks"

KVROCKS_MISSING = (
    "kvrocks not found: set KVROCKS_BIN, provide ../shared/bin/kvrocks beside the checkout, "
    "or put kvrocks on PATH"
)


def kvrocks_binary() -> str | None:
    """Path of kvrocks: ``KVROCKS_BIN``, else ``../shared/bin/kvrocks`` beside the checkout,
    else ``kvrocks`` on PATH; None when there is none."""
    configured = os.environ.get("KVROCKS_BIN")
    if configured:
        return _binary("KVROCKS_BIN", "kvrocks")
    if SHARED_KVROCKS.is_file() and os.access(SHARED_KVROCKS, os.X_OK):
        return str(SHARED_KVROCKS)
    return shutil.which("kvrocks")


# --------------------------------------------------------------------------- a tiny RESP client
# Readiness checks speak RESP directly so that they depend on nothing but the socket module and
# leave no client objects behind.

RespValue: TypeAlias = str | int | bytes | list["RespValue"] | _ReplyError | None


def _encode_command(args: Sequence[str]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_reply(reader: BinaryIO) -> RespValue:
    line = reader.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed mid-reply")
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        return _ReplyError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        size = int(body)
        if size < 0:
            return None
        data = reader.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("connection closed mid-reply")
        return data[:-2]
    if kind == b"*":
        count = int(body)
        if count < 0:
            return None
        return [_read_reply(reader) for _ in range(count)]
    raise ConnectionError(f"unexpected RESP reply {line!r}")


def _command(port: int, *args: str, timeout: float = 1.0) -> RespValue:
    """Send one command to 127.0.0.1:port and return the reply (RESP errors raise)."""
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(_encode_command(args))
        with sock.makefile("rb") as reader:
            reply = _read_reply(reader)
    if isinstance(reply, _ReplyError):
        raise reply
    return reply


def _info_fields(text: bytes | str) -> dict[str, str]:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            fields[key.strip()] = value.strip()
    return fields


# --------------------------------------------------------------------------- process registry

_registry_lock = threading.Lock()
_live: set[_ServerProcess] = set()
_owned_dirs: set[Path] = set()


def _register(server: _ServerProcess) -> None:
    with _registry_lock:
        _live.add(server)


def _unregister(server: _ServerProcess) -> None:
    with _registry_lock:
        _live.discard(server)


def _own_dir(path: Path) -> None:
    with _registry_lock:
        _owned_dirs.add(path)


def _remove_dir(path: Path) -> None:
    with _registry_lock:
        _owned_dirs.discard(path)
    shutil.rmtree(path, ignore_errors=True)


def _cleanup_at_exit() -> None:
    with _registry_lock:
        servers = list(_live)
        dirs = list(_owned_dirs)
    for server in servers:
        server.kill()
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_cleanup_at_exit)


def _death_signal_prefix() -> list[str]:
    """``setpriv --pdeathsig TERM --`` when usable: the server then dies with the test process.

    The parent-death signal follows the *thread* that forked, so it is only used from the
    main thread (a worker thread's exit would otherwise take the server with it).
    """
    if threading.current_thread() is not threading.main_thread():
        return []
    return list(_setpriv_pdeathsig())


@functools.cache
def _setpriv_pdeathsig() -> tuple[str, ...]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return ()
    try:
        result = subprocess.run(
            [setpriv, "--help"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    if "--pdeathsig" not in result.stdout:
        return ()
    return (setpriv, "--pdeathsig", "TERM", "--")


def _new_temp_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _own_dir(path)
    return path


# --------------------------------------------------------------------------- one server process


class _ServerProcess:
    """A server subprocess on a fixed port and dir, restartable; subclasses give the command."""

    kind = "server"

    def __init__(self, port: int, dir: Path, *, owns_dir: bool) -> None:
        self.host = HOST
        self.port = port
        self.dir = dir
        self.log_path = dir / f"{self.kind}.log"
        self._owns_dir = owns_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- what subclasses provide

    def _command_line(self) -> list[str]:
        raise NotImplementedError

    # -- public API

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL. The dir stays for ``restart()``."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None
        _unregister(self)

    def kill(self) -> None:
        """SIGKILL: the server gets no chance to flush or save anything."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._proc = None
        _unregister(self)

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop (if running) and start again on the same port with the same dir."""
        self.stop()
        self._launch(timeout)

    def close(self) -> None:
        """Stop and remove the temporary dir (when this object created it)."""
        self.stop()
        if self._owns_dir:
            _remove_dir(self.dir)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state} dir={self.dir}>"

    # -- launching

    def _launch(self, timeout: float = START_TIMEOUT) -> None:
        """Start the process and wait until it answers; raise ServerStartError otherwise."""
        if self.is_running():
            raise RuntimeError(f"{self!r} is already running")
        self.dir.mkdir(parents=True, exist_ok=True)
        command = self._command_line()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(command)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [*_death_signal_prefix(), *command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
            )
        _register(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self, timeout: float) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                log = self._log_since_launch()
                error = _PortInUseError if "already in use" in log.lower() else ServerStartError
                raise error(self._failure(f"exited with code {code} before answering PING"))
            if self._answers(proc.pid):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerStartError(
                    self._failure(f"did not answer PING within {timeout:g}s (pid {proc.pid})")
                )
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=min(POLL_INTERVAL, remaining))

    def _answers(self, pid: int) -> bool:
        """PING answered, by this very process (not by another server that took the port)."""
        try:
            if _command(self.port, "PING", timeout=PROBE_TIMEOUT) != "PONG":
                return False
            info = _command(self.port, "INFO", "server", timeout=PROBE_TIMEOUT)
        except (OSError, _ReplyError, ValueError):
            return False
        if not isinstance(info, bytes):
            return False
        reported = _info_fields(info).get("process_id")
        return reported is None or reported == str(pid)

    def _log_since_launch(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _failure(self, what: str) -> str:
        return (
            f"{type(self).__name__} on {self.host}:{self.port} {what}\n"
            f"dir: {self.dir}\n"
            f"--- last lines of {self.log_path} ---\n{self.log_tail()}"
        )


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            file.seek(max(0, file.tell() - 64 * 1024))
            text = file.read().decode(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


_S = TypeVar("_S", bound="_ServerProcess")


def _start_on_free_port(make: Callable[[int], _S], port: int | None, timeout: float) -> _S:
    """Launch ``make(port)``; with no fixed port, retry on a fresh one if the bind fails."""
    attempts = 1 if port is not None else BIND_ATTEMPTS
    last_error: _PortInUseError | None = None
    for _ in range(attempts):
        server = make(port if port is not None else free_port())
        try:
            server._launch(timeout)
        except _PortInUseError as exc:
            last_error = exc
            continue
        return server
    assert last_error is not None
    raise last_error


# --------------------------------------------------------------------------- Redis


class RedisServer(_ServerProcess):
    """One ``redis-server`` on 127.0.0.1.

    ``persistence=True`` turns on the append-only file with ``appendfsync always`` so that
    every acknowledged write survives ``stop()``/``kill()`` + ``restart()``, and says
    ``maxmemory-policy noeviction`` (Redis' default) as docs/deploy.md does; otherwise nothing
    is persisted (``--save '' --appendonly no``).
    """

    kind = "redis"

    def __init__(
        self,
        port: int,
        dir: Path,
        *,
        persistence: bool = False,
        extra_args: Sequence[str] = (),
        owns_dir: bool = False,
        binary: str | None = None,
    ) -> None:
        super().__init__(port, dir, owns_dir=owns_dir)
        self.persistence = persistence
        self.extra_args = list(extra_args)
        self.binary = binary or redis_server_binary()

    @classmethod
    def start(
        cls,
        *,
        persistence: bool = False,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        dir: str | os.PathLike[str] | None = None,
        timeout: float = START_TIMEOUT,
    ) -> RedisServer:
        """Start a server on a free port (or ``port``) and wait until it answers PING.

        Without ``dir`` the data goes to a new temporary dir, removed by ``close()`` or at exit.
        """
        binary = redis_server_binary()
        data_dir = Path(dir) if dir is not None else _new_temp_dir("codeq-redis-")

        def make(chosen: int) -> RedisServer:
            return cls(
                chosen,
                data_dir,
                persistence=persistence,
                extra_args=extra_args,
                owns_dir=dir is None,
                binary=binary,
            )

        try:
            return _start_on_free_port(make, port, timeout)
        except BaseException:
            if dir is None:
                _remove_dir(data_dir)
            raise

    def _command_line(self) -> list[str]:
        durability = (
            ["--appendonly", "yes", "--appendfsync", "always", "--maxmemory-policy", "noeviction"]
            if self.persistence
            else ["--appendonly", "no"]
        )
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--dir", str(self.dir),
            "--daemonize", "no",
            "--logfile", "",
            "--save", "",
            *durability,
            *self.extra_args,
        ]  # fmt: skip


class RedisCluster:
    """Three ``redis-server --cluster-enabled yes`` masters holding all 16384 slots.

    ``nodes`` are the (host, port) pairs, ``url`` is the first node's, and ``startup_nodes``
    are ``redis.cluster.ClusterNode`` objects for ``redis.cluster.RedisCluster``.
    """

    def __init__(self, servers: list[RedisServer], dir: Path) -> None:
        self.servers = servers
        self.dir = dir

    @classmethod
    def start(cls, *, size: int = 3, timeout: float = START_TIMEOUT) -> RedisCluster:
        binary = redis_server_binary()
        cli = redis_cli_binary()
        base = _new_temp_dir("codeq-redis-cluster-")
        servers: list[RedisServer] = []
        try:
            for index in range(size):
                servers.append(cls._start_node(binary, base / f"node{index}", servers, timeout))
            cluster = cls(servers, base)
            cluster._create(cli, timeout)
        except BaseException:
            for server in servers:
                server.kill()
            _remove_dir(base)
            raise
        return cluster

    @staticmethod
    def _start_node(
        binary: str, dir: Path, others: list[RedisServer], timeout: float
    ) -> RedisServer:
        taken = {port for other in others for port in (other.port, other.port + CLUSTER_BUS_OFFSET)}
        last_error: _PortInUseError | None = None
        for _ in range(BIND_ATTEMPTS):
            port = _cluster_port(taken)
            server = RedisServer(
                port,
                dir,
                binary=binary,
                extra_args=[
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(dir / "nodes.conf"),
                    "--cluster-node-timeout", "5000",
                ],
            )  # fmt: skip
            try:
                server._launch(timeout)
            except _PortInUseError as exc:
                last_error = exc
                (dir / "nodes.conf").unlink(missing_ok=True)
                continue
            return server
        assert last_error is not None
        raise last_error

    def _create(self, cli: str, timeout: float) -> None:
        addresses = [f"{host}:{port}" for host, port in self.nodes]
        command = [cli, "--cluster", "create", *addresses]
        command += ["--cluster-replicas", "0", "--cluster-yes"]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout * 3,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ServerStartError(
                self._failure(f"{' '.join(command)} timed out", exc.output)
            ) from exc
        if result.returncode != 0:
            raise ServerStartError(
                self._failure(
                    f"{' '.join(command)} exited with {result.returncode}",
                    result.stdout + result.stderr,
                )
            )
        try:
            wait_for(self._is_ok, timeout)
        except TimeoutError as exc:
            raise ServerStartError(
                self._failure(
                    f"cluster not ok within {timeout:g}s:\n{self._states()}",
                    result.stdout + result.stderr,
                )
            ) from exc

    def _cluster_info(self, port: int) -> dict[str, str]:
        try:
            reply = _command(port, "CLUSTER", "INFO")
        except (OSError, _ReplyError, ValueError):
            return {}
        return _info_fields(reply) if isinstance(reply, bytes) else {}

    def _is_ok(self) -> bool:
        for _, port in self.nodes:
            info = self._cluster_info(port)
            if (
                info.get("cluster_state") != "ok"
                or info.get("cluster_slots_assigned") != str(CLUSTER_SLOTS)
                or info.get("cluster_known_nodes") != str(len(self.servers))
            ):
                return False
        return True

    def _states(self) -> str:
        lines = []
        for _, port in self.nodes:
            info = self._cluster_info(port)
            keys = ("cluster_state", "cluster_slots_assigned", "cluster_known_nodes")
            lines.append(f"  {port}: " + " ".join(f"{k}={info.get(k)}" for k in keys))
        return "\n".join(lines)

    def _failure(self, what: str, output: str | bytes | None = None) -> str:
        if isinstance(output, bytes):
            output = output.decode(errors="replace")
        logs = "\n".join(
            f"--- last lines of {server.log_path} ---\n{server.log_tail(15)}"
            for server in self.servers
        )
        return f"RedisCluster: {what}\n--- redis-cli output ---\n{output or ''}\n{logs}"

    @property
    def nodes(self) -> list[tuple[str, int]]:
        return [(server.host, server.port) for server in self.servers]

    @property
    def url(self) -> str:
        return self.servers[0].url

    @property
    def startup_nodes(self) -> list[ClusterNode]:
        from redis.cluster import ClusterNode

        return [ClusterNode(host, port) for host, port in self.nodes]  # type: ignore[no-untyped-call]

    def is_running(self) -> bool:
        return all(server.is_running() for server in self.servers)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def close(self) -> None:
        """Stop every node and remove the temporary dirs."""
        self.stop()
        _remove_dir(self.dir)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RedisCluster {self.nodes}>"


def _cluster_port(taken: set[int]) -> int:
    """A free port whose cluster-bus port (port + 10000) is free and in range too."""
    while True:
        port = free_port()
        bus = port + CLUSTER_BUS_OFFSET
        if bus <= 65535 and not {port, bus} & taken and _port_is_free(bus):
            return port


# --------------------------------------------------------------------------- KVRocks

_strict_lua_support: dict[str, bool] = {}


def _binary_mentions(binary: str, needle: bytes) -> bool:
    """Whether the file at ``binary`` contains ``needle`` (a poor man's ``strings | grep``)."""
    try:
        with open(binary, "rb") as file:
            if os.fstat(file.fileno()).st_size == 0:
                return False
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return data.find(needle) != -1
    except (OSError, ValueError):
        return False


class KvrocksServer(_ServerProcess):
    """One ``kvrocks`` on 127.0.0.1, configured through a file in its dir.

    ``lua-strict-key-accessing yes`` is set when the binary knows the option; ``strict_lua``
    tells whether the running server has it on (checked with CONFIG GET after start-up).
    """

    kind = "kvrocks"

    def __init__(
        self,
        port: int,
        dir: Path,
        *,
        binary: str,
        strict_lua: bool,
        extra_config: Sequence[str] = (),
        owns_dir: bool = False,
    ) -> None:
        super().__init__(port, dir, owns_dir=owns_dir)
        self.binary = binary
        self.strict_lua = strict_lua
        self.extra_config = list(extra_config)
        self.config_path = dir / "kvrocks.conf"

    @classmethod
    def start(
        cls,
        *,
        extra_config: Sequence[str] = (),
        port: int | None = None,
        dir: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        timeout: float = START_TIMEOUT,
    ) -> KvrocksServer:
        """Start kvrocks (``binary`` or ``kvrocks_binary()``) and wait until it answers PING.

        ``extra_config`` lines are appended to the config file. RuntimeError when there is no
        binary (the suite's ``kvrocks_server`` fixture fails under ``CI=true``, skips otherwise).
        """
        found = binary or kvrocks_binary()
        if found is None:
            raise RuntimeError(KVROCKS_MISSING)
        exe: str = found
        data_dir = Path(dir) if dir is not None else _new_temp_dir("codeq-kvrocks-")
        if exe not in _strict_lua_support:
            _strict_lua_support[exe] = _binary_mentions(exe, STRICT_LUA_OPTION.encode())

        def launch(strict_lua: bool) -> KvrocksServer:
            def build(chosen: int) -> KvrocksServer:
                return cls(
                    chosen,
                    data_dir,
                    binary=exe,
                    strict_lua=strict_lua,
                    extra_config=extra_config,
                    owns_dir=dir is None,
                )

            return _start_on_free_port(build, port, timeout)

        try:
            if not _strict_lua_support[exe]:
                server = launch(False)
            else:
                try:
                    server = launch(True)
                except _PortInUseError:
                    raise
                except ServerStartError as exc:
                    if STRICT_LUA_OPTION not in str(exc):
                        raise
                    # It refused the option after all: remember, and go on without it.
                    _strict_lua_support[exe] = False
                    server = launch(False)
            if server.strict_lua and not server._strict_lua_active():
                # Kvrocks only warns about a key it does not know: ask the running server.
                server.strict_lua = False
            return server
        except BaseException:
            if dir is None:
                _remove_dir(data_dir)
            raise

    def _strict_lua_active(self) -> bool:
        """CONFIG GET says yes (a kvrocks that does not know a key only warns about it)."""
        try:
            reply = _command(self.port, "CONFIG", "GET", STRICT_LUA_OPTION)
        except (OSError, _ReplyError, ValueError):
            return False
        return isinstance(reply, list) and len(reply) == 2 and reply[1] in (b"yes", "yes")

    def _command_line(self) -> list[str]:
        lines = [
            f"bind {self.host}",
            f"port {self.port}",
            f"dir {self.dir}",
            f"pidfile {self.dir / 'kvrocks.pid'}",
            f"backup-dir {self.dir / 'backup'}",
            "daemonize no",
            "workers 2",
        ]
        if self.strict_lua:
            lines.append(f"{STRICT_LUA_OPTION} yes")
        lines += self.extra_config
        self.config_path.write_text("\n".join(lines) + "\n")
        return [self.binary, "-c", str(self.config_path)]

    def server_log(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of what the server itself logged: kvrocks logs through glog into
        files in its data dir (``kvrocks.INFO`` and the like), not to stdout (``log_tail``)."""
        return "\n".join(
            f"--- last lines of {path} ---\n{_tail(path, lines)}"
            for path in sorted(self.dir.glob("kvrocks*.INFO"))[-1:]
        )

    def _failure(self, what: str) -> str:
        return f"{super()._failure(what)}\n{self.server_log(20)}"
