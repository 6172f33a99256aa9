"""Optional OpenTelemetry tracing (the ``tracing`` extra, ``tracingEnabled: true``).

A task carries the W3C ``traceparent`` of the request that created it (the producer's own, or
the create request's span). Every later step of the task joins that trace: the claim and
result transitions, the worker's heartbeats and result requests (the SDK sends the task's
``traceparent``), and each webhook delivery, whose request carries a ``traceparent`` of its
own span to the receiver. So one task's create, claim, result and callback share a trace id.

Each :class:`Tracing` has its own ``TracerProvider`` (never the global one), so several apps
in one process — the tests — keep their spans apart. Disabled, every method is a cheap no-op
and OpenTelemetry is not imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

    from codeq.settings import Settings

__all__ = ["Tracing"]

_NO_SPAN: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()


class Tracing:
    """Spans for one process (or one app). ``enabled`` is False without ``tracingEnabled``."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        exporter: SpanExporter | None = None,
        service: str = "codeq",
    ) -> None:
        self.enabled = bool(settings is not None and settings.tracing_enabled) or (
            exporter is not None
        )
        self._tracer: Any = None
        self._provider: Any = None
        if not self.enabled:
            return
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        except ImportError as exc:  # pragma: no cover - depends on the installed extras
            raise RuntimeError(
                "tracingEnabled needs the tracing extra: pip install 'codeq-tasks[tracing]'"
            ) from exc
        ratio = settings.tracing_sample_ratio if settings is not None else 1.0
        provider = TracerProvider(
            resource=Resource.create({"service.name": service}),
            sampler=ParentBased(TraceIdRatioBased(ratio)),
        )
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = settings.tracing_otlp_endpoint if settings is not None else None
            if endpoint and not endpoint.rstrip("/").endswith("/v1/traces"):
                endpoint = endpoint.rstrip("/") + "/v1/traces"
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        self._provider = provider
        self._tracer = provider.get_tracer("codeq")

    @staticmethod
    def _context(traceparent: str | None) -> Any:
        if not traceparent:
            return None
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        return TraceContextTextMapPropagator().extract({"traceparent": traceparent})

    def span(
        self,
        name: str,
        *,
        parent: str | None = None,
        kind: str = "internal",
        attributes: Mapping[str, str | int | float | bool] | None = None,
        start_time: int | None = None,
    ) -> contextlib.AbstractContextManager[Any]:
        """A span as the current one; ``parent`` is a ``traceparent`` to continue (else the
        current span's trace, or a new one); ``start_time`` (``time.time_ns()``) backdates it.
        Yields the span (``None`` when disabled: one shared context that does nothing, a
        tenth of a generator's cost on the hot routes)."""
        if not self.enabled:
            return _NO_SPAN
        return self._span(name, parent, kind, attributes, start_time)

    @contextlib.contextmanager
    def _span(
        self,
        name: str,
        parent: str | None,
        kind: str,
        attributes: Mapping[str, str | int | float | bool] | None,
        start_time: int | None,
    ) -> Iterator[Any]:
        from opentelemetry.trace import SpanKind

        kinds = {
            "server": SpanKind.SERVER,
            "client": SpanKind.CLIENT,
            "internal": SpanKind.INTERNAL,
            "producer": SpanKind.PRODUCER,
            "consumer": SpanKind.CONSUMER,
        }
        with self._tracer.start_as_current_span(
            name,
            context=self._context(parent),
            kind=kinds[kind],
            attributes=dict(attributes or {}),
            start_time=start_time,
        ) as span:
            yield span

    def traceparent(self) -> str | None:
        """The ``traceparent`` of the current span, to store on a task or send onwards."""
        if not self.enabled:
            return None
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        return carrier.get("traceparent")

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()
