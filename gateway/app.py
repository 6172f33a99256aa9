"""The Litestar application: ``create_app(settings, store=...)``.

The lifespan opens the store (unless one is given), starts the event tail that wakes long
polls and, for ``codeq serve``, the sweeper; on shutdown it wakes every open poll, stops the
background tasks and closes what it opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar

from codeq.auth import Auth, build_auth
from codeq.engine import Engine, EngineConfig
from codeq.errors import CodeQError, StoreUnavailable
from codeq.events import EventTail
from codeq.metrics import serve_metrics
from codeq.rate_limits import RateGuard
from codeq.settings import Settings
from codeq.store import open_store
from codeq.store.protocol import Backend, RateBuckets
from codeq.sweeper import Sweeper
from codeq.tracing import Tracing
from gateway import apidocs
from gateway.direct import DirectRoutes
from gateway.errors import exception_handlers
from gateway.metrics import Metrics, Scraper
from gateway.middleware import BodyLimits, InFlight, RequestIdMiddleware
from gateway.openapi_errors import complete_document
from gateway.routes import health
from gateway.routes.admin import AdminController
from gateway.routes.catalog import EventTypeController
from gateway.routes.deliveries import (
    AdminDeliveryController,
    DeliveryController,
    EndpointStatsController,
)
from gateway.routes.endpoints import EndpointController
from gateway.routes.session import whoami
from gateway.routes.subscriptions import SubscriptionController
from gateway.routes.tasks import TaskController
from gateway.state import Gateway
from gateway.ui import ui_handlers
from gateway.waker import Waker

__all__ = ["app_from_environment", "create_app", "gateway_app", "gateway_of", "serve_app"]

log = logging.getLogger("codeq.gateway")

#: allocations between collections of the cyclic collector's youngest generation
YOUNG_GC_THRESHOLD = 20_000


def create_app(
    settings: Settings,
    *,
    store: Backend | None = None,
    auth: Auth | None = None,
    run_sweeper: bool = False,
    run_deliverers: bool = False,
    environ: dict[str, str] | None = None,
    close_store: bool | None = None,
    rate_limiter: RateBuckets | None = None,
    tracing: Tracing | None = None,
) -> Litestar:
    """Build the gateway app. ``store``/``auth`` are opened from the settings when not given.
    The app closes the store on shutdown when it opened it, or when ``close_store`` says so
    (a store's connections belong to the event loop that serves the app). Rate limits use
    the store's buckets unless ``rate_limiter`` is given."""
    owns_store = store is None if close_store is None else close_store
    the_store = store if store is not None else open_store(settings)
    the_auth = auth if auth is not None else build_auth(settings, environ=environ)
    config = EngineConfig.from_settings(settings, dev_mode=the_auth.dev_mode)
    engine = Engine(the_store.tasks, config)
    metrics = Metrics()
    limiter = rate_limiter if rate_limiter is not None else the_store.rate_buckets
    gateway = Gateway(
        settings=settings,
        store=the_store,
        engine=engine,
        auth=the_auth,
        waker=Waker(),
        metrics=metrics,
        rate=RateGuard(settings.rate_limit, limiter, metrics),
        tracing=tracing if tracing is not None else Tracing(settings),
    )
    in_flight = InFlight(settings.max_in_flight_requests)
    scraper = Scraper(metrics, the_store.meters, gateway.waker, in_flight=in_flight)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        try:
            await the_store.check()  # a store these settings cannot use stops the start here
            await the_store.load_scripts()
        except StoreUnavailable:
            log.warning("store unavailable at start-up; scripts load on first use")
        else:
            try:
                # a store no release can have used lists delayed tasks apart from the start
                # (codeq.store.upkeep; one that holds tasks is switched by its operator)
                await the_store.list_waiting_apart(if_empty=True)
            except CodeQError as exc:  # optional: listings are whole either way
                log.warning("store not switched to list delayed tasks apart: %s", exc)
        tail = EventTail(
            the_store.events, gateway.waker.on_event, wanted=lambda: gateway.waker.waiting() > 0
        )
        await tail.start()
        gateway.tail = tail
        # Everything built so far lives as long as the process: keep it out of the cyclic
        # collector's generations, so full collections stay short under load (p99).
        gc.collect()
        gc.freeze()
        # A request's objects die by reference count, nearly all before a collection could
        # see them; collecting the youngest generation every 700 allocations (Python's
        # default) only walked the requests in flight: 2.3 % of a create's CPU (perf), and
        # none that perf saw every YOUNG_GC_THRESHOLD (docs/performance.md §19). Like the
        # freeze, it holds for the whole process; a higher threshold, or 0 (automatic
        # collection off), that the embedding process chose is kept.
        threshold = gc.get_threshold()
        if 0 < threshold[0] < YOUNG_GC_THRESHOLD:
            gc.set_threshold(YOUNG_GC_THRESHOLD, *threshold[1:])
        sweeper = (
            Sweeper(
                engine,
                deliveries=the_store.deliveries,
                delivery_retention_seconds=settings.webhook_delivery_retention_seconds,
            )
            if run_sweeper
            else None
        )
        sweeping = asyncio.create_task(sweeper.run()) if sweeper else None
        deliverer = None
        if run_deliverers:
            from deliverers.runner import Deliverer

            deliverer = Deliverer(
                the_store,
                settings,
                allow_loopback=the_auth.dev_mode,
                metrics=metrics,  # one process, one /metrics
                rate=gateway.rate,
                tracing=gateway.tracing,
            )
            await deliverer.start()
        metrics_server = await _metrics_port(settings, scraper)
        try:
            yield
        finally:
            if metrics_server is not None:
                metrics_server.close()
                await metrics_server.wait_closed()
            if deliverer is not None:
                await deliverer.stop(grace=settings.shutdown_grace_seconds)
            gateway.shutting_down.set()
            gateway.waker.close()
            if sweeper is not None and sweeping is not None:
                sweeper.stop()
                await sweeping
            gateway.tail = None
            await tail.stop()
            await the_auth.aclose()
            if owns_store:
                await the_store.close()
            gateway.tracing.shutdown()  # flushes what the exporter still holds

    app = Litestar(
        route_handlers=[
            TaskController,
            AdminController,
            DeliveryController,
            SubscriptionController,
            EndpointController,
            EndpointStatsController,
            EventTypeController,
            AdminDeliveryController,
            health.healthz,
            health.readyz,
            health.metrics,
            whoami,
            *ui_handlers(),
        ],
        lifespan=[lifespan],
        exception_handlers=exception_handlers,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=apidocs.openapi_config(),  # self-hosted pages: gateway/apidocs
        debug=False,
        logging_config=None,
    )
    # Around Litestar's whole request handler (as its own CORS and OpenTelemetry wrappers are),
    # not around each route: a 404 or 405 the router answers gets its request id, access line,
    # metrics and span too.
    app.asgi_handler = RequestIdMiddleware(
        app.asgi_handler,
        metrics=metrics,
        limits=BodyLimits.of(settings),
        tracing=gateway.tracing,
        in_flight=in_flight,
    )
    app.state.gateway = gateway
    app.state.in_flight = in_flight  # shed by the HTTP protocol too (gateway.http_protocol)
    # the hot task routes, served by the HTTP protocol without ASGI (not while tracing: the
    # middleware makes the request spans)
    app.state.direct = (
        None
        if gateway.tracing.enabled or not settings.direct_routes
        else DirectRoutes.of(
            app, limits=BodyLimits.of(settings), metrics=metrics, in_flight=in_flight
        )
    )
    app.state.scraper = scraper
    complete_document(app)  # security, every error, required bodies: gateway/openapi_errors.py
    return app


async def _metrics_port(settings: Settings, scraper: Scraper) -> asyncio.Server | None:
    """``/metrics`` on ``metricsPort`` as well, when it is set. With several server worker
    processes only the first binds it (the others log it and go on without)."""
    if settings.metrics_port is None:
        return None
    try:
        return await serve_metrics(settings.host, settings.metrics_port, scraper.render)
    except OSError as exc:
        log.warning(
            "metricsPort not served by this process",
            extra={"port": settings.metrics_port, "error": str(exc)},
        )
        return None


def app_from_environment(*, run_sweeper: bool, run_deliverers: bool = False) -> Litestar:
    """The app of one server worker process, its settings read from the environment (the
    ``codeq`` command puts ``--host``/``--port``/``--config`` and the dev token there before
    it starts the workers, so every worker agrees)."""
    import os

    from codeq.logs import configure_logging

    settings = Settings.load(os.environ.get("CODEQ_CONFIG_PATH"), environ=os.environ)
    configure_logging(settings.log_level, settings.log_format)
    return create_app(
        settings,
        run_sweeper=run_sweeper,
        run_deliverers=run_deliverers,
        environ=dict(os.environ),
    )


def serve_app() -> Litestar:
    """Factory for ``codeq serve`` workers: gateway + sweeper."""
    return app_from_environment(run_sweeper=True, run_deliverers=True)


def gateway_app() -> Litestar:
    """Factory for ``codeq gateway`` workers: HTTP only."""
    return app_from_environment(run_sweeper=False)


def gateway_of(app: Litestar) -> Gateway:
    """The :class:`Gateway` behind an app (tests, the CLI)."""
    gw: Any = app.state.gateway
    return gw  # type: ignore[no-any-return]
