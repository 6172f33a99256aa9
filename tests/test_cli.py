"""Every ``codeq`` client command, run as a subprocess against a live ``codeq serve`` on real
Redis (the end-to-end check of the CLI, the SDK under it and the server)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from codeq.client import CodeQClient, NotFound
from codeq.webhooks import sign
from tests.served import TOKEN, Served, serve
from tests.servers import RedisServer, free_port, wait_for

SECRET = "whsec_" + "c2VjcmV0LWZvci10aGUtY2xpLXRlc3RzLTMyYg=="


@pytest.fixture(scope="module")
def served(redis_server: RedisServer) -> Iterator[Served]:
    env = {
        "REDIS_ADDR": f"127.0.0.1:{redis_server.port}",
        "KEY_PREFIX": f"cli{free_port()}",
        "WEBHOOK_HMAC_SECRET": SECRET,
        "SWEEP_INTERVAL_MS": "100",
        "BACKOFF_BASE_SECONDS": "0.2",
        "BACKOFF_MAX_SECONDS": "0.5",
        "WEBHOOK_RETRY_SCHEDULE": "0.2,0.2,0.2,0.2",
    }
    with serve(env) as s:
        yield s


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "codeq-config"


class Cli:
    def __init__(self, base: str, home: Path) -> None:
        self.env = {
            **os.environ,
            "CODEQ_BASE_URL": base,
            "CODEQ_TOKEN": TOKEN,
            "CODEQ_CONFIG_DIR": str(home),
            "COLUMNS": "200",
        }
        for name in ("CODEQ_PROFILE", "CODEQ_PRODUCER_TOKEN", "CODEQ_WORKER_TOKEN"):
            self.env.pop(name, None)

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "codeq.cli", *args]

    def run(
        self, *args: str, input: str | None = None, code: int = 0, **env: str
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args),
            input=input,
            capture_output=True,
            text=True,
            env={**self.env, **env},
            timeout=120,
        )
        assert done.returncode == code, (
            f"codeq {' '.join(args)} → {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
        return done

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.run("--json", *args, **kw).stdout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def cli(served: Served, home: Path) -> Cli:
    return Cli(served.base, home)


@pytest.fixture
def sdk(served: Served) -> Iterator[CodeQClient]:
    with CodeQClient(served.base, token=TOKEN) as client:
        yield client


def unique(name: str) -> str:
    return f"{name}_{time.monotonic_ns()}"


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Stderr:
    """A process's stderr read as it comes (a thread), so a test can wait for a line it writes
    and still have all of it."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.text = ""
        self._thread = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.text += line

    def done(self) -> str:
        self._thread.join(5)
        return self.text


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running after {timeout} s\n{out}\n{err}") from None


# -- profiles and local commands --------------------------------------------------------------


def test_init_auth_and_precedence(served: Served, home: Path) -> None:
    cli = Cli(served.base, home)
    del cli.env["CODEQ_BASE_URL"], cli.env["CODEQ_TOKEN"]
    saved = cli.json("init", "--base-url", served.base, "--token", TOKEN)
    config = home / "config.yaml"
    assert saved["path"] == str(config) and config.exists()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # it holds tokens
    assert TOKEN in config.read_text()

    shown = cli.json("auth", "show")
    assert shown["baseUrl"] == served.base and TOKEN not in json.dumps(shown)
    assert cli.json("health")["status"] == "ready"  # the profile alone reaches the server

    # flag > env > profile
    assert cli.json("auth", "show", CODEQ_BASE_URL="http://env:1")["baseUrl"] == "http://env:1"
    flagged = cli.json("--base-url", "http://flag:2", "auth", "show", CODEQ_BASE_URL="http://env:1")
    assert flagged["baseUrl"] == "http://flag:2"

    cli.run("auth", "set", "--worker-token", "w-token-123456")
    assert cli.json("auth", "show")["workerToken"].startswith("w-to")
    cli.run("--profile", "other", "init", "--base-url", "http://other:3")
    assert cli.json("auth", "show")["baseUrl"] == "http://other:3"  # init made it current
    assert cli.json("--profile", "default", "auth", "show")["baseUrl"] == served.base

    cli.run("--profile", "default", "auth", "clear")
    cleared = cli.json("--profile", "default", "auth", "show")
    assert cleared["token"] is None and cleared["workerToken"] is None

    missing = cli.run("--profile", "nope", "auth", "show", code=1)
    assert "no profile 'nope'" in missing.stderr


