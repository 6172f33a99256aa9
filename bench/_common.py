"""Shared bench helpers: a throwaway Redis or KVRocks server on loopback, percentiles."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from codeq.store.scripts import Script

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the suite's servers and helpers (tests/servers.py)
    sys.path.append(str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STORES = ("redis", "kvrocks")


@contextmanager
def local_store(url: str | None, kind: str = "redis") -> Iterator[str]:
    """Yield ``url`` as is, or start a throwaway ``kind`` server ("redis": redis-server from the
    OS packages, no persistence; "kvrocks": ``KVROCKS_BIN``, ``../shared/bin/kvrocks`` or PATH)
    on loopback for the duration: the same servers the test suite starts."""
    if url:
        yield url
        return
    from tests.servers import KvrocksServer, RedisServer, kvrocks_binary

    if kind == "kvrocks":
        if kvrocks_binary() is None:
            raise SystemExit("kvrocks not found: set KVROCKS_BIN or pass --redis-url")
        with KvrocksServer.start() as kv:
            yield kv.url
        return
    if kind != "redis":
        raise SystemExit(f"unknown store {kind!r}: expected one of {', '.join(STORES)}")
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not found: pass --redis-url or run `make bench`")
    with RedisServer.start() as server:
        yield server.url


def file_at(rev: str, path: str) -> str:
    """File ``path`` of this checkout as git revision ``rev`` has it."""
    return subprocess.run(
        ["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


def lua_at(rev: str, file: str) -> str:
    """``codeq/store/lua/<file>.lua`` as git revision ``rev`` has it."""
    return file_at(rev, f"codeq/store/lua/{file}.lua")


def functions_at(rev: str) -> bool:
    """Whether revision ``rev`` runs its scripts as functions (§23): its ``lib.lua`` has the
    ``begin(keys)`` a function starts with."""
    return "\nlocal function begin(keys)\n" in lua_at(rev, "lib")


def reads_bare_at(rev: str) -> bool:
    """Whether revision ``rev``'s store calls its read-only scripts without a transaction on
    KVRocks (§24): its coalescer decides per script (``_wrapped``)."""
    return "\ndef _wrapped(" in file_at(rev, "codeq/store/coalescer.py")


def script_at(rev: str, name: str) -> Script:
    """Script ``name`` with the files of git revision ``rev`` (its library and shared piece
    of that revision too), put together by this checkout's ``codeq.store.scripts.build_script``
    (a revision from before a shared piece existed fails at its ``git show``; one from before
    the scripts were functions is refused: see :func:`evalsha_text_at`)."""
    from codeq.store.scripts import build_script

    if not functions_at(rev):
        raise SystemExit(f"{rev} runs its scripts by EVALSHA (before §23): no function to build")
    return build_script(name, lambda file: lua_at(rev, file))


def evalsha_text_at(rev: str, name: str) -> str:
    """Script ``name`` as a revision from before functions (§23) sent it by ``EVALSHA``: its
    library file, its shared piece, then its own file, each after a ``-- ==== <file> ====``
    line (the library's top level ran on every call)."""
    from codeq.store.scripts import library_files  # which files make a script: unchanged

    library, piece = library_files(name)
    text = "" if library is None else lua_at(rev, library)
    if piece is not None:
        text = f"{text}\n-- ==== {piece}.lua ====\n{lua_at(rev, piece)}"
    return f"{text}\n-- ==== {name}.lua ====\n{lua_at(rev, name)}"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL when the process has not ended within 20 s (the suite's way)."""
    from tests.servers import stop_process

    stop_process(proc)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


# -- CPU time of server processes, read from /proc ----------------------------------------

_TICK = __import__("os").sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # after "pid (comm) "


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it (a server's workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents[int(entry.name)] = int(fields[1])
    tree, grew = {root}, True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sorted(tree)


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds the processes have used so far (gone ones count 0)."""
    total = 0
    for pid in pids:
        if (fields := _stat(pid)) is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def store_pid(url: str) -> int | None:
    """The store server's process id (``INFO server``), when it runs on this machine."""
    import redis

    client = redis.Redis.from_url(url, protocol=2)
    try:
        pid = client.info("server").get("process_id")
    finally:
        client.close()
    return int(pid) if pid is not None and Path(f"/proc/{pid}").exists() else None
