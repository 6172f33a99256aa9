"""``codeq worker start``: the worker runtime with a shell command as the handler.

``--handler CMD`` runs ``CMD`` (through ``sh -c``) once per task, with the task JSON (as the API
returns it; ``payload`` is a JSON-encoded string) on stdin and ``CODEQ_TASK_ID``,
``CODEQ_TASK_COMMAND``, ``CODEQ_TASK_ATTEMPT`` in the environment:
- exit 0 → ``COMPLETED``; stdout is the result: a JSON object as is, other JSON as
  ``{"value": ...}``, text as ``{"output": "..."}``, nothing as ``{}``;
- a non-zero exit → nack with the end of stderr as the reason (the server retries with backoff,
  then dead-letters after ``maxAttempts``).
What the handler writes to stderr passes through to the worker's stderr as it comes. Each task
handled is one line on stderr (id, command, outcome, seconds).
The handler runs in its own session, so a Ctrl-C at the terminal reaches the worker only: the
first one stops claiming and lets running handlers finish (``--grace-seconds``), a second one
abandons them (their processes are killed and the tasks go back to the queue).

Without ``--handler``, ``--ack complete|abandon|nack`` answers every task the same way.

Exit codes: 0; with ``--once``/``--max-tasks``, 1 when a task did not succeed (its handler
failed, or its answer was not taken); 1 when the server refuses the worker's token (three
claims in a row), instead of waiting for ever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from codeq.cli.common import JsonFlag, Out, fail, split_commands, state_of
from codeq.errors import Forbidden, Unauthorized

if TYPE_CHECKING:  # the runtime loads with the command (httpx): `codeq --help` stays quick
    import asyncio

    from codeq.worker import Job, Worker

worker_app = typer.Typer(help="Run a worker.", no_args_is_help=True)

REASON_CHARS = 2000


def register(app: typer.Typer) -> None:
    app.add_typer(worker_app, name="worker")


class HandlerFailed(Exception):
    """The handler command exited non-zero; the text is what it wrote to stderr."""


def _result_of(stdout: bytes) -> dict[str, Any]:
    text = stdout.decode(errors="replace").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"output": text[-65536:]}
    return value if isinstance(value, dict) else {"value": value}


async def _pass_through(stream: asyncio.StreamReader, keep: bytearray) -> None:
    """Copy the handler's stderr to ours as it comes, keeping its last ``REASON_CHARS``
    bytes for the nack reason."""
    sink = sys.stderr.buffer
    while chunk := await stream.read(65536):
        sink.write(chunk)
        sink.flush()
        keep.extend(chunk)
        del keep[: max(0, len(keep) - REASON_CHARS * 4)]


def shell_handler(cmd: str) -> Any:
    import asyncio

    import msgspec

    async def run(job: Job) -> dict[str, Any]:
        env = {
            **os.environ,
            "CODEQ_TASK_ID": job.id,
            "CODEQ_TASK_COMMAND": job.command,
            "CODEQ_TASK_ATTEMPT": str(job.attempts),
        }
        proc = await asyncio.create_subprocess_shell(
            cmd,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,  # Ctrl-C at the terminal is the worker's to handle
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin, stdout_pipe, stderr_pipe = proc.stdin, proc.stdout, proc.stderr
        stderr = bytearray()

        async def feed() -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                stdin.write(msgspec.json.encode(job.task))
                await stdin.drain()
                stdin.close()

        io = asyncio.gather(feed(), stdout_pipe.read(), _pass_through(stderr_pipe, stderr))
        try:
            _, stdout, _ = await io
            await proc.wait()
        except asyncio.CancelledError:  # abandoned: the handler stops with the task
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            io.cancel()
            await proc.wait()
            raise
        if proc.returncode != 0:
            tail = stderr.decode(errors="replace").strip()[-REASON_CHARS:]
            raise HandlerFailed(f"exit {proc.returncode}" + (f": {tail}" if tail else ""))
        return _result_of(stdout)

    return run


def ack_handler(mode: str) -> Any:
    async def run(job: Job) -> dict[str, Any]:
        if mode == "nack":
            raise HandlerFailed("nacked by --ack nack")
        return {}

    return run


def _abandoning() -> type[Worker]:
    from codeq.worker import Outcome, Worker

    class AbandonAll(Worker):
        """``--ack abandon``: every claimed task is given straight back."""

        async def _handle(self, task: Any) -> tuple[Outcome, str]:
            return await self._report(self.client.abandon(task), "abandoned"), ""

    return AbandonAll


def _log_tasks(out: Out) -> None:
    """The runtime's lines (one per task, refusals, lost leases) on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("codeq.worker")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@worker_app.command("start")
