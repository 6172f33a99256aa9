"""``codeq deliveries ...``: webhook deliveries: find them (``list``, ``counts``), one with
what it sent (``get``), an endpoint's statistics (``stats``), retry, the dead ones, and replay
jobs (``replay --since ...``, ``recover``) followed with a progress bar."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from codeq.cli.common import JsonFlag, Out, fail, progress, state_of

deliveries_app = typer.Typer(help="Webhook deliveries.", no_args_is_help=True)
REPLAY_CHUNK = 100


def register(app: typer.Typer) -> None:
    app.add_typer(deliveries_app, name="deliveries")


DELIVERY_COLUMNS = ("id", "kind", "eventType", "url", "status", "attempts")
LIST_COLUMNS = ("id", "eventType", "status", "attempts", "endpointId", "taskId", "createdAt")


@deliveries_app.command("list")
def deliveries_list(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="pending, retrying, succeeded, dead or gone.")
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="Of this endpoint (its id).")] = None,
    event_type: Annotated[str | None, typer.Option(help="Of this event type.")] = None,
    task: Annotated[str | None, typer.Option(help="Caused by this task (its id).")] = None,
    created_after: Annotated[str | None, typer.Option(help="RFC 3339, inclusive.")] = None,
    created_before: Annotated[str | None, typer.Option(help="RFC 3339, exclusive.")] = None,
    limit: Annotated[int, typer.Option(help="Deliveries per page (1-500).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Go on from a page's nextCursor.")] = None,
    all_pages: Annotated[
        bool, typer.Option("--all", help="Follow the cursors to the end.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Your tenant's deliveries, newest first (one page; --all for every page)."""
    out = Out(ctx, json_out)
    filters: dict[str, Any] = {
        "status": status,
        "endpoint_id": endpoint,
        "event_type": event_type,
        "task_id": task,
        "created_after": created_after,
        "created_before": created_before,
        "limit": limit,
        "cursor": cursor,
    }
    with state_of(ctx).client() as cq:
        if all_pages:
            answer: Any = {"deliveries": list(cq.iter_deliveries(**filters)), "nextCursor": None}
        else:
            answer = cq.list_deliveries(**filters)
    out.page(answer, "deliveries", LIST_COLUMNS, "deliveries")


