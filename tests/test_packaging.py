"""What ships: the wheel carries the Lua scripts, the public surface does not drift, and each
install (the base one and every extra) holds what it promises and nothing it does not.

The install tests build the wheel once and install it, with one extra at a time, into fresh
virtual environments (``python -m venv --without-pip``, filled by this interpreter's pip from
the wheel and PyPI, through pip's own cache). They run from a directory outside the checkout,
so nothing is imported from the source tree.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import httpx
import pytest

import codeq
import codeq.store
from codeq.cli.common import DISTRIBUTION, EXTRAS, Extra
from codeq.store.scripts import SCRIPT_NAMES, load_scripts
from tests.servers import RedisServer, free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SECRET = "whsec_" + "cGFja2FnaW5nLXNlY3JldC1wYWNrYWdpbmctc2VjcmV0"
TOKEN = "packaging-token"

# What each install must import ("" is the base install), and what it must not hold.
PROMISES: dict[str, tuple[str, ...]] = {
    "": ("codeq", "codeq.client", "codeq.worker", "codeq.webhooks", "codeq.cli"),
    "server": (
        "gateway.app",
        "deliverers.runner",
        "codeq.engine",
        "codeq.store",
        "codeq.metrics",
        "codeq.auth.jwks",
        "uvicorn",
        "uvloop",
    ),
    "memory": ("codeq.engine", "codeq.store", "fakeredis", "lupa"),
    "listen": ("aiohttp.web",),
    "granian": ("granian.server", "granian.constants"),
    "tracing": ("codeq.tracing", "opentelemetry.sdk.trace", "opentelemetry.exporter.otlp"),
}
SERVER_ONLY = ("litestar", "uvicorn", "redis", "hiredis", "jwt", "prometheus_client", "httptools")
ABSENT: dict[str, tuple[str, ...]] = {
    "": (*SERVER_ONLY, "fakeredis", "lupa", "aiohttp", "granian", "opentelemetry"),
    # the image's install: no embedded store, no local receiver
    "server": ("fakeredis", "lupa", "aiohttp", "granian", "opentelemetry"),
    "memory": ("litestar", "uvicorn", "prometheus_client", "aiohttp"),
    "listen": SERVER_ONLY,
    "granian": ("litestar", "redis", "fakeredis"),
    "tracing": SERVER_ONLY,
}


# -- the wheel --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_carries_every_lua_script(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for script in (*SCRIPT_NAMES, "lib", "dlv_lib"):
        assert f"codeq/store/lua/{script}.lua" in names


def test_the_wheel_is_named_and_versioned_once() -> None:
    """The distribution's name is the one the CLI's messages name; the version is the
    source's (``codeq.__version__``), so a checkout and an install agree."""
    assert PROJECT["name"] == DISTRIBUTION == "codeq-tasks"
    assert PROJECT["dynamic"] == ["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", codeq.__version__)


def test_every_extra_the_cli_names_is_declared() -> None:
    declared = set(PROJECT["optional-dependencies"]) - {"dev", "bench"}
    assert set(EXTRAS) == set(get_args(Extra)) == declared == set(PROMISES) - {""}


# -- fresh environments -----------------------------------------------------------------------


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    def output(self) -> str:
        return f"{self.out.read_text()}{self.err.read_text()}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@dataclass
