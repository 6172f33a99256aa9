"""codeQ: a task queue and signed-webhook gateway on KVRocks/Redis.

The core library: domain types, settings, the store (Lua scripts, Redis/KVRocks and the
embedded store), the engine and the sweeper. Importable without a web server.
"""

from importlib.metadata import PackageNotFoundError, version

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
from codeq.engine import Engine, EngineConfig
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
from codeq.settings import Settings, SettingsError
from codeq.sweeper import Sweeper

try:
    __version__ = version("codeq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

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
