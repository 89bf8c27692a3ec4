"""The published event contract matches the code, and payloads can be checked against it."""

from __future__ import annotations

from services.console.contract import asyncapi, rendered


def test_committed_schemas_and_asyncapi_are_up_to_date() -> None:
    stale = [
        str(path)
        for path, text in rendered().items()
        if not path.exists() or path.read_text() != text
    ]
    assert stale == [], "run `make contract` and commit docs/"


def test_asyncapi_describes_every_subject_with_its_payload() -> None:
    doc = asyncapi()
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {
        "report.requested",
        "data.ready",
        "report.rendered",
        "report.delivered",
        "report.failed",
        "dlq.report.requested",
    } <= addresses
    payloads = {m["payload"]["$ref"] for m in doc["components"]["messages"].values()}
    assert "#/components/schemas/ReportRequested" in payloads
    requested = doc["components"]["schemas"]["ReportRequested"]
    assert requested["required"] == ["template"]
