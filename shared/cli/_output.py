"""How the CLI prints: tables that never cut an id, and long text that wraps at words."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Below this, a wrapped column turns into fragments of one or two words: move the text under
# its row instead.
_MIN_LONG = 24


@dataclass(frozen=True)
class Col:
    """A table column. `long` text (reasons, errors, descriptions) is the only thing that
    gives way to a narrow terminal; every other cell — ids above all — is printed whole."""

    header: str
    long: bool = False
    justify: Literal["left", "right"] = "left"


def print_table(console: Console, columns: list[Col], rows: list[list[str]]) -> None:
    """A Rich table when everything fits; otherwise one line per row with its long text
    wrapped on the lines under it (`kubectl`-style), so nothing is truncated mid-id."""
    plain = [[Text.from_markup(cell).plain for cell in row] for row in rows]
    widths = [
        max([len(col.header), *(len(row[i]) for row in plain)]) for i, col in enumerate(columns)
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
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    _print_stacked(console, columns, rows, plain, widths, short, long)


def _print_stacked(
    console: Console,
    columns: list[Col],
    rows: list[list[str]],
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
    widths[first] = max(min(widths[first], console.width - others), len(columns[first].header))

    def line(cells: list[str], texts: list[str]) -> str:
        parts = []
        for i in short:
            pad = " " * max(widths[i] - len(texts[i]), 0)
            parts.append(pad + cells[i] if columns[i].justify == "right" else cells[i] + pad)
        return "  ".join(parts).rstrip()

    def emit(text: str) -> None:
        console.print(text, soft_wrap=True, highlight=False, overflow="ignore")

    headers = [col.header for col in columns]
    emit(f"[bold]{line(headers, headers)}[/]")
    indent = "    "
    for row, texts in zip(rows, plain, strict=True):
        if len(texts[first]) > widths[first]:
            emit(row[first])
            hidden = [("" if i == first else cell) for i, cell in enumerate(row)]
            emit(line(hidden, [("" if i == first else text) for i, text in enumerate(texts)]))
        else:
            emit(line(row, texts))
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
