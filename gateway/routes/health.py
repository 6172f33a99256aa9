"""Operations routes (no auth): liveness, readiness, metrics."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Response, get
from litestar.datastructures import State

from codeq.errors import StoreUnavailable
from gateway.state import get_gateway

__all__ = ["healthz", "metrics", "readyz"]


@get("/healthz", tags=["operations"], summary="200 while the process lives")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz", tags=["operations"], summary="200 when the store answers, else 503")
async def readyz(state: State) -> Response[dict[str, str]]:
    gw = get_gateway(state)
    if gw.shutting_down.is_set():
        return Response({"status": "shutting down"}, status_code=503, headers={"Retry-After": "1"})
    try:
        await gw.store.ping()
    except StoreUnavailable:
        return Response(
            {"status": "store unavailable"}, status_code=503, headers={"Retry-After": "1"}
        )
    return Response({"status": "ready"}, status_code=200)


@get("/metrics", tags=["operations"], media_type=MediaType.TEXT, summary="Prometheus text")
async def metrics(state: State) -> Response[Any]:
    gw = get_gateway(state)
    gw.metrics.long_polls_waiting.set(gw.waker.waiting())
    return Response(
        gw.metrics.render(),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
