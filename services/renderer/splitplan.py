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
from html import unescape as html_unescape
from typing import Any, Literal

SplitMode = Literal["auto", "on", "off"]
SPLIT_MODES: tuple[str, ...] = ("auto", "on", "off")
META_NAME = "pressroom-split"

# Rows a chunk carries past its end (and one before its start): the pages around a cut are laid
# out as in the one-piece render, whatever the rows hold. More rows than a page holds are needed.
LOOKAHEAD_ROWS = 100
LOOKBEHIND_ROWS = 1
# Chunks smaller than this are not worth a process: fewer, bigger chunks.
MIN_CHUNK_ROWS = 150
# What a look-ahead row costs a chunk, as a share of a row it lays out and draws: it is parsed,
# styled and boxed only (measured on the bench's statement and portfolio: about a third).
LOOKAHEAD_COST = 0.35


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


# A tag (attributes may hold quoted ">"), or a comment; text between them is skipped.
_TAG = re.compile(r"<!--.*?-->|<(/?)([A-Za-z][^\s/>]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>", re.S)
_ATTR = re.compile(r"([^\s=/>\"']+)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+))?")
# Elements whose content is text, not tags (a "<tr" in a script is no row).
_RAW_TEXT = frozenset({"script", "style", "textarea", "title", "xmp", "iframe", "noembed"})


def _attributes(text: str) -> dict[str, str]:
    values = {}
    for name, value in _ATTR.findall(text):
        values[name.lower()] = html_unescape(value[1:-1] if value[:1] in "\"'" else value)
    return values


class _Scan:
    """Every table's body rows (as offsets), <meta name="pressroom-split">, and the CSS."""

    def __init__(self, text: str) -> None:
        self.tables: list[dict[str, Any]] = []
        self.meta: str | None = None
        self.css: list[str] = []
        self.stylesheets: list[str] = []
        self.internal_links = False
        stack: list[dict[str, Any]] = []
        lowered = text.lower()
        position = 0
        while True:
            match = _TAG.search(text, position)
            if match is None:
                break
            position = match.end()
            closing, name, attrs = match.group(1), match.group(2), match.group(3)
            if name is None:
                continue  # a comment
            tag = name.lower()
            if closing:
                if stack and tag in ("thead", "tbody", "tfoot"):
                    self._close(stack[-1], match.start())
                elif stack and tag == "table":
                    self._close(stack.pop(), match.start())
                continue
            if "style" in attrs.lower() or tag in ("meta", "link", "a"):
                values = _attributes(attrs)
                if "style" in values:
                    self.css.append(values["style"])
                if tag == "meta" and values.get("name", "").lower() == META_NAME:
                    self.meta = values.get("content", "").strip().lower()
                elif tag == "link" and "stylesheet" in values.get("rel", "").lower().split():
                    self.stylesheets.append(values.get("href", ""))
                elif tag == "a" and values.get("href", "").lstrip().startswith("#"):
                    self.internal_links = True
            if tag in _RAW_TEXT:
                end = lowered.find(f"</{tag}", position)
                end = len(text) if end < 0 else end
                if tag == "style":
                    self.css.append(text[position:end])
                position = end
            elif tag == "table":
                table: dict[str, Any] = {"index": len(self.tables), "section": None}
                table.update(open_rows=[], bodies=[])
                self.tables.append(table)
                stack.append(table)
            elif stack and tag in ("thead", "tbody", "tfoot"):
                self._close(stack[-1], match.start())
                stack[-1]["section"] = "body" if tag == "tbody" else "other"
            elif stack and tag == "tr":
                table = stack[-1]
                if table["section"] is None:  # rows straight in <table>: an implied <tbody>
                    table["section"] = "body"
                if table["section"] == "body":
                    table["open_rows"].append(match.start())

    @staticmethod
    def _close(table: dict[str, Any], at: int) -> None:
        if table["section"] == "body" and table["open_rows"]:
            table["bodies"].append((table["open_rows"], at))
        table["open_rows"] = []
        table["section"] = None