def test_version_config_show_and_exit_codes(cli: Cli) -> None:
    from codeq import __version__

    assert cli.run("version").stdout.strip() == f"codeq {__version__}"
    assert cli.json("version") == {"version": __version__}

    shown = json.loads(cli.run("config", "show", PARTITIONS="4", WEBHOOK_HMAC_SECRET=SECRET).stdout)
    assert shown["partitions"] == 4 and shown["webhookHmacSecret"] == "***"

    bad = cli.run("config", "show", PARTITIONS="zero", code=2)
    assert "PARTITIONS" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert "No such option" in cli.run("task", "get", "--nope", code=2).stderr
    assert (
        "not_found" in cli.run("task", "get", "01a22495-0ba1-7560-8616-05d8418c13df", code=1).stderr
    )
    assert "--command is required" in cli.run("task", "create", code=2).stderr
    assert (
        "--payload: not valid JSON"
        in cli.run("task", "create", "-c", "X", "--payload", "{", code=2).stderr
    )


# -- tasks by hand ----------------------------------------------------------------------------


def test_task_commands_by_hand(cli: Cli) -> None:
    command = unique("HAND")
    created = cli.json("task", "create", "-c", command, "--payload", '{"n": 1}', "--priority", "5")
    assert created["status"] == "PENDING" and created["priority"] == 5
    human = cli.run("task", "get", created["id"]).stdout
    assert created["id"] in human and "PENDING" in human

    claimed = cli.json("task", "claim", "-c", command, "--lease-seconds", "60")
    assert claimed["id"] == created["id"] and claimed["leaseId"]
    beat = cli.json(
        "task",
        "heartbeat",
        created["id"],
        "--lease-id",
        claimed["leaseId"],
        "--extend-seconds",
        "90",
    )
    assert beat["ok"] is True
    nacked = cli.json("task", "nack", created["id"], "--reason", "later", "--delay-seconds", "0")
    assert nacked["status"] == "requeued"

    again = cli.json("task", "claim", "-c", command, "--wait-seconds", "5")
    assert again["id"] == created["id"] and again["attempts"] == 2
    assert cli.json("task", "abandon", created["id"])["status"] == "requeued"

    third = cli.json("task", "claim", "-c", command)
    stale = cli.run(
        "task",
        "complete",
        created["id"],
        "--lease-id",
        claimed["leaseId"],
        "--result",
        "{}",
        code=1,
    )
    assert "lease_mismatch" in stale.stderr
    done = cli.json(
        "task", "complete", created["id"], "--lease-id", third["leaseId"], "--result", '{"ok": 1}'
    )
    assert done["status"] == "COMPLETED"
    result = cli.json("task", "result", created["id"])
    assert result["result"]["result"] == {"ok": 1} and result["task"]["status"] == "COMPLETED"
    assert (
        "not_in_progress" in cli.run("task", "fail", created["id"], "--error", "x", code=1).stderr
    )

    other = cli.json("task", "create", "-c", command, "--payload", "[]")
    cli.json("task", "claim", "-c", command)
    assert cli.json("task", "fail", other["id"], "--error", "bad input")["status"] == "FAILED"
    assert cli.json("task", "claim", "-c", command) is None  # nothing left: JSON null, exit 0

    history = cli.json("task", "history", created["id"])["events"]
    assert [e["type"] for e in history] == [
        "task.created",
        "task.claimed",
        "task.nacked",
        "task.claimed",
        "task.abandoned",
        "task.claimed",
        "task.completed",
    ]
    assert "task.nacked" in cli.run("task", "history", created["id"]).stdout
    withdrawn = cli.json("task", "create", "-c", command, "--payload", "{}")
    cancelled = cli.json("task", "cancel", withdrawn["id"], "--reason", "not needed")
    assert cancelled["status"] == "CANCELLED" and cancelled["error"] == "not needed"
    assert "not_cancellable" in cli.run("task", "cancel", created["id"], code=1).stderr


