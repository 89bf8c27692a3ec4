"""A line plot as a PNG, with nothing but the standard library (the bench needs one chart)."""

from __future__ import annotations

import itertools
import struct
import zlib
from pathlib import Path

# 5x7 digits and a few letters, for the axis labels.
_GLYPHS = {
    "0": "01110100011001110101110011000101110",
    "1": "00100011000010000100001000010001110",
    "2": "01110100010000100010001000100011111",
    "3": "11111000100010000010000011000101110",
    "4": "00010001100101010010111110001000010",
    "5": "11111100001111000001000011000101110",
    "6": "00110010001000011110100011000101110",
    "7": "11111000010001000100010000100001000",
    "8": "01110100011000101110100011000101110",
    "9": "01110100011000101111000010001001100",
    ".": "00000000000000000000000000110001100",
    "-": "00000000000000011111000000000000000",
    " ": "0" * 35,
    "M": "10001110111010110101100011000110001",
    "i": "00100000000110000100001000010001110",
    "B": "11110100011000111110100011000111110",
    "k": "10000100001001010100110001010010010",
    "r": "00000000001011011001100001000010000",
    "e": "00000000000111010001111111000001110",
    "p": "00000000001111010001111101000010000",
    "o": "00000000000111010001100011000101110",
    "t": "01000010001110001000010000100100110",
    "s": "00000000000111110000011100000111110",
    "R": "11110100011000111110101001001010001",
    "S": "01111100001000001110000010000111110",
}


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(b"\xff" * (width * height * 3))

    def dot(self, x: int, y: int, color: tuple[int, int, int], size: int = 1) -> None:
        for dx in range(-size + 1, size):
            for dy in range(-size + 1, size):
                px, py = x + dx, y + dy
                if 0 <= px < self.width and 0 <= py < self.height:
                    i = (py * self.width + px) * 3
                    self.pixels[i : i + 3] = bytes(color)

    def line(self, a: tuple[int, int], b: tuple[int, int], color: tuple[int, int, int]) -> None:
        steps = max(abs(b[0] - a[0]), abs(b[1] - a[1]), 1)
        for s in range(steps + 1):
            self.dot(
                round(a[0] + (b[0] - a[0]) * s / steps),
                round(a[1] + (b[1] - a[1]) * s / steps),
                color,
            )

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int] = (0, 0, 0)) -> None:
        for n, char in enumerate(text):
            glyph = _GLYPHS.get(char, _GLYPHS[" "])
            for i, bit in enumerate(glyph):
                if bit == "1":
                    self.dot(x + n * 6 + i % 5, y + i // 5, color)

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * self.width * 3 : (y + 1) * self.width * 3])
            for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]


def line_plot(
    series: dict[str, list[tuple[float, float]]],
    path: Path,
    *,
    x_label: str = "reports",
    y_label: str = "RSS MiB",
    width: int = 720,
    height: int = 400,
) -> None:
    """Each series as a coloured line, with the axes' ranges written at their ends."""
    points = [p for values in series.values() for p in values]
    x0, x1 = 0.0, max((p[0] for p in points), default=1.0) or 1.0
    y0 = 0.0
    y1 = max((p[1] for p in points), default=1.0) * 1.15 or 1.0
    left, right, top, bottom = 60, 20, 30, 40
    canvas = Canvas(width, height)

    def at(x: float, y: float) -> tuple[int, int]:
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)
        return round(px), round(py)

    canvas.line((left, top), (left, height - bottom), (0, 0, 0))
    canvas.line((left, height - bottom), (width - right, height - bottom), (0, 0, 0))
    for frac in (0.25, 0.5, 0.75, 1.0):
        y = y0 + (y1 - y0) * frac
        _, py = at(0, y)
        canvas.line((left - 4, py), (left, py), (0, 0, 0))
        canvas.text(4, py - 3, f"{y:.0f}")
        x = x0 + (x1 - x0) * frac
        px, _ = at(x, 0)
        canvas.line((px, height - bottom), (px, height - bottom + 4), (0, 0, 0))
        canvas.text(px - 12, height - bottom + 8, f"{x:.0f}")
    canvas.text(4, 8, y_label)
    canvas.text(width - right - 6 * len(x_label), height - 12, x_label)
    for n, (name, values) in enumerate(series.items()):
        color = COLORS[n % len(COLORS)]
        for a, b in itertools.pairwise(values):
            canvas.line(at(*a), at(*b), color)
        for x, y in values:
            canvas.dot(*at(x, y), color, size=2)
        canvas.line((left + 20 + n * 120, 14), (left + 40 + n * 120, 14), color)
        canvas.text(left + 44 + n * 120, 11, name[:12])
    path.write_bytes(canvas.png())