@dataclass(frozen=True)
class Document:
    """What the planner learnt from one rendered HTML document."""

    rows: TableRows | None  # the table with the most body rows, if any
    meta: str | None  # the template's <meta name="pressroom-split" content=...>
    css: tuple[str, ...]  # inline <style> blocks and style="" attributes
    stylesheets: tuple[str, ...]  # <link rel="stylesheet"> hrefs
    internal_links: bool


def read(html: str) -> Document:
    parser = _Scan(html)
    best: TableRows | None = None
    for table in parser.tables:
        bodies = table["bodies"]
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


_MARKUP = re.compile(r"<[^>]*>|\s+")
SAMPLE_ROWS = 200  # rows whose text is measured for the average


def _text(html: str) -> int:
    """Characters of text, roughly (tags dropped, white space as one)."""
    return len(_MARKUP.sub(" ", html))


def around(html: str, table: TableRows) -> tuple[float, float]:
    """The document's content before and after the table's rows (the heading, the totals,
    notes …), in rows: its tags (about one a box) and its text each counted against the
    rows' own, whichever says more."""
    lowered = html.lower()
    start = max(lowered.find("<body"), 0)
    end = lowered.rfind("</body")
    end = len(html) if end < table.end else end
    first = table.starts[0]
    tags = max(html.count("<", first, table.end) / len(table), 1.0)
    sample = min(len(table), SAMPLE_ROWS)
    text = max(_text(html[first : table.span(0, sample)[1]]) / sample, 1.0)

    def rows(a: int, b: int) -> float:
        return max(html.count("<", a, b) / tags, _text(html[a:b]) / text)

    return rows(start, first), rows(table.end, end)


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
# A chunk's table holds only its window of rows, so a row's place among its siblings is not
# the one-piece render's: a selector counting rows (zebra stripes with :nth-child(even), a
# :last-child row …) or looking at other rows (tr.x ~ tr, :has()) would match other rows.
# Cells keep their places in their rows, and header and footer rows are not cut, so a compound
# naming another element type (td:first-child, li:nth-child(2), td:not(:last-child)), one
# below a cell or another element (td > :first-child, tr > :last-child) or a thead/tfoot row
# is fine; one naming `tr` or no type at all (.x:nth-child(odd), :nth-of-type(3)) may count
# body rows.
_POSITIONAL = re.compile(
    r":(?:nth-child|nth-last-child|nth-of-type|nth-last-of-type|first-child|last-child"
    r"|first-of-type|last-of-type|only-child|only-of-type)\b",
    re.I,
)
_LATER_SIBLING = re.compile(r"~(?!=)")
_HAS = re.compile(r":has\(", re.I)
_TYPE = re.compile(r"(?:[-\w*]*\|)?([A-Za-z][-\w]*)")
_STOPS = " \t\r\n\f>+~,{};"
_ROW_PARENTS = frozenset({"tbody", "table"})
_NOT_BODY = frozenset({"thead", "tfoot", "td", "th"})
_WHITE = re.compile(r"\s+")
_ESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})[ \t\r\n\f]?|(.))", re.S)


def _unescape(css: str) -> str:
    """CSS escapes (t\\72 is tr) as the characters they stand for."""

    def one(match: re.Match[str]) -> str:
        if match[1]:
            code = int(match[1], 16)
            return chr(code) if 0 < code <= 0x10FFFF else "\ufffd"
        return match[2]

    return _ESCAPE.sub(one, css)


# A template's CSS is untrusted: the scans below stop at this many characters of one selector
# and this many pseudo-classes, and the document is then laid out in one piece.
_LONGEST_SELECTOR = 1000
_MOST_SELECTORS = 2000


class _TooLong(Exception):
    pass


def _compound_before(css: str, end: int) -> tuple[str, int]:
    """The compound selector ending at `end` (a functional pseudo-class's argument belongs to
    the compound around it) and where it starts."""
    depth, start = 0, end
    while start > 0:
        if end - start > _LONGEST_SELECTOR:
            raise _TooLong
        char = css[start - 1]
        if char == ")":
            depth += 1
        elif char == "(":
            depth = max(depth - 1, 0)
        elif depth == 0 and char in _STOPS:
            break
        start -= 1
    return css[start:end], start


def _type_of(compound: str) -> str | None:
    found = _TYPE.match(compound)
    return found.group(1).lower() if found else None


