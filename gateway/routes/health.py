"""Operations routes (no auth): liveness, readiness, metrics."""

from __future__ import annotations

from typing import Any

from litestar import MediaType, Response, get
from litestar.datastructures import State

from codeq.errors import StoreUnavailable
from gateway.metrics import CONTENT_TYPE, Scraper
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
    scraper: Scraper = state.scraper
    # The header as it is, not through ``media_type``: Litestar appends a charset to every
    # text/* type, and Prometheus' type already names one.
    return Response(await scraper.render(), headers={"Content-Type": CONTENT_TYPE})
