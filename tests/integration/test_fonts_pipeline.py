"""Through the real pipeline: names in every script are delivered as letters; a character no font
has stops the report with the reason instead of delivering empty boxes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fontcheck import boxes, strings_in, uncovered, visible_characters
from tests.helpers import REPO, Outcomes, Stack, delivered_file, unique

pytestmark = pytest.mark.integration

MULTILINGUAL = json.loads((REPO / "templates/samples/multilingual.json").read_text())


async def test_a_report_with_names_in_every_script_is_delivered_without_a_box(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    rid = unique("scripts")
    body = {"request_id": rid, "template": "weekly.html", "params": MULTILINGUAL, "locale": "ja"}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())

    await outcomes.delivered_event(rid, timeout=120)

    pdf = delivered_file(stack.out, rid).read_bytes()
    assert boxes(pdf) == []
    assert uncovered(pdf, visible_characters(strings_in(MULTILINGUAL))) == set()


async def test_a_character_no_font_has_fails_the_report_with_the_character_named(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    rid = unique("nofont")
    params = {**MULTILINGUAL, "notes": ["Approved by \ue000 (the client's logo character)"]}
    body = {"request_id": rid, "template": "weekly.html", "params": params}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())

    failed = await outcomes.failed_event(rid, timeout=120)

    assert failed["stage"] == "renderer"
    assert failed["reason"].startswith("no font for U+E000 (private use)")
    assert failed["attempts"] == 1  # permanent: not retried
    assert not delivered_file(stack.out, rid).exists()
