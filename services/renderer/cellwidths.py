"""A long table's cells measured once per distinct cell, not once per row (render processes only).

Before it lays a table out, WeasyPrint measures every cell's min- and max-content width, and
each measure lays the cell's text out with Pango: for a 3,000-row table that is a fifth of the
render. Long tables repeat themselves (dates, descriptions, "0.00", a status column), and a
cell's widths depend only on its boxes: their kinds, their texts and their styles, and — with
`border-collapse: collapse` — the border widths the table's collapsing gave the cell (set on the
box, from its neighbours, row, column and the table). Here a render keeps each cell's widths
under a key made of exactly those, and a cell with the same key is not measured again.

A box's style is keyed by what WeasyPrint computes it from: its cascaded declarations, the
pseudo-element it is, and its parent's style, up to the root (the root style, fonts and page
sizes are the document's own). WeasyPrint's few in-place changes to styles after the cascade
(footnotes, list markers, leaders) follow from the cascade and the box structure, which the key
holds too. A cell holding anything but blocks, lines, inline boxes and text (an image, an inline
block, a nested table …) is measured as before, and so is one whose declarations cannot be
hashed. The PDFs are byte-identical to WeasyPrint's own (tests/unit/test_cell_widths.py).

The keys live on the layout context: one render's, freed with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_ATTRIBUTE = "_pressroom_cell_widths"
_installed: list[Any] = []  # WeasyPrint's own function, once patched
_enabled = True
# Cells this process did not measure again, and cells it measured (all renders).
totals = {"reused": 0, "measured": 0}
_kinds: dict[str, Any] = {}  # WeasyPrint's classes, once installed


class _Memo:
    __slots__ = ("styles", "tokens", "widths")

    def __init__(self) -> None:
        # id(style) -> (style, its number): the style is held so that its id is not reused.
        self.styles: dict[int, tuple[Any, int | None]] = {}
        self.tokens: dict[Any, int] = {}
        self.widths: dict[Any, tuple[float, float]] = {}


def install() -> None:
    """Measure each distinct cell once per render, in this process (idempotent)."""
    if _installed:
        return
    # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
    from weasyprint.css import AnonymousStyle, ComputedStyle
    from weasyprint.formatting_structure import boxes
    from weasyprint.layout import preferred

    _kinds.update(
        computed=ComputedStyle,
        anonymous=AnonymousStyle,
        boxes=frozenset(
            {boxes.TableCellBox, boxes.BlockBox, boxes.LineBox, boxes.InlineBox, boxes.TextBox}
        ),
    )
    original = preferred.table_cell_min_max_content_width

    def measured(context: Any, box: Any, outer: bool = True) -> Any:
        if not _enabled:
            return original(context, box, outer)
        memo = context.__dict__.get(_ATTRIBUTE)
        if memo is None:
            memo = context.__dict__[_ATTRIBUTE] = _Memo()
        key = _box_key(box, memo)
        if key is None:
            return original(context, box, outer)
        key = (key, outer)
        found = memo.widths.get(key)
        if found is not None:
            totals["reused"] += 1
            return found
        totals["measured"] += 1
        found = memo.widths[key] = original(context, box, outer)
        return found

    preferred.table_cell_min_max_content_width = measured
    _installed.append(original)


def _style_key(style: Any, memo: _Memo) -> int | None:
    """A number per distinct style in this render: equal numbers, equal styles (None: a style
    this cannot tell apart)."""
    found = memo.styles.get(id(style))
    if found is not None:
        return found[1]
    kind = type(style)
    computed, anonymous = _kinds["computed"], _kinds["anonymous"]
    parent = style.parent_style if kind in (computed, anonymous) else None
    above = None if parent is None else _style_key(parent, memo)
    described: Any = None
    if kind is computed and (parent is None or above is not None):
        described = (tuple(sorted(style.cascaded.items())), style.pseudo_type, style.base_url)
    elif kind is anonymous and above is not None:
        described = "anonymous"
    key = None
    if described is not None:
        try:
            key = memo.tokens.setdefault((described, above), len(memo.tokens))
        except TypeError:  # a list among the values (`content`): the same, as tuples
            try:
                key = memo.tokens.setdefault(_frozen((described, above)), len(memo.tokens))
            except TypeError:  # something else that cannot be hashed: measured as before
                key = None
    memo.styles[id(style)] = (style, key)
    return key


def _frozen(value: Any) -> Any:
    """`value` with its lists as tagged tuples (`content` values are lists); what still cannot
    be hashed raises TypeError where it is used as a key."""
    if isinstance(value, list):
        return ("list", *(_frozen(item) for item in value))
    if isinstance(value, tuple):
        return tuple(_frozen(item) for item in value)
    return value


def _box_key(box: Any, memo: _Memo) -> Any:
    """A cell's boxes as what decides their widths: kinds, styles, texts (None: measure it)."""
    kind = type(box)
    if kind not in _kinds["boxes"]:
        return None
    style = _style_key(box.style, memo)
    if style is None:
        return None
    children = []
    for child in getattr(box, "children", ()):
        key = _box_key(child, memo)
        if key is None:
            return None
        children.append(key)
    return (kind, style, getattr(box, "text", None), _used_borders(box), tuple(children))


def _used_borders(box: Any) -> tuple[Any, Any]:
    """A cell's left and right border widths as set on the box: with `border-collapse:
    collapse` they are not its style's but what wins against its neighbours, the row, the
    column and the table (WeasyPrint's collapse_table_borders), and the widths count them."""
    return getattr(box, "border_left_width", None), getattr(box, "border_right_width", None)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Measure every cell, as WeasyPrint alone does (tests, the benchmark)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before