@deliveries_app.command("counts")
def deliveries_counts(
    ctx: typer.Context,
    endpoint: Annotated[str | None, typer.Option(help="Of this endpoint (its id).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """How many deliveries your tenant (or one endpoint) has, by status."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.delivery_counts(endpoint_id=endpoint)

    def human(d: Any) -> None:
        out.record({**d["counts"], "total": d["total"]}, title=endpoint or "deliveries")

    out.data(answer, human)


@deliveries_app.command("stats")
def deliveries_stats(ctx: typer.Context, endpoint_id: str, json_out: JsonFlag = False) -> None:
    """An endpoint's attempts over the last hour and day: success rate, latency p50/p90/p99."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.endpoint_stats(endpoint_id)

    def human(d: Any) -> None:
        rows = [
            {"window": name, **d[key]} for name, key in (("hour", "lastHour"), ("day", "lastDay"))
        ]
        columns = ("window", "attempts", "succeeded", "failed", "successRate")
        out.table(rows, (*columns, "p50Ms", "p90Ms", "p99Ms"), title=f"stats of {endpoint_id}")

    out.data(answer, human)


@deliveries_app.command("get")
def deliveries_get(ctx: typer.Context, delivery_id: str, json_out: JsonFlag = False) -> None:
    """A delivery with its attempts and the request its last attempt sent."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.delivery(delivery_id)
    out.data(answer, lambda d: out.record(d))


@deliveries_app.command("retry")
def deliveries_retry(ctx: typer.Context, delivery_id: str, json_out: JsonFlag = False) -> None:
    """Attempt a delivery again now."""
    out = Out(ctx, json_out)
    with state_of(ctx).client(retries=0) as cq:
        answer = cq.retry_delivery(delivery_id)
    out.data(answer, lambda d: print(f"replayed {d.get('replayed')}"))


@deliveries_app.command("dlq")
def deliveries_dlq(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="At most this many.")] = 100,
    json_out: JsonFlag = False,
) -> None:
    """Dead deliveries (admin token)."""
    out = Out(ctx, json_out)
    with state_of(ctx).client() as cq:
        answer = cq.delivery_dlq(limit=limit)
    out.data(answer, lambda d: out.table(d["deliveries"], DELIVERY_COLUMNS, "dead deliveries"))


@deliveries_app.command("replay")
def deliveries_replay(
    ctx: typer.Context,
    delivery_id: Annotated[
        list[str] | None, typer.Option("--id", help="Delivery ids (repeat); else the oldest.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Without --id: at most this many (default: every one).")
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="A replay job: deliveries to this endpoint (its id).")
    ] = None,
    event_type: Annotated[
        str | None, typer.Option(help="A replay job: of this event type.")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="A replay job: dead (default), gone, retrying or succeeded (sent again)."
        ),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="A replay job: created from (RFC 3339; required for one).")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="A replay job: created before (RFC 3339; default now).")
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """Attempt deliveries again with a fresh schedule, with a progress bar on the terminal.
    With --since (and --endpoint, --event-type, --status, --until): a replay job of your
    tenant's deliveries, worked through by the deliverers, its progress polled. With --id: the
    named ones; with neither: the oldest dead ones (admin token, REPLAY_CHUNK per call; named
    ids that were not dead count as failed)."""
    out = Out(ctx, json_out)
    job_flags = (endpoint, event_type, status, until)
    if since is not None or any(f is not None for f in job_flags):
        if delivery_id or limit is not None:
            fail("--id/--limit and the job filters (--since, ...) do not mix", usage=True)
        if since is None:
            fail("a replay job needs --since (a bounded time range)", usage=True)
        with state_of(ctx).client(retries=0) as cq:
            job = cq.create_replay(
                created_after=since,
                created_before=until,
                status=status,
                endpoint_id=endpoint,
                event_type=event_type,
            )
            answer = _follow(out, cq, job, "replaying")
        out.data(answer, _job_line)
        return
    replayed: list[str] = []
    with state_of(ctx).client(retries=0) as cq:
        if delivery_id:
            with progress(out, "replaying", total=len(delivery_id)) as bar:
                for i in range(0, len(delivery_id), REPLAY_CHUNK):
                    chunk = delivery_id[i : i + REPLAY_CHUNK]
                    replayed += cq.replay_deliveries(ids=chunk)["ids"]
                    bar.advance(len(chunk), failed=i + len(chunk) - len(replayed))
        else:
            dead = int(cq.delivery_counts()["counts"].get("dead", 0))
            total = dead if limit is None else min(limit, dead)
            with progress(out, "replaying", total=total) as bar:
                while len(replayed) < total:  # each call takes the oldest dead ones
                    asked = min(REPLAY_CHUNK, total - len(replayed))
                    got = cq.replay_deliveries(limit=asked)["ids"]
                    replayed += got
                    bar.advance(len(got))
                    if len(got) < asked:
                        break
    answer = {"replayed": len(replayed), "ids": replayed}
    out.data(answer, lambda d: print(f"replayed {d['replayed']}"))


@deliveries_app.command("recover")
def deliveries_recover(
    ctx: typer.Context,
    endpoint_id: str,
    since: Annotated[str, typer.Option(help="From this time (RFC 3339).")],
    until: Annotated[str | None, typer.Option(help="Before this time (default now).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Replay what an endpoint missed since a time (its dead and gone deliveries) as a replay
    job, with a progress bar. It does not re-enable the endpoint (PATCH it for that)."""
    out = Out(ctx, json_out)
    with state_of(ctx).client(retries=0) as cq:
        job = cq.recover_endpoint(endpoint_id, since, until)
        answer = _follow(out, cq, job, "recovering")
    out.data(answer, _job_line)


JOB_POLL_SECONDS = 0.5


def _follow(out: Out, cq: Any, job: dict[str, Any], label: str) -> dict[str, Any]:
    """Poll a replay job until it ends, its replayed deliveries on a bar (skipped: failed)."""
    from codeq.client import REPLAY_ENDED  # here: the CLI starts without the SDK

    shown = 0
    with progress(out, label) as bar:
        while True:
            done = int(job["replayed"]) + int(job["skipped"])
            bar.advance(done - shown, failed=int(job["skipped"]))
            shown = done
            if job["status"] in REPLAY_ENDED:
                bar.total(done)
                return job
            time.sleep(JOB_POLL_SECONDS)
            job = cq.replay_job(job["id"])


def _job_line(job: Any) -> None:
    counts = f"replayed {job['replayed']}, skipped {job['skipped']}"
    print(f"replay job {job['id']} {job['status']}: {counts}")
