"""An httpx client over the app in the test's own event loop (requests may run concurrently,
unlike Litestar's test client, which serialises them through a thread portal)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from litestar import Litestar

from gateway.app import gateway_of
from gateway.state import Gateway


class ApiClient(httpx.AsyncClient):
    gw: Gateway


@contextlib.asynccontextmanager
async def serve_in_process(app: Litestar) -> AsyncIterator[ApiClient]:
    """Run the app's lifespan in a task of its own (its cancel scopes must be entered and left
    by one task; pytest-asyncio sets fixtures up and tears them down in different ones)."""
    started = asyncio.Event()
    stop = asyncio.Event()

    async def lifespan() -> None:
        async with app.lifespan():
            started.set()
            await stop.wait()

    running = asyncio.create_task(lifespan())
    await asyncio.wait(
        {running, asyncio.ensure_future(started.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    if running.done():
        running.result()  # start-up failed: raise its error
    try:
        transport = httpx.ASGITransport(app=app)
        async with ApiClient(transport=transport, base_url="http://testserver", timeout=20) as c:
            c.gw = gateway_of(app)
            yield c
    finally:
        stop.set()
        await running
