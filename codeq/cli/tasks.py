"""``codeq task ...``, ``codeq queue ...``, ``codeq admin ...``."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from codeq.cli.common import (
    JsonFlag,
    Out,
    fail,
    parse_json,
    progress,
    split_commands,
    state_of,
)
from codeq.schemas import MAX_REQUEUE_IDS, BatchCreateOut, RequeueOut

task_app = typer.Typer(help="Create, read and work tasks.", no_args_is_help=True)
queue_app = typer.Typer(help="Queues of your tenant (admin token).", no_args_is_help=True)
admin_app = typer.Typer(help="Administration (admin token).", no_args_is_help=True)

TASK_COLUMNS = ("id", "command", "status", "attempts", "priority", "createdAt")
LeaseOpt = Annotated[
    str | None, typer.Option(help="The leaseId of your claim (fences off an expired lease).")
]
BATCH_MAX = 1000


def register(app: typer.Typer) -> None:
    app.add_typer(task_app, name="task")
    app.add_typer(queue_app, name="queue")
    app.add_typer(admin_app, name="admin")


def _show_task(out: Out) -> Any:
    return lambda d: out.record(d) if d else out.line("no task")


# -- task -----------------------------------------------------------------------------------


@task_app.command("create")
def task_create(
    ctx: typer.Context,
    command: Annotated[
        str | None, typer.Option("--command", "-c", help="The task's command.")
    ] = None,
    payload: Annotated[str, typer.Option(help="The payload, as JSON.")] = "{}",
    priority: Annotated[int | None, typer.Option(help="0-9, higher first.")] = None,
    webhook: Annotated[str | None, typer.Option(help="Result callback URL.")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Claims before the DLQ.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Repeat-safe key.")] = None,
    run_at: Annotated[str | None, typer.Option(help="RFC 3339 time to run at.")] = None,
    delay_seconds: Annotated[int | None, typer.Option(help="Run after this delay.")] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            "--from-file",
            help="JSON Lines of create bodies ('-' for stdin), sent through the batch route.",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Tasks per batch request (1-1000).")] = 1000,
    json_out: JsonFlag = False,
) -> None:
    """Create one task, or many with --from-file."""
    out = Out(ctx, json_out)
    if from_file is not None:
        if command is not None:
            fail("--from-file and --command do not go together", usage=True)
        _create_from_file(ctx, out, from_file, batch_size)
        return
    if command is None:
        fail("--command is required (or --from-file)", usage=True)
    with state_of(ctx).client() as cq:
        task = cq.create_task(
            command,
            parse_json(payload, "--payload"),
            priority=priority,
            webhook=webhook,
            max_attempts=max_attempts,
            idempotency_key=idempotency_key,
            run_at=run_at,
            delay_seconds=delay_seconds,
        )
    out.data(task, _show_task(out))


def _lines(source: TextIO) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(source, start=1):
        if line.strip():
            yield number, line


def _create_from_file(ctx: typer.Context, out: Out, path: Path, batch_size: int) -> None:
    if not 1 <= batch_size <= BATCH_MAX:
        fail(f"--batch-size: must be between 1 and {BATCH_MAX}", usage=True)
    if str(path) == "-":
        source: TextIO = sys.stdin
        total = None
    else:
        try:
            source = path.open(encoding="utf-8")
        except OSError as exc:
            fail(f"--from-file: {exc.strerror}: {path}")
        with path.open("rb") as f:
            total = sum(1 for line in f if line.strip())
    created = failed = 0
    errors: list[dict[str, Any]] = []
    # the shared bar (codeq/cli/common.py): live on a terminal, its last state once in a pipe
    with source, progress(out, "creating", total) as bar, state_of(ctx).client() as cq:
        batch: list[tuple[int, Any]] = []

        def flush() -> None:
            nonlocal created, failed
            if not batch:
                return
            answer: BatchCreateOut = cq.create_tasks(body for _, body in batch)
            created += len(answer.tasks)
            for e in answer.errors:
                failed += 1
                if len(errors) < 100:
                    errors.append({"line": batch[e.index][0], "error": e.error, "code": e.code})
            bar.advance(len(batch), failed=failed)
            batch.clear()

        for number, line in _lines(source):
            try:
                body = parse_json(line, "JSON")
            except Exception as exc:  # a bad line is a failed item, not the end of the run
                failed += 1
                if len(errors) < 100:
                    errors.append({"line": number, "error": str(exc), "code": "invalid_json"})
                bar.advance(1, failed=failed)
                continue
            batch.append((number, body))
            if len(batch) >= batch_size:
                flush()
        flush()
    summary = {"created": created, "failed": failed, "errors": errors}

    def human(d: Any) -> None:
        for e in errors[:20]:
            out.note(f"line {e['line']}: {e['error']} ({e['code']})")
        print(f"created {created}, failed {failed}")

    out.data(summary, human)
    if failed:
        raise typer.Exit(1)


@task_app.command("list")
def task_list(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="PENDING, IN_PROGRESS, COMPLETED, FAILED or DEAD.")
    ] = None,
    command: Annotated[str | None, typer.Option("--command", "-c", help="Command.")] = None,
    priority: Annotated[int | None, typer.Option(help="Priority (0-9).")] = None,
    created_after: Annotated[str | None, typer.Option(help="RFC 3339, inclusive.")] = None,
    created_before: Annotated[str | None, typer.Option(help="RFC 3339, exclusive.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Find by this key.")] = None,
    limit: Annotated[int, typer.Option(help="Tasks per page (1-500).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Go on from a page's nextCursor.")] = None,
    all_pages: Annotated[
        bool, typer.Option("--all", help="Follow the cursors to the end.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """List your tenant's tasks, newest first (one page; --all for every page)."""
    out = Out(ctx, json_out)
    filters: dict[str, Any] = {
        "status": status,
        "command": command,
        "priority": priority,
        "created_after": created_after,
        "created_before": created_before,
        "idempotency_key": idempotency_key,
        "limit": limit,
        "cursor": cursor,
    }
    with state_of(ctx).client() as cq:
        if all_pages:
            tasks = [t for t in cq.iter_tasks(**filters)]
            answer: Any = {"tasks": tasks, "nextCursor": None}
        else:
            answer = cq.list_tasks(**filters)
    out.page(answer, "tasks", TASK_COLUMNS, "tasks")


