"""One chunk of a split render, inside a render process (only those load this module and
WeasyPrint): lay out a window of the long table's rows as the one-piece render would, and write
its pages with the whole document's page numbers.

All chunks of a report run at the same time, one per render process, and meet at a few points
through files in a folder they share (the rendezvous):

1. column widths: a table's columns depend on every row, so each chunk measures its own rows'
   cells and all take the widest of all (WeasyPrint's own min/max-content widths); a table with
   `table-layout: fixed` and a width needs no measuring;
2. where a chunk starts: its pages must start where the pages of chunk k-1 end (a row only
   chunk k-1 can know). Chunk k guesses it from chunk 0's first full page (its probe: rows per
   page) and lays out at once; when chunk k-1 is done and the guess was wrong, it lays its pages
   out again from there — cheaply when a wrong guess was likely (rows per page differ): then
   each cell's layout is kept and moved instead of redone;
3. page numbers: once every chunk knows its pages, each adds the margin boxes ("Page 37 of 72")
   with the whole document's numbers;
4. fonts: each font is embedded once, by the first chunk that uses it, with the glyphs of all.

WeasyPrint has no API for any of this: the functions used here are its internals (version 70),
checked by the split-render tests. Anything a chunk cannot reproduce exactly raises
SplitUnsupported, and the report is rendered in one piece instead.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Iterator
from typing import Any

import weasyprint.pdf as wpdf
from weasyprint import DEFAULT_OPTIONS, HTML
from weasyprint.css.counters import CounterStyle
from weasyprint.document import Document, Page
from weasyprint.formatting_structure import boxes as wboxes
from weasyprint.formatting_structure.build import build_formatting_structure
from weasyprint.html import get_html_metadata
from weasyprint.layout import block, initialize_page_maker
from weasyprint.layout import preferred as wpreferred
from weasyprint.layout.background import layout_backgrounds
from weasyprint.layout.page import make_margin_boxes, remake_page
from weasyprint.pdf.metadata import DocumentMetadata
from weasyprint.text.fonts import FontConfiguration

from services.renderer import cellwidths, fonts, warm
from services.renderer.chunks import ChunkJob, ChunkResult, Rendezvous, SplitUnsupported
from services.renderer.job import SplitAborted
from services.renderer.sandbox import warm_fetcher, weasyprint_errors
from shared.errors import PressroomError


def _body_rows(table_element: Any) -> tuple[Any, list[Any]]:
    groups = [child for child in table_element if child.tag == "tbody"]
    rows = [row for group in groups for row in group if row.tag == "tr"]
    if len(groups) != 1:
        raise SplitUnsupported("the table has no single body section")
    return groups[0], rows


def _find_group(box: Any, element: Any, path: list[int]) -> list[int] | None:

    if isinstance(box, wboxes.TableRowGroupBox) and box.element is element:
        return path
    if isinstance(box, wboxes.TableRowGroupBox | wboxes.TableRowBox | wboxes.TableCellBox):
        return None
    for i, child in enumerate(getattr(box, "children", ())):
        found = _find_group(child, element, [*path, i])
        if found is not None:
            return found
    return None


def _check_ancestors(root: Any, path: list[int]) -> Any:
    """The boxes from the root to the row group must paginate like plain blocks; returns it."""

    box = root
    for i in path:
        # Plain blocks (the table's wrapper is one) and the table itself, nothing inline.
        allowed = isinstance(box, wboxes.BlockBox) or type(box) is wboxes.TableBox
        style = box.style
        if (
            not allowed
            or style["position"] not in ("static", "relative")
            or style["float"] != "none"
            or style["column_width"] != "auto"
            or style["column_count"] != "auto"
        ):
            raise SplitUnsupported(f"the table sits in a {type(box).__name__} that paginates apart")
        box = box.children[i]
    return box


END, BEFORE, AFTER, MIDDLE = "end", "before", "after", "middle"
# How long a later chunk waits for chunk 0's probe (its first two pages of the table), once
# chunk 0 lays out, before laying out from its nominal first row anyway: chunk 0 may have many
# pages before the table.
PROBE_PATIENCE = 1.0


def row_at(resume_at: Any, path: list[int]) -> int | str:
    """The row (index in the chunk) a page starts with, or where else it starts."""
    node = resume_at
    if node is None:
        return END
    for index in path:
        if not isinstance(node, dict) or len(node) != 1:
            return MIDDLE
        ((key, node),) = node.items()
        if key != index:
            return BEFORE if key < index else AFTER
        if node is None:
            return MIDDLE
    if not isinstance(node, dict) or len(node) != 1:
        return MIDDLE
    ((row, rest),) = node.items()
    return MIDDLE if rest is not None else int(row)


def _skip_stack(path: list[int], row: int) -> dict[int, Any]:
    stack: dict[int, Any] = {row: None}
    for index in reversed(path):
        stack = {index: stack}
    return stack


# ---- patches of WeasyPrint internals, for the duration of one chunk --------------------------
@contextlib.contextmanager
def _global_widths(
    cells: dict[int, int], widths: tuple[list[float], list[float]] | None
) -> Iterator[None]:
    """Cells of the table's window report the whole table's column min/max-content widths
    (None: a fixed-layout table, whose columns do not depend on its cells' content)."""

    if widths is None:
        yield
        return
    original = wpreferred.table_cell_min_max_content_width
    minimum, maximum = widths

    def patched(context: Any, box: Any, outer: bool = True) -> Any:
        column = cells.get(id(box))
        if column is not None:
            return minimum[column], maximum[column]
        return original(context, box, outer)

    wpreferred.table_cell_min_max_content_width = patched
    try:
        yield
    finally:
        wpreferred.table_cell_min_max_content_width = original


class CellCache:
    """Keeps each body cell's layout; a cell laid out again elsewhere is moved, not redone.

    Only cells that fitted whole, in the same column, without positioned descendants; the
    first row of a page (laid out as "page is empty") is kept apart from the others.

    Keeping a cell costs a copy of its boxes (and every layout call a detour), worth it only
    when the pages are likely to be laid out again: nothing is patched until `keep()`.
    """

    def __init__(self, cells: set[int]) -> None:
        self.cells = cells
        self.kept: dict[tuple[int, bool, float, float], tuple[Any, float, tuple[Any, ...]]] = {}
        self.keeping = False
        self.hits = 0
        self.misses = 0
        self.copies = 0
        self._original: Any = None

    def pause(self) -> None:
        """Keep no more layouts (those kept are still moved where they fit)."""
        self.keeping = False

    def keep(self) -> None:
        """From now on, keep the cells' layouts (and move kept ones instead of laying out)."""
        if self.keeping or not self.cells:
            return
        self.keeping = True
        if self._original is not None:
            return  # patched already
        self._original = original = block.block_container_layout
        cache = self

        def patched(
            context: Any, box: Any, bottom_space: float, skip_stack: Any, *args: Any, **kw: Any
        ) -> Any:
            if skip_stack is not None or id(box) not in cache.cells:
                return original(context, box, bottom_space, skip_stack, *args, **kw)
            empty = bool(kw.get("page_is_empty", args[0] if args else False))
            key = (id(box), empty, float(box.position_x), float(box.width))
            limit = context.page_bottom - bottom_space
            kept = cache.kept.get(key)
            if kept is not None:
                laid_out, height, rest = kept
                if box.position_y + height <= limit:
                    cache.hits += 1
                    moved = laid_out.deepcopy()
                    moved.translate(0, box.position_y - laid_out.position_y)
                    next_page, margins, through, lines = rest
                    return moved, None, dict(next_page), list(margins), through, lines
            cache.misses += 1
            if not cache.keeping:
                return original(context, box, bottom_space, skip_stack, *args, **kw)
            absolute = kw.get("absolute_boxes", args[1] if len(args) > 1 else [])
            fixed = kw.get("fixed_boxes", args[2] if len(args) > 2 else [])
            counts = (len(absolute), len(fixed))
            result = original(context, box, bottom_space, skip_stack, *args, **kw)
            new_box, resume_at, next_page, margins, through, lines = result
            if new_box is not None and resume_at is None and counts == (len(absolute), len(fixed)):
                height = new_box.position_y + new_box.margin_height() - box.position_y
                if box.position_y + height <= limit:
                    cache.copies += 1
                    cache.kept[key] = (
                        new_box.deepcopy(),
                        height,
                        (dict(next_page), list(margins), through, lines),
                    )
            return result

        block.block_container_layout = patched

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Whatever `keep()` patched is undone at the end."""
        try:
            yield
        finally:
            if self._original is not None:
                block.block_container_layout = self._original
                self._original = None


_SIDES = ("border_top_width", "border_right_width", "border_bottom_width", "border_left_width")


class Borders:
    """The rows' boxes' border widths as they were before any layout, put back before pages are
    laid out again.

    When WeasyPrint continues a box on the next page (a row broken over two pages), it zeroes
    the box's top border on the box itself (block_container_layout → remove_decoration). With
    `border-collapse: collapse` nothing sets a cell's border widths again (they come from the
    collapsing, before layout), nor a block's inside it once laid out: a second pass over that
    row would print it without its top border, its content half a border higher than the
    one-piece render's."""

    def __init__(self, rows: list[Any]) -> None:
        self.saved: list[tuple[Any, tuple[Any, ...] | None]] = []
        pending = list(rows)
        while pending:
            box = pending.pop()
            widths = tuple(box.__dict__.get(side) for side in _SIDES)
            self.saved.append((box, None if widths[0] is None else widths))
            pending.extend(getattr(box, "children", ()))

    def restore(self) -> None:
        for box, widths in self.saved:
            state = box.__dict__
            if widths is None:
                for side in _SIDES:
                    state.pop(side, None)  # set from the style at the next layout
            else:
                state.update(zip(_SIDES, widths, strict=True))
            if state.get("remove_decoration_sides"):
                box.remove_decoration_sides = set()


