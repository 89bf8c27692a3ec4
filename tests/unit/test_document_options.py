"""What a PDF is (services/renderer/document.py): operator defaults < template front matter <
request < operator requirements, and every refusal as one reason; and the data exports
(services/renderer/exports.py): typed cells, RFC 4180, no formula from data."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from services.renderer.document import DocumentSpec, resolve
from services.renderer.exports import find_tables, make_exports
from services.renderer.templating import TemplateLibrary
from shared.errors import PermanentError
from shared.events import ReportRequested
from shared.schedules import load_schedules
from shared.settings import ConfigError, Settings, load_settings

TEMPLATE = {"pdf": {"variant": "pdf/a-3b", "tagged": True, "metadata": {"subject": "From it"}}}


def spec(given: dict[str, Any] | None = None, **operator: Any) -> DocumentSpec:
    return DocumentSpec(given=given or {}, **operator)


def test_the_template_decides_over_the_operator_default_and_the_request_over_both() -> None:
    plain = resolve(spec(default_variant="pdf/a-2b"), {}, "t.html")
    assert (plain.variant, plain.tagged, plain.subject) == ("pdf/a-2b", False, None)
    bundled = resolve(spec(default_variant="pdf/a-2b"), TEMPLATE, "t.html")
    assert (bundled.variant, bundled.tagged, bundled.subject) == ("pdf/a-3b", True, "From it")
    asked = resolve(spec({"variant": None, "metadata": {"subject": "Mine"}}), TEMPLATE, "t.html")
    assert (asked.variant, asked.tagged, asked.subject) == (None, True, "Mine")
    assert asked.author == "Pressroom"  # the operator's default author


def test_a_key_a_request_leaves_out_keeps_the_templates_after_a_trip_over_the_bus() -> None:
    sent = ReportRequested(template="t.html", pdf={"tagged": False})
    received = ReportRequested.model_validate_json(sent.model_dump_json())
    assert received.pdf is not None and received.pdf.given() == {"tagged": False}
    resolved = resolve(spec(received.pdf.given()), TEMPLATE, "t.html")
    assert (resolved.variant, resolved.tagged) == ("pdf/a-3b", False)


def test_operator_requirements_win_silently_over_defaults_and_refuse_a_request() -> None:
    required = spec(require=("pdf/a-2b", "tagged"))
    forced = resolve(required, TEMPLATE, "t.html")
    assert (forced.variant, forced.tagged) == ("pdf/a-2b", True)
    with pytest.raises(PermanentError, match=r"^pdf variant 'none' refused: the operator requires"):
        resolve(spec({"variant": None}, require=("pdf/a-2b",)), {}, "t.html")
    with pytest.raises(PermanentError, match=r"^untagged PDF refused: the operator requires"):
        resolve(spec({"tagged": False}, require=("tagged",)), {}, "t.html")
    assert resolve(spec({"variant": "pdf/a-2b"}, require=("pdf/a-2b",)), {}, "t").variant


@pytest.mark.parametrize(
    ("given", "front", "reason"),
    [
        ({"variant": "pdf/ua-1", "tagged": False}, {}, "pdf/ua-1 refused with tagged: false"),
        ({}, {"pdf": {"variant": "pdf/x-4"}}, "template 't.html': unknown pdf.variant 'pdf/x-4'"),
        ({}, {"pdf": {"colour": "red"}}, "template 't.html': unknown front matter key pdf.colour"),
        ({}, {"pdf": "pdf/a-3b"}, "template 't.html': front matter `pdf` must be a mapping"),
        ({}, {"pdf": {"metadata": ["x"]}}, "template 't.html': pdf.metadata is a mapping"),
    ],
)
def test_what_a_standard_forbids_is_refused_with_its_reason(
    given: dict[str, Any], front: dict[str, Any], reason: str
) -> None:
    with pytest.raises(PermanentError) as refused:
        resolve(spec(given), front, "t.html")
    assert refused.value.reason.startswith(reason)


def test_pdfa_asked_or_required_with_a_password_is_refused_because_pdfa_forbids_encryption() -> (
    None
):
    with pytest.raises(PermanentError, match="PDF/A forbids encryption"):
        resolve(spec({"variant": "pdf/a-3b"}, encrypted=True), {}, "t.html")
    with pytest.raises(PermanentError, match="PDF/A forbids encryption"):
        resolve(spec(encrypted=True, require=("pdf/a-2b",)), TEMPLATE, "t.html")
    assert resolve(spec({"variant": None}, encrypted=True), TEMPLATE, "t.html").variant is None


def test_a_default_pdfa_gives_way_to_the_requests_password_and_keeps_its_tags() -> None:
    # The bundled templates default to tagged PDF/A-3b: a password on one is still honoured.
    protected = resolve(spec(encrypted=True), TEMPLATE, "t.html")
    assert (protected.variant, protected.tagged) == (None, True)
    operator = resolve(spec(encrypted=True, default_variant="pdf/a-2b"), {}, "t.html")
    assert operator.variant is None


def test_operator_settings_for_pdfs_are_checked_at_start() -> None:
    assert Settings(pdf_require="tagged, pdf/a-3b").pdf_require == "tagged,pdf/a-3b"
    for bad, why in (("pdf/a-1b", "unknown requirement"), ("pdf/a-2b,pdf/a-3b", "at most one")):
        with pytest.raises(ConfigError, match=why):
            load_settings(pdf_require=bad)


# ---- exports -------------------------------------------------------------------------------
TABLE = """<table data-export="orders"><thead><tr><th>Day</th><th>Amount</th><th>Note</th>
<th>Code</th></tr></thead><tbody>
<tr><td data-value="2026-11-02">2 Nov</td><td data-value="1234.5">1.234,50 €</td>
<td>=1+1</td><td>007</td></tr>
<tr><td data-value="2026-11-03T10:00:00Z">3 Nov</td><td>-3</td><td>a "b", c</td>
<td>@x</td></tr></tbody></table><table><tr><td>not exported</td></tr></table>"""


def test_cells_are_typed_from_data_value_or_plain_text() -> None:
    [table] = find_tables(TABLE)
    assert table.name == "orders" and table.header == ("Day", "Amount", "Note", "Code")
    assert table.rows == (
        (date(2026, 11, 2), 1234.5, "=1+1", "007"),
        (datetime(2026, 11, 3, 10, tzinfo=UTC), -3, 'a "b", c', "@x"),
    )


def test_csv_is_rfc_4180_and_writes_formulas_as_text() -> None:
    [export] = make_exports(TABLE, ("csv",), "t.html", bom=False, created=None)
    assert export.name == "orders" and not export.content.startswith(b"\xef\xbb\xbf")
    text = export.content.decode()
    assert text.endswith("\r\n") and '"a ""b"", c"' in text
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[1] == ["2026-11-02", "1234.5", "'=1+1", "007"]
    assert rows[2] == ["2026-11-03T10:00:00+00:00", "-3", 'a "b", c', "'@x"]


def test_the_workbook_has_real_values_and_is_the_same_bytes_every_time() -> None:
    created = datetime(2026, 11, 23, 8, tzinfo=UTC)
    [first] = make_exports(TABLE, ("xlsx",), "t.html", bom=False, created=created)
    [again] = make_exports(TABLE, ("xlsx",), "t.html", bom=False, created=created)
    assert first.content == again.content
    sheet = openpyxl.load_workbook(io.BytesIO(first.content))["orders"]
    day, amount, note, code = sheet[2]
    assert day.value == datetime(2026, 11, 2) and day.is_date
    assert amount.value == 1234.5 and amount.data_type == "n"
    assert note.value == "=1+1" and note.data_type == "s"
    assert code.value == "007" and sheet["B3"].value == -3
    assert sheet["A3"].value == datetime(2026, 11, 3, 10)  # in UTC
    assert sheet.freeze_panes == "A2" and sheet.column_dimensions["C"].width >= 8
    # The report's title is the workbook's (the template's name where the page has none).
    assert openpyxl.load_workbook(io.BytesIO(first.content)).properties.title == "t.html"
    titled = "<html><head><title>Orders &amp; refunds\n 2026</title></head>" + TABLE
    [book] = make_exports(titled, ("xlsx",), "t.html", bom=False, created=created)
    assert openpyxl.load_workbook(io.BytesIO(book.content)).properties.title == (
        "Orders & refunds 2026"
    )


@pytest.mark.parametrize(
    ("html", "reason"),
    [
        ("<p>no table</p>", "csv export refused: template 't.html' marks no table exportable"),
        ('<table data-export="a b"></table>', "data-export name 'a b' is not a plain name"),
        ('<table data-export="x"></table><table data-export="x"></table>', "used by two tables"),
    ],
)
def test_an_export_the_template_cannot_give_is_refused(html: str, reason: str) -> None:
    with pytest.raises(PermanentError) as refused:
        make_exports(html, ("pdf", "csv"), "t.html", bom=True, created=None)
    assert reason in refused.value.reason
    assert make_exports(html, ("pdf",), "t.html", bom=True, created=None) == ()


def test_a_schedule_says_what_its_pdfs_are_and_a_wrong_variant_stops_the_config() -> None:
    entry = {
        "name": "archive",
        "cron": "0 8 * * 1",
        "request": {"template": "weekly.html", "pdf": {"variant": "pdf/a-2b"}},
    }
    [schedule] = load_schedules([entry])
    fire = datetime(2026, 11, 23, 8, tzinfo=UTC)
    request = schedule.request_for(fire)
    assert request.pdf is not None and request.pdf.given() == {"variant": "pdf/a-2b"}
    assert resolve(spec(request.pdf.given()), TEMPLATE, "weekly.html").variant == "pdf/a-2b"
    wrong = {**entry, "request": {"template": "weekly.html", "pdf": {"variant": "pdf/a-9"}}}
    with pytest.raises(PermanentError, match=r"schedule 'archive' is invalid: pdf\.variant"):
        load_schedules([wrong])


def test_a_chart_or_a_table_inside_a_cell_is_not_a_row_of_its_own() -> None:
    html = (
        '<table data-export="mixed"><tr><th>Name<th>Trend</tr>'
        "<tr><td>A &amp; B<td data-value='1 2 3'><svg><title>Trend, rising</title>"
        "<text>3</text></svg></tr>"
        "<tr><td>C<table><tr><td>inner</td></tr></table> D<td>4</td></tr></table>"
    )
    [table] = find_tables(html)
    assert table.header == ("Name", "Trend")
    assert table.rows == (("A & B", "1 2 3"), ("C inner D", 4))


def test_templates_validate_names_a_wrong_pdf_front_matter(tmp_path: Path) -> None:
    (tmp_path / "good.html").write_text("{#- ---\npdf: {variant: pdf/a-2b}\n--- -#}\n<p>x</p>")
    (tmp_path / "bad.html").write_text("{#- ---\npdf: {variant: pdf/a-9}\n--- -#}\n<p>x</p>")
    library = TemplateLibrary(tmp_path)
    assert library.validate("good.html") == []
    [problem] = library.validate("bad.html")
    assert "unknown pdf.variant 'pdf/a-9'" in problem.message
