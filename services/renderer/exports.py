"""Data exports beside the PDF: the tables a template marks `data-export="<name>"` as CSV and XLSX.

A cell's value is its `data-value` attribute when it has one (the raw number or ISO date the
template printed in a localised form), else its text; a plain number (`1170.75`, `-3`, not
`007` or `1,234`) or an ISO date becomes a real number or date in the workbook. Text that a
spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage
return) is written as text: prefixed with `'` in CSV (OWASP's advice), a string cell with
Excel's quote prefix in XLSX. Both are deterministic: the same
tables and request give the same bytes.

Runs in a render process, on the HTML the template rendered (no second Jinja pass).
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, date, datetime
from html import unescape
from html.parser import HTMLParser
from typing import Any

from shared.errors import PermanentError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?$")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ISO_DATETIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$"
)
MAX_WIDTH = 60
BLOCKS = frozenset({"table", "tr", "td", "th", "div", "p", "br", "li", "ul", "ol"})
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


@dataclass(frozen=True)
class Table:
    name: str
    header: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]  # typed: str, int, float, date, datetime, None


@dataclass(frozen=True)
class Export:
    """One export file: `csv` with its table's name, or the one `xlsx` (name None)."""

    format: str
    name: str | None
    content: bytes


def typed(raw: str) -> Any:
    """A cell's value: an int, float, date or datetime when it reads as one, else text."""
    value = raw.strip()
    if not value:
        return None
    if NUMBER.match(value):
        number = float(value)
        return int(value) if re.fullmatch(r"-?\d+", value) and abs(number) < 2**53 else number
    try:
        if ISO_DATE.match(value):
            return date.fromisoformat(value)
        if ISO_DATETIME.match(value):
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        pass
    return value


class _TableReader(HTMLParser):
    """The cells of every table marked data-export, in one linear pass over the HTML (the
    standard library's tokenizer: a 3,000-row report parses in a fraction of a second, where
    a full HTML5 tree takes seconds). A table inside a cell belongs to that cell's text; an
    inline SVG (a chart's <title> included) is not cell text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, list[list[tuple[str, str | None, str]]]]] = []
        self._rows: list[list[tuple[str, str | None, str]]] | None = None
        self._depth = 0  # tables open inside the exported one
        self._svg = 0
        self._cell: tuple[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self._svg += 1
        if self._svg:
            return
        if self._rows is None:
            if tag == "table":
                name = dict(attrs).get("data-export")
                if name is not None:
                    self._rows = []
                    self.found.append((name, self._rows))
                    self._depth = 0
            return
        if self._cell is not None and tag in BLOCKS:
            self._text.append(" ")  # a nested block reads apart from the text before it
        if tag == "table":
            self._depth += 1
        elif self._depth == 0 and tag == "tr":
            self._close_cell()
            self._rows.append([])
        elif self._depth == 0 and tag in ("td", "th"):
            self._close_cell()
            if not self._rows:
                self._rows.append([])
            self._cell = (tag, dict(attrs).get("data-value"))

    def handle_endtag(self, tag: str) -> None:
        if self._svg:
            if tag == "svg":
                self._svg -= 1
            return
        if self._rows is None:
            return
        if tag == "table":
            if self._depth == 0:
                self._close_cell()
                self._rows = None
            else:
                self._depth -= 1
        elif self._depth == 0 and tag in ("td", "th", "tr"):
            self._close_cell()

    def handle_data(self, data: str) -> None:
        if self._cell is not None and not self._svg:
            self._text.append(data)

    def _close_cell(self) -> None:
        if self._cell is not None and self._rows is not None:
            tag, value = self._cell
            self._rows[-1].append((tag, value, " ".join("".join(self._text).split())))
        self._cell = None
        self._text = []


def find_tables(html: str) -> list[Table]:
    """Every table marked data-export, in document order; a bad or repeated name is the
    template's error."""
    reader = _TableReader()
    reader.feed(html)
    reader.close()
    tables: list[Table] = []
    for name, found in reader.found:
        if not NAME.match(name):
            raise PermanentError(
                f"data-export name '{name[:40]}' is not a plain name (letters, digits, _ and -, "
                "at most 31 characters)"
            )
        if any(t.name == name for t in tables):
            raise PermanentError(f"data-export name '{name}' is used by two tables")
        header: tuple[str, ...] = ()
        rows: list[tuple[Any, ...]] = []
        for cells in found:
            if not cells:
                continue
            if not header and not rows and all(tag == "th" for tag, _, _ in cells):
                header = tuple(text for _, _, text in cells)
                continue
            rows.append(tuple(typed(text if value is None else value) for _, value, text in cells))
        tables.append(Table(name, header, tuple(rows)))
    return tables


