"""The Lua scripts, loaded from package files (``codeq/store/lua``) as Redis function libraries.

Each script is a library of one function, loaded once (``FUNCTION LOAD``) and called with
``FCALL``. The library is the script's shared library file (``lib.lua`` for a task script,
``dlv_lib.lua`` for a delivery script, none for the subscription, endpoint and rate-limit
scripts), its shared piece (``scan.lua`` for the two listings, ``trim.lua`` for the two stream
trimmers), then the function, whose body is the script's own file and whose first step is the
library's ``begin(KEYS)``. The library's top level (some forty closures and a dozen tables)
runs when it is loaded, not on every call as it did under ``EVALSHA`` (docs/performance.md
§23).

A library and its function share one name, ``codeq_<script>_<digest>``, the digest being of
the whole text: two releases' libraries live side by side on one server (a rolling upgrade),
one release's are loaded under the same names by every process, and what runs is exactly what
ships in the wheel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

__all__ = [
    "READ_ONLY",
    "SCRIPT_NAMES",
    "Script",
    "build_script",
    "compose",
    "library_files",
    "library_names",
    "load_scripts",
    "read_lua",
]

SCRIPT_NAMES = (
    "create",
    "claim",
    "heartbeat",
    "abandon",
    "cancel",
    "nack",
    "result",
    "get",
    "get_many",
    "requeue_dlq",
    "dlq_page",
    "list_tasks",
    "stats",
    "purge",
    "sweep",
    "trim_events",
    "gauges",
    "dlv_enqueue",
    "dlv_claim",
    "dlv_outcome",
    "dlv_replay",
    "dlv_poison",
    "dlv_defer",
    "dlv_task",
    "dlv_search",
    "dlv_prune",
    "dlv_job_put",
    "dlv_job_lease",
    "dlv_job_step",
    "dlv_job_cancel",
    "sub_put",
    "sub_del",
    "sub_list",
    "sub_pick",
    "ep_put",
    "ep_del",
    "ep_list",
    "ep_mark",
    "ep_patch",
    "ep_rotate",
    "ep_ack",
    "rate_limit",
)
# Scripts over keys of their own (not a partition's): no library file before them.
_STANDALONE = ("sub_", "ep_", "rate_")
# Shared pieces that follow a script's library: scan.lua (a page merged over ranges of an
# index) for the listings, trim.lua (trimming past every group) for the stream trimmers.
_PIECES = {
    "list_tasks": "scan",
    "dlv_search": "scan",
    "trim_events": "trim",
    "ep_ack": "trim",
}


#: Scripts that never write: their functions say so (``no-writes``), so a Redis at ``maxmemory``
#: still runs them (it refuses any other function whole), and both servers refuse a write in one;
#: on KVRocks they go without the transaction a write goes in (codeq/store/coalescer.py).
READ_ONLY = frozenset(
    {
        "get",
        "get_many",
        "dlq_page",
        "list_tasks",
        "stats",
        "gauges",
        "dlv_task",
        "dlv_search",
        "ep_list",
    }
)


@dataclass(frozen=True, slots=True)
class Script:
    """One script: ``source`` is its library as ``FUNCTION LOAD`` takes it, ``function`` the
    name ``FCALL`` calls it by (and the library's)."""

    name: str
    source: str
    function: str
    read_only: bool = False  # flagged no-writes: on KVRocks, called without a transaction


def read_lua(name: str) -> str:
    """The text of ``codeq/store/lua/<name>.lua`` as the package ships it."""
    return resources.files("codeq.store").joinpath("lua", f"{name}.lua").read_text("utf-8")


# Where the function's name goes before the digest that makes it is known.
_NAME = "\x00name\x00"


def build_script(name: str, read: Callable[[str], str] = read_lua) -> Script:
    """Script ``name`` as the store loads it: its library file (none for the standalone ones),
    its shared piece, then its function around the script's own file, each file's text from
    ``read`` (the package's by default; a benchmark hands it another revision's,
    bench/script_ab.py)."""
    library, piece = library_files(name)
    before = [] if library is None else [read(library)]
    if piece is not None:
        before.append(f"-- ==== {piece}.lua ====\n{read(piece)}")
    return compose(
        name, read(name), before=before, begin=library is not None, read_only=name in READ_ONLY
    )


def library_files(name: str) -> tuple[str | None, str | None]:
    """The files before script ``name``'s own: its library file (``lib``, ``dlv_lib``, or none
    for a script over keys of its own) and its shared piece (``scan``, ``trim`` or none)."""
    library = (
        None if name.startswith(_STANDALONE) else "dlv_lib" if name.startswith("dlv_") else "lib"
    )
    return library, _PIECES.get(name)


def compose(
    name: str,
    body: str,
    *,
    before: Sequence[str] = (),
    begin: bool = False,
    read_only: bool = False,
) -> Script:
    """A library of one function, script ``name``: the texts ``before`` (a library file, a
    piece after its ``-- ==== <file> ====`` line), then the function, whose body is ``body``
    after a ``-- ==== <name>.lua ====`` line (and whose first step is ``begin(KEYS)`` when
    ``begin``), so a position in the library names a line of a file; then its registration,
    flagged ``no-writes`` when ``read_only``. Redis takes flags in the table form of
    ``redis.register_function`` only, KVRocks (2.10) in the positional form only; Redis has
    ``redis.REDIS_VERSION`` and KVRocks not, so the library asks that."""
    start = " begin(KEYS)" if begin else ""
    flags = "{'no-writes'}" if read_only else "{}"
    function = (
        f"local function __codeq(KEYS, ARGV){start}\n-- ==== {name}.lua ====\n{body}\nend\n"
        "if redis.REDIS_VERSION then\n"
        f"  redis.register_function{{function_name = '{_NAME}', callback = __codeq,"
        f" flags = {flags}}}\n"
        "else\n"
        f"  redis.register_function('{_NAME}', __codeq, {flags})\n"
        "end\n"
    )
    text = "\n".join((*before, function))
    digest = hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()[:20]
    named = f"codeq_{name}_{digest}"
    source = f"#!lua name={named}\n" + text.replace(_NAME, named)
    return Script(name=name, source=source, function=named, read_only=read_only)


@cache
def load_scripts() -> dict[str, Script]:
    """Every script by name, as a library of its own."""
    read = cache(read_lua)  # each library file once
    return {name: build_script(name, read) for name in SCRIPT_NAMES}


def library_names(reply: Any) -> set[str]:
    """The libraries a ``FUNCTION LIST`` reply names (RESP2's flat pairs, or the maps of
    redis-py's parser or of RESP3): how the store tells a refused ``FUNCTION LOAD`` of a
    library another process loaded meanwhile from one that failed (and how tests look)."""
    names: set[str] = set()
    for library in reply or ():
        if isinstance(library, dict):
            fields = library
        else:
            flat = list(library)
            fields = dict(zip(flat[::2], flat[1::2], strict=False))
        name = fields.get(b"library_name", fields.get("library_name"))
        if name is not None:
            names.add(name.decode() if isinstance(name, bytes) else str(name))
    return names