class Venv:
    extra: str
    path: Path
    work: Path  # a directory outside the checkout, for cwd and CODEQ_CONFIG_DIR

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        for name in ("REDIS_ADDR", "REDIS_URL", "PERSISTENCE_PROVIDER", "CODEQ_CONFIG_PATH"):
            env.pop(name, None)
        return {**env, "CODEQ_CONFIG_DIR": str(self.work / "profiles"), **extra}

    def codeq(self, *args: str, code: int = 0, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.path / "bin" / "codeq"), *args],
            cwd=self.work,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == code, f"codeq {' '.join(args)}: {done.stdout}{done.stderr}"
        return done

    def start(self, *args: str, **env: str) -> Running:
        """``codeq *args`` in the background, its output in files (never a full pipe)."""
        name = f"{args[0] if args[0] != '--json' else args[1]}-{uuid.uuid4().hex[:6]}"
        out, err = self.work / f"{name}.out", self.work / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                [str(self.path / "bin" / "codeq"), *args],
                cwd=self.work,
                env=self.env(**env),
                stdout=stdout,
                stderr=stderr,
            )
        return Running(proc, out, err)

    def run_python(self, code: str, *args: str) -> str:
        done = subprocess.run(
            [self.python, "-c", code, *args],
            cwd=self.work,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def installed(self, modules: Sequence[str]) -> list[str]:
        probe = (
            "import importlib.util, sys\n"
            "def found(m):\n"
            "    try: return importlib.util.find_spec(m) is not None\n"
            "    except ModuleNotFoundError: return False\n"
            "print(','.join(m for m in sys.argv[1:] if found(m)))"
        )
        done = subprocess.run(
            [self.python, "-c", probe, *modules],
            cwd=self.work,
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
        )
        return [m for m in done.stdout.strip().split(",") if m]


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Venv]:
    """A fresh environment with the wheel and one extra ("" for the base install), made once
    per extra (and ``pins``, requirements installed with it) for this module."""
    made: dict[tuple[str, tuple[str, ...]], Venv] = {}

    def make(extra: str, pins: tuple[str, ...] = ()) -> Venv:
        if (extra, pins) in made:
            return made[extra, pins]
        root = tmp_path_factory.mktemp(f"venv-{extra or 'base'}")
        env = Venv(extra, root / "venv", root)
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(env.path)],
            check=True,
            timeout=120,
        )
        requirement = f"{wheel}[{extra}]" if extra else str(wheel)
        pip = [sys.executable, "-m", "pip", "--python", env.python, "install", "--quiet"]
        done = subprocess.run(
            [*pip, "--disable-pip-version-check", requirement, *pins],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        made[extra, pins] = env
        return env

    return make


@pytest.mark.parametrize("extra", list(PROMISES), ids=lambda e: e or "base")
def test_each_install_holds_what_it_promises_and_no_more(
    venv: Callable[[str], Venv], extra: str
) -> None:
    env = venv(extra)
    # From the install, not the checkout.
    assert env.run_python("import codeq; print(codeq.__file__)").startswith(str(env.path))
    env.run_python(f"import {', '.join(PROMISES[extra])}")
    assert env.installed(ABSENT[extra]) == []
    # The CLI's view of the extras agrees with what the install holds.
    probe = (
        "from codeq.cli.common import EXTRAS, missing_extra\n"
        "print(','.join(e for e in EXTRAS if missing_extra(e, 'x') is None))"
    )
    assert env.run_python(probe) == extra


def test_the_base_install_runs_the_client_cli_and_names_the_missing_extras(
    venv: Callable[[str], Venv],
) -> None:
    base = venv("")
    assert "task" in base.codeq("--help").stdout
    assert "create" in base.codeq("task", "--help").stdout
    assert base.codeq("version").stdout.strip() == f"codeq {codeq.__version__}"
    assert base.codeq("--json", "config", "show").stdout.startswith("{")

    def refused(*args: str, extra: str, what: str) -> None:
        err = base.codeq(*args, code=1).stderr
        assert err == f"codeq: {what} needs the {extra} extra: pip install 'codeq-tasks[{extra}]'\n"

    refused("serve", extra="server", what="codeq serve")
    refused("gateway", "--server", "granian", extra="server", what="codeq gateway")
    refused("deliver", extra="server", what="codeq deliver")
    refused("webhook", "listen", extra="listen", what="codeq webhook listen")


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def served(venv: Callable[[str], Venv], redis_url: str) -> Iterator[str]:
    """``codeq serve`` from the server install (the image's) on a real Redis; its base URL."""
    with serving(venv("server"), redis_url) as base:
        yield base


@contextmanager
def serving(env: Venv, redis_url: str) -> Iterator[str]:
    """``codeq serve`` from ``env`` on a real Redis; its base URL."""
    port = free_port()
    server = env.start(
        "serve",
        "--port",
        str(port),
        REDIS_URL=redis_url,
        KEY_PREFIX="p" + uuid.uuid4().hex[:12],
        CODEQ_DEV_TOKEN=TOKEN,
        WEBHOOK_HMAC_SECRET=SECRET,
        DATA_DIR=str(env.work / "data"),
        SHUTDOWN_GRACE_SECONDS="2",
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"codeq serve exited: {server.output()}")
        try:
            return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        try:
            wait_for(up, timeout=60)
        except TimeoutError:
            raise AssertionError(f"codeq serve did not come up: {server.output()}") from None
        yield base
    finally:
        server.stop()


def _declared_minimum(extra: str, name: str) -> str:
    """The ``>=`` version pyproject gives ``name`` in ``extra``."""
    (spec,) = [r for r in PROJECT["optional-dependencies"][extra] if re.match(rf"{name}\b", r)]
    found = re.search(r">=\s*([0-9][0-9.]*)", spec)
    assert found, spec
    return found[1]


def _release(version: str) -> list[int]:
    """``0.45`` and ``0.45.0`` alike."""
    parts = [int(p) for p in version.split(".")]
    while parts and parts[-1] == 0:
        parts.pop()
    return parts


def test_the_server_install_serves_on_the_oldest_uvicorn_litestar_and_prometheus_it_allows(
    venv: Callable[..., Venv], redis_url: str
) -> None:
    """The gateway leans on both past their public APIs: its HTTP protocol subclasses
    uvicorn's and uses hooks uvicorn added in 0.45 (gateway/http_protocol.py), and its direct
    routes read Litestar's route table and host check (gateway/direct.py), and the metrics hand
    prometheus_client families of their own (codeq/metrics.py). pyproject allows no older
    ones, and a server installed with exactly the oldest it allows serves: the hot routes
    (served by the protocol itself), a route through Litestar, the JSON 400 for a request the
    HTTP parser refuses, and the scrape."""
    names = ("uvicorn", "litestar", "prometheus-client")
    oldest = {name: _declared_minimum("server", name) for name in names}
    pins = (
        f"uvicorn[standard]=={oldest['uvicorn']}",
        f"litestar=={oldest['litestar']}",
        f"prometheus-client=={oldest['prometheus-client']}",
    )
    env = venv("server", pins=pins)
    probe = "from importlib.metadata import version as v; import sys; print(*map(v, sys.argv[1:]))"
    installed = env.run_python(probe, *names).split()
    assert [_release(x) for x in installed] == [_release(oldest[n]) for n in oldest], installed
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serving(env, redis_url) as base:
        body = {"command": "OLDEST", "payload": {"n": 1}}
        made = httpx.post(f"{base}/v1/codeq/tasks", json=body, headers=auth)
        assert made.status_code == 202, made.text
        claimed = httpx.post(
            f"{base}/v1/codeq/tasks/claim", json={"commands": ["OLDEST"]}, headers=auth
        )
        assert claimed.status_code == 200 and claimed.json()["id"] == made.json()["id"]
        done = httpx.post(
            f"{base}/v1/codeq/tasks/{made.json()['id']}/result",
            json={"status": "COMPLETED", "result": {"ok": True}},
            headers=auth,
        )
        assert done.status_code == 200, done.text
        read = httpx.get(f"{base}/v1/codeq/tasks/{made.json()['id']}", headers=auth)
        assert read.status_code == 200 and read.json()["status"] == "COMPLETED"
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /v1/codeq/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b'"code":"invalid_request"' in answer
        scrape = httpx.get(f"{base}/metrics").text
        assert 'codeq_task_created_total{command="oldest"} 1.0' in scrape
        assert 'codeq_http_request_duration_seconds_bucket{le="+Inf",method="POST"' in scrape


def test_an_uvicorn_without_the_protocols_hooks_is_refused_by_name() -> None:
    """Older than 0.45 (or one that drops them), the gateway refuses to start with a sentence,
    instead of failing every connection as it opens."""
    from gateway.http_protocol import uvicorn_problem

    class Protocol:
        pass

    class Config:
        def __init__(self, app: object) -> None: ...

    assert uvicorn_problem() == ""  # the installed one
    problem = uvicorn_problem(Protocol, Config)
    assert "_start_asgi_task" in problem and "reset_contextvars" in problem
    assert "uvicorn[standard]>=0.45" in problem


def test_the_server_install_serves_the_base_cli_and_the_listener(
    venv: Callable[[str], Venv], served: str
) -> None:
    """The three installs together: the image's (server) on Redis, a producer and worker with
    the base install, and ``codeq webhook listen`` (listen) verifying the signed callback."""
    base, listen = venv(""), venv("listen")
    port = free_port()
    listener = listen.start(
        "--json", "webhook", "listen", "--port", str(port), "--secret", SECRET, "--count", "1"
    )
    try:
        wait_for(lambda: listening(port), timeout=20, message="webhook listen did not start")
        flags = ("--base-url", served, "--token", TOKEN, "--json")
        create = ("task", "create", "-c", "PACKAGED", "--payload", '{"n": 1}')
        base.codeq(*flags, *create, "--webhook", f"http://127.0.0.1:{port}/done")
        claimed = base.codeq(*flags, "task", "claim", "-c", "PACKAGED").stdout
        task_id = json.loads(claimed)["id"]
        base.codeq(*flags, "task", "complete", task_id, "--result", '{"ok": true}')
        listener.proc.wait(30)
    finally:
        code = listener.stop(signal.SIGKILL)
    assert code == 0, listener.output()
    delivery = json.loads(listener.out.read_text().strip().splitlines()[-1])
    assert delivery["verified"] is True and delivery["body"]["taskId"] == task_id


def test_the_server_install_names_the_extras_its_options_and_settings_need(
    venv: Callable[[str], Venv], redis_url: str
) -> None:
    server = venv("server")

    def refused(*args: str, extra: str, what: str, **env: str) -> None:
        err = server.codeq(*args, code=1, **env).stderr
        assert err == f"codeq: {what} needs the {extra} extra: pip install 'codeq-tasks[{extra}]'\n"

    port = str(free_port())
    refused("serve", "--server", "granian", extra="granian", what="--server granian")
    refused("webhook", "listen", extra="listen", what="codeq webhook listen")
    memory = "the embedded store (persistenceProvider memory)"
    refused("serve", "--port", port, extra="memory", what=memory, PERSISTENCE_PROVIDER="memory")
    tracing = {"REDIS_URL": redis_url, "TRACING_ENABLED": "true"}
    refused("serve", "--port", port, extra="tracing", what="tracingEnabled", **tracing)
    refused("deliver", extra="tracing", what="tracingEnabled", **tracing)


def test_the_memory_install_runs_the_engine_on_the_embedded_store(
    venv: Callable[[str], Venv],
) -> None:
    code = (
        "import asyncio\n"
        "from codeq import Engine, NewTask\n"
        "from codeq.store import KeySchema, RedisStore\n"
        "async def main():\n"
        "    engine = Engine(RedisStore.embedded(KeySchema()))\n"
        "    made = await engine.create('t', NewTask(command='C', payload='{}'))\n"
        "    task = await engine.claim('t', 'w', ['C'], lease_seconds=60)\n"
        "    print(task.id == made.task.id)\n"
        "asyncio.run(main())\n"
    )
    assert venv("memory").run_python(code) == "True"


def test_the_tracing_install_records_spans(venv: Callable[[str], Venv]) -> None:
    code = (
        "from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "from codeq.tracing import Tracing\n"
        "spans = InMemorySpanExporter()\n"
        "tracing = Tracing(exporter=spans)\n"
        "with tracing.span('codeq.create'):\n"
        "    pass\n"
        "print([s.name for s in spans.get_finished_spans()])\n"
    )
    assert venv("tracing").run_python(code) == "['codeq.create']"


# -- the source -------------------------------------------------------------------------------


def test_every_script_states_its_contract() -> None:
    for name, script in load_scripts().items():
        own = (ROOT / "codeq" / "store" / "lua" / f"{name}.lua").read_text()
        assert own.startswith(f"-- {name}.lua:"), name
        assert "KEYS" in own.split("\n\n")[0] and "Returns" in own, name
        assert (
            f"-- ==== {name}.lua ====\n{own}\nend\nif redis.REDIS_VERSION then\n" in script.source
        )


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
