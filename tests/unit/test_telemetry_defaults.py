"""Trace ids without an exporter: what each OTEL_* setting means for a process's spans."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_probe

# A fresh process (OpenTelemetry's provider is set once per process): the environment given as
# JSON, then one publish's span as the CLI or the console makes it (no setup_telemetry).
PROBE = """
import json, os, sys
os.environ.update(json.loads(sys.argv[1]))
from shared.observe import telemetry
headers, after = {}, {}
with telemetry.sending("report.requested", headers, 10):  # as the CLI publishes: no set-up
    pass
provider = telemetry.setup_telemetry("pressroom-probe")[0]  # then as a worker
with telemetry.sending("data.ready", after, 10) as span:
    recording = span.is_recording()
processors = provider._active_span_processor._span_processors if provider else None
print("probe:" + json.dumps({"traceparent": headers.get("traceparent"), "recording": recording,
                  "worker": after.get("traceparent"), "exporting": bool(processors)}))
"""


@pytest.mark.parametrize(
    ("env", "traced", "exporting"),
    [
        ({}, True, False),  # the default `pressroom up`: ids, no span recorded or exported
        ({"OTEL_TRACES_EXPORTER": "none"}, True, False),  # no exporter, still ids
        ({"OTEL_TRACES_EXPORTER": "console"}, True, True),  # a worker records and exports
        ({"OTEL_SDK_DISABLED": "true"}, False, False),  # the SDK off: no trace at all
    ],
)
def test_every_publish_starts_or_continues_a_trace_unless_the_sdk_is_disabled(
    env: dict[str, str], traced: bool, exporting: bool
) -> None:
    done = run_probe(PROBE, json.dumps(env))
    assert done.returncode == 0, done.stderr
    [line] = [x for x in done.stdout.splitlines() if x.startswith("probe:")]
    said = json.loads(line.removeprefix("probe:"))
    assert (said["traceparent"] is not None, said["worker"] is not None) == (traced, traced)
    assert said["recording"] == exporting  # spans are recorded only where they are exported
    if traced:
        version, trace_id, span_id, flags = said["traceparent"].split("-")
        assert (version, len(trace_id), len(span_id)) == ("00", 32, 16)
        assert int(flags, 16) & 1  # sampled: the next service records its spans too
        assert trace_id != "0" * 32
    assert said["exporting"] == exporting
