"""What ships: the Lua scripts are in the wheel, and the public surface does not drift."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import codeq
import codeq.store
from codeq.store.scripts import SCRIPT_NAMES, load_scripts

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_carries_every_lua_script(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("codeq-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for script in (*SCRIPT_NAMES, "lib", "dlv_lib"):
        assert f"codeq/store/lua/{script}.lua" in names


def test_every_script_states_its_contract() -> None:
    for name, script in load_scripts().items():
        own = (ROOT / "codeq" / "store" / "lua" / f"{name}.lua").read_text()
        assert own.startswith(f"-- {name}.lua:"), name
        assert "KEYS" in own.split("\n\n")[0] and "Returns" in own, name
        assert script.source.endswith(own)


def test_public_surface() -> None:
    assert sorted(codeq.__all__) == sorted(
        [
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
    )
    assert sorted(codeq.store.__all__) == [
        "KeySchema",
        "PartitionKeys",
        "RedisStore",
        "Store",
        "StoreError",
        "StoreHandshakeError",
        "check_store",
        "open_store",
    ]
    for module in (codeq, codeq.store):
        for name in module.__all__:
            assert hasattr(module, name), name


def test_redis_is_imported_only_under_codeq_store() -> None:
    for path in (ROOT / "codeq").rglob("*.py"):
        if "store" in path.relative_to(ROOT / "codeq").parts:
            continue
        text = path.read_text()
        assert "import redis" not in text and "from redis" not in text, path


def test_the_core_library_loads_without_the_web_stack() -> None:
    """A worker using only ``codeq`` (engine, settings, auth) does not pay for Litestar."""
    probe = (
        "import sys, codeq, codeq.engine, codeq.settings, codeq.auth, codeq.cli; "
        "print(','.join(m for m in ('litestar', 'uvicorn', 'gateway') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == ""
