"""OpenTelemetry set up from the standard OTEL_* variables only.

Every report has a trace id, exporter or not: its provenance (pressroom.json), its logs'
`trace_id` and the console's link. Where OTEL_* asks for an exporter (an OTLP endpoint, or
`OTEL_TRACES_EXPORTER=console`), a worker records and exports spans with the SDK. Elsewhere
(the default, `OTEL_TRACES_EXPORTER=none`, the CLI and the console) the API's no-op tracer
carries trace ids alone: the first publish of a report starts a root with a random id
(`_with_root`), and each service continues the `traceparent` it receives — no span is
recorded, so none costs anything (the SDK's spans cost about 5 ms of a report's pipeline
overhead here, paired runs). Only `OTEL_SDK_DISABLED=true` turns trace ids off altogether.

One trace per report, in the OpenTelemetry messaging semantic conventions (v1.27 and later):
every publish is a PRODUCER span `send <subject>` whose context travels in the message's
`traceparent` header (`sending`, used by shared/bus/topology.py), and every message a stage works
on is
a CONSUMER span `process <subject>` continuing it (`processing`, around the stage runner's
work on each message), so fetcher → renderer → distributor spans share a trace id. Both carry
`messaging.system`, `messaging.destination.name`, `messaging.operation.name`/`.type`,
`messaging.message.id` (the Nats-Msg-Id), `messaging.message.body.size`, `server.address`/
`.port`; the consumer span also `messaging.consumer.group.name` (the stage's durable), and
`error.type` when the message failed (the failure kind of its dead letter, or `transient`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from shared.observe.exposition import PrometheusReader

REQUEST_ID = "pressroom.request_id"
SYSTEM = "nats"
MSG_ID_HEADER = "Nats-Msg-Id"
T = TypeVar("T")
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
    """(tracer_provider, meter_provider) for this process: the tracer provider unless
    OTEL_SDK_DISABLED (exporting only when OTEL_* asks), the meter provider when OTEL_*
    exports metrics.

    Metrics are recorded either way: the process's MeterProvider always has the pull reader
    that serves /metrics (`prometheus_reader()`), plus an OTLP exporter when OTEL_* asks.
    """
    if "providers" in _configured:
        return _configured["providers"]  # type: ignore[no-any-return]
    os.environ.setdefault("OTEL_SERVICE_NAME", service)
    tracer_provider = _tracer_provider(export=True)
    exporting = _wanted("METRICS")
    meter_provider = _metrics(exporting)
    _configured["providers"] = (tracer_provider, meter_provider if exporting else None)
    _configured["meter_provider"] = meter_provider
    return _configured["providers"]  # type: ignore[no-any-return]


def prometheus_reader() -> PrometheusReader | None:
    """The reader behind this process's /metrics, once `setup_telemetry` ran."""
    return _configured.get("prometheus")  # type: ignore[no-any-return]  # only _metrics sets it


def _wanted(signal: str) -> bool:
    exporter = os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").strip().lower()
    if exporter == "none":
        return False
    return exporter == "console" or _endpoint_set(signal)


def _sdk_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def _tracer_provider(*, export: bool) -> Any:
    """This process's TracerProvider: the SDK's, recording and exporting spans, in a worker
    whose OTEL_* asks for an exporter (`export`: it set telemetry up); None otherwise — the
    API's no-op tracer, with trace ids alone (`_with_root`). A command's spans are never
    exported: its exit would wait up to the exporter's timeout on a collector that is down."""
    if "tracer_provider" not in _configured and export and _wanted("TRACES"):
        _configured["tracer_provider"] = None if _sdk_disabled() else _tracing()
        if _configured["tracer_provider"] is not None:
            _configured["tracer_provider"].add_span_processor(_span_processor())
    return _configured.get("tracer_provider")


def _with_root(context: Context | None) -> Context | None:
    """`context` (None: the current one), or, when its span has no trace id and no SDK
    records spans here, a context with a fresh root's: every report has a trace id, carried
    from service to service in `traceparent`, without the SDK's cost per span (measured: ~5 ms
    of a report's pipeline overhead on this host) when nothing exports them."""
    if _configured.get("tracer_provider") is not None or _sdk_disabled():
        return context
    if trace.get_current_span(context).get_span_context().is_valid:
        return context
    root = trace.NonRecordingSpan(
        trace.SpanContext(
            trace_id=random.getrandbits(128) or 1,
            span_id=random.getrandbits(64) or 1,
            is_remote=False,
            trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
        )
    )
    return trace.set_span_in_context(root, context)


