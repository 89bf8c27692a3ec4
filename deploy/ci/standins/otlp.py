"""Offline stand-in for the OpenTelemetry collector: an OTLP/HTTP receiver that records spans.

`POST /v1/traces` (protobuf or JSON, as OTLP/HTTP sends them) is decoded and every span kept;
`/v1/metrics` and `/v1/logs` are accepted and counted. `GET /api/spans` lists the spans seen
(service, name, trace and span ids, parent, attributes as text); `GET /api/stats` the counts.
Only for CI without an image registry; with one, compose runs the real collector and Jaeger.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from standin import QuietHandler, exit_on_sigterm, healthcheck

PORT = 4318
LOCK = threading.Lock()
SPANS: list[dict[str, Any]] = []
COUNTS = {"traces": 0, "metrics": 0, "logs": 0}


def text(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    return "" if kind is None else str(getattr(value, kind))


def record(request: ExportTraceServiceRequest) -> None:
    found = []
    for resource_spans in request.resource_spans:
        resource = {a.key: text(a.value) for a in resource_spans.resource.attributes}
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                found.append(
                    {
                        "service": resource.get("service.name", ""),
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "attributes": {a.key: text(a.value) for a in span.attributes},
                        "host": resource.get("host.name", ""),
                    }
                )
    with LOCK:
        SPANS.extend(found)


class Receiver(QuietHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        signal_name = self.path.rstrip("/").rsplit("/", 1)[-1]
        if signal_name not in COUNTS:
            self._send(404, b"not found", "text/plain")
            return
        is_json = self.headers.get("Content-Type", "").startswith("application/json")
        if signal_name == "traces":
            try:
                request = ExportTraceServiceRequest()
                if is_json:
                    Parse(body, request)
                else:
                    request.ParseFromString(body)
            except Exception as error:
                self._send(400, f"cannot decode the export: {error}".encode(), "text/plain")
                return
            record(request)
        with LOCK:
            COUNTS[signal_name] += 1
        if is_json:
            self._send(200, b"{}", "application/json")
        else:
            answer = ExportTraceServiceResponse().SerializeToString()
            self._send(200, answer, "application/x-protobuf")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        with LOCK:
            spans, counts = list(SPANS), dict(COUNTS)
        if path == "/api/spans":
            self._send(200, json.dumps(spans).encode(), "application/json")
        elif path == "/api/stats":
            stats = json.dumps({**counts, "spans": len(spans)}).encode()
            self._send(200, stats, "application/json")
        elif path in ("/livez", "/readyz"):
            self._send(200, b"ok", "text/plain")
        else:
            self._send(404, b"not found", "text/plain")


def check() -> int:
    """The healthcheck: the receiver answers."""
    return healthcheck(f"http://127.0.0.1:{PORT}/livez")


def main() -> None:
    exit_on_sigterm()
    print(f"OTLP receiver: OTLP/HTTP on :{PORT}, recorded spans at GET /api/spans", flush=True)
    ThreadingHTTPServer(("0.0.0.0", PORT), Receiver).serve_forever()


if __name__ == "__main__":
    sys.exit(check()) if sys.argv[1:] == ["--check"] else main()
