"""Where a long report can be cut: its longest table's rows, and whether the template allows it.

Pure text work on the rendered HTML (no WeasyPrint), done inside the render process that ran
Jinja: find the table with the most body rows, check that nothing in the document depends on
the pages before a cut (running headers, page-based counters, footnotes, left/right pages …),
and cut the HTML into one document per chunk. Every chunk keeps the whole document around the
table and only a window of its rows, so the boxes of everything else are the same in every chunk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Literal

SplitMode = Literal["auto", "on", "off"]
SPLIT_MODES: tuple[str, ...] = ("auto", "on", "off")
META_NAME = "pressroom-split"

# Rows a chunk carries past its end (and one before its start): the pages around a cut are laid
# out as in the one-piece render, whatever the rows hold. More rows than a page holds are needed.
LOOKAHEAD_ROWS = 120
LOOKBEHIND_ROWS = 1
# Chunks smaller than this are not worth a process: fewer, bigger chunks.
MIN_CHUNK_ROWS = 150


@dataclass(frozen=True)
class TableRows:
    """The body rows of one table, as character offsets into the HTML."""

    table_index: int  # among the document's <table> elements, in document order
    starts: tuple[int, ...]  # offset of each body row's "<tr"
    end: int  # offset where the last row ends (its section's end tag, or the table's)

    def __len__(self) -> int:
        return len(self.starts)

    def span(self, first: int, stop: int) -> tuple[int, int]:
        """Offsets of rows [first, stop)."""
        end = self.starts[stop] if stop < len(self.starts) else self.end
        return self.starts[first], end


@dataclass(frozen=True)
class Window:
    """One chunk: the rows it carries and the row its pages should start at."""

    index: int
    first: int  # first row in the chunk's HTML (a look-behind row before `target`)
    stop: int  # one past the last row in the chunk's HTML
    target: int  # row the chunk starts its pages at (0 for the first chunk)


class _Rows(HTMLParser):
    """Finds every table's body rows, the <meta name="pressroom-split"> and inline CSS."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=False)
        self._lines = [0]
        for match in re.finditer("\n", text):
            self._lines.append(match.end())
        self.tables: list[dict[str, object]] = []
        self._stack: list[dict[str, object]] = []
        self.meta: str | None = None
        self.css: list[str] = []
        self.stylesheets: list[str] = []
        self.internal_links = False
        self._in_style = False

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._lines[line - 1] + column

    def _close_section(self, table: dict[str, object], at: int) -> None:
        if table["section"] == "body" and table["open_rows"]:
            bodies = table["bodies"]
            assert isinstance(bodies, list)
            bodies.append((table["open_rows"], at))
        table["open_rows"] = []
        table["section"] = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): (v or "") for k, v in attrs}
        if "style" in values:
            self.css.append(values["style"])
        if tag == "style":
            self._in_style = True
        elif tag == "meta" and values.get("name", "").lower() == META_NAME:
            self.meta = values.get("content", "").strip().lower()
        elif tag == "link" and "stylesheet" in values.get("rel", "").lower().split():
            self.stylesheets.append(values.get("href", ""))
        elif tag == "a" and values.get("href", "").lstrip().startswith("#"):
            self.internal_links = True
        elif tag == "table":
            table: dict[str, object] = {
                "index": len(self.tables),
                "section": None,
                "open_rows": [],
                "bodies": [],
            }
            self.tables.append(table)
            self._stack.append(table)
        elif self._stack and tag in ("thead", "tbody", "tfoot"):
            table = self._stack[-1]
            self._close_section(table, self._offset())
            table["section"] = "body" if tag == "tbody" else "other"
        elif self._stack and tag == "tr":
            table = self._stack[-1]
            if table["section"] is None:  # rows straight in <table>: an implied <tbody>
                table["section"] = "body"
            if table["section"] == "body":
                rows = table["open_rows"]
                assert isinstance(rows, list)
                rows.append(self._offset())

    def handle_endtag(self, tag: str) -> None:
        if tag == "style":
            self._in_style = False
        elif self._stack and tag in ("thead", "tbody", "tfoot"):
            self._close_section(self._stack[-1], self._offset())
        elif self._stack and tag == "table":
            table = self._stack.pop()
            self._close_section(table, self._offset())

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.css.append(data)


@dataclass(frozen=True)
class Document:
    """What the planner learnt from one rendered HTML document."""

    rows: TableRows | None  # the table with the most body rows, if any
    meta: str | None  # the template's <meta name="pressroom-split" content=...>
    css: tuple[str, ...]  # inline <style> blocks and style="" attributes
    stylesheets: tuple[str, ...]  # <link rel="stylesheet"> hrefs
    internal_links: bool


def read(html: str) -> Document:
    parser = _Rows(html)
    parser.feed(html)
    parser.close()
    best: TableRows | None = None
    for table in parser.tables:
        bodies = table["bodies"]
        assert isinstance(bodies, list)
        # Rows of several <tbody> sections cannot be cut as one run: only a single body.
        if len(bodies) != 1:
            continue
        starts, end = bodies[0]
        if best is None or len(starts) > len(best):
            index = table["index"]
            assert isinstance(index, int)
            best = TableRows(index, tuple(starts), end)
    return Document(
        best,
        parser.meta,
        tuple(parser.css),
        tuple(parser.stylesheets),
        parser.internal_links,
    )


