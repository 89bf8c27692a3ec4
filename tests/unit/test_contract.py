"""The published event contract matches the code, and payloads can be checked against it."""

from __future__ import annotations

import json

from shared.contract import asyncapi, rendered
from tests.unit.test_cli_render import pressroom


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


def test_request_validate_checks_a_payload_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"template": "weekly.html", "formats": ["pdf", "html"]}))
    assert pressroom("request", str(good), "--validate").returncode == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"formats": ["docx"], "deliver": [{"channel": "fax"}]}))
    result = pressroom("request", str(bad), "--validate")
    assert result.returncode == 1
    assert "template" in result.stderr and "formats" in result.stderr and "channel" in result.stderr
