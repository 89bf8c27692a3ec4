"""OpenTelemetry set up from the standard OTEL_* variables only; a no-op when none are set.

One trace per report: FastStream's NatsTelemetryMiddleware continues the trace found in an
incoming message's headers, and `inject_context` puts the current one into every message we
publish, so fetcher → renderer → distributor spans share a trace id.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import metrics, propagate, trace

from shared.exposition import PrometheusReader

REQUEST_ID = "pressroom.request_id"
_configured: dict[str, Any] = {}


def _endpoint_set(signal: str) -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def _protocol(signal: str) -> str:
    return (
        os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )


def setup_telemetry(service: str) -> tuple[Any, Any]:
    """(tracer_provider, meter_provider) for this process, each None unless OTEL_* exports it.

    Metrics are recorded either way: the process's MeterProvider always has the pull reader
    that serves /metrics (`prometheus_reader()`), plus an OTLP exporter when OTEL_* asks.
    """
    if "providers" in _configured:
        return _configured["providers"]  # type: ignore[no-any-return]
    os.environ.setdefault("OTEL_SERVICE_NAME", service)
    tracer_provider = _tracing() if _wanted("TRACES") else None
    exporting = _wanted("METRICS")
    meter_provider = _metrics(exporting)
    _configured["providers"] = (tracer_provider, meter_provider if exporting else None)
    _configured["meter_provider"] = meter_provider
    return _configured["providers"]  # type: ignore[no-any-return]


def prometheus_reader() -> PrometheusReader | None:
    """The reader behind this process's /metrics, once `setup_telemetry` ran."""
    reader = _configured.get("prometheus")
    return reader if isinstance(reader, PrometheusReader) else None


def _wanted(signal: str) -> bool:
    exporter = os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower()
    if exporter == "none":
        return False
    return exporter == "console" or _endpoint_set(signal)


def _tracing() -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporter: Any
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    elif _protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        exporter = HttpSpanExporter()
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def _metrics(exporting: bool) -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricReader,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource

    pull = PrometheusReader()
    readers: list[MetricReader] = [pull]
    if exporting:
        exporter: Any
        if os.environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() == "console":
            exporter = ConsoleMetricExporter()
        elif _protocol("METRICS") == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )

            exporter = OTLPMetricExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter as HttpMetricExporter,
            )

            exporter = HttpMetricExporter()
        readers.append(PeriodicExportingMetricReader(exporter))
    provider = MeterProvider(resource=Resource.create(), metric_readers=readers)
    metrics.set_meter_provider(provider)
    _configured["prometheus"] = pull
    return provider


def shutdown_telemetry() -> None:
    """Export what is pending, at a lifespan's end. A flush, not a shutdown: the providers are
    the process's own (OpenTelemetry sets them once), and a shut-down provider would silently
    drop what a later lifespan in the same process records (an in-process test, a restart)."""
    tracer_provider, _ = _configured.get("providers", (None, None))
    for provider in (tracer_provider, _configured.get("meter_provider")):
        if provider is not None:
            provider.force_flush()


def tracer() -> trace.Tracer:
    return trace.get_tracer("pressroom")


def inject_context(headers: MutableMapping[str, str]) -> None:
    propagate.inject(headers)


@contextmanager
def span(name: str, request_id: str | None = None, **attributes: Any) -> Iterator[trace.Span]:
    attrs = {k: v for k, v in attributes.items() if v is not None}
    if request_id:
        attrs[REQUEST_ID] = request_id
    with tracer().start_as_current_span(name, attributes=attrs) as current:
        yield current


def record_span(name: str, start_ns: int, end_ns: int, request_id: str, **attributes: Any) -> None:
    """A span for work measured elsewhere (e.g. inside a render worker process)."""
    attrs = {REQUEST_ID: request_id, **{k: v for k, v in attributes.items() if v is not None}}
    done = tracer().start_span(name, start_time=start_ns, attributes=attrs)
    done.end(end_time=end_ns)