def _tracing() -> Any:
    # Imported here: the SDK loads on a process's first span or its set-up (start-up time).
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    # A worker is named by its set-up; the CLI and the console by OTEL_* or as "pressroom".
    provider = TracerProvider(
        resource=Resource.create({} if named else {"service.name": "pressroom"})
    )
    trace.set_tracer_provider(provider)
    return provider


def _span_processor() -> Any:
    # Imported here: the exporters load only when OTEL_* asks (start-up time).
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporter: Any
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    elif _protocol("TRACES") == "grpc":
        # Imported here: the SDK and exporters load only when OTEL_* asks (start-up time).
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        # Imported here: the SDK and exporters load only when OTEL_* asks (start-up time).
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        exporter = HttpSpanExporter()
    return BatchSpanProcessor(exporter)


def _metrics(exporting: bool) -> Any:
    # Imported here: the SDK and exporters load only when OTEL_* asks (start-up time).
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        MetricReader,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.resources import Resource

    from shared.observe.exposition import PrometheusReader

    pull = PrometheusReader()
    readers: list[MetricReader] = [pull]
    if exporting:
        exporter: Any
        if os.environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() == "console":
            exporter = ConsoleMetricExporter()
        elif _protocol("METRICS") == "grpc":
            # Imported here: the SDK and exporters load only when OTEL_* asks (start-up time).
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                OTLPMetricExporter,
            )

            exporter = OTLPMetricExporter()
        else:
            # Imported here: the SDK and exporters load only when OTEL_* asks (start-up time).
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
    _tracer_provider(export=False)  # where setup_telemetry did not run (the CLI, the console)
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


# ---- messaging spans (semantic conventions for messaging, v1.27+) --------------------------
_processing: ContextVar[trace.Span | None] = ContextVar("pressroom_processing", default=None)


def _server(connection: Any) -> dict[str, Any]:
    """server.address / server.port of a nats-py client's current server, when connected."""
    url = getattr(connection, "connected_url", None)
    if url is None or not getattr(url, "hostname", None):
        return {}
    return {"server.address": url.hostname, "server.port": url.port or 4222}


@contextmanager
def sending(
    subject: str, headers: MutableMapping[str, str], body_size: int, connection: Any = None
) -> Iterator[trace.Span]:
    """The PRODUCER span of one publish; puts its context into `headers` (traceparent)."""
    attributes = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": subject,
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.message.body.size": body_size,
        **_server(connection),
    }
    if msg_id := headers.get(MSG_ID_HEADER):
        attributes["messaging.message.id"] = msg_id
    with tracer().start_as_current_span(
        f"send {subject}", context=_with_root(None), kind=SpanKind.PRODUCER, attributes=attributes
    ) as current:
        inject_context(headers)
        try:
            yield current
        except BaseException as error:
            current.set_attribute("error.type", type(error).__qualname__)
            raise


def processing_failed(error_type: str, description: str = "") -> None:
    """Mark the message being processed (its CONSUMER span) as failed with `error_type`;
    the first call wins (a dead letter's failure kind before the stage's outcome)."""
    current = _processing.get()
    if current is None or not current.is_recording():
        return
    attributes = getattr(current, "attributes", None) or {}
    if "error.type" in attributes:
        return
    current.set_attribute("error.type", error_type)
    current.set_status(Status(StatusCode.ERROR, description or error_type))


async def processing(message: Any, group: str, work: Awaitable[T]) -> T:
    """`work` on one message (a FastStream NatsMessage) inside its CONSUMER span
    `process <subject>`, continuing the trace of its `traceparent` header; the span lasts as
    long as the work, also when it runs beside others (shared/stage/app.py `InFlight`)."""
    raw = getattr(message, "raw_message", None)
    subject = str(getattr(raw, "subject", "") or "")
    headers = {str(k): str(v) for k, v in (getattr(message, "headers", None) or {}).items()}
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.destination.name": subject,
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": group,
        "messaging.destination.subscription.name": group,
        "messaging.message.body.size": len(getattr(message, "body", b"") or b""),
        **_server(getattr(raw, "_client", None)),
    }
    if msg_id := headers.get(MSG_ID_HEADER):
        attributes["messaging.message.id"] = msg_id
    with tracer().start_as_current_span(
        f"process {subject}",
        context=_with_root(propagate.extract(headers)),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as current:
        token = _processing.set(current)
        try:
            return await work
        except BaseException as error:
            processing_failed(type(error).__qualname__, str(error)[:200])
            raise
        finally:
            _processing.reset(token)
