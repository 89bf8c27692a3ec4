"""`pressroom fonts`, `templates validate` and `render` on fonts, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fontcheck import (
    boxes,
    strings_in,
    uncovered,
    visible_characters,
)
from tests.helpers import REPO, pressroom

MULTILINGUAL = json.loads((REPO / "templates/samples/multilingual.json").read_text())
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
NO_FONT_HAS = "\ue000\u0378"  # a private-use and an unassigned code point

pytestmark = pytest.mark.integration


def test_pressroom_fonts_lists_the_families_and_the_scripts_they_cover() -> None:
    table = pressroom("fonts")
    listed = pressroom("fonts", "--json")

    assert table.returncode == 0, table.stderr
    assert "Noto Sans CJK JP" in table.stdout and "Noto Sans Arabic" in table.stdout
    assert "a character no font has: fail" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    found = {f["family"]: f for f in json.loads(listed.stdout)["families"]}
    assert found["Noto Sans"]["bundled"] and {"Latin", "Greek", "Cyrillic"} <= set(
        found["Noto Sans"]["scripts"]
    )
    for family, script in [
        ("Noto Sans Arabic", "Arabic"),
        ("Noto Sans Hebrew", "Hebrew"),
        ("Noto Sans Devanagari", "Devanagari"),
        ("Noto Sans Thai", "Thai"),
        ("Noto Sans CJK SC", "Han"),
        ("Noto Sans CJK KR", "Hangul"),
        ("Noto Emoji", "Emoji"),
    ]:
        assert script in found[family]["scripts"], found[family]


def test_templates_validate_warns_about_a_font_family_the_renderer_does_not_have(
    tmp_path: Path,
) -> None:
    (tmp_path / "branded.html").write_text(
        "<html><head><style>\n"
        '@font-face { font-family: "House Serif"; src: url("house.ttf"); }\n'
        'h1 { font-family: "House Serif", serif; }\n'
        'body { font-family: "Nonexistent Grotesk", "Pressroom Sans", sans-serif; }\n'
        "p { font: bold 9pt/1.2 Imaginary, sans-serif; }\n"
        "</style></head><body><h1>{{ title }}</h1></body></html>"
    )

    result = pressroom(
        "templates", "validate", "--all", env={"PRESSROOM_TEMPLATES_DIR": str(tmp_path)}
    )

    assert result.returncode == 0, result.stderr  # a warning, not a problem
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert "branded.html:4: font family 'Nonexistent Grotesk'" in warnings[0]
    assert "branded.html:5: font family 'Imaginary'" in warnings[1]


def test_pressroom_render_fails_on_a_character_no_font_has_and_warns_when_told_to(
    tmp_path: Path,
) -> None:
    args = [
        "render",
        "--template",
        "weekly.html",
        "--data-file",
        str(REPO / "templates/samples/portfolio.json"),
    ]
    boxed = [*args, "--param", "report_title=Logo \ue000", "--output", str(tmp_path / "x.pdf")]

    failed = pressroom(*boxed)
    written_on_failure = (tmp_path / "x.pdf").exists()
    warned = pressroom(*boxed, env={"PRESSROOM_MISSING_GLYPHS": "warn"})
    every = pressroom(
        *args[:3],
        "--data-file",
        str(REPO / "templates/samples/multilingual.json"),
        "--locale",
        "ko",
        "--output",
        str(tmp_path / "every.pdf"),
    )

    assert failed.returncode == 1 and not written_on_failure
    [line] = failed.stderr.strip().splitlines()  # one line, no traceback
    assert line.startswith("error: no font for U+E000 (private use): the PDF would show empty")
    assert line.endswith("or set PRESSROOM_MISSING_GLYPHS=warn to deliver it anyway")
    assert warned.returncode == 0 and "warning: no font for U+E000" in warned.stderr
    assert (tmp_path / "x.pdf").exists()
    assert every.returncode == 0, every.stderr
    pdf = (tmp_path / "every.pdf").read_bytes()
    assert (
        boxes(pdf) == [] and uncovered(pdf, visible_characters(strings_in(MULTILINGUAL))) == set()
    )