def count_rows_cheaply(html: str) -> int:
    """An upper bound of the body rows, without parsing: short reports stop here."""
    return html.count("<tr") + html.count("<TR")


# ---- what a split render cannot reproduce ---------------------------------------------------
_COMMENTS = re.compile(r"/\*.*?\*/", re.S)
# Each pattern names what the pages after a cut would get wrong, for the log.
_UNSUPPORTED_ANYWHERE = (
    (re.compile(r"string-set|\bstring\s*\(", re.I), "running strings (string-set)"),
    (re.compile(r"running\s*\(|\belement\s*\(", re.I), "running elements"),
    (re.compile(r"target-(counter|counters|text)\s*\(", re.I), "cross-references"),
    (re.compile(r"float\s*:\s*footnote|::footnote|@footnote", re.I), "footnotes"),
    (re.compile(r"counter-(increment|reset|set)\s*:", re.I), "CSS counters"),
    (re.compile(r"position\s*:\s*(fixed|running)", re.I), "fixed boxes on every page"),
    (re.compile(r"break-(before|after)\s*:\s*(left|right|recto|verso)", re.I), "left/right breaks"),
    (re.compile(r"@page[^{]*:(left|right|blank|nth|recto|verso)", re.I), "left/right pages"),
    (re.compile(r"(?<![-@\w.#])page\s*:\s*(?!auto\b)[-\w]", re.I), "named pages"),
    (re.compile(r"(column-count|column-width|columns)\s*:", re.I), "multi-column layout"),
)
_COUNTER_OUTSIDE_PAGE = (re.compile(r"\bcounters?\s*\(", re.I), "counters in the content")
_IMPORT = re.compile(r"@import\s+(?:url\()?\s*['\"]?([^'\")\s;]+)", re.I)


def _without_page_rules(css: str) -> str:
    """The CSS with every @page { ... } block (and its margin boxes) removed."""
    out = []
    i = 0
    for match in re.finditer(r"@page\b", css, re.I):
        if match.start() < i:
            continue
        out.append(css[i : match.start()])
        brace = css.find("{", match.end())
        if brace < 0:
            i = len(css)
            break
        depth = 0
        j = brace
        while j < len(css):
            if css[j] == "{":
                depth += 1
            elif css[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        i = j + 1
    out.append(css[i:])
    return "".join(out)


def unsupported(css_texts: list[str]) -> str | None:
    """Why these stylesheets cannot be split (the first reason found), or None."""
    for raw in css_texts:
        css = _COMMENTS.sub(" ", raw)
        for pattern, reason in _UNSUPPORTED_ANYWHERE:
            if pattern.search(css):
                return reason
        pattern, reason = _COUNTER_OUTSIDE_PAGE
        if pattern.search(_without_page_rules(css)):
            return reason
    return None


def imports_in(css: str) -> list[str]:
    return _IMPORT.findall(_COMMENTS.sub(" ", css))


# ---- cutting --------------------------------------------------------------------------------
def windows(rows: int, chunks: int) -> list[Window]:
    """Chunk boundaries: about the same number of rows each, with look-behind and look-ahead."""
    chunks = max(1, min(chunks, rows // MIN_CHUNK_ROWS))
    targets = [round(i * rows / chunks) for i in range(chunks)]
    result = []
    for i, target in enumerate(targets):
        nxt = targets[i + 1] if i + 1 < chunks else rows
        first = max(0, target - LOOKBEHIND_ROWS) if i else 0
        stop = min(rows, nxt + LOOKAHEAD_ROWS) if i + 1 < chunks else rows
        result.append(Window(i, first, stop, target))
    return result


def chunk_html(html: str, table: TableRows, window: Window) -> str:
    """The document with only the window's rows in the table."""
    before_rows = html[: table.starts[0]]
    start, end = table.span(window.first, window.stop)
    return before_rows + html[start:end] + html[table.end :]


def want_split(mode: str, meta: str | None, rows: int, threshold: int) -> bool:
    """Whether to split a table of `rows` body rows.

    `mode` is the operator's and the request's choice (see split_mode), `meta` the template's
    `<meta name="pressroom-split" content="auto|on|off">`: "off" from either wins, "on" splits
    any table long enough for two chunks, "auto" splits from `threshold` rows.
    """
    choices = [c for c in (mode, meta) if c in SPLIT_MODES]
    if "off" in choices:
        return False
    if "on" in choices:
        return rows >= 2 * MIN_CHUNK_ROWS
    return rows >= max(threshold, 2 * MIN_CHUNK_ROWS)


def split_mode(setting: str, request: str | None) -> str:
    """PRESSROOM_RENDER_SPLIT ("auto" or "off") and the request's choice, as one mode."""
    if setting == "off":
        return "off"
    return request if request in SPLIT_MODES else "auto"