@task_app.command("deliveries")
def task_deliveries(ctx: typer.Context, task_id: str, json_out: JsonFlag = False) -> None:
    """The webhooks a task caused, with their attempts."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.task_deliveries(task_id)

    def human(d: Any) -> None:
        cols = ("id", "kind", "eventType", "status", "attempts", "url", "createdAt")
        out.table(d["deliveries"], cols, title=f"deliveries of {task_id}")

    out.data(answer, human)


@task_app.command("get")
def task_get(ctx: typer.Context, task_id: str, json_out: JsonFlag = False) -> None:
    """Read a task."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        out.data(cq.get_task(task_id), _show_task(out))


@task_app.command("history")
def task_history(ctx: typer.Context, task_id: str, json_out: JsonFlag = False) -> None:
    """What happened to a task, oldest first."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.task_history(task_id)

    def human(d: Any) -> None:
        cols = ("at", "type", "workerId", "attempt", "reason", "error", "delayMs", "runAt")
        out.table(d["events"], cols, title=f"history of {task_id}")

    out.data(answer, human)


@task_app.command("cancel")
def task_cancel(
    ctx: typer.Context,
    task_id: str,
    reason: Annotated[str | None, typer.Option(help="Why (kept as the task's error).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Withdraw a pending task (producer token): it becomes CANCELLED."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        out.data(cq.cancel(task_id, reason=reason), _show_task(out))


@task_app.command("result")
def task_result(ctx: typer.Context, task_id: str, json_out: JsonFlag = False) -> None:
    """Read a task with its result."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.get_result(task_id)

    def human(d: Any) -> None:
        out.record(d["result"], title=f"result of {task_id}")

    out.data(answer, human)


@task_app.command("claim")
def task_claim(
    ctx: typer.Context,
    command: Annotated[
        list[str] | None, typer.Option("--command", "-c", help="Commands (repeat or A,B).")
    ] = None,
    lease_seconds: Annotated[int | None, typer.Option(help="Lease length.")] = None,
    wait_seconds: Annotated[float, typer.Option(help="Long-poll up to this (0-30).")] = 0,
    json_out: JsonFlag = False,
) -> None:
    """Claim one task (prints nothing useful and exits 0 when none is ready: JSON null)."""
    out = Out(ctx, json_out)
    commands = split_commands(command) or None
    with state_of(ctx).client(retries=0) as cq:
        task = cq.claim(commands, lease_seconds=lease_seconds, wait_seconds=wait_seconds)
    out.data(task, _show_task(out))


