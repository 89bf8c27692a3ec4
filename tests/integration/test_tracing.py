"""With only OTEL_* set, one report yields one trace across the three services."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers import REPO, Stack, eventually, unique
from tests.servers import HttpReceiver

pytestmark = pytest.mark.integration
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())


@pytest.fixture(scope="module")
def collector() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(lambda path, n: (200, b"", {"Content-Type": "application/x-protobuf"}))
    yield receiver.start()
    receiver.stop()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory, collector: HttpReceiver) -> Iterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("traced"),
        env_extra={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        },
    ).start()
    yield stack
    stack.stop()


def spans(collector: HttpReceiver) -> list[dict[str, Any]]:
    found = []
    for hit in collector.on("/v1/traces"):
        request = ExportTraceServiceRequest.FromString(hit.body)
        for resource_spans in request.resource_spans:
            attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    found.append(
                        {
                            "service": attrs.get("service.name"),
                            "name": s.name,
                            "trace_id": s.trace_id.hex(),
                            "span_id": s.span_id.hex(),
                            "parent_id": s.parent_span_id.hex(),
                            "kind": s.kind,
                            "status": s.status.code,
                            "attributes": {a.key: a.value for a in s.attributes},
                        }
                    )
    return found


async def test_one_report_is_one_trace_across_fetcher_renderer_and_distributor(
    traced: Stack, collector: HttpReceiver
) -> None:
    rid = unique("traced")
    nc = await traced.connect()
    body = {"request_id": rid, "template": "weekly.html", "params": SAMPLE}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await nc.close()

    def ours() -> list[dict[str, Any]]:
        return [
            s
            for s in spans(collector)
            if s["attributes"].get("pressroom.request_id", None) is not None
            and s["attributes"]["pressroom.request_id"].string_value == rid
        ]

    expected = {
        "fetcher",
        "renderer",
        "template render",
        "pdf render",
        "upload pdf",
        "distributor",
        "deliver file",
    }

    async def complete() -> list[dict[str, Any]] | None:
        # Each service exports its spans in its own batches, a stage's own span last (it ends
        # after its children): wait for all of them rather than for the first few.
        found = ours()
        return found if expected <= {s["name"] for s in found} else None

    found = await eventually(complete, timeout=60)
    assert len({s["trace_id"] for s in found}) == 1
    services = {s["service"] for s in found}
    assert services == {"pressroom-fetcher", "pressroom-renderer", "pressroom-distributor"}
    # the consumer spans FastStream creates share the same trace
    trace_id = found[0]["trace_id"]

    async def with_consumer_spans() -> list[dict[str, Any]] | None:
        everything = [s for s in spans(collector) if s["trace_id"] == trace_id]
        return everything if len(everything) > len(found) else None

    await eventually(with_consumer_spans, timeout=60)

    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )

    async def metric_names() -> set[str] | None:
        names = {
            metric.name
            for hit in collector.on("/v1/metrics")
            for rm in ExportMetricsServiceRequest.FromString(hit.body).resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
        }
        wanted = {
            "pressroom.stage.duration",
            "pressroom.stage.outcomes",
            "pressroom.consumer.pending",
            "pressroom.report.duration",
        }
        return names if wanted <= names else None

    assert await eventually(metric_names, timeout=20)

    # The same metrics, scraped as OpenMetrics: the report's bucket leads to its trace.
    import httpx

    async with httpx.AsyncClient() as client:
        scraped = await client.get(
            traced.health["distributor-1"] + "/metrics",
            headers={"Accept": "application/openmetrics-text;version=1.0.0"},
        )
    assert scraped.headers["content-type"].startswith("application/openmetrics-text")
    exemplars = [
        line
        for line in scraped.text.splitlines()
        if line.startswith("pressroom_report_duration_seconds_bucket") and "# {" in line
    ]
    assert any(f'trace_id="{trace_id}"' in line for line in exemplars), exemplars

    log = "\n".join(p.read_text() for p in (traced.root / "logs").glob("renderer-*.log"))
    lines = [
        json.loads(line)
        for line in log.splitlines()
        if line.startswith("{") and rid in line and "stage done" in line
    ]
    assert lines and lines[0]["trace_id"] == trace_id


def plain(span: dict[str, Any]) -> dict[str, Any]:
    """A span's attributes as Python values."""
    return {
        key: value.string_value or value.int_value or value.bool_value
        for key, value in span["attributes"].items()
    }


async def test_messaging_spans_follow_the_opentelemetry_semantic_conventions(
    traced: Stack, collector: HttpReceiver
) -> None:
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    ok, bad = unique("semconv"), unique("semconv-bad")
    nc = await traced.connect()
    for body in (
        {"request_id": ok, "template": "weekly.html", "params": SAMPLE},
        {"request_id": bad, "template": "weekly.html"},  # fails at render: no data
    ):
        await nc.jetstream().publish(
            "report.requested",
            json.dumps(body).encode(),
            headers={"Nats-Msg-Id": f"req:{body['request_id']}"},
        )
    await nc.close()

    def trace_of(rid: str) -> list[dict[str, Any]]:
        everything = spans(collector)
        ids = {
            s["trace_id"]
            for s in everything
            if (v := s["attributes"].get("pressroom.request_id")) and v.string_value == rid
        }
        return [s for s in everything if s["trace_id"] in ids]

    wanted = {
        "process report.requested",
        "send data.ready",
        "process data.ready",
        "send report.rendered",
        "process report.rendered",
        "send report.delivered",
    }

    async def complete() -> list[dict[str, Any]] | None:
        found = trace_of(ok)
        return found if wanted <= {s["name"] for s in found} else None

    found = await eventually(complete, timeout=90)
    messaging = [s for s in found if "messaging.system" in s["attributes"]]
    assert {s["name"] for s in messaging} >= wanted
    by_id = {s["span_id"]: s for s in found}
    for span in messaging:
        attrs = plain(span)
        operation, subject = span["name"].split(" ", 1)
        assert attrs["messaging.system"] == "nats"
        assert attrs["messaging.destination.name"] == subject
        assert attrs["messaging.operation.name"] == operation
        assert attrs["messaging.operation.type"] == operation
        assert attrs["server.address"] == "127.0.0.1" and attrs["server.port"] == traced.port
        assert attrs["messaging.message.body.size"] > 0
        assert attrs["messaging.message.id"]
        if operation == "send":
            assert span["kind"] == Span.SPAN_KIND_PRODUCER, span["name"]
        else:
            assert span["kind"] == Span.SPAN_KIND_CONSUMER, span["name"]
            stage = span["service"].removeprefix("pressroom-")
            assert attrs["messaging.consumer.group.name"] == stage
            if subject != "report.requested":  # the first message came from outside a trace
                # continues the PRODUCER span of the publish that sent it
                assert by_id[span["parent_id"]]["name"] == f"send {subject}"
        assert "error.type" not in attrs
    # the older names FastStream's own instrumentation used are gone
    assert not any(s["name"].endswith((" process", " create", " publish")) for s in found)

    async def failed() -> dict[str, Any] | None:
        process = [s for s in trace_of(bad) if s["name"] == "process data.ready"]
        return process[0] if process else None

    span = await eventually(failed, timeout=90)
    assert plain(span)["error.type"] == "template_error"
    assert span["status"] == Status.STATUS_CODE_ERROR
    sent = {s["name"] for s in trace_of(bad) if s["kind"] == Span.SPAN_KIND_PRODUCER}
    assert {"send dlq.data.ready", "send report.failed"} <= sent
