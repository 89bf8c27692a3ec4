"""One PDF from the chunks of a split render: pages in order, each font once, one outline.

The chunks already agree on everything drawn (see chunks.py); here their files become one: pages
are appended, every chunk's reference to a font another chunk embedded with all glyphs is pointed
at that one font (the unused copies are dropped), and the headings' outline of the whole document
is written as WeasyPrint writes it.
"""

from __future__ import annotations

import io
from typing import Any

from services.renderer import document
from services.renderer.chunks import ChunkResult

PDF_SCALE = 0.75  # PDF points per CSS pixel, as WeasyPrint writes pages


def merge_chunks(
    results: list[ChunkResult], finish: tuple[Any, ...] | None = None
) -> tuple[bytes, int]:
    """The merged PDF and its page count (runs in a render process); `finish` is the
    document's (resolved, spec, template, version): its metadata, XMP and /ID."""
    # Imported here: heavy: only a split report is merged.
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import NameObject

    results = sorted(results, key=lambda r: r.index)
    writer = PdfWriter()
    firsts: list[int] = []
    readers = []
    for result in results:
        reader = PdfReader(io.BytesIO(result.pdf))
        readers.append(reader)
        firsts.append(len(writer.pages))
        writer.append(reader, import_outline=False)
    bounds = [*firsts, len(writer.pages)]

    # Each chunk's font dictionaries, and the one chunk that embedded each font for all.
    def font_dicts(chunk: int) -> list[Any]:
        found: dict[int, Any] = {}
        for page in writer.pages[bounds[chunk] : bounds[chunk + 1]]:
            resources = page.get("/Resources")
            fonts = resources.get_object().get("/Font") if resources is not None else None
            if fonts is not None:
                found[id(fonts.get_object())] = fonts.get_object()
        return list(found.values())

    shared: dict[str, Any] = {}
    for chunk, result in enumerate(results):
        for name, (once, owner) in result.fonts.items():
            if once and owner == result.index:
                for fonts in font_dicts(chunk):
                    if f"/{name}" in fonts:
                        shared[name] = fonts.raw_get(f"/{name}")
    for chunk, result in enumerate(results):
        for fonts in font_dicts(chunk):
            for key in list(fonts.keys()):
                name = str(key)[1:]
                once, owner = result.fonts.get(name, (False, result.index))
                if once and owner != result.index and name in shared:
                    fonts[NameObject(key)] = shared[name]
    writer.compress_identical_objects(remove_duplicates=True, remove_unreferenced=False)
    _drop_unreachable(writer)

    first = readers[0]
    if first.metadata:
        writer.add_metadata({k: v for k, v in first.metadata.items() if isinstance(k, str)})
    catalog: Any = first.trailer["/Root"].get_object()
    lang = catalog.get("/Lang")
    if lang is not None:
        writer._root_object[NameObject("/Lang")] = lang
    if finish is not None:
        title = first.metadata.get("/Title") if first.metadata else None
        document.finish_merged(
            writer, str(title) if title else None, str(lang) if lang else None, *finish
        )
    _outline(writer, [page for result in results for page in result.bookmarks])

    out = io.BytesIO()
    writer.write(out)
    return out.getvalue(), len(writer.pages)


def _drop_unreachable(writer: Any) -> None:
    """Forget objects nothing reaches any more (the fonts other chunks embedded for all)."""
    # Imported here: heavy: only a split report is merged.
    from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject

    objects = writer._objects
    roots = [writer.root_object.indirect_reference]
    info = writer._info
    if info is not None:
        roots.append(info.indirect_reference)
    reached: set[int] = set()
    stack: list[Any] = [r for r in roots if r is not None]
    while stack:
        item = stack.pop()
        if isinstance(item, IndirectObject):
            if item.pdf is not writer or item.idnum in reached:
                continue
            reached.add(item.idnum)
            item = objects[item.idnum - 1]
        if isinstance(item, DictionaryObject):  # streams are dictionaries too
            stack.extend(item.values())
        elif isinstance(item, ArrayObject):
            stack.extend(item)
    for number in range(1, len(objects) + 1):
        if number not in reached:
            objects[number - 1] = None


class _Bookmarked:
    def __init__(self, height: float, bookmarks: Any) -> None:
        self.height = height
        self.bookmarks = bookmarks


def _outline(writer: Any, pages: list[Any]) -> None:
    """The document outline, built from every page's headings as WeasyPrint builds it."""
    # Imported here: heavy: only a split report is merged.
    from pypdf.generic import Fit
    from weasyprint.anchors import make_page_bookmark_tree
    from weasyprint.matrix import Matrix

    root: list[Any] = []
    skipped: list[int] = []
    last_by_depth: list[list[Any]] = [root]
    previous = 0
    for number, (height, marks) in enumerate(pages):
        if not marks:
            continue
        matrix = Matrix(a=PDF_SCALE, d=-PDF_SCALE, f=height * PDF_SCALE)
        previous = make_page_bookmark_tree(
            _Bookmarked(height, marks), skipped, last_by_depth, previous, number, matrix
        )

    def add(items: list[Any], parent: Any) -> None:
        for title, (page, x, y), children, state in items:
            item = writer.add_outline_item(
                title,
                page,
                parent=parent,
                fit=Fit.xyz(left=x, top=y, zoom=0),
                is_open=state != "closed",
            )
            add(children, item)

    add(root, None)
