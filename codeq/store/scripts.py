"""The Lua scripts, loaded from package files (``codeq/store/lua``) and identified by SHA.

Each transition script is ``lib.lua`` (delivery scripts: ``dlv_lib.lua``; subscription,
endpoint and rate-limit scripts: nothing; the two listings also ``scan.lua``, the two stream
trimmers ``trim.lua``) followed by the script's own file; the SHA is of that whole text, so
what runs is exactly what ships in the wheel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

__all__ = ["SCRIPT_NAMES", "Script", "load_scripts"]

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


@cache
def load_scripts() -> dict[str, Script]:
    """Every script by name, with its library prepended."""
    libs = {"task": _read("lib"), "dlv": _read("dlv_lib")}
    out: dict[str, Script] = {}
    for name in SCRIPT_NAMES:
        lib = (
            ""
            if name.startswith(_STANDALONE)
            else libs["dlv" if name.startswith("dlv_") else "task"]
        )
        if name in _PIECES:
            piece = _PIECES[name]
            lib = f"{lib}\n-- ==== {piece}.lua ====\n{_read(piece)}"
        source = f"{lib}\n-- ==== {name}.lua ====\n{_read(name)}"
        sha = hashlib.sha1(source.encode("utf-8"), usedforsecurity=False).hexdigest()
        out[name] = Script(name=name, source=source, sha=sha)
    return out
