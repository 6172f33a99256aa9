"""The private store of ``codeq serve``: a ``redis-server`` or KVRocks process of its own.

With no store configured (``persistenceProvider: local``, the default when no address is set),
``codeq serve`` starts one store process before it serves, talks to it over a Unix socket in the
data directory, and stops it when the service stops. Its data stays in ``<dataDir>/store``:

* ``redis-server`` keeps an append-only file written before each reply and fsynced every second
  (``appendfsync everysec``), so every acknowledged task survives a crash of ``codeq serve``
  (the store process writes it to the OS before answering), and at most the last second is at
  risk on a power loss.
* KVRocks writes each change to its RocksDB write-ahead log before it answers.

The process is tied to its supervisor: it runs in its own session (Ctrl-C on the terminal
reaches ``codeq serve``, which drains first and then stops the store), and on Linux it is sent
SIGTERM when its supervisor dies, even by ``kill -9``. A lock file keeps two services off one
data directory, and a store left running by a supervisor that died is stopped before a new one
starts on the same files.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import redis

from codeq.settings import SettingsError

__all__ = ["LocalStore", "LocalStoreError"]

log = logging.getLogger("codeq.store")

Kind = Literal["redis", "kvrocks"]

# AF_UNIX paths are limited to 108 bytes (with the terminating NUL); past that, loopback TCP.
_MAX_SOCKET_PATH = 100
_START_SECONDS = 20.0
_STOP_SECONDS = 15.0
_PR_SET_PDEATHSIG = 1


class LocalStoreError(SettingsError):
    """The private store cannot be started: one sentence saying what to do."""


@dataclass(frozen=True, slots=True)
class _Binary:
    path: str
    kind: Kind
    version: str


def _find_binary(configured: str | None) -> _Binary:
    path = configured or shutil.which("redis-server")
    if path is None:
        raise LocalStoreError(
            "no store is configured and redis-server is not installed: install it "
            "(apt-get install redis-server; `make run` does), set localStoreBinary to a "
            "redis-server or KVRocks binary, set redisAddr/redisUrl, or choose "
            "persistenceProvider: memory (keeps nothing)"
        )
    try:
        out = subprocess.run(  # noqa: S603 - the configured binary, asked for its version
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalStoreError(f"localStoreBinary {path!r} cannot be run: {exc}") from None
    text = (out.stdout + out.stderr).strip()
    first = text.splitlines()[0] if text else ""
    words = first.split()
    if first.lower().startswith("kvrocks version") and len(words) > 2:
        return _Binary(path, "kvrocks", f"kvrocks {words[2]}")
    if first.startswith("Redis server v=") and len(words) > 2:
        return _Binary(path, "redis", f"redis-server {words[2].removeprefix('v=')}")
    raise LocalStoreError(
        f"localStoreBinary {path!r} is neither redis-server nor KVRocks "
        f"(its --version says {first[:80]!r})"
    )


def _tie_to_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """SIGTERM this process when the process that started it dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalStore:
    """One private store process in ``data_dir``: :meth:`start` it, use :attr:`url`,
    :meth:`stop` it. Also a context manager."""

    def __init__(self, data_dir: str | os.PathLike[str], binary: str | None = None) -> None:
        self.dir = Path(data_dir).resolve() / "store"
        self._binary_setting = binary
        self.binary: _Binary | None = None
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    # ---- life ---------------------------------------------------------------------------------

    def start(self) -> str:
        """Start the store and wait until it answers; returns its URL."""
        self.binary = _find_binary(self._binary_setting)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._take_lock()
        self._stop_leftover()
        sock = self.dir / ("redis.sock" if self.binary.kind == "redis" else "kvrocks.sock")
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()
        use_socket = len(str(sock)) <= _MAX_SOCKET_PATH
        port = 0 if use_socket else _free_port()
        args = self._arguments(self.binary, sock if use_socket else None, port)
        log_file = (self.dir / "store.log").open("ab")
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - the configured store binary
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
                preexec_fn=_tie_to_parent,
            )
        finally:
            log_file.close()
        (self.dir / "store.pid").write_text(f"{self._proc.pid}\n")
        self.url = f"unix://{sock}" if use_socket else f"redis://127.0.0.1:{port}/0"
        self._wait_ready()
        return self.url

    def stop(self) -> None:
        """SIGTERM (the store flushes its files), then SIGKILL after a grace period."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    log.warning("the local store did not stop in %ss; killing it", _STOP_SECONDS)
                    proc.kill()
                    proc.wait()
            with contextlib.suppress(FileNotFoundError):
                (self.dir / "store.pid").unlink()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def __enter__(self) -> LocalStore:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def describe(self) -> str:
        """What runs where, for the start-up line."""
        assert self.binary is not None
        return f"{self.binary.version} on {self.url}, data in {self.dir}"

    # ---- parts --------------------------------------------------------------------------------

    def _arguments(self, binary: _Binary, sock: Path | None, port: int) -> list[str]:
        if binary.kind == "redis":
            args = [
                binary.path,
                "--dir", str(self.dir),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",  # the append-only file is the record; no snapshot pauses
                "--daemonize", "no",
                "--protected-mode", "yes",
                "--loglevel", "warning",
            ]  # fmt: skip
            if sock is not None:
                args += ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
            else:
                args += ["--port", str(port), "--bind", "127.0.0.1"]
            return args
        args = [
            binary.path,
            "--dir", str(self.dir / "kvrocks"),
            "--log-dir", str(self.dir),
            "--daemonize", "no",
        ]  # fmt: skip
        if sock is not None:
            args += ["--bind", "", "--unixsocket", str(sock), "--unixsocketperm", "700"]
        else:
            args += ["--bind", "127.0.0.1", "--port", str(port)]
        return args

    def _take_lock(self) -> None:
        lock = (self.dir / "lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise LocalStoreError(
                f"dataDir {self.dir.parent} is in use by another codeq serve: stop it, or give "
                "this one its own --data-dir"
            ) from None
        self._lock = lock

    def _stop_leftover(self) -> None:
        """A store whose supervisor died (and that outlived it) still holds these files."""
        pidfile = self.dir / "store.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return
        if pid > 0 and _alive(pid) and self._is_store(pid):
            log.warning("stopping the local store (pid %s) left by a previous run", pid)
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + _STOP_SECONDS
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        pidfile.unlink(missing_ok=True)

    def _is_store(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.dir).encode() in cmdline

    def _wait_ready(self) -> None:
        assert self._proc is not None
        client = redis.Redis.from_url(
            self.url, socket_connect_timeout=1, socket_timeout=2, protocol=2
        )
        deadline = time.monotonic() + _START_SECONDS
        try:
            while True:
                code = self._proc.poll()
                if code is not None:
                    self.stop()  # releases the data directory's lock
                    raise LocalStoreError(
                        f"the local store exited with code {code} at start: see "
                        f"{self.dir / 'store.log'}{self._log_tail()}"
                    )
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError, OSError):
                    pass
                except redis.ResponseError as exc:  # loading the data: not ready yet
                    if "LOADING" not in str(exc):
                        raise
                if time.monotonic() > deadline:
                    self.stop()
                    raise LocalStoreError(
                        f"the local store did not answer within {_START_SECONDS:.0f}s: see "
                        f"{self.dir / 'store.log'}"
                    )
                time.sleep(0.02)
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            lines = (self.dir / "store.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return f" (last line: {lines[-1][:200]})" if lines else ""