@contextlib.contextmanager
def _fonts_once(rendezvous: Rendezvous, decisions: dict[str, tuple[bool, int]]) -> Iterator[None]:
    """Before WeasyPrint embeds the fonts, chunks agree which one embeds each, with all glyphs."""

    original = wpdf.build_fonts_dictionary

    def patched(pdf: Any, document_fonts: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        # Fonts are named by a hash of their description, the same in every process.
        by_name: dict[str, list[Any]] = {}
        for font in document_fonts.values():
            by_name.setdefault(font.hash, []).append(font)
        mine = {
            name: {
                "glyphs": {str(g): t for f in same for g, t in f.to_unicode.items()},
                "widths": {str(g): w for f in same for g, w in f.widths.items()},
                "plain": not any(f.missing or f.bitmap or f.used_in_forms for f in same),
            }
            for name, same in by_name.items()
        }
        everyone = rendezvous.gather("fonts", mine)
        for name, same in by_name.items():
            users = [i for i, theirs in enumerate(everyone) if name in theirs]
            once = all(everyone[i][name]["plain"] for i in users)
            owner = users[0]
            decisions[name] = (once, owner)
            if once and owner == rendezvous.index:
                # WeasyPrint maps a glyph to the text it was first drawn for: chunks in page
                # order, the first mapping wins (shaped scripts draw one glyph for several).
                for font in same:
                    for i in users[1:]:
                        for g, t in everyone[i][name]["glyphs"].items():
                            font.to_unicode.setdefault(int(g), t)
                        for g, w in everyone[i][name]["widths"].items():
                            font.widths.setdefault(int(g), w)
        return original(pdf, document_fonts, *args, **kwargs)

    wpdf.build_fonts_dictionary = patched
    try:
        yield
    finally:
        wpdf.build_fonts_dictionary = original


# ---- the chunk ----------------------------------------------------------------------------------


def layout_chunk(job: ChunkJob) -> ChunkResult:
    """Lay out and write one chunk (runs in a render process; see the module docstring)."""
    rendezvous = Rendezvous(job.rendezvous, job.index, job.count, job.deadline)
    try:
        return ChunkLayout(job, rendezvous).run()
    except SplitAborted:
        raise
    except PressroomError as error:
        rendezvous.abort(error.reason)
        raise
    except MemoryError:
        rendezvous.abort("out of memory")
        raise
    except BaseException as error:
        rendezvous.abort(f"{type(error).__name__}: {error}")
        raise


Pages = list[tuple[Any, int, int | None]]  # (page box, page_maker index, row it starts with)


class ChunkLayout:
    """One chunk, laid out in four steps (the module docstring); each step a method."""

    def __init__(self, job: ChunkJob, rendezvous: Rendezvous) -> None:
        self.job = job
        self.rendezvous = rendezvous
        self.last = job.index == job.count - 1
        self.stats: dict[str, float] = {}
        # Rows on a page of the table, from chunk 0's first full page (its probe), and whether
        # some page held another number (then the guessed starts may be wrong: see _paginate).
        self.per_page: int | None = None
        self.irregular = False
        self.cache = CellCache(set())
        self.borders = Borders([])
        self.clock = time.perf_counter()
        self.cpu = time.process_time()

    def _mark(self, step: str) -> None:
        self.stats[step] = time.perf_counter() - self.clock
        self.stats[f"{step}_cpu"] = time.process_time() - self.cpu

    def run(self) -> ChunkResult:
        job = self.job
        fonts.configure(job.font_dirs)
        # The process's warm stylesheets and fetcher, as a one-piece render has (pdf.py).
        warm.install_stylesheet_cache()
        cellwidths.install()
        fetcher = warm_fetcher(job.templates_dir, job.asset_allow)
        with weasyprint_errors(), fonts.glyph_watch() as missing:
            self.html = HTML(string=job.html, base_url=job.base_url, url_fetcher=fetcher)
            if job.font_scope:
                # The process's warm fonts, or the template version's own when its CSS declares
                # fonts (warm.py), as a one-piece render has them.
                warm.with_fonts(job.font_scope, self._build)
            else:
                self._build(FontConfiguration())
            self._find_rows()
            widths = self._measure()
            # Chunk 0 starts at the top of the document and never lays a page out twice.
            cache = self.cache = CellCache(self._plain_cells() if job.index > 0 else set())
            with _global_widths(self.cells, widths), cache.active():
                pages = self._lay_out()
                self.stats["cell_hits"] = cache.hits
                self.stats["cell_misses"] = cache.misses
                self.stats["cell_copies"] = cache.copies
            boxes = self._number_pages(pages)
            pdf, decisions, bookmarks = self._write(boxes)
        return ChunkResult(
            job.index, pdf, len(boxes), tuple(sorted(missing)), decisions, bookmarks, self.stats
        )

    def _build(self, font_config: Any) -> None:
        """The document's boxes, as WeasyPrint's own render builds them."""
        self.options = dict(DEFAULT_OPTIONS)
        self.options["stylesheets"] = [warm.page_css(self.job.page_css, self.html.url_fetcher)]
        self.font_config = font_config
        counter_style = CounterStyle()
        self.color_profiles: dict[str, Any] = {}
        self.context = Document._build_layout_context(
            self.html, self.font_config, counter_style, self.color_profiles, self.options
        )
        self.root = build_formatting_structure(
            self.html.etree_element,
            self.context.style_for,
            self.context.get_image_from_uri,
            self.html.base_url,
            self.context.target_collector,
            counter_style,
            self.context.footnotes,
        )
        self._mark("boxes")

    def _find_rows(self) -> None:
        """The long table's body and its rows, exactly where the planner saw them."""
        job = self.job
        tables = [el for el in self.html.etree_element.iter() if el.tag == "table"]
        if job.table_index >= len(tables):
            raise SplitUnsupported("the table was not found where the planner saw it")
        group_element, row_elements = _body_rows(tables[job.table_index])
        if len(row_elements) != job.rows:
            raise SplitUnsupported("the table's rows differ from what the planner saw")
        path = _find_group(self.root, group_element, [])
        if path is None:
            raise SplitUnsupported("the table's body is not laid out as a table")
        group = _check_ancestors(self.root, path)
        table = self.root
        for i in path[:-1]:
            table = table.children[i]
        # `table-layout: fixed` with a width: the columns come from the first row and the
        # declared widths alone (WeasyPrint measures no cell), as in CSS 2.1.
        self.fixed = table.style["table_layout"] == "fixed" and table.style["width"] != "auto"
        self.first_group = table.children[0] if table.children else None
        self.group = group
        row_boxes = list(group.children)
        if len(row_boxes) != job.rows or any(
            r.element is not e for r, e in zip(row_boxes, row_elements, strict=True)
        ):
            raise SplitUnsupported("the table's rows are not boxes of their own")
        if any(c.colspan != 1 or c.rowspan != 1 for row in row_boxes for c in row.children):
            raise SplitUnsupported("the table has cells spanning rows or columns")
        self.path = path
        self.row_boxes = row_boxes
        self.cells = {id(c): c.grid_x for row in row_boxes for c in row.children}
        # Only a later chunk lays pages out again (_restart), and only collapsed borders stay
        # zeroed: separate ones are set from the style at every layout.
        if self.job.index > 0 and table.style["border_collapse"] == "collapse":
            self.borders = Borders(row_boxes)

    def _plain_cells(self) -> set[int]:
        """The cells whose layouts may be kept and moved: lines of text only. A reviewer's
        attack broke a second pass from kept layouts of cells holding a block with a border,
        padding and margin, in rows broken over two pages (the cause was not found); laid out
        afresh, they print as in one piece."""
        return {
            id(cell)
            for row in self.row_boxes
            for cell in row.children
            if all(isinstance(child, wboxes.LineBox) for child in cell.children)
        }

    def _measure(self) -> tuple[list[float], list[float]] | None:
        """Step 1, column widths: measure my own rows, take the widest of all chunks (None: a
        fixed-layout table, which needs no measuring)."""
        if self.fixed:
            self._same_first_row()
            self._mark("measure")
            return None
        job, row_boxes = self.job, self.row_boxes
        own_first = job.targets[job.index]
        own_stop = job.targets[job.index + 1] if not self.last else job.first + job.rows
        columns = max((c.grid_x + 1 for row in row_boxes for c in row.children), default=0)
        low, high = [0.0] * columns, [0.0] * columns
        percent, fixed = [0.0] * columns, [False] * columns
        for row in row_boxes[own_first - job.first : own_stop - job.first]:
            for cell in row.children:
                mn, mx = wpreferred.table_cell_min_max_content_width(self.context, cell)
                low[cell.grid_x] = max(low[cell.grid_x], mn)
                high[cell.grid_x] = max(high[cell.grid_x], mx)
        for row in row_boxes:
            for cell in row.children:
                percent[cell.grid_x] = max(
                    percent[cell.grid_x], wpreferred._percentage_contribution(cell)
                )
                width = cell.style["width"]
                if width != "auto" and getattr(width, "unit", "%") != "%":
                    fixed[cell.grid_x] = True
        everyone = self.rendezvous.gather(
            "widths", {"min": low, "max": high, "percent": percent, "fixed": fixed}
        )
        if any(
            (w["percent"], w["fixed"]) != (percent, fixed) or len(w["min"]) != columns
            for w in everyone
        ):
            raise SplitUnsupported("the table's rows set different column widths")
        widths = (
            [max(w["min"][i] for w in everyone) for i in range(columns)],
            [max(w["max"][i] for w in everyone) for i in range(columns)],
        )
        self._mark("measure")
        return widths

    def _same_first_row(self) -> None:
        """A fixed-layout table takes its columns from its first row: a header row is the same
        in every chunk; a body row must declare the same widths as the document's first."""
        if self.first_group is not self.group:
            return
        mine = [[str(cell.style["width"]), cell.colspan] for cell in self.row_boxes[0].children]
        if any(theirs != mine for theirs in self.rendezvous.gather("first_row", mine)):
            raise SplitUnsupported("the table's first rows set different column widths")

    def _lay_out(self) -> Pages:
        """Step 2: lay out my rows now (from where chunk 0's first pages say the pages around
        them start); then start where the previous chunk's pages end."""
        job = self.job
        initialize_page_maker(self.context, self.root)
        self.context.rendered_notes = []  # as make_all_pages starts
        self.maker = self.context.page_maker
        self.first_entry = self.maker[0]
        if job.index == 0:
            if not self.last:
                self.rendezvous.publish("laying_out", True)  # the others' patience starts now
            pages, stop, _ = self._paginate(0, None)
        else:
            start, predict = self._first_start()
            pages, stop, began = self._paginate(self._start_at(start), start, predict)
        self._mark("first_pass")
        self.stats["first_pass_pages"] = len(pages)
        if job.index > 0:
            begin = int(self.rendezvous.wait("stop", job.index - 1))
            if begin != began:
                pages, stop, _ = self._paginate(self._restart(begin), begin)
                self.stats["second_pass_pages"] = len(pages)
        if not self.last:
            self.rendezvous.publish("stop", stop)
        self._mark("layout")
        return pages

    def _start_at(self, row: int) -> int:
        """A page_maker entry that starts a page with `row` (global), as the one-piece render
        would after the rows before it; returns its index."""
        maker = self.maker
        _, next_page, right_page, page_state, _ = self.first_entry
        state = copy.deepcopy(page_state)
        state[1]["page"] = [len(maker)]
        remake = {
            "content_changed": False,
            "pages_wanted": False,
            "anchors": [],
            "content_lookups": [],
        }
        side = right_page if len(maker) % 2 == 0 else not right_page
        maker.append(
            (_skip_stack(self.path, row - self.job.first), dict(next_page), side, state, remake)
        )
        return len(maker) - 1

    def _restart(self, row: int) -> int:
        # Same page indices as before: WeasyPrint keeps the styles it computed for each page
        # (type, index) and reuses them.
        del self.maker[1:]
        self.borders.restore()
        return self._start_at(row)

    def _first_start(self) -> tuple[int, bool]:
        """The row my pages start with: where the previous chunk's end, if it is done; else
        where chunk 0's first full page says they start (its probe, published after its first
        pages). Waiting for one of the two costs less than laying out pages to throw away —
        unless chunk 0 has many pages before its table: then my nominal first row, and the
        pages start again where the probe says once it comes (True: watch for it)."""
        job = self.job
        wanted = [("stop", job.index - 1), ("probe", 0)]
        found = self.rendezvous.wait_any([*wanted, ("laying_out", 0)])
        if found is not None and found[0] == "laying_out":
            found = self.rendezvous.wait_any(wanted, patience=PROBE_PATIENCE)
        self._mark("waited")
        if found is None:
            self.cache.keep()  # these pages will be laid out again: their cells are moved
            return job.targets[job.index], True
        name, value = found
        if name == "stop":
            return int(value), False  # exact: no second pass
        return self._guessed(value), False

    def _guessed(self, probe: dict[str, int]) -> int:
        self.per_page = int(probe["rows"])
        guessed = self._guess(probe)
        if guessed is None or self._others_irregular():
            # The pages will likely be laid out again from where the previous chunk's end.
            self.cache.keep()
        return self.job.targets[self.job.index] if guessed is None else guessed

    def _guess(self, probe: dict[str, int]) -> int | None:
        """Where the pages around my nominal first row start, if every page of the table
        holds as many rows as chunk 0's first full page."""
        s1, per_page = probe["first"], probe["rows"]
        target = self.job.targets[self.job.index]
        if per_page <= 0 or s1 > target:
            return None
        row = s1 + -(-(target - s1) // per_page) * per_page
        return row if row - self.job.first < self.job.rows - 1 else None

    def _paginate(
        self, index: int, start: int | None, predict: bool = False
    ) -> tuple[Pages, int | None, int | None]:
        """Pages from maker[index] on, until the next chunk's rows. Returns the (page box,
        page_maker index, start row) of each page, the row the next chunk's pages start with
        (None for the last chunk), and the row the first page starts with."""
        job, last, context = self.job, self.last, self.context
        pages: Pages = []
        stop_target = None if last else job.targets[job.index + 1]
        current = first_row = start
        starts: list[int] = []  # chunk 0: the rows its table pages start with
        while True:
            context.broken_out_of_flow = {}
            page, resume_at = remake_page(index, context, self.root, self.html)
            if page.page_type.blank or page.page_type.name:
                raise SplitUnsupported("the document has blank or named pages")
            pages.append((page, index, current))
            nxt = row_at(resume_at, self.path)
            if nxt == END:
                if last:
                    return pages, None, first_row
                raise SplitUnsupported(
                    "the table ended before the next chunk's rows (rows taller than the look-ahead)"
                )
            if isinstance(nxt, int):
                row = job.first + nxt
                if job.index == 0 and len(starts) < 2:
                    starts.append(row)
                    if len(starts) == 2:
                        self.per_page = rows = row - starts[0]
                        self.rendezvous.publish("probe", {"first": starts[0], "rows": rows})
                elif current is not None:
                    self._page_held(row - current)
                if stop_target is not None and row >= stop_target:
                    return pages, row, first_row
                current = row
            elif nxt == AFTER and not last:
                raise SplitUnsupported("the table ended before the next chunk's rows")
            else:
                if nxt == MIDDLE:
                    self._page_held(None)  # a row broken over two pages
                current = None
            index += 1
            if index >= len(self.maker):
                raise SplitUnsupported("WeasyPrint did not continue the pages")
            if predict:
                probe = self.rendezvous.peek("probe", 0)
                if probe is not None:
                    predict = False
                    guessed = self._guessed(probe)
                    if guessed != first_row:
                        pages, index = [], self._restart(guessed)  # kept cells are moved
                        current = first_row = guessed
                    regular = not self.irregular and not self._others_irregular()
                    if regular and self._guess(probe) is not None:
                        self.cache.pause()  # a good guess: no second pass likely
            # A guess from pages that all hold as many rows is right: my pages will not be laid
            # out again, and cells need no copies, unless an earlier chunk's pages differ.
            elif job.index > 0 and not self.cache.keeping and self._others_irregular():
                self.cache.keep()

    def _page_held(self, rows: int | None) -> None:
        """A page of the table held `rows` rows (None: it broke a row): if that is not what
        chunk 0's first full page held, the pages' starts cannot be guessed from it."""
        if self.irregular or self.per_page is None or rows == self.per_page:
            return
        self.irregular = True
        self.cache.keep()
        if not self.last:
            self.rendezvous.publish("irregular", {"rows": rows})

    def _others_irregular(self) -> bool:
        """Whether an earlier chunk's pages held other numbers of rows (their page starts, so
        mine, may differ from the guess)."""
        return any(self.rendezvous.peek("irregular", i) is not None for i in range(self.job.index))

    def _number_pages(self, pages: Pages) -> list[Any]:
        """Step 3: page numbers of the whole document, then the margin boxes."""
        context = self.context
        counts = self.rendezvous.gather("pages", len(pages))
        offset = sum(counts[: self.job.index])
        total = sum(counts)
        boxes = []
        for number, (page, index, _) in enumerate(pages, start=offset + 1):
            state = copy.deepcopy(self.maker[index + 1][3])
            state[1]["page"] = [number]
            state[1]["pages"] = [total]
            context.current_page = number
            root_box, footnote_area, note_area = page.children
            children = [root_box]
            if footnote_area.children:
                children.append(footnote_area)
            if note_area.children:
                children.append(note_area)
            children.extend(make_margin_boxes(context, page, state))
            page.children = tuple(children)
            layout_backgrounds(page, context.get_image_from_uri)
            boxes.append(page)
        self._mark("margins")
        return boxes

    def _write(
        self, boxes: list[Any]
    ) -> tuple[bytes, dict[str, tuple[bool, int]], tuple[Any, ...]]:
        """Step 4: draw and write, each font embedded once for the whole report."""
        rendered = [Page(page) for page in boxes]
        bookmarks = tuple(
            (
                float(p.height),
                tuple((lvl, lbl, (float(x), float(y)), st) for lvl, lbl, (x, y), st in p.bookmarks),
            )
            for p in rendered
        )
        for page in rendered:
            page.bookmarks = []  # the merge writes one outline for the whole document
        document = Document(
            rendered,
            DocumentMetadata(**get_html_metadata(self.html)),
            self.html.url_fetcher,
            self.font_config,
            self.color_profiles,
            self.options["output_intent"],
        )
        decisions: dict[str, tuple[bool, int]] = {}
        with _fonts_once(self.rendezvous, decisions):
            pdf = document.write_pdf()
        self._mark("write")
        assert pdf is not None
        return pdf, decisions, bookmarks