def test_create_from_file_10000_lines_through_the_batch_route(cli: Cli, tmp_path: Path) -> None:
    command = unique("BULK")
    lines = [json.dumps({"command": command, "payload": {"i": i}}) for i in range(10_000)]
    path = tmp_path / "tasks.jsonl"
    path.write_text("\n".join(lines) + "\n")
    done = cli.run("task", "create", "--from-file", str(path))
    assert done.stdout.strip() == "created 10000, failed 0"
    assert "10000/10000" in done.stderr  # the progress bar's last state
    stats = cli.json("queue", "stats", command)
    assert stats["ready"] == 10_000

    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        json.dumps({"command": command, "payload": 1})
        + "\n{oops\n"
        + json.dumps({"command": "bad command", "payload": 1})
        + "\n"
    )
    report = cli.run("--json", "task", "create", "--from-file", str(mixed), code=1)
    summary = json.loads(report.stdout)
    assert (summary["created"], summary["failed"]) == (1, 2)
    assert [e["line"] for e in summary["errors"]] == [2, 3]


# -- the worker -----------------------------------------------------------------------------

HANDLER = (
    f'{sys.executable} -c "import json, sys; t = json.load(sys.stdin); '
    "p = json.loads(t['payload']); print(json.dumps({'double': p['n'] * 2}))\""
)


def test_worker_start_with_a_handler_that_succeeds(cli: Cli, sdk: CodeQClient) -> None:
    command = unique("DOUBLE")
    ids = [sdk.create_task(command, {"n": n}).id for n in range(4)]
    done = cli.run(
        "--json",
        "worker",
        "start",
        "--events",
        command,
        "--handler",
        HANDLER,
        "--concurrency",
        "2",
        "--wait-seconds",
        "1",
        "--max-tasks",
        "4",
    )
    summary = json.loads(done.stdout)
    assert summary["completed"] == 4 and summary["nacked"] == 0
    results = {sdk.get_result(i).result.result["double"] for i in ids}
    assert results == {0, 2, 4, 6}
    # one line per task on stderr: id, command, outcome, duration
    lines = [line for line in done.stderr.splitlines() if " completed in " in line]
    assert len(lines) == 4, done.stderr
    for task_id in ids:
        (line,) = [line for line in lines if task_id in line]
        assert re.search(rf"task {task_id} {command} completed in \d+\.\d\d s$", line), line


def test_a_failing_handler_is_nacked_then_dead_lettered(cli: Cli, sdk: CodeQClient) -> None:
    command = unique("BROKEN")
    task = sdk.create_task(command, {}, max_attempts=2)
    done = cli.run(
        "--json",
        "worker",
        "start",
        "-e",
        command,
        "--handler",
        "echo 'cannot parse' >&2; exit 3",
        "--wait-seconds",
        "2",
        "--max-tasks",
        "2",
        code=1,  # --max-tasks: the exit code says a task failed
    )
    summary = json.loads(done.stdout)
    assert summary["nacked"] == 2
    assert done.stderr.count("cannot parse\n") >= 2  # the handler's stderr passes through
    assert done.stderr.count(f"{task.id} {command} nacked in ") == 2, done.stderr
    dead = sdk.get_task(task.id)
    assert dead.status == "FAILED" and dead.attempts == 2
    assert dead.error == "HandlerFailed: exit 3: cannot parse"

    dlq = cli.json("queue", "dlq", command)
    assert [t["id"] for t in dlq["tasks"]] == [task.id]
    assert command.lower() in cli.run("queue", "list").stdout
    assert cli.json("queue", "requeue", command)["requeued"] == 1
    assert (
        cli.json("worker", "start", "-e", command, "--ack", "complete", "--max-tasks", "1")[
            "completed"
        ]
        == 1
    )
    cleaned = cli.json("admin", "cleanup", "--before", "2100-01-01T00:00:00Z")
    assert cleaned["deleted"] >= 1
    with pytest.raises(NotFound):
        sdk.get_task(task.id)


