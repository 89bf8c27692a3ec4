"""What one asset may cost a render: its bytes, the SVG elements it draws, its pixels.

Every asset WeasyPrint asks for — a template's files, an allow-listed URL, and a `data:` URL
written in a template or carried by request data — comes through the URL fetcher (pdf.py),
which hands its bytes to `check_image` before WeasyPrint sees them. A few kilobytes of SVG can
ask for billions of elements (each `<use>` drawing the group before it ten times), and WeasyPrint
draws them all: 100,000 elements take it about 17 s. So an SVG is counted before it is drawn, its
references expanded, in time linear in its size; and `svg_budget` bounds what a whole render
draws, for what counting cannot see (an SVG image drawn many times, markers on every vertex).
"""

from __future__ import annotations

import base64
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from io import BytesIO
from typing import Any
from urllib.parse import unquote_to_bytes
from xml.etree import ElementTree

# One SVG, its references expanded: a detailed map or chart has a few thousand elements.
MAX_SVG_ELEMENTS = 20_000
# Every SVG element one render draws (inline charts included): a 3,000-row report with a
# sparkline per row draws about 6,000 (and its layout takes 30 s); a chart in every row of a
# report long enough to reach this would not finish within the render timeout anyway.
MAX_DRAWN_SVG_ELEMENTS = 100_000
# Pixels of one raster image: A4 at 600 dpi is 35 million.
MAX_IMAGE_PIXELS = 50_000_000
# Elements nested in elements (and data: images in images) deeper than this are not a picture.
MAX_SVG_DEPTH = 200

_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
# WeasyPrint resolves a fill, clip-path, mask, marker or filter by the URL's fragment alone.
_LOCAL_URL = re.compile(r"""url\(\s*['"]?[^'")#\s]*#([^'")\s]+)""")


class AssetRefused(Exception):
    """An asset over one of the caps; the message says which and is the render's reason."""


def describe(url: str) -> str:
    """A URL short enough for a reason: a data: URL by its media type and size."""
    if url[:5].lower() == "data:":
        return f"data:{url[5:].split(',', 1)[0]},… ({len(url):,} characters)"
    return f"'{url}'" if len(url) <= 200 else f"'{url[:200]}…'"


def read_data_url(url: str, max_bytes: int) -> tuple[bytes, str]:
    """The bytes and media type of a `data:` URL (RFC 2397), refused over `max_bytes` decoded."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise AssetRefused(f"{describe(url)} is not a valid data: URL (no comma)")
    # Decoding only shrinks what it is given: a payload within the cap needs no further check.
    if len(payload) > max_bytes * 4 // 3 + 4:
        raise AssetRefused(f"{describe(url)} is over the {max_bytes:,}-byte asset limit")
    body = unquote_to_bytes(payload)
    media = header
    if header.lower().endswith(";base64"):
        media = header[:-7]
        try:
            body = base64.b64decode(body, validate=False)
        except ValueError:
            raise AssetRefused(f"{describe(url)} is not valid base64") from None
    if len(body) > max_bytes:
        raise AssetRefused(f"{describe(url)} decodes to {len(body):,} bytes, over the limit")
    return body, media or "text/plain;charset=US-ASCII"


def read_capped(response: Any, max_bytes: int, seconds: float, where: str) -> bytes:
    """A fetched body, refused past `max_bytes` or `seconds` in all (a server that drips a byte
    at a time never trips a per-read timeout)."""
    # WeasyPrint's response wraps the HTTP stream, whose read1 returns what one read brings.
    stream = getattr(response, "_file_obj", response)
    read = getattr(stream, "read1", stream.read)
    deadline = time.monotonic() + seconds
    chunks: list[bytes] = []
    size = 0
    while chunk := read(65536):
        size += len(chunk)
        if size > max_bytes:
            raise AssetRefused(f"asset {where} is over the {max_bytes:,}-byte asset limit")
        if time.monotonic() > deadline:
            raise AssetRefused(f"asset {where} took longer than {seconds:g}s to download")
        chunks.append(chunk)
    return b"".join(chunks)


def check_image(body: bytes, content_type: str, where: str, max_bytes: int) -> None:
    """Refuse an SVG that would draw more than MAX_SVG_ELEMENTS elements, or a raster image of
    more than MAX_IMAGE_PIXELS pixels; anything else (CSS, fonts) passes as it is."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "image/svg+xml" or (not media.startswith("image/") and _looks_like_svg(body)):
        count = svg_elements(body, where, max_bytes)
        if count > MAX_SVG_ELEMENTS:
            raise AssetRefused(_too_many(where, count))
    elif media.startswith("image/"):
        _check_pixels(body, where)