def _safe_text(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_START) else value


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, date):
        return value.isoformat()
    return _safe_text(str(value))


def to_csv(table: Table, *, bom: bool) -> bytes:
    """RFC 4180: CRLF line ends, fields quoted when they hold a comma, quote or line end."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    if table.header:
        writer.writerow([_safe_text(h) for h in table.header])
    for row in table.rows:
        writer.writerow([_csv_value(v) for v in row])
    return ("\ufeff" if bom else "").encode() + buffer.getvalue().encode("utf-8")


def to_xlsx(tables: list[Table], created: datetime | None, title: str | None = None) -> bytes:
    """One workbook, a sheet per table: typed cells, a frozen bold header, column widths; the
    report's title as the workbook's."""
    # Imported here: heavy (openpyxl): loaded in render processes, and only for an XLSX.
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.writer.excel import ExcelWriter

    workbook = Workbook()
    workbook.remove(workbook.active)
    bold = Font(bold=True)
    for table in tables:
        sheet = workbook.create_sheet(table.name)
        widths: dict[int, int] = {}
        lines = [table.header] if table.header else []
        for r, line in enumerate([*lines, *table.rows], start=1):
            for c, value in enumerate(line, start=1):
                cell = sheet.cell(row=r, column=c)
                if isinstance(value, datetime):
                    # Excel has no time zones: an aware time is written in UTC.
                    if value.tzinfo is not None:
                        value = value.astimezone(UTC).replace(tzinfo=None)
                    cell.value = value
                    cell.number_format = "yyyy-mm-dd hh:mm:ss"
                elif isinstance(value, date):
                    cell.value = value
                    cell.number_format = "yyyy-mm-dd"
                elif isinstance(value, str):
                    cell.value = value
                    cell.data_type = "s"  # never a formula, whatever it starts with
                    if value.startswith(FORMULA_START):
                        cell.quotePrefix = True
                else:
                    cell.value = value
                if table.header and r == 1:
                    cell.font = bold
                shown = len(str(value)) if value is not None else 0
                widths[c] = max(widths.get(c, 0), shown)
        for column, width in widths.items():
            letter = sheet.cell(row=1, column=column).column_letter
            sheet.column_dimensions[letter].width = min(max(width + 2, 8), MAX_WIDTH)
        if table.header:
            sheet.freeze_panes = "A2"
    if created is not None:
        naive = created.astimezone(UTC).replace(tzinfo=None) if created.tzinfo else created
        workbook.properties.created = workbook.properties.modified = naive
    workbook.properties.creator = "Pressroom"
    workbook.properties.title = title
    buffer = io.BytesIO()
    # ExcelWriter, not workbook.save(): save() stamps the clock as the modification time.
    ExcelWriter(workbook, zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED)).save()
    return _fixed_times(buffer.getvalue())


def _fixed_times(data: bytes) -> bytes:
    """The same workbook with every zip member's time fixed (openpyxl stamps the clock)."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = info.external_attr
            target.writestr(fixed, source.read(info.filename))
    return out.getvalue()


_TITLE = re.compile(r"<title[^>]*>(.*?)</title\s*>", re.IGNORECASE | re.DOTALL)


def html_title(html: str) -> str | None:
    """The document's <title>, as a reader sees it (entities decoded, spaces collapsed)."""
    found = _TITLE.search(html[:200_000])
    text = " ".join(unescape(found.group(1)).split()) if found else ""
    return text[:255] or None


def make_exports(
    html: str, formats: tuple[str, ...], template: str, *, bom: bool, created: datetime | None
) -> tuple[Export, ...]:
    """The CSV files and XLSX workbook the job asks for; none asked, nothing parsed."""
    wanted = [f for f in formats if f in ("csv", "xlsx")]
    if not wanted:
        return ()
    tables = find_tables(html)
    if not tables:
        raise PermanentError(
            f"{' and '.join(wanted)} export refused: template '{template}' marks no table "
            'exportable (data-export="name" on a <table>)'
        )
    found: list[Export] = []
    if "csv" in wanted:
        found += [Export("csv", t.name, to_csv(t, bom=bom)) for t in tables]
    if "xlsx" in wanted:
        found.append(Export("xlsx", None, to_xlsx(tables, created, html_title(html) or template)))
    return tuple(found)
