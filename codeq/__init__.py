"""codeQ: a task queue and signed-webhook gateway on KVRocks/Redis.

The core library: domain types, settings, the store (Lua scripts, Redis/KVRocks and the
embedded store), the engine and the sweeper. Importable without a web server.

The distribution is ``codeq-tasks``: its base install holds the client SDK (``codeq.client``,
``codeq.worker``, ``codeq.webhooks``) and the CLI's client commands; the engine and the store
need its ``server`` extra (``memory`` for the embedded store).
"""

import importlib
from typing import TYPE_CHECKING, Any

from codeq.domain import (
    TERMINAL_STATUSES,
    BackoffPolicy,
    CreateOutcome,
    EventType,
    Location,
    NackOutcome,
    NewTask,
    QueueStats,
    ResultStatus,
    Task,
    TaskResult,
    TaskStatus,
)
from codeq.errors import (
    CodeQError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    StoreUnavailable,
    Unauthorized,
)

if TYPE_CHECKING:
    from codeq.engine import Engine, EngineConfig
    from codeq.settings import Settings, SettingsError
    from codeq.sweeper import Sweeper

# The engine, the store and the settings load on first use, so that the client SDK and the
# CLI start without importing redis (spec 05: `codeq` commands answer quickly).
_LAZY = {
    "Engine": "codeq.engine",
    "EngineConfig": "codeq.engine",
    "Settings": "codeq.settings",
    "SettingsError": "codeq.settings",
    "Sweeper": "codeq.sweeper",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'codeq' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


# The one place the version is written: the build reads it (pyproject.toml, tool.hatch.version),
# so a checkout and an install agree, whatever the distribution's name (codeq-tasks).
__version__ = "0.1.0"

__all__ = [
    "TERMINAL_STATUSES",
    "BackoffPolicy",
    "CodeQError",
    "Conflict",
    "CreateOutcome",
    "Engine",
    "EngineConfig",
    "EventType",
    "Forbidden",
    "InvalidRequest",
    "Location",
    "NackOutcome",
    "NewTask",
    "NotFound",
    "QueueStats",
    "RateLimited",
    "ResultStatus",
    "Settings",
    "SettingsError",
    "StoreUnavailable",
    "Sweeper",
    "Task",
    "TaskResult",
    "TaskStatus",
    "Unauthorized",
    "__version__",
]
