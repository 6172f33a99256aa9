"""The round-trip bench is part of the contract: every operation is one script call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def test_every_operation_is_exactly_one_script_call(redis_server: RedisServer) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "roundtrips.py"), "--redis-url", redis_server.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [ln for ln in out.stdout.splitlines() if "script_calls=" in ln]
    ops = {ln.split()[0] for ln in lines}
    assert {
        "create",
        "create_delayed",
        "create_idempotent",
        "claim",
        "heartbeat",
        "nack",
        "abandon",
        "complete",
        "fail",
    } <= ops
    assert all(ln.endswith("script_calls=1 other_commands=0") for ln in lines), out.stdout
