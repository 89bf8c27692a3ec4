"""Request data inside a template's <style>: `|css_string`, and what every value is kept from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tinycss2

from services.renderer.templating import TemplateLibrary
from tests.helpers import REPO

HOSTILE = 'x"\n}} body { display: none } @page { content: "pwned\\'
HOSTILE_TOO = "it's <b>\r\f</style><script>&amp;\\22 \x00 \x1b"


def content_strings(css: str) -> list[str]:
    """The value of every `content:` declaration, as a CSS parser reads it, or the reason it
    could not (a string that was ended early, something after it)."""
    found = []
    for rule in tinycss2.parse_stylesheet(css, skip_comments=True, skip_whitespace=True):
        blocks = [rule.content or []]
        while blocks:
            tokens = blocks.pop(0)
            for decl in tinycss2.parse_blocks_contents(tokens, skip_whitespace=True):
                if decl.type == "at-rule":
                    blocks.append(decl.content or [])
                elif decl.type == "declaration" and decl.name == "content":
                    values = [t for t in decl.value if t.type not in ("whitespace", "comment")]
                    ok = len(values) == 1 and values[0].type == "string"
                    found.append(values[0].value if ok else f"not one string: {values}")
    return found


def style_of(html: str) -> str:
    return html.split("<style>", 1)[1].split("</style>", 1)[0]


@pytest.fixture
def lib(tmp_path: Path) -> TemplateLibrary:
    return TemplateLibrary(tmp_path)


@pytest.mark.parametrize("value", [HOSTILE, HOSTILE_TOO, "Q4 · 東京 “final” 100%"])
def test_css_string_keeps_any_value_inside_its_string(lib: TemplateLibrary, value: str) -> None:
    (lib.folder / "t.html").write_text(
        '<style>@page { @bottom-left { content: "{{ v | css_string }}"; } }</style>'
    )
    css = style_of(lib.render("t.html", {"v": value}))
    assert content_strings(css) == [value.replace("\x00", "\ufffd")]


def test_a_filtered_section_reads_as_the_text_it_shows(lib: TemplateLibrary) -> None:
    (lib.folder / "t.html").write_text(
        '<style>x { content: "{% filter css_string %}Period: {{ v }}{% endfilter %}"; }</style>'
    )
    css = style_of(lib.render("t.html", {"v": HOSTILE}))
    assert content_strings(css) == [f"Period: {HOSTILE}"]  # not `&#34;`: a quote again


def test_without_the_filter_a_value_still_cannot_leave_its_css_string(lib: TemplateLibrary) -> None:
    # Autoescaping covers quotes and `<`; newlines and a closing backslash are written as
    # character references, which a <style> does not decode: the string holds.
    (lib.folder / "t.html").write_text(
        '<style>x { content: "{{ v }}"; }</style><p title="{{ v }}">{{ v }}</p>'
    )
    html = lib.render("t.html", {"v": HOSTILE})
    [shown] = content_strings(style_of(html))
    assert "\n" not in shown and shown.startswith("x&#34;&#10;}}")
    assert "&#10;" in html.split("</style>", 1)[1]  # in HTML it is the same newline


def test_markup_is_left_alone_and_autoescape_false_means_raw(lib: TemplateLibrary) -> None:
    (lib.folder / "t.html").write_text(
        "{{ chart }}|{{ v | safe }}|{% autoescape false %}{{ v }}{% endautoescape %}|{{ n }}"
    )
    chart = lib.env.globals["sparkline"]([1, 3, 2])
    html = lib.render("t.html", {"chart": chart, "v": "a\nb", "n": None})
    chart, safe, raw, number = html.split("|")
    assert chart.startswith("<svg") and (safe, raw) == ("a\nb", "a\nb")
    assert number == "None"


FOOTERS = {
    "daily.html": "Daily portfolio report · ",
    "portfolio.html": "Pressroom · ",
    "custom-report.html": "",
}


@pytest.mark.parametrize("template", list(FOOTERS))
def test_bundled_footers_show_request_text_as_text(template: str) -> None:
    lib = TemplateLibrary(REPO / "templates")
    sample = "custom-report.json" if template == "custom-report.html" else "portfolio.json"
    data = json.loads((REPO / "templates" / "samples" / sample).read_text())
    data["generation_time"] = "now"

    def style(value: str) -> str:
        return style_of(
            lib.render(template, {**data, "reporting_period": value, "report_title": value})
        )

    hostile, plain = style(HOSTILE), style("November 2026")
    left, right = content_strings(hostile)
    assert left == FOOTERS[template] + HOSTILE
    assert right.startswith('not one string: [<StringToken "Page ">')  # the page counter
    # Nothing else became CSS: the same rules as with a harmless value.
    rules = [r.type for r in tinycss2.parse_stylesheet(hostile, True, True)]
    assert rules == [r.type for r in tinycss2.parse_stylesheet(plain, True, True)]