def test_ack_modes(cli: Cli, sdk: CodeQClient) -> None:
    command = unique("ACK")
    task = sdk.create_task(command, {}, max_attempts=3)
    assert (
        cli.json("worker", "start", "-e", command, "--ack", "abandon", "--max-tasks", "1")[
            "abandoned"
        ]
        == 1
    )
    assert sdk.get_task(task.id).status == "PENDING"
    nacked = cli.run("--json", "worker", "start", "-e", command, "--ack", "nack", "--once", code=1)
    assert json.loads(nacked.stdout)["nacked"] == 1
    assert (
        "exactly one of --handler or --ack"
        in cli.run("worker", "start", "-e", command, code=2).stderr
    )


def test_ctrl_c_finishes_the_running_task_and_a_second_abandons(
    cli: Cli, sdk: CodeQClient, tmp_path: Path
) -> None:
    command = unique("CTRLC")
    marker = tmp_path / "started"
    handler = f"touch {marker}-$CODEQ_TASK_ID; sleep 2; echo '{{\"slept\": 2}}'"

    task = sdk.create_task(command, {})
    worker = cli.start("--json", "worker", "start", "-e", command, "--handler", handler)
    wait_for(lambda: Path(f"{marker}-{task.id}").exists(), timeout=20, message="handler not run")
    worker.send_signal(signal.SIGINT)  # Ctrl-C: stop claiming, finish the task
    out, err = finish(worker)
    assert worker.returncode == 0, err
    assert json.loads(out)["completed"] == 1
    assert sdk.get_result(task.id).result.result == {"slept": 2}

    slow = f"touch {marker}-$CODEQ_TASK_ID; sleep 60"
    task = sdk.create_task(command, {})
    worker = cli.start("--json", "worker", "start", "-e", command, "--handler", slow)
    stderr = Stderr(worker)
    wait_for(lambda: Path(f"{marker}-{task.id}").exists(), timeout=20, message="handler not run")
    worker.send_signal(signal.SIGINT)
    # A second SIGINT sent before the first is delivered merges with it (the kernel keeps one
    # pending): wait until the worker has taken the first, as a person's second press would.
    wait_for(lambda: "stopping:" in stderr.text, timeout=10, message="first Ctrl-C not taken")
    assert sdk.get_task(task.id).status == "IN_PROGRESS"
    worker.send_signal(signal.SIGINT)  # the second Ctrl-C: give it back now
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        worker.kill()
        with worker:  # waits, closes its pipes once stderr is read to its end
            text = stderr.done()
        raise AssertionError(f"still running after 15 s\n{text}") from None
    with worker:  # closes its pipes
        out, err = worker.stdout.read() if worker.stdout else "", stderr.done()
    assert worker.returncode == 0, err
    assert json.loads(out)["abandoned"] == 1
    after = sdk.get_task(task.id)
    assert after.status == "PENDING" and after.attempts == 1


# -- webhooks and deliveries ----------------------------------------------------------------


def test_webhook_verify_a_captured_delivery(cli: Cli) -> None:
    body = b'{"type":"task.completed","data":{"id":"t1"}}'
    headers = sign(body, secrets=[SECRET], msg_id="msg_1")
    capture = "POST /hook HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    capture += "\r\n" + body.decode()
    assert cli.run("webhook", "verify", "--secret", SECRET, input=capture).stdout.strip() == "valid"
    doc = json.dumps({"headers": headers, "body": body.decode()})
    assert cli.json("webhook", "verify", input=doc, CODEQ_WEBHOOK_SECRET=SECRET)["valid"] is True

    wrong = "whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC0zMmI="
    bad = cli.run("webhook", "verify", "--secret", wrong, input=capture, code=1)
    assert bad.stdout.startswith("invalid: no matching signature")
    tampered = capture.replace("t1", "t2")
    assert cli.run("webhook", "verify", "--secret", SECRET, input=tampered, code=1)


