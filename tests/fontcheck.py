"""What a reader of a PDF would see, read from the fonts it embeds rather than from its text layer.

Text extraction "reads" a character drawn as an empty box as well as a real one, so these helpers
look at the embedded font programs (fontTools via pypdf) and at pages turned into pictures.
"""

from __future__ import annotations

import io
import re
import subprocess
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fontTools.ttLib import TTCollection, TTFont
from pypdf import PdfReader

_BFCHAR = re.compile(r"<([0-9a-fA-F]+)>\s*<([0-9a-fA-F]*)>")


@dataclass
class EmbeddedFont:
    name: str
    family: str
    program: TTFont
    to_unicode: dict[int, str] = field(default_factory=dict)

    @property
    def cmap(self) -> dict[int, str]:
        return self.program.getBestCmap() or {}

    def has_outline(self, gid: int) -> bool:
        """The glyph exists in the embedded program and draws something (not .notdef)."""
        order = self.program.getGlyphOrder()
        if gid == 0 or gid >= len(order):
            return False
        name = order[gid]
        if "glyf" in self.program:
            return bool(self.program["glyf"][name].numberOfContours)
        charstrings: Any = self.program["CFF "].cff.topDictIndex[0].CharStrings
        return charstrings[name].calcBounds(charstrings) is not None


def embedded_fonts(pdf: bytes) -> list[EmbeddedFont]:
    found: dict[str, EmbeddedFont] = {}
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for ref in page["/Resources"].get("/Font", {}).values():
            font = ref.get_object()
            name = str(font["/BaseFont"])
            if name in found:
                continue
            described = (
                font["/DescendantFonts"][0].get_object() if "/DescendantFonts" in font else font
            )
            descriptor = described["/FontDescriptor"].get_object()
            key = next(k for k in ("/FontFile2", "/FontFile3", "/FontFile") if k in descriptor)
            program = TTFont(io.BytesIO(descriptor[key].get_object().get_data()))
            to_unicode = {}
            if "/ToUnicode" in font:
                cmap_text = font["/ToUnicode"].get_object().get_data().decode("latin-1")
                for gid, text in _BFCHAR.findall(cmap_text):
                    to_unicode[int(gid, 16)] = bytes.fromhex(text).decode("utf-16-be")
            family = str(descriptor.get("/FontFamily", ""))
            found[name] = EmbeddedFont(name, family, program, to_unicode)
    return list(found.values())


def visible_characters(strings: Iterable[str]) -> set[str]:
    """Characters that need a glyph: no spaces, controls or joiners."""
    return {c for s in strings for c in s if unicodedata.category(c)[0] not in "CZ"}


_TEXT_OPS = re.compile(rb"/([^\s/\[<]+)\s+[-\d.]+\s+Tf|\[([^\]]*)\]\s*TJ|<([0-9a-fA-F]*)>\s*Tj")
_HEX = re.compile(rb"<([0-9a-fA-F]*)>")


def boxes(pdf: bytes) -> list[tuple[str, int]]:
    """(font, glyph id) of every glyph the pages draw that the embedded font program lacks.

    That is what WeasyPrint draws for a character no font has (`.notdef`, an empty box): a glyph
    id past the end of the font. Read from the content streams, not from the text layer.
    """
    reader = PdfReader(io.BytesIO(pdf))
    by_name = {f.name: f for f in embedded_fonts(pdf)}
    found = []
    for page in reader.pages:
        fonts = page["/Resources"].get("/Font", {})
        names = {str(k).lstrip("/"): str(v.get_object()["/BaseFont"]) for k, v in fonts.items()}
        contents = page.get_contents()
        assert contents is not None
        current: EmbeddedFont | None = None
        for match in _TEXT_OPS.finditer(contents.get_data()):
            if match[1] is not None:
                current = by_name.get(names.get(match[1].decode(), ""))
                continue
            assert current is not None, "text drawn before a font was chosen"
            count = len(current.program.getGlyphOrder())
            hexes = _HEX.findall(match[2]) if match[2] is not None else [match[3]]
            for text in hexes:
                raw = bytes.fromhex(text.decode())
                for i in range(0, len(raw) - 1, 2):
                    gid = int.from_bytes(raw[i : i + 2], "big")
                    if gid == 0 or gid >= count:
                        found.append((current.name, gid))
    return found


@cache
def _installed_cmap(family: str) -> frozenset[int]:
    from services.renderer import fonts

    for entry in fonts.families(scripts=False):
        if entry.name == family:
            for path in entry.files:
                faces = (
                    TTCollection(path, lazy=True).fonts
                    if path.suffix in (".ttc", ".otc")
                    else [TTFont(path, lazy=True)]
                )
                for face in faces:
                    if family in (face["name"].getDebugName(16), face["name"].getDebugName(1)):
                        return frozenset(face.getBestCmap() or {})
    return frozenset()


def uncovered(pdf: bytes, chars: Iterable[str]) -> set[str]:
    """Characters of the text that no embedded font covers.

    Covered: an embedded font's cmap maps the character or, for shaped scripts (Arabic joining
    forms, Indic conjuncts share glyphs that keep no cmap entry in the subset), the full font the
    embedded one was cut from does. Together with `boxes(pdf) == []` this says every character
    was drawn with a real glyph of a font that has it.
    """
    covered: set[int] = set()
    for font in embedded_fonts(pdf):
        covered |= set(font.cmap)
        covered |= _installed_cmap(font.family)
    return {c for c in chars if ord(c) not in covered}


def strings_in(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def page_picture(pdf: bytes, folder: Path, page: int = 1) -> Path:
    """The page as a PNG (what `pdftoppm -r 60 -png` shows a person)."""
    source = folder / "report.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        [
            "pdftoppm",
            "-r",
            "60",
            "-png",
            "-f",
            str(page),
            "-l",
            str(page),
            "-singlefile",
            source,
            folder / "page",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return folder / "page.png"


def ink_fraction(pdf: bytes, folder: Path, page: int = 1) -> float:
    """Share of the page's pixels that are not white (grey-scale render, same page)."""
    source = folder / "ink.pdf"
    source.write_bytes(pdf)
    subprocess.run(
        [
            "pdftoppm",
            "-r",
            "30",
            "-gray",
            "-f",
            str(page),
            "-l",
            str(page),
            "-singlefile",
            source,
            folder / "ink",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    data = (folder / "ink.pgm").read_bytes()
    # P5 header: magic, width, height, maxval, then one byte per pixel.
    magic, width, height, maxval, pixels = data.split(maxsplit=4)
    assert magic == b"P5" and maxval == b"255"
    raster = pixels[: int(width) * int(height)]
    return sum(1 for b in raster if b < 200) / len(raster)