def _previous(css: str, start: int) -> tuple[str, str | None]:
    """The combinator before a compound starting at `start` (" " for a descendant, "" for
    none) and the type of the compound before it, in CSS whose white space is collapsed."""
    i = start - (css[start - 1 : start] == " ")  # white space is one space here
    combinator = " " if i < start else ""
    if i > 0 and css[i - 1] in ">+~":
        combinator = css[i - 1]
        i -= 1 + (css[i - 2 : i - 1] == " ")
    if not combinator or i == 0 or css[i - 1] in ",{};":
        return "", None
    compound, _ = _compound_before(css, i)
    return combinator, _type_of(compound)


def _may_be_a_body_row(css: str, end: int) -> bool:
    compound, start = _compound_before(css, end)
    kind = _type_of(compound)
    if kind not in (None, "tr"):
        return False
    combinator, parent = _previous(css, start)
    if combinator == ">" and parent is not None and parent not in _ROW_PARENTS:
        return False  # a child of a row, a cell or another element
    return not (combinator in (" ", ">") and parent in _NOT_BODY)


def _counts_rows(css: str) -> bool:
    if _HAS.search(css):
        return True
    css = _WHITE.sub(" ", css)
    try:
        return _positional_row(css) or _later_row(css)
    except _TooLong:
        return True


def _positional_row(css: str) -> bool:
    for n, match in enumerate(_POSITIONAL.finditer(css)):
        if n > _MOST_SELECTORS:
            raise _TooLong
        # The pseudo-class's own compound: up to the next stop after it.
        end, depth = match.end(), 0
        while end < len(css) and (depth or css[end] not in _STOPS):
            depth += {"(": 1, ")": -1}.get(css[end], 0)
            if depth < 0:
                break
            end += 1
            if end - match.end() > _LONGEST_SELECTOR:
                raise _TooLong
        if _may_be_a_body_row(css, end):
            return True
    return False


def _later_row(css: str) -> bool:
    for n, match in enumerate(_LATER_SIBLING.finditer(css)):
        if n > _MOST_SELECTORS:
            raise _TooLong
        i = match.end() + (css[match.end() : match.end() + 1] == " ")
        j = i
        while j < len(css) and css[j] not in _STOPS:
            j += 1
            if j - i > _LONGEST_SELECTOR:
                raise _TooLong
        if j > i and _type_of(css[i:j]) in (None, "tr"):
            return True
    return False


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
        css = _unescape(_COMMENTS.sub(" ", raw))
        for pattern, reason in _UNSUPPORTED_ANYWHERE:
            if pattern.search(css):
                return reason
        pattern, reason = _COUNTER_OUTSIDE_PAGE
        if pattern.search(_without_page_rules(css)):
            return reason
        if _counts_rows(css):
            return "selectors that count rows (:nth-child …)"
    return None


def imports_in(css: str) -> list[str]:
    return _IMPORT.findall(_COMMENTS.sub(" ", css))


# ---- cutting --------------------------------------------------------------------------------
def windows(rows: int, chunks: int, before: float = 0.0, after: float = 0.0) -> list[Window]:
    """Chunk boundaries, with look-behind and look-ahead, so that every chunk has about the
    same work: the first also lays out what comes before the table (`before`, in rows), the
    last what comes after it, and each but the last carries its look-ahead rows."""
    chunks = max(1, min(chunks, rows // MIN_CHUNK_ROWS))
    extra = [
        (before if i == 0 else 0.0)
        + (after if i == chunks - 1 else 0.0)
        + (LOOKAHEAD_ROWS * LOOKAHEAD_COST if i < chunks - 1 else 0.0)
        for i in range(chunks)
    ]
    # Rows per chunk: `work - extra`, for the one `work` that shares out every row; a chunk
    # keeps at least half an equal share, whatever lies around the table.
    floor = rows / chunks / 2
    low, high = 0.0, rows + sum(extra)
    for _ in range(60):
        work = (low + high) / 2
        low, high = (work, high) if sum(max(work - e, floor) for e in extra) < rows else (low, work)
    shares = [max(high - e, floor) for e in extra]
    targets, total = [0], 0.0
    for share in shares[:-1]:
        total += share
        targets.append(round(total))
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