def test_webhook_listen_receives_and_verifies_a_real_delivery(cli: Cli, sdk: CodeQClient) -> None:
    port = free_port()
    listener = cli.start(
        "--json", "webhook", "listen", "--port", str(port), "--secret", SECRET, "--count", "1"
    )
    wait_for(lambda: listening(port), timeout=20, message="webhook listen did not start")
    command = unique("HOOKED")
    cli.run(
        "task",
        "create",
        "-c",
        command,
        "--payload",
        '{"x": 1}',
        "--webhook",
        f"http://127.0.0.1:{port}/done",
    )
    claimed = cli.json("task", "claim", "-c", command)
    cli.run("task", "complete", claimed["id"], "--result", '{"answer": 42}')
    out, err = finish(listener)
    assert listener.returncode == 0, err
    delivery = json.loads(out.strip().splitlines()[-1])
    assert delivery["verified"] is True and delivery["path"] == "/done"
    assert delivery["body"]["taskId"] == claimed["id"] and delivery["type"] == "task.completed"
    assert delivery["body"]["result"] == {"answer": 42}
    assert delivery["webhookId"].startswith("msg_")


def test_dead_deliveries_are_listed_and_replayed(cli: Cli, sdk: CodeQClient) -> None:
    port = free_port()
    wrong = "whsec_" + "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC0zMmI="
    # A listener with the wrong secret answers 401: three 4xx attempts, then the DLQ.
    listener = cli.start("--json", "webhook", "listen", "--port", str(port), "--secret", wrong)
    try:
        wait_for(lambda: listening(port), timeout=20, message="webhook listen did not start")
        command = unique("DEADHOOK")
        task = sdk.create_task(command, {}, webhook=f"http://127.0.0.1:{port}/x")
        assert sdk.claim([command]) is not None
        sdk.complete(task.id, {})

        def dead() -> list[dict[str, Any]]:
            found = cli.json("deliveries", "dlq")["deliveries"]
            return [d for d in found if d.get("taskId") == task.id]

        wait_for(lambda: bool(dead()), timeout=30, message="delivery never dead-lettered")
        entry = dead()[0]
        assert entry["attempts"] == 3 and entry["status"] == "dead"
        shown = cli.json("deliveries", "get", entry["id"])
        assert [a["statusCode"] for a in shown["attemptLog"]] == [401, 401, 401]
        assert "dead" in cli.run("deliveries", "dlq").stdout
        assert cli.json("deliveries", "replay", "--id", entry["id"])["replayed"] == 1
        wait_for(
            lambda: len(cli.json("deliveries", "get", entry["id"])["attemptLog"]) > 3,
            timeout=30,
            message="the replayed delivery was not attempted",
        )
        assert cli.json("deliveries", "retry", entry["id"])["replayed"] == 1
        # dead again (the secret is still wrong): replayed with every other dead one, in
        # chunks, with the bar's last state on stderr in a pipe
        wait_for(
            lambda: any(d["id"] == entry["id"] for d in dead()),
            timeout=30,
            message="the retried delivery did not die again",
        )
        every = cli.run("deliveries", "replay")
        replayed = int(every.stdout.split()[-1])
        assert replayed >= 1
        assert "replaying" in every.stderr and f"{replayed}/{replayed}" in every.stderr
    finally:
        listener.send_signal(signal.SIGINT)
        finish(listener)
    assert listener.returncode == 0


def test_health_waits_for_a_server(home: Path) -> None:
    cli = Cli(f"http://127.0.0.1:{free_port()}", home)
    down = cli.run("health", code=1)
    assert "not ready" in down.stderr


# -- at the terminal: pipes, unreachable servers, start-up, refused tokens ------------------

BOX = re.compile("[\u2500-\u257f]")  # box drawing: a table's lines


def test_in_a_pipe_output_is_full_ids_and_tab_separated(cli: Cli, sdk: CodeQClient) -> None:
    command = unique("PIPE")
    task = sdk.create_task(command, {"text": "a\tb\nc"})
    shown = cli.run("task", "get", task.id).stdout  # stdout is a pipe here
    assert not BOX.search(shown), shown
    fields = dict(line.split("\t") for line in shown.splitlines())
    assert fields["id"] == task.id and fields["status"] == "PENDING"
    assert fields["command"] == command.lower() or fields["command"] == command
    assert "\\t" in fields["payload"] and "\\n" in fields["payload"]  # one line per field

    queues = cli.run("queue", "list").stdout.splitlines()
    assert queues[0].split("\t") == ["command", "ready", "delayed", "inProgress", "dlq"]
    assert any(row.split("\t")[0] == command.lower() for row in queues[1:]), queues

    assert json.loads(cli.run("--output", "json", "task", "get", task.id).stdout)["id"] == task.id
    assert json.loads(cli.run("task", "get", task.id, CODEQ_OUTPUT="json").stdout)["id"] == task.id
    assert cli.run("-o", "tsv", "task", "get", task.id).stdout == shown
    table = cli.run("--output", "table", "task", "get", task.id).stdout
    assert task.id in table  # a table asked for by name: whole ids still
    bad = cli.run("--output", "yaml", "version", code=2)
    assert "--output: expected json, table or tsv" in bad.stderr


