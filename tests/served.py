"""A real ``codeq serve`` subprocess on a free port, for end-to-end tests (test support)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx

from tests.servers import BIND_ATTEMPTS, free_port, stop_process, wait_for

TOKEN = "e2e-dev-token"


class Served:
    """A running ``codeq serve``: its base URL, process and captured output (files, so a
    chatty server never blocks on a full pipe)."""

    def __init__(self, base: str, proc: subprocess.Popen[bytes], out: Any, err: Any) -> None:
        self.base, self.proc, self._out, self._err = base, proc, out, err

    def stdout(self) -> str:
        self._out.seek(0)
        return str(self._out.read().decode())

    def stderr(self) -> str:
        self._err.seek(0)
        return str(self._err.read().decode())


@contextmanager
def serve(
    extra_env: dict[str, str], *, command: str = "serve", args: Sequence[str] = ()
) -> Iterator[Served]:
    """``codeq serve`` (or ``command``: ``gateway``, HTTP only) with ``args``, until the block
    ends."""
    env = {
        **os.environ,
        "CODEQ_DEV_TOKEN": TOKEN,
        "LOG_FORMAT": "json",
        "SHUTDOWN_GRACE_SECONDS": "5",
        **extra_env,
    }
    if "REDIS_ADDR" not in extra_env:
        env.pop("REDIS_ADDR", None)
    with contextlib.ExitStack() as stack:
        if "DATA_DIR" not in extra_env:  # the local store and the dev secret: the test's own
            env["DATA_DIR"] = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="codeq-", ignore_cleanup_errors=True)
            )
        yield from _run(command, env, args)


class _PortTaken(Exception):
    """The server could not bind its port: something took it after ``free_port`` chose it (the
    suite runs in two worker processes, each picking ports)."""


def _run(command: str, env: dict[str, str], args: Sequence[str]) -> Generator[Served, None, None]:
    for attempt in range(1, BIND_ATTEMPTS + 1):
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            started = _start(command, free_port(), env, args, out, err)
            try:
                served = next(started)
            except _PortTaken as exc:
                if attempt == BIND_ATTEMPTS:
                    raise AssertionError(f"codeq {command} exited: {exc}") from exc
                continue
            try:
                yield served
            finally:
                started.close()  # stops the server
            return


def _start(
    command: str, port: int, env: dict[str, str], args: Sequence[str], out: Any, err: Any
) -> Generator[Served, None, None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "codeq.cli", command, "--port", str(port), *args],
        env=env,
        stdout=out,
        stderr=err,
    )
    served = Served(f"http://127.0.0.1:{port}", proc, out, err)

    def up() -> bool:
        if proc.poll() is not None:
            text = served.stderr()
            if f"codeq: port {port} on " in text and " is in use" in text:  # the CLI's refusal
                raise _PortTaken(text)
            raise AssertionError(f"codeq {command} exited: {text}")
        if f":{port} " not in served.stdout():  # not bound yet (it says so once it is): what
            return False  # answers on the port now may be another worker's server
        try:
            return httpx.get(f"{served.base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=30, message=f"codeq {command} did not come up")
        yield served
    finally:
        stop_process(proc, 15)


def polls_waiting(base: str, n: int) -> None:
    """Wait until the server reports ``n`` claims waiting in a long poll (its /metrics)."""

    def check() -> bool:
        text = httpx.get(f"{base}/metrics", timeout=2).text
        return f"codeq_long_polls_waiting {float(n)}" in text

    wait_for(check, timeout=10, message=f"{n} long poll(s) never started waiting")
