"""An httpx client over the app in the test's own event loop (requests may run concurrently,
unlike Litestar's test client, which serialises them through a thread portal): straight into
the ASGI app, or (``http=True``) over loopback HTTP through uvicorn with the gateway's own
protocol, as ``codeq serve`` runs it — where the hot task routes are served without ASGI
(gateway.direct)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn
from litestar import Litestar

from gateway.app import gateway_of
from gateway.http_protocol import JsonErrorHttpToolsProtocol
from gateway.state import Gateway


class ApiClient(httpx.AsyncClient):
    gw: Gateway


@contextlib.asynccontextmanager
async def serve_in_process(
    app: Litestar, *, http: bool = False, keep_alive: int = 5
) -> AsyncIterator[ApiClient]:
    """Run the app's lifespan in a task of its own (its cancel scopes must be entered and left
    by one task; pytest-asyncio sets fixtures up and tears them down in different ones).
    ``http``: over loopback HTTP, with idle connections closed after ``keep_alive`` s."""
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
        async with contextlib.AsyncExitStack() as stack:
            if http:
                base = await stack.enter_async_context(_uvicorn(app, keep_alive))
                transport: httpx.AsyncBaseTransport = httpx.AsyncHTTPTransport()
            else:
                base, transport = "http://testserver", httpx.ASGITransport(app=app)
            c = await stack.enter_async_context(
                ApiClient(transport=transport, base_url=base, timeout=20)
            )
            c.gw = gateway_of(app)
            yield c
    finally:
        stop.set()
        await running


@contextlib.asynccontextmanager
async def _uvicorn(app: Litestar, keep_alive: int) -> AsyncIterator[str]:
    """uvicorn serving ``app`` on a free loopback port in this event loop (the lifespan is the
    caller's); its base URL."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        http=JsonErrorHttpToolsProtocol,
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_keep_alive=keep_alive,
    )
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup()
    await server.on_tick(0)  # the Date header, as the server's loop sets it
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for listening in server.servers:
            listening.close()
        for connection in list(server.server_state.connections):
            connection.shutdown()
        if server.server_state.tasks:  # the requests still being answered
            await asyncio.wait(set(server.server_state.tasks), timeout=10)
        async with asyncio.timeout(10):
            for listening in server.servers:
                await listening.wait_closed()
