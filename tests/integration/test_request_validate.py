"""`pressroom request --validate` checks a payload file against the published contract."""

from __future__ import annotations

import json

import pytest

from tests.helpers import pressroom

pytestmark = pytest.mark.integration


def test_request_validate_checks_a_payload_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"template": "weekly.html", "formats": ["pdf", "html"]}))
    assert pressroom("request", str(good), "--validate").returncode == 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"formats": ["docx"], "deliver": [{"channel": "fax"}]}))
    result = pressroom("request", str(bad), "--validate")
    assert result.returncode == 1
    assert "template" in result.stderr and "formats" in result.stderr and "channel" in result.stderr
