"""Two page images compared: the share of pixels that differ, the changed regions as bounding
boxes, and a highlighted PNG (the candidate page dimmed, changed pixels red, regions boxed)."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw

CELL = 6  # pixels per grid cell when grouping changed pixels into regions
GAP = 2  # cells: changes this close belong to one region
TOLERANCE = 24  # per-channel difference below this is anti-aliasing noise, not a change


@dataclass(frozen=True)
class Region:
    x: int
    y: int
    w: int
    h: int

    def as_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


@dataclass(frozen=True)
class PageDiff:
    ratio: float  # share of the page's pixels that changed
    regions: list[Region]
    width: int
    height: int
    highlight: bytes  # PNG


def _open(png: bytes | None, size: tuple[int, int]) -> Image.Image:
    if png is None:  # a page only one side has: the other is blank
        return Image.new("RGB", size, "white")
    return Image.open(io.BytesIO(png)).convert("RGB")


def compare(before: bytes | None, after: bytes | None) -> PageDiff:
    """`before` (delivered) and `after` (candidate) page images; either may be None."""
    first = Image.open(io.BytesIO(before or after or b"")).convert("RGB")
    a = _open(before, first.size)
    b = _open(after, first.size)
    width, height = max(a.width, b.width), max(a.height, b.height)
    if a.size != (width, height):
        a = _pad(a, (width, height))
    if b.size != (width, height):
        b = _pad(b, (width, height))
    mask = ImageChops.difference(a, b).convert("L").point(lambda v: 255 if v >= TOLERANCE else 0)
    changed = mask.histogram()[255]
    ratio = changed / float(width * height)
    regions = _regions(mask) if changed else []
    return PageDiff(ratio, regions, width, height, _highlight(b, mask, regions))


def _pad(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    canvas = Image.new("RGB", size, "white")
    canvas.paste(image, (0, 0))
    return canvas


def _regions(mask: Image.Image) -> list[Region]:
    """Changed pixels grouped: a coarse grid of changed cells, cells within GAP joined."""
    cols, rows = (mask.width + CELL - 1) // CELL, (mask.height + CELL - 1) // CELL
    small = mask.resize((cols, rows), Image.Resampling.BOX)
    hot = {(i % cols, i // cols) for i, v in enumerate(small.tobytes()) if v}
    regions: list[Region] = []
    seen: set[tuple[int, int]] = set()
    for start in sorted(hot, key=lambda c: (c[1], c[0])):
        if start in seen:
            continue
        stack, cells = [start], []
        seen.add(start)
        while stack:
            cx, cy = stack.pop()
            cells.append((cx, cy))
            for dx in range(-GAP, GAP + 1):
                for dy in range(-GAP, GAP + 1):
                    nxt = (cx + dx, cy + dy)
                    if nxt in hot and nxt not in seen:
                        seen.add(nxt)
                        stack.append(nxt)
        x0 = min(c[0] for c in cells) * CELL
        y0 = min(c[1] for c in cells) * CELL
        x1 = min((max(c[0] for c in cells) + 1) * CELL, mask.width)
        y1 = min((max(c[1] for c in cells) + 1) * CELL, mask.height)
        regions.append(Region(x0, y0, x1 - x0, y1 - y0))
    return regions


def _highlight(page: Image.Image, mask: Image.Image, regions: list[Region]) -> bytes:
    dimmed = Image.blend(page, Image.new("RGB", page.size, "white"), 0.6)
    red = Image.new("RGB", page.size, (220, 0, 0))
    shown = Image.composite(red, dimmed, mask)
    draw = ImageDraw.Draw(shown)
    for r in regions:
        draw.rectangle(
            [r.x - 2, r.y - 2, r.x + r.w + 1, r.y + r.h + 1], outline=(220, 0, 0), width=2
        )
    out = io.BytesIO()
    shown.save(out, "PNG")
    return out.getvalue()


def redact(png: bytes, boxes: list[tuple[float, float, float, float]], dpi: int) -> bytes:
    """The page image with each box (PDF points) covered: masked values never leave as pixels."""
    if not boxes:
        return png
    image = Image.open(io.BytesIO(png)).convert("RGB")
    draw = ImageDraw.Draw(image)
    scale = dpi / 72.0
    for x0, y0, x1, y1 in boxes:
        draw.rectangle(
            [x0 * scale - 1, y0 * scale - 1, x1 * scale + 1, y1 * scale + 1], fill=(90, 90, 90)
        )
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