@task_app.command("heartbeat")
def task_heartbeat(
    ctx: typer.Context,
    task_id: str,
    lease_id: LeaseOpt = None,
    extend_seconds: Annotated[int | None, typer.Option(help="New lease from now.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Extend the lease of a task you hold."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.heartbeat(task_id, lease_id=lease_id, extend_seconds=extend_seconds)
    out.data(answer, lambda d: print(f"lease until {d.get('leaseUntil')}"))


@task_app.command("nack")
def task_nack(
    ctx: typer.Context,
    task_id: str,
    reason: Annotated[str | None, typer.Option(help="Why (stored as the task's error).")] = None,
    delay_seconds: Annotated[float | None, typer.Option(help="Retry after this.")] = None,
    lease_id: LeaseOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Give a task back for a retry later (or the DLQ on its last attempt)."""
    out = Out(ctx, json_out)
    with state_of(ctx).client(retries=0) as cq:
        answer = cq.nack(task_id, reason=reason, delay_seconds=delay_seconds, lease_id=lease_id)
    out.data(answer, lambda d: print(f"{d['status']} (delay {d['delaySeconds']} s)"))


@task_app.command("abandon")
def task_abandon(
    ctx: typer.Context, task_id: str, lease_id: LeaseOpt = None, json_out: JsonFlag = False
) -> None:
    """Give a task back now, no backoff."""
    out = Out(ctx, json_out)
    with state_of(ctx).client(retries=0) as cq:
        answer = cq.abandon(task_id, lease_id=lease_id)
    out.data(answer, lambda d: print(d["status"]))


@task_app.command("complete")
def task_complete(
    ctx: typer.Context,
    task_id: str,
    result: Annotated[str, typer.Option(help="The result, a JSON object.")] = "{}",
    lease_id: LeaseOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Finish a task you hold as COMPLETED."""
    out = Out(ctx, json_out)
    value = parse_json(result, "--result")
    if not isinstance(value, dict):
        fail("--result: must be a JSON object", usage=True)
    with state_of(ctx).client(retries=0) as cq:
        answer = cq.complete(task_id, value, lease_id=lease_id)
    out.data(answer, lambda d: print(f"{d['taskId']}: {d['status']}"))


@task_app.command("fail")
def task_fail(
    ctx: typer.Context,
    task_id: str,
    error: Annotated[str, typer.Option(help="What went wrong.")],
    lease_id: LeaseOpt = None,
    json_out: JsonFlag = False,
) -> None:
    """Finish a task you hold as FAILED (final; use nack to retry)."""
    out = Out(ctx, json_out)
    with state_of(ctx).client(retries=0) as cq:
        answer = cq.fail(task_id, error, lease_id=lease_id)
    out.data(answer, lambda d: print(f"{d['taskId']}: {d['status']}"))


# -- queue / admin --------------------------------------------------------------------------

QUEUE_COLUMNS = ("command", "ready", "delayed", "inProgress", "dlq")


@queue_app.command("list")
def queue_list(ctx: typer.Context, json_out: JsonFlag = False) -> None:
    """Every queue with its depths."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.queues()
    out.data(answer, lambda d: out.table(d["queues"], QUEUE_COLUMNS, "queues"))


@queue_app.command("stats")
def queue_stats(ctx: typer.Context, command: str, json_out: JsonFlag = False) -> None:
    """One queue's depths."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.queue_stats(command)
    out.data(answer, lambda d: out.record(d))


@queue_app.command("dlq")
def queue_dlq(
    ctx: typer.Context,
    command: str,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    cursor: Annotated[str | None, typer.Option(help="From a previous page.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Dead-lettered tasks of a queue."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.dlq(command, limit=limit, cursor=cursor)
    out.page(answer, "tasks", (*TASK_COLUMNS, "error"), f"DLQ of {command}")


#: ids per requeue call when ids are given: the bar moves every this many
REQUEUE_CHUNK = 100


@queue_app.command("requeue")
def queue_requeue(
    ctx: typer.Context,
    command: str,
    task_id: Annotated[
        list[str] | None, typer.Option("--id", help="Task ids (repeat); else every dead task.")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Put dead tasks back into the queue (a progress bar on the terminal; ids that were not
    dead count as failed)."""
    out = Out(ctx, json_out)
    requeued: list[str] = []
    with state_of(ctx).client(retries=0) as cq:
        if task_id:
            with progress(out, "requeueing", total=len(task_id)) as bar:
                for i in range(0, len(task_id), REQUEUE_CHUNK):
                    chunk = task_id[i : i + REQUEUE_CHUNK]
                    requeued += cq.requeue(command, ids=chunk).ids
                    bar.advance(len(chunk), failed=i + len(chunk) - len(requeued))
        else:
            with progress(out, "requeueing", total=cq.queue_stats(command).dlq) as bar:
                while True:  # each call requeues at most MAX_REQUEUE_IDS
                    got = cq.requeue(command)
                    requeued += got.ids
                    bar.advance(got.requeued)
                    if got.requeued < MAX_REQUEUE_IDS:
                        break
    answer = RequeueOut(requeued=len(requeued), ids=requeued)
    out.data(answer, lambda d: print(f"requeued {d['requeued']}"))


@admin_app.command("cleanup")
def admin_cleanup(
    ctx: typer.Context,
    before: Annotated[str | None, typer.Option(help="RFC 3339; default: now.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many tasks.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Purge finished tasks that ended before a time."""
    out = Out(ctx, json_out)
    with state_of(ctx).client(retries=0) as cq:
        answer = cq.cleanup(before=before, limit=limit)
    out.data(answer, lambda d: print(f"deleted {d['deleted']}"))
