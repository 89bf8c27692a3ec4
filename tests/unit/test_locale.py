"""A request's `locale` decides how numbers and dates read; without one nothing changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.renderer.templating import TemplateLibrary
from shared.events import ReportRequested

TEMPLATE = (
    "{{ n | number }}|{{ n | number(2) }}|{{ p | percent }}|{{ t | datetime }}|"
    "{{ t | datetime('%d/%m') }}|{{ t | date }}|{{ m | currency('EUR') }}"
)
VALUES = {"n": 1234567.891, "p": 87.5, "t": "2026-11-23T22:49:06Z", "m": 1234.5}


def render(tmp_path: Path, **context: object) -> list[str]:
    (tmp_path / "fmt.html").write_text(TEMPLATE)
    return TemplateLibrary(tmp_path).render("fmt.html", {**VALUES, **context}).split("|")


def test_without_a_locale_the_filters_write_what_they_always_wrote(tmp_path: Path) -> None:
    assert render(tmp_path)[:5] == [
        "1,234,568",
        "1,234,567.89",
        "87.5%",
        "2026-11-23 22:49 UTC",
        "23/11",
    ]
    assert render(tmp_path, locale=None)[:3] == ["1,234,568", "1,234,567.89", "87.5%"]


def test_a_german_report_writes_german_numbers_and_dates(tmp_path: Path) -> None:
    number, decimals, percent, when, explicit, day, money = render(tmp_path, locale="de-DE")

    assert (number, decimals) == ("1.234.568", "1.234.567,89")
    assert percent.replace("\xa0", " ") == "87,5 %"
    assert when == "23.11.2026 22:49 UTC"
    assert explicit == "23/11"  # a format the template spells out wins
    assert day == "23.11.2026"
    assert money.replace("\xa0", " ") == "1.234,50 €"


@pytest.mark.parametrize(
    ("locale", "number", "day"),
    [
        ("ja", "1,234,568", "2026/11/23"),
        ("ko", "1,234,568", "2026. 11. 23."),
        ("fr-FR", "1\u202f234\u202f568", "23 nov. 2026"),
        ("hi-IN", "12,34,568", "23 नव॰ 2026"),  # lakh grouping
        ("ar-EG", "1,234,568", "23\u200f/11\u200f/2026"),  # right-to-left marks
    ],
)
def test_other_locales_group_digits_and_name_months_their_own_way(
    tmp_path: Path, locale: str, number: str, day: str
) -> None:
    rendered = render(tmp_path, locale=locale)
    assert rendered[0] == number
    assert rendered[5] == day


def test_the_html_lang_follows_the_locale(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text('<html lang="{{ locale | default(none) | lang_tag }}">')
    library = TemplateLibrary(tmp_path)

    assert library.render("page.html", {}) == '<html lang="en">'
    assert library.render("page.html", {"locale": "zh_TW"}) == '<html lang="zh-Hant-TW">'
    assert library.render("page.html", {"locale": "ja"}) == '<html lang="ja">'


def test_a_request_with_an_unknown_locale_is_refused_with_what_a_locale_looks_like() -> None:
    assert ReportRequested(template="weekly.html", locale="de-DE").locale == "de-DE"
    assert ReportRequested(template="weekly.html").locale is None
    for bad in ("xx-QQ", "german", "de DE", "../etc"):
        with pytest.raises(ValidationError) as error:
            ReportRequested(template="weekly.html", locale=bad)
        assert "locale" in str(error.value)
