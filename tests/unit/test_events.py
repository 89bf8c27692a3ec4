"""The public payloads: what other systems may send, and what they get back."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.events import SCHEMA_VERSION, DataReady, ReportRequested


def test_only_the_template_is_required_and_defaults_are_filled_in() -> None:
    request = ReportRequested.model_validate({"template": "weekly.html"})
    assert request.request_id.startswith("req-")
    assert request.formats == ["pdf"]
    assert request.schema_version == SCHEMA_VERSION
    assert request.deliver == [] and request.sources == []


def test_the_design_example_parses_with_channel_specific_fields_kept() -> None:
    request = ReportRequested.model_validate(
        {
            "request_id": "weekly-2026-11-23",
            "template": "weekly.html",
            "formats": ["pdf", "html"],
            "sources": [{"name": "uptime", "kind": "prometheus", "query": "up"}],
            "deliver": [
                {"channel": "email", "to": ["team@example.com"], "subject": "Weekly"},
                {"channel": "file", "path": "portfolio/weekly"},
            ],
        }
    )
    assert request.sources[0].model_extra == {"query": "up"}
    assert request.deliver[0].model_extra == {"to": ["team@example.com"], "subject": "Weekly"}


@pytest.mark.parametrize("template", ["../secrets.html", "/etc/passwd", "a/../../b.html"])
def test_templates_outside_the_folder_are_refused(template: str) -> None:
    with pytest.raises(ValidationError, match="inside the templates folder"):
        ReportRequested(template=template)


@pytest.mark.parametrize("rid", ["has space", "semi;colon", "a/b", "", "x" * 200])
def test_request_ids_are_limited_to_a_safe_alphabet(rid: str) -> None:
    with pytest.raises(ValidationError, match="request_id"):
        ReportRequested(template="t.html", request_id=rid)


def test_unknown_formats_and_channels_are_refused() -> None:
    with pytest.raises(ValidationError, match="formats"):
        ReportRequested.model_validate({"template": "t.html", "formats": ["docx"]})
    with pytest.raises(ValidationError, match="channel"):
        ReportRequested.model_validate({"template": "t.html", "deliver": [{"channel": "fax"}]})


def test_events_are_frozen_and_carry_the_request_along() -> None:
    request = ReportRequested(template="t.html", request_id="r1")
    ready = DataReady(request=request, context={"a": 1})
    assert ready.request_id == "r1"
    with pytest.raises(ValidationError):
        ready.context = {}  # type: ignore[misc]


def test_fields_added_by_newer_producers_are_ignored() -> None:
    request = ReportRequested.model_validate({"template": "t.html", "flavour": "vanilla"})
    assert not hasattr(request, "flavour")
