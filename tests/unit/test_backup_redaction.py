"""What a default backup keeps of a request: no secret, whatever shape the text is in."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from services.console.redact import redacted_letter, redacted_text
from shared.events import DeadLetter

PREVIEW = (
    '{"request_id": "r1", "sources": [{"url": "https://h.example/x?token=S1&sig=S2&page=1", '
    '"headers": {"Authorization": "Bearer S3", "X-Api-Key": "S4"}}, '
    '{"url": "https://u:S5@h.example/x"}], "params": {"pwd": "S6", "login": {"passwd": "S7'
)  # cut off, as the preview of a body over 256 KB is


def letter(payload: str, encoding: str = "utf-8") -> DeadLetter:
    now = datetime.now(UTC)
    return DeadLetter(
        subject="report.requested", payload=payload, payload_encoding=encoding,  # type: ignore[arg-type]
        headers={"Authorization": "Bearer S8", "X-Trace": "token=S9"}, stage="fetcher",
        reason="cannot reach https://h.example/x?api_key=S10", permanent=True, attempts=1,
        first_failure=now, last_failure=now, request_id="r1",
    )  # fmt: skip


@pytest.mark.parametrize("encoding", ["utf-8", "base64"])
def test_a_preview_that_is_not_json_keeps_no_secret(encoding: str) -> None:
    raw = PREVIEW if encoding == "utf-8" else base64.b64encode(b"\xff" + PREVIEW.encode()).decode()
    kept = redacted_letter(letter(raw, encoding)).model_dump_json()
    assert not any(f'S{i}"' in kept or f"S{i}&" in kept or f"S{i}@" in kept for i in range(11))
    assert "S1" not in kept and "S3" not in kept and "S7" not in kept and "S10" not in kept
    assert "h.example" in kept and "page=1" in kept  # what is not secret stays readable


def test_every_pattern_is_linear_in_a_crafted_megabyte() -> None:
    # A quadratic pattern would take hours on these (the test's timeout would stop it).
    for crafted in ["token" * 200_000, "?" + "a-" * 500_000, "x://" + "a" * 1_000_000,
                    '"' + "a" * 1_000_000]:  # fmt: skip
        assert redacted_text(crafted) == crafted
    assert redacted_text("Bearer " + "a" * 1_000_000) == "Bearer REDACTED"
    assert redacted_text('"headers": {' + "a" * 1_000_000) == '"headers": "REDACTED"'
    assert redacted_text("?token=" + "a" * 1_000_000) == "?token=REDACTED"
