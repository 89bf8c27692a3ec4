"""Rebuild services/renderer/fontdata/: static Regular and Bold faces from Noto's variable fonts.

Why static: WeasyPrint turns every variable font it embeds into a static one again, per render
(fontTools' instancer, ~0.1-0.3 s per face and weight, 5 s for a CJK face). Doing it once here
keeps renders as fast as with a single static font.

Run it only to update the bundled fonts (needs network access to PyPI):

    .venv/bin/pip install manimgx-fonts==2026.9.26.post1
    .venv/bin/python scripts/build_fonts.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from fontTools.ttLib import TTFont
from fontTools.varLib.instancer import instantiateVariableFont

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "services" / "renderer" / "fontdata"
SOURCE_PACKAGE = "manimgx_fonts"
SOURCE_VERSION = "2026.9.26.post1"
SOURCE_DIST = SOURCE_PACKAGE.replace("_", "-")
# Scripts a report's names and notes are likely to be in (Latin, Greek and Cyrillic are in Noto
# Sans itself); CJK comes from the noto-cjk-sans-otc package, already static.
FAMILIES = [
    "NotoSans",
    "NotoSansArabic",
    "NotoSansHebrew",
    "NotoSansDevanagari",
    "NotoSansBengali",
    "NotoSansGujarati",
    "NotoSansGurmukhi",
    "NotoSansKannada",
    "NotoSansMalayalam",
    "NotoSansOriya",
    "NotoSansTamil",
    "NotoSansTelugu",
    "NotoSansSinhala",
    "NotoSansThai",
    "NotoSansLao",
    "NotoSansKhmer",
    "NotoSansMyanmar",
    "NotoSansArmenian",
    "NotoSansGeorgian",
    "NotoSansEthiopic",
]
# Pictographs and symbols are set in one weight: a bold emoji is the regular one.
REGULAR_ONLY = ["NotoEmoji", "NotoSansSymbols"]
WEIGHTS = {"Regular": 400, "Bold": 700}
HEADER = f"""The fonts in this folder are static instances (Regular: wght 400, Bold: wght 700)
of Noto's variable fonts as published in the {SOURCE_DIST} {SOURCE_VERSION} package,
made with fontTools' instancer by scripts/build_fonts.py (names and weight flags set as in
Noto's own static builds; outlines as the variable font draws them at that weight).
Copyright notices:

- Noto Sans, Noto Sans Arabic, Armenian, Bengali, Devanagari, Ethiopic, Georgian, Gujarati,
  Gurmukhi, Hebrew, Kannada, Khmer, Lao, Malayalam, Myanmar, Oriya, Sinhala, Symbols, Tamil,
  Telugu and Thai: Copyright 2022-2025 The Noto Project Authors (https://github.com/notofonts).
- Noto Emoji: Copyright 2013 Google LLC.

All are licensed under the SIL Open Font License, Version 1.1 (no Reserved Font Names):

"""


def _rename(font: TTFont, style: str) -> None:
    """Give a static instance the names and flags of its weight, as Noto's static builds do."""
    name = font["name"]
    family = name.getDebugName(16) or name.getDebugName(1)
    postscript = (name.getDebugName(6) or family.replace(" ", "")).split("-")[0]
    for name_id in (16, 17, 25):
        name.removeNames(nameID=name_id)
    name.setName(family, 1, 3, 1, 0x409)
    name.setName(style, 2, 3, 1, 0x409)
    name.setName(f"{family} {style}" if style != "Regular" else family, 4, 3, 1, 0x409)
    name.setName(f"{postscript}-{style}", 6, 3, 1, 0x409)
    name.setName(f"{SOURCE_VERSION};{postscript}-{style}", 3, 3, 1, 0x409)
    os2 = font["OS/2"]
    bold = style == "Bold"
    os2.usWeightClass = WEIGHTS[style]
    os2.fsSelection = (os2.fsSelection & ~0b1100001) | (0b100000 if bold else 0b1000000)
    font["head"].macStyle = (font["head"].macStyle & ~1) | int(bold)


def build(source: Path) -> list[Path]:
    written = []
    for stem in FAMILIES + REGULAR_ONLY:
        [variable] = source.glob(f"{stem}[[]*.ttf")
        styles = ["Regular"] if stem in REGULAR_ONLY else list(WEIGHTS)
        for style in styles:
            font = TTFont(variable)
            axis = next(a for a in font["fvar"].axes if a.axisTag == "wght")
            weight = max(axis.minValue, min(WEIGHTS[style], axis.maxValue))
            static = instantiateVariableFont(font, {"wght": weight}, static=True)
            _rename(static, style)
            target = OUT / f"{stem}-{style}.ttf"
            static.save(target)
            written.append(target)
            print(f"{target.relative_to(REPO)}  {target.stat().st_size // 1024} KiB", flush=True)
    return written


def main() -> int:
    try:
        import manimgx_fonts  # type: ignore[import-not-found]
    except ImportError:
        print(f"pip install {SOURCE_PACKAGE.replace('_', '-')}=={SOURCE_VERSION} first")
        return 1
    source = Path(manimgx_fonts.__path__[0])
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.ttf"):
        old.unlink()
    build(source)
    licence = (
        source.parent / f"{SOURCE_PACKAGE}-{SOURCE_VERSION}.dist-info" / "licenses" / "LICENSE"
    )
    upstream = licence.read_text(encoding="utf-8")
    ofl = upstream[upstream.index("This Font Software is licensed") :]
    (OUT / "OFL.txt").write_text(HEADER + ofl, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
