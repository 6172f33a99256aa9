"""``codeq deliveries ...``: webhook deliveries."""

from __future__ import annotations

from typing import Annotated

import typer

from codeq.cli.common import JsonFlag, Out, state_of

deliveries_app = typer.Typer(help="Webhook deliveries.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(deliveries_app, name="deliveries")


DELIVERY_COLUMNS = ("id", "kind", "eventType", "url", "status", "attempts")


@deliveries_app.command("get")
def deliveries_get(ctx: typer.Context, delivery_id: str, json_out: JsonFlag = False) -> None:
    """A delivery with its attempts."""
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
    limit: Annotated[int | None, typer.Option(help="Without --id: at most this many.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Attempt dead deliveries again with a fresh schedule (admin token)."""
    out = Out(ctx, json_out)
    with state_of(ctx).client(retries=0) as cq:
        answer = cq.replay_deliveries(ids=delivery_id, limit=limit)
    out.data(answer, lambda d: print(f"replayed {d.get('replayed')}"))
