"""Every script renders: names in any script come out as letters, never as empty boxes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from services.renderer import fonts
from services.renderer.core import build_context, make_job
from services.renderer.job import RenderOutput
from services.renderer.pdf import render_job
from shared.errors import MissingGlyphs
from shared.events import ReportRequested
from shared.settings import Settings
from tests.fontcheck import (
    boxes,
    embedded_fonts,
    ink_fraction,
    page_picture,
    strings_in,
    uncovered,
    visible_characters,
)
from tests.helpers import REPO

MULTILINGUAL = json.loads((REPO / "templates/samples/multilingual.json").read_text())
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
NO_FONT_HAS = "\ue000\u0378"  # a private-use and an unassigned code point


def render(
    params: dict[str, Any],
    *,
    template: str = "portfolio.html",
    folder: Path = REPO / "templates",
    locale: str | None = None,
    **settings: Any,
) -> RenderOutput:
    cfg = Settings(templates_dir=folder, **settings)
    request = ReportRequested(template=template, request_id="fonts", locale=locale)
    return render_job(make_job(cfg, template, build_context(request, params), ("pdf",)))


def test_a_report_in_every_script_is_drawn_with_a_real_glyph_for_every_character(
    tmp_path: Path,
) -> None:
    output = render(MULTILINGUAL)

    assert output.pdf is not None and output.notices == ()
    chars = visible_characters(strings_in(MULTILINGUAL))
    scripts = {fonts.script_of(c).split(":")[0] for c in chars}
    assert {"Latin", "Greek", "Cyrillic", "Arabic", "Hebrew", "Devanagari", "Bengali"} <= scripts
    assert {"Tamil", "Telugu", "Thai", "Han", "Hiragana", "Katakana", "Hangul"} <= scripts
    assert uncovered(output.pdf, chars) == set()
    assert boxes(output.pdf) == []
    picture = page_picture(output.pdf, tmp_path)
    assert picture.stat().st_size > 10_000
    assert ink_fraction(output.pdf, tmp_path) > 0.02


def test_the_coverage_check_itself_sees_an_empty_box(tmp_path: Path) -> None:
    params = {**SAMPLE, "report_title": f"Boxes {NO_FONT_HAS} here"}

    output = render(params, missing_glyphs="warn")

    assert output.pdf is not None
    assert uncovered(output.pdf, visible_characters(["Boxes here"])) == set()
    assert uncovered(output.pdf, {"\ue000", "\u0378"}) == {"\ue000", "\u0378"}
    assert len(boxes(output.pdf)) == 2  # drawn, as empty boxes
    [notice] = output.notices
    assert "U+E000 (private use)" in notice and "U+0378 (unassigned)" in notice


def test_a_character_no_font_has_fails_the_render_with_the_characters_named() -> None:
    params = {**SAMPLE, "notes": [f"Signed by {NO_FONT_HAS[0]} and {NO_FONT_HAS}"]}

    with pytest.raises(MissingGlyphs) as failure:
        render(params)

    reason = failure.value.reason
    assert reason.startswith("no font for U+0378 (unassigned), U+E000 (private use)")
    assert "PRESSROOM_FONTS_DIR" in reason and "PRESSROOM_MISSING_GLYPHS=warn" in reason


def test_the_reason_names_each_character_with_its_script() -> None:
    assert fonts.describe(0x5C71) == "U+5C71 山 (Han)"
    assert fonts.describe(0x0645) == "U+0645 م (Arabic)"
    assert fonts.describe(0x1F680) == "U+1F680 🚀 (Common: rocket)"
    long = fonts.missing_reason(range(0xE000, 0xE020))
    assert "and 20 more" in long


@pytest.mark.parametrize(
    ("locale", "face"),
    [
        (None, "CJK-JP"),
        ("ja-JP", "CJK-JP"),
        ("zh-Hans", "CJK-SC"),
        ("zh-CN", "CJK-SC"),
        ("zh-Hant-TW", "CJK-TC"),
        ("zh-TW", "CJK-TC"),
        ("zh-HK", "CJK-HK"),
        ("ko", "CJK-KR"),
    ],
)
def test_han_characters_take_the_forms_of_the_requests_locale(
    locale: str | None, face: str
) -> None:
    output = render({**SAMPLE, "report_title": "骨 直 山田"}, locale=locale)

    assert output.pdf is not None
    cjk = {f.name.split("+")[1] for f in embedded_fonts(output.pdf) if "CJK" in f.name}
    # The title is bold: the same Regular face, named by WeasyPrint after the weight asked for.
    assert {name.removesuffix("-Bold") for name in cjk} == {f"Noto-Sans-{face}"}


def test_weasyprints_per_font_and_per_character_lines_stay_out_of_the_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    render({**SAMPLE, "report_title": f"山 {NO_FONT_HAS}"}, missing_glyphs="warn")

    noisy = [r for r in caplog.records if r.name.startswith("weasyprint")]
    assert not [r for r in noisy if ".notdef" in r.getMessage() or "HarfBuzz" in r.getMessage()]


def test_a_font_folder_of_ones_own_is_used_for_what_the_bundled_fonts_lack(
    tmp_path: Path,
) -> None:
    # A font that has U+E000 (a private-use "logo" glyph) is made from a bundled one.
    from fontTools.ttLib import TTFont

    source = TTFont(fonts.BUNDLED_DIR / "NotoSansHebrew-Regular.ttf")
    for table in source["cmap"].tables:
        table.cmap[0xE000] = table.cmap[0x05D0]
    source["name"].setName("Pressroom Logo Test", 1, 3, 1, 0x409)
    source["name"].setName("Pressroom Logo Test", 4, 3, 1, 0x409)
    source["name"].setName("PressroomLogoTest-Regular", 6, 3, 1, 0x409)
    (tmp_path / "fonts").mkdir()
    source.save(tmp_path / "fonts" / "logo.ttf")

    output = render({**SAMPLE, "report_title": "Logo \ue000"}, fonts_dir=str(tmp_path / "fonts"))

    assert output.pdf is not None and output.notices == ()
    assert uncovered(output.pdf, {"\ue000"}) == set() and boxes(output.pdf) == []


def test_the_bundled_templates_name_no_font_the_renderer_lacks() -> None:
    from services.renderer.templating import TemplateLibrary

    library = TemplateLibrary(REPO / "templates")
    names = [n for n in library.names() if n != "custom-report.html"]  # the legacy one: Arial

    assert fonts.template_font_warnings(library, names) == []
