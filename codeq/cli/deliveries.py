"""``codeq deliveries ...``: webhook deliveries: find them (``list``, ``counts``), one with
what it sent (``get``), an endpoint's statistics (``stats``), retry and the dead ones."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from codeq.cli.common import JsonFlag, Out, progress, state_of

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

    def human(d: Any) -> None:
        out.table(d["deliveries"], LIST_COLUMNS, title="deliveries")
        if d["nextCursor"]:
            out.note(f"more: --cursor {d['nextCursor']}")

    out.data(answer, human)


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
    json_out: JsonFlag = False,
) -> None:
    """Attempt dead deliveries again with a fresh schedule (admin token), REPLAY_CHUNK per call,
    with a progress bar on the terminal (named ids that were not dead count as failed)."""
    out = Out(ctx, json_out)
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