def _looks_like_svg(body: bytes) -> bool:
    # WeasyPrint tries any image it cannot decode as a raster image as SVG.
    return b"<svg" in body[:4096] or b":svg" in body[:4096]


def _too_many(where: str, count: int) -> str:
    shown = f"{count:,}" if count <= MAX_SVG_ELEMENTS * 10 else f"over {MAX_SVG_ELEMENTS * 10:,}"
    return (
        f"SVG image {where} would draw {shown} elements (its <use> and url(#…) references "
        f"expanded), over the {MAX_SVG_ELEMENTS:,}-element limit"
    )


def svg_elements(body: bytes, where: str, max_bytes: int, depth: int = 0) -> int:
    """How many elements drawing the SVG `body` takes, each reference (`<use>`, `href="#…"`,
    `url(#…)`, a nested data: image) expanded; stops counting once over ten times the cap."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return 0  # WeasyPrint will not draw it either
    ids: dict[str, list[Any]] = {}
    for el in root.iter():
        if name := el.get("id"):
            ids.setdefault(name, []).append(el)  # the same id twice: either may be drawn
    limit = MAX_SVG_ELEMENTS * 10
    memo: dict[int, int] = {}
    active: set[int] = set()

    def cost(el: Any, level: int) -> int:
        key = id(el)
        if key in memo:
            return memo[key]
        if key in active:
            raise AssetRefused(f"SVG image {where} refers to itself (a <use> or url(#…) cycle)")
        if level > MAX_SVG_DEPTH:
            raise AssetRefused(f"SVG image {where} nests over {MAX_SVG_DEPTH} levels deep")
        active.add(key)
        total = 1
        for child in el:
            total += cost(child, level + 1)
            if total > limit:
                break
        href = el.get(_XLINK_HREF) or el.get("href") or ""
        # Any href with a fragment: a same-document one is drawn from this tree, another is
        # fetched (and counted) on its own — counting it here too only errs on the safe side.
        refs = [href.split("#", 1)[1]] if "#" in href and href[:5].lower() != "data:" else []
        for value in el.attrib.values():
            refs += _LOCAL_URL.findall(value)
        for ref in refs:
            targets = ids.get(ref, [])
            if targets and total <= limit:
                total += max(cost(target, level + 1) for target in targets)
        if href[:5].lower() == "data:" and total <= limit:
            inner, media = read_data_url(href, max_bytes)
            if "svg" in media.lower() or _looks_like_svg(inner):
                total += svg_elements(inner, where, max_bytes, level + depth + 1)
        active.discard(key)
        memo[key] = min(total, limit + 1)
        return memo[key]

    return cost(root, depth)


def _check_pixels(body: bytes, where: str) -> None:
    from PIL import Image  # WeasyPrint's own dependency, already loaded in a render process

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning: refused below
        try:
            with Image.open(BytesIO(body)) as image:  # reads the header only
                width, height = image.size
        except Image.DecompressionBombError:
            width, height = MAX_IMAGE_PIXELS, 2
        except Exception:
            return  # not an image Pillow knows: WeasyPrint will not draw it either
    if width * height > MAX_IMAGE_PIXELS:
        raise AssetRefused(
            f"image {where} is {width:,} × {height:,} pixels, over the "
            f"{MAX_IMAGE_PIXELS:,}-pixel limit"
        )


@dataclass
class _Budget:
    limit: int
    drawn: int = 0


class _OverBudget(Exception):
    pass


_budget: ContextVar[_Budget | None] = ContextVar("svg_budget", default=None)
_counting: list[bool] = []


def _count_draws() -> None:
    """Count every SVG element WeasyPrint draws (it has no hook for it: wrap its one method)."""
    if _counting:
        return
    # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
    from weasyprint.svg import SVG

    draw_node = SVG.draw_node

    def counted(self: Any, node: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget.get()
        if budget is not None:
            budget.drawn += 1
            if budget.drawn > budget.limit:
                raise _OverBudget  # WeasyPrint gives up the image (and says so in its log)
        return draw_node(self, node, *args, **kwargs)

    SVG.draw_node = counted
    _counting.append(True)


@contextmanager
def svg_budget(limit: int = MAX_DRAWN_SVG_ELEMENTS) -> Iterator[None]:
    """Within: a render may draw `limit` SVG elements; over it, drawing stops and the render
    fails with AssetRefused (instead of running into the render timeout)."""
    _count_draws()
    budget = _Budget(limit)
    token = _budget.set(budget)
    try:
        yield
    except _OverBudget:
        pass  # the check below says why
    finally:
        _budget.reset(token)
    if budget.drawn > limit:
        raise AssetRefused(
            f"the report's SVG images would draw over {limit:,} elements: stopped "
            "(an image drawn too often, or built to multiply)"
        )
