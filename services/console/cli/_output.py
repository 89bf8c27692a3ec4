"""How the CLI prints: tables that never cut an id, long text that wraps at words, and text
from requests shown as text.

Anything a request (or the bus, or a template) supplied — request ids, template names, reasons,
targets — can hold Rich markup (`[/evil]` crashes a print) or terminal control sequences
(`ESC]0;…BEL` retitles the operator's terminal, `ESC[2J` clears it, U+202E reverses what follows).
This module is the one place that makes such text safe to print: `visible` for plain output,
`literal` for a value placed inside a markup string, and `print_table`, which treats every
`str` cell as plain text.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

# Below this, a wrapped column turns into fragments of one or two words: move the text under
# its row instead.
_MIN_LONG = 24

# C0 and C1 controls and DEL; bidirectional embeddings, overrides, isolates and marks ("Trojan
# Source"); invisible format characters that hide or join text (zero-width space, word joiner,
# soft hyphen, BOM, tag characters; not the zero-width (non-)joiner that scripts and emoji need);
# line and paragraph separators; lone surrogates (unprintable: they would raise).
_OTHERS = (
    "\x7f-\x9f\xad\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"
    "\ufeff\ufff9-\ufffb\ud800-\udfff\U000e0001\U000e0020-\U000e007f"
)
_UNSAFE = re.compile(f"[\x00-\x1f{_OTHERS}]")
_UNSAFE_KEEPING_LINES = re.compile(f"[\x00-\x09\x0b-\x1f{_OTHERS}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _shown(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def visible(value: object, *, lines: bool = False) -> str:
    """`value` as text with every control character written out (`\\x1b`, `\\u202e`, `\\n`),
    so nothing reaches the terminal but printable characters; `lines` keeps line breaks (for
    multi-line text such as a payload). Idempotent."""
    text = value if isinstance(value, str) else str(value)
    return (_UNSAFE_KEEPING_LINES if lines else _UNSAFE).sub(_shown, text)


def literal(value: object) -> str:
    """`value` for an f-string that Rich reads as markup: shown exactly, never interpreted.

    `out.print(f"[bold]{literal(request_id)}[/] …")`. Not for `print_table` cells or
    `markup=False` prints: those take plain text (`visible`)."""
    return escape(visible(value))


def styled(text: str, style: str) -> Text:
    """A table cell with a style (instead of markup in a `str` cell, which is shown as is)."""
    return Text(visible(text), style=style)


def plain_text(cell: str | Text) -> Text:
    return cell if isinstance(cell, Text) else Text(visible(cell))


@dataclass(frozen=True)
class Col:
    """A table column. `long` text (reasons, errors, descriptions) is the only thing that
    gives way to a narrow terminal; every other cell — ids above all — is printed whole."""

    header: str
    long: bool = False
    justify: Literal["left", "right"] = "left"


def print_table(console: Console, columns: list[Col], rows: Sequence[Sequence[str | Text]]) -> None:
    """A Rich table when everything fits; otherwise one line per row with its long text
    wrapped on the lines under it (`kubectl`-style), so nothing is truncated mid-id.

    A `str` cell is plain text, shown as it is (markup and controls included, made visible);
    style a cell with `styled`."""
    cells = [[plain_text(cell) for cell in row] for row in rows]
    plain = [[cell.plain for cell in row] for row in cells]
    widths = [
        max([cell_len(col.header), *(cell_len(row[i]) for row in plain)])
        for i, col in enumerate(columns)
    ]
    short = [i for i, col in enumerate(columns) if not col.long]
    long = [i for i, col in enumerate(columns) if col.long]
    borders = 3 * len(columns) + 1
    needed = sum(widths[i] for i in short) + borders
    needed += sum(min(widths[i], _MIN_LONG) for i in long)
    if needed <= console.width:
        table = Table()
        for i, col in enumerate(columns):
            if col.long:
                table.add_column(col.header, justify=col.justify, overflow="fold")
            else:
                table.add_column(col.header, justify=col.justify, no_wrap=True, min_width=widths[i])
        for row in cells:
            table.add_row(*row)
        console.print(table)
        return
    _print_stacked(console, columns, cells, plain, widths, short, long)


def _print_stacked(
    console: Console,
    columns: list[Col],
    rows: list[list[Text]],
    plain: list[list[str]],
    widths: list[int],
    short: list[int],
    long: list[int],
) -> None:
    # The first column (the id) gives way when the line would not fit: an id longer than its
    # share goes whole on a line of its own, and the row's other cells under it, aligned.
    widths = list(widths)
    first, rest = short[0], short[1:]
    others = sum(widths[i] + 2 for i in rest)
    widths[first] = max(min(widths[first], console.width - others), cell_len(columns[first].header))

    def line(cells: list[Text]) -> Text:
        parts = []
        for i in short:
            pad = " " * max(widths[i] - cell_len(cells[i].plain), 0)
            right = columns[i].justify == "right"
            parts.append(Text.assemble(pad, cells[i]) if right else Text.assemble(cells[i], pad))
        joined = Text("  ").join(parts)
        joined.rstrip()
        return joined

    def emit(text: Text) -> None:
        console.print(text, soft_wrap=True, highlight=False, overflow="ignore")

    header = line([Text(col.header) for col in columns])
    header.stylize("bold")
    emit(header)
    indent = "    "
    for row, texts in zip(rows, plain, strict=True):
        if cell_len(texts[first]) > widths[first]:
            emit(row[first])
            emit(line([Text() if i == first else cell for i, cell in enumerate(row)]))
        else:
            emit(line(row))
        for i in long:
            if not texts[i]:
                continue
            wrapped = textwrap.fill(
                f"{columns[i].header}: {texts[i]}",
                width=max(console.width, 40),
                initial_indent=indent,
                subsequent_indent=indent,
                break_long_words=False,  # an id or a URL inside a reason stays whole
                break_on_hyphens=False,
            )
            console.print(wrapped, soft_wrap=True, highlight=False, markup=False)


def shorten(text: str, width: int) -> str:
    """Cut long text at a word boundary, never mid-word."""
    return textwrap.shorten(text, width, placeholder=" …") if len(text) > width else text