def test_an_unreachable_server_is_one_sentence_and_exit_2(home: Path) -> None:
    base = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cli = Cli(base, home)
    for args in (("task", "get", "x"), ("queue", "list"), ("task", "claim", "-c", "A")):
        down = cli.run(*args, code=2)
        assert down.stderr == f"codeq: cannot reach {base}: connection refused\n", down.stderr
        assert down.stdout == ""


def test_the_cli_starts_without_the_sdk_rich_or_the_server() -> None:
    """Start-up stays short (spec 05; under 0.5 s, was 1.3-1.6 s): a command imports httpx,
    rich, yaml and asyncio only when it uses them."""
    heavy = ("httpx", "rich", "yaml", "asyncio", "codeq.client", "codeq.settings", "litestar")
    probe = (
        "import sys\nfrom codeq.cli import main\n"
        "for argv in (['version'], ['task', '--help'], ['worker', 'start', '--help']):\n"
        "    main(argv)\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_a_refused_token_stops_the_worker_with_a_clear_message(cli: Cli) -> None:
    started = time.monotonic()
    refused = cli.run(
        "--token", "not-a-token", "worker", "start", "-e", unique("NOPE"), "--ack", "complete",
        code=1,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert "refused the worker's token 3 times in a row" in refused.stderr, refused.stderr
    assert "unauthorized" in refused.stderr and "Traceback" not in refused.stderr


def test_once_exits_0_when_the_task_succeeds(cli: Cli, sdk: CodeQClient) -> None:
    command = unique("ONCE")
    task = sdk.create_task(command, {"n": 5})
    done = cli.run("worker", "start", "-e", command, "--handler", HANDLER, "--once")
    assert sdk.get_result(task.id).result.result == {"double": 10}
    assert f"task {task.id} {command} completed in " in done.stderr
    assert (
        "--once and --max-tasks"
        in cli.run(
            "worker",
            "start",
            "-e",
            command,
            "--ack",
            "complete",
            "--once",
            "--max-tasks",
            "2",
            code=2,
        ).stderr
    )


def test_progress_bar_shows_its_last_state_in_a_pipe(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from codeq.cli import app
    from codeq.cli.common import Out, State, progress

    ctx = typer.Context(typer.main.get_command(app))
    ctx.obj = State()
    out = Out(ctx, json_flag=False)
    with progress(out, "requeueing", total=5) as bar:
        bar.advance(3)
        bar.advance(2, failed=1)
    err = capsys.readouterr().err
    assert "requeueing" in err and "5/5" in err and "1 failed" in err


def test_requeue_many_shows_progress_and_counts_what_was_not_dead(
    cli: Cli, sdk: CodeQClient
) -> None:
    command = unique("REQUEUE_MANY")
    dead = []
    for _ in range(3):
        sdk.create_task(command, {}, max_attempts=1)
        claimed = sdk.claim([command])
        assert claimed is not None
        assert sdk.nack(claimed, reason="broken").status == "dlq"
        dead.append(claimed.id)
    alive = sdk.create_task(command, {}).id  # pending, not dead: skipped
    ids = [*dead[:2], alive]
    done = cli.run("--json", "queue", "requeue", command, *(f"--id={i}" for i in ids))
    assert json.loads(done.stdout) == {"requeued": 2, "ids": dead[:2]}
    assert "requeueing" in done.stderr and "3/3" in done.stderr and "1 failed" in done.stderr
    # without ids: every dead task left, counted against the queue's dead count
    rest = cli.run("--json", "queue", "requeue", command)
    assert json.loads(rest.stdout) == {"requeued": 1, "ids": dead[2:]}
    assert "1/1" in rest.stderr and "0 failed" in rest.stderr
    assert sdk.queue_stats(command).dlq == 0
