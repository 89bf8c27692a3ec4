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
    """(tracer_provider, meter_provider) for this process, or (None, None) when not configured."""
    if "providers" in _configured:
        return _configured["providers"]  # type: ignore[no-any-return]
    os.environ.setdefault("OTEL_SERVICE_NAME", service)
    tracer_provider = _tracing() if _wanted("TRACES") else None
    meter_provider = _metrics() if _wanted("METRICS") else None
    _configured["providers"] = (tracer_provider, meter_provider)
    return tracer_provider, meter_provider


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


def _metrics() -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource

    exporter: Any
    if os.environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() == "console":
        exporter = ConsoleMetricExporter()
    elif _protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        exporter = OTLPMetricExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter as HttpMetricExporter,
        )

        exporter = HttpMetricExporter()
    provider = MeterProvider(
        resource=Resource.create(), metric_readers=[PeriodicExportingMetricReader(exporter)]
    )
    metrics.set_meter_provider(provider)
    return provider


def shutdown_telemetry() -> None:
    tracer_provider, meter_provider = _configured.get("providers", (None, None))
    for provider in (tracer_provider, meter_provider):
        if provider is not None:
            provider.shutdown()


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


_instruments: dict[str, Any] = {}
_backlog: dict[str, int] = {}


def observe_backlog(stage: str, pending: int) -> None:
    """Messages waiting for `stage` (queue lag), exported as the pressroom.queue.pending gauge."""
    if "backlog" not in _instruments:

        def read(options: Any) -> Any:
            from opentelemetry.metrics import Observation

            return [Observation(v, {"stage": k}) for k, v in _backlog.items()]

        _instruments["backlog"] = metrics.get_meter("pressroom").create_observable_gauge(
            "pressroom.queue.pending",
            callbacks=[read],
            description="Messages waiting in a stage's durable consumer",
        )
    _backlog[stage] = pending


def stage_finished(stage: str, outcome: str, seconds: float) -> None:
    """Stage duration histogram and outcome counter (exported when metrics are configured)."""
    if "duration" not in _instruments:
        meter = metrics.get_meter("pressroom")
        _instruments["duration"] = meter.create_histogram(
            "pressroom.stage.duration", unit="s", description="Time a stage spent on a message"
        )
        _instruments["outcomes"] = meter.create_counter(
            "pressroom.stage.outcomes", description="Messages a stage finished, by outcome"
        )
    labels = {"stage": stage, "outcome": outcome}
    _instruments["duration"].record(seconds, labels)
    _instruments["outcomes"].add(1, labels)
