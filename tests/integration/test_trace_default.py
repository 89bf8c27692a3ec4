"""With no OpenTelemetry exporter configured (the default `pressroom up`), every report still has
one W3C trace id: in its PDF/A-3 provenance, in the message the ledger points at (what the
console shows) and in every service's log lines about it."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pikepdf
import pytest

from shared.bus.names import STREAM
from tests.helpers import REPO, Stack, delivered_file, eventually, unique

pytestmark = pytest.mark.integration
TRACE_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def untraced(stack: Stack) -> Stack:
    """The session's stack: no exporter (OTEL_TRACES_EXPORTER=none, which is what no OTEL_*
    at all amounts to — a tracer that keeps ids and exports nothing; tests/unit/
    test_telemetry_defaults.py holds the two to the same behaviour in fresh processes)."""
    return stack


def log_trace_ids(stack: Stack, service: str, rid: str) -> set[str]:
    lines = "\n".join(p.read_text() for p in (stack.root / "logs").glob(f"{service}-*.log"))
    found = set()
    for line in lines.splitlines():
        if line.startswith("{") and rid in line:
            record = json.loads(line)
            if record.get("request_id") == rid and record.get("trace_id"):
                found.add(record["trace_id"])
    return found


async def test_a_report_has_one_trace_id_in_its_provenance_ledger_and_logs_without_an_exporter(
    untraced: Stack,
) -> None:
    rid = unique("untraced")
    untraced.cli(
        "request",
        *("--template", "weekly.html", "--request-id", rid),
        *("--data-file", str(REPO / "templates/samples/portfolio.json")),
        "--wait",
        check=True,
        timeout=180,
    )

    # the provenance the PDF/A-3 report carries
    pdf = pikepdf.open(io.BytesIO(delivered_file(untraced.out, rid).read_bytes()))
    record = json.loads(pdf.attachments["pressroom.json"].get_file().read_bytes())
    trace_id = record["trace_id"]
    assert trace_id is not None and TRACE_ID.fullmatch(trace_id), record
    assert trace_id != "0" * 32

    # the ledger: `pressroom status --json`, and the request message its fetcher record names
    # (whose traceparent the console shows as the report's trace)
    entry: dict[str, Any] = json.loads(untraced.cli("status", rid, "--json", check=True).stdout)
    if "trace_id" in entry:
        assert entry["trace_id"] == trace_id
    nc = await untraced.connect()
    try:
        message = await nc.jetstream().get_msg(STREAM, entry["stages"]["fetcher"]["seq"])
    finally:
        await nc.close()
    version, sent_trace, _span, _flags = (message.headers or {})["traceparent"].split("-")
    assert (version, sent_trace) == ("00", trace_id)

    # and the same trace in each of the three services
    async def every_service() -> dict[str, set[str]] | None:
        found = {s: log_trace_ids(untraced, s, rid) for s in ("fetcher", "renderer", "distributor")}
        return found if all(found.values()) else None

    found = await eventually(every_service, timeout=30)
    assert found == {s: {trace_id} for s in ("fetcher", "renderer", "distributor")}