def worker_start(
    ctx: typer.Context,
    events: Annotated[
        list[str],
        typer.Option("--events", "-e", help="Commands to work on (repeat or A,B)."),
    ],
    handler: Annotated[
        str | None, typer.Option(help="Shell command run per task (task JSON on stdin).")
    ] = None,
    ack: Annotated[
        str | None, typer.Option(help="Without --handler: complete, abandon or nack.")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Tasks at a time.")] = 1,
    lease_seconds: Annotated[int, typer.Option(help="Lease per claim; heartbeats at 1/3.")] = 300,
    wait_seconds: Annotated[float, typer.Option(help="Long-poll wait per claim (0-30).")] = 20,
    max_tasks: Annotated[
        int | None,
        typer.Option(help="Stop after handling this many tasks; exit 1 if one did not succeed."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Handle one task, then stop (--max-tasks 1).")
    ] = False,
    grace_seconds: Annotated[
        float, typer.Option(help="On Ctrl-C/SIGTERM, let running tasks finish this long.")
    ] = 30,
    json_out: JsonFlag = False,
) -> None:
    """Claim tasks and run a handler for each, until Ctrl-C (or --max-tasks)."""
    out = Out(ctx, json_out)
    commands = split_commands(events)
    if not commands:
        fail("--events: name at least one command", usage=True)
    if (handler is None) == (ack is None):
        fail("give exactly one of --handler or --ack", usage=True)
    if ack is not None and ack not in ("complete", "abandon", "nack"):
        fail(f"--ack: expected complete, abandon or nack, got {ack!r}", usage=True)
    if once:
        if max_tasks not in (None, 1):
            fail("--once and --max-tasks do not go together", usage=True)
        max_tasks = 1
    import asyncio

    from codeq.client import AsyncCodeQClient
    from codeq.worker import NonRetryable, Worker

    options = state_of(ctx).client_options()
    client = AsyncCodeQClient(**options)
    kind = _abandoning() if ack == "abandon" else Worker
    try:
        worker = kind(
            client,
            concurrency=concurrency,
            lease_seconds=lease_seconds,
            wait_seconds=wait_seconds,
            max_tasks=max_tasks,
            non_retryable=(NonRetryable,),
        )
    except ValueError as exc:
        fail(str(exc), usage=True)
    fn = shell_handler(handler) if handler is not None else ack_handler(ack or "complete")
    for command in commands:
        worker.add_handler(command, fn)
    _log_tasks(out)
    out.note(
        f"worker on {', '.join(commands)} at {options['base_url']} (concurrency {concurrency}); "
        "Ctrl-C finishes running tasks, a second Ctrl-C abandons them"
    )

    async def main() -> Any:
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if worker.stopping:
                out.note("abandoning running tasks")
                worker.stop(abandon=True)
            else:
                out.note(f"stopping: running tasks get {grace_seconds:g} s to finish")
                worker.stop(grace=grace_seconds)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            return await worker.run()
        finally:
            await client.aclose()

    try:
        stats = asyncio.run(main())
    except (Unauthorized, Forbidden) as exc:
        which = "refused the worker's token" if isinstance(exc, Unauthorized) else "refused"
        fail(
            f"the server {which} {worker.max_rejections} times in a row: {exc.message} "
            f"({exc.code}); check --token, CODEQ_WORKER_TOKEN or the profile (codeq auth show)"
        )
    summary = dataclasses.asdict(stats)
    out.data(summary, lambda d: print(", ".join(f"{k} {v}" for k, v in d.items())))
    sys.stdout.flush()
    if max_tasks is not None and stats.unsuccessful:
        raise typer.Exit(1)
