"""The Lua scripts, loaded from package files (``codeq/store/lua``) and identified by SHA.

Each transition script is ``lib.lua`` (delivery scripts: ``dlv_lib.lua``; subscription,
endpoint and rate-limit scripts: nothing; the two listings also ``scan.lua``, the two stream
trimmers ``trim.lua``) followed by the script's own file; the SHA is of that whole text, so
what runs is exactly what ships in the wheel.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["SCRIPT_NAMES", "Script", "build_script", "load_scripts"]

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
# Scripts over keys of their own (not a partition's): no library is prepended.
_STANDALONE = ("sub_", "ep_", "rate_")
# Shared pieces that follow a script's library: scan.lua (a page merged over ranges of an
# index) for the listings, trim.lua (trimming past every group) for the stream trimmers.
_PIECES = {
    "list_tasks": "scan",
    "dlv_search": "scan",
    "trim_events": "trim",
    "ep_ack": "trim",
}


@dataclass(frozen=True, slots=True)
class Script:
    name: str
    source: str
    sha: str


def _read(name: str) -> str:
    return resources.files("codeq.store").joinpath("lua", f"{name}.lua").read_text("utf-8")


def build_script(name: str, read: Callable[[str], str] = _read) -> Script:
    """Script ``name`` as the store loads it: its library (none for the standalone ones), its
    shared piece, then the script, each file's text from ``read`` (the package's by default;
    a benchmark hands it another revision's, bench/script_ab.py)."""
    library = "dlv_lib" if name.startswith("dlv_") else "lib"
    lib = "" if name.startswith(_STANDALONE) else read(library)
    if name in _PIECES:
        piece = _PIECES[name]
        lib = f"{lib}\n-- ==== {piece}.lua ====\n{read(piece)}"
    source = f"{lib}\n-- ==== {name}.lua ====\n{read(name)}"
    sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()
    return Script(name=name, source=source, sha=sha)


@cache
def load_scripts() -> dict[str, Script]:
    """Every script by name, with its library prepended."""
    read = cache(_read)  # each library file once
    return {name: build_script(name, read) for name in SCRIPT_NAMES}
