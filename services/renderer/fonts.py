"""Fonts for every script: the families the renderer ships, how fontconfig finds them, and the
check that no character of a report was drawn without a font (an empty box, `.notdef`).

The renderer reads its own fontconfig file (FONTCONFIG_FILE, written here): the system's
configuration plus the bundled static Noto faces (services/renderer/fontdata), Noto Sans CJK
(the `noto-cjk-sans-otc` package) and any folders in PRESSROOM_FONTS_DIR. Static faces, not
variable ones: WeasyPrint re-instantiates every variable font it embeds, on every render.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import logging
import os
import re
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Literal
from xml.sax.saxutils import escape

from shared.errors import MissingGlyphs

BUNDLED_DIR = Path(__file__).with_name("fontdata")
CJK_PACKAGE = "noto_cjk_sans_otc"
SYSTEM_CONFIG = Path("/etc/fonts/fonts.conf")
FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")

MissingGlyphPolicy = Literal["fail", "warn"]

# The default CJK face: Han characters are drawn in Japanese forms unless the text says otherwise
# (lang="zh-Hans", "zh-Hant", "ko" ...); every face covers all of Han, kana and Hangul.
CJK_BY_LANG = {
    "ja": "Noto Sans CJK JP",
    "ko": "Noto Sans CJK KR",
    "zh": "Noto Sans CJK SC",
    "zh-cn": "Noto Sans CJK SC",
    "zh-sg": "Noto Sans CJK SC",
    "zh-hans": "Noto Sans CJK SC",
    "zh-tw": "Noto Sans CJK TC",
    "zh-hant": "Noto Sans CJK TC",
    "zh-mo": "Noto Sans CJK TC",
    "zh-hk": "Noto Sans CJK HK",
}
# What "Pressroom Sans" (the bundled templates' family) and the generic sans-serif mean: one
# family per script, in the order fontconfig should try them.
SANS_STACK = (
    "Noto Sans",
    "Noto Sans Arabic",
    "Noto Sans Hebrew",
    "Noto Sans Devanagari",
    "Noto Sans Bengali",
    "Noto Sans Gujarati",
    "Noto Sans Gurmukhi",
    "Noto Sans Kannada",
    "Noto Sans Malayalam",
    "Noto Sans Oriya",
    "Noto Sans Tamil",
    "Noto Sans Telugu",
    "Noto Sans Sinhala",
    "Noto Sans Thai",
    "Noto Sans Lao",
    "Noto Sans Khmer",
    "Noto Sans Myanmar",
    "Noto Sans Armenian",
    "Noto Sans Georgian",
    "Noto Sans Ethiopic",
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK HK",
    "Noto Sans CJK KR",
    "Noto Sans Symbols",
    "Noto Emoji",
)
STACK_NAME = "Pressroom Sans"
# Part of every render's cache key: a render made with other fonts is not reused.
FONT_SET = "noto-2026.9.26-static.1"
# A render process draws this once at start, so fontconfig's cache and the fonts of the common
# scripts are loaded before the first report rather than during it.
WARM_UP_HTML = (
    f"<p style=\"font-family: '{STACK_NAME}'\">warm <b>warm</b> Ωж مرحبا שלום नमस्ते ไทย 山 한 ✅</p>"
)
GENERIC_FAMILIES = frozenset(
    {
        "serif",
        "sans-serif",
        "monospace",
        "cursive",
        "fantasy",
        "system-ui",
        "emoji",
        "math",
        "fangsong",
        "ui-serif",
        "ui-sans-serif",
        "ui-monospace",
        "ui-rounded",
        "inherit",
        "initial",
        "unset",
        "revert",
        "revert-layer",
    }
)


# ---- where the fonts are ------------------------------------------------------------------------
def cjk_dir() -> Path | None:
    spec = find_spec(CJK_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def font_dirs(extra: Sequence[str | Path] = ()) -> list[Path]:
    """Folders the renderer reads fonts from, bundled ones first."""
    dirs = [BUNDLED_DIR]
    cjk = cjk_dir()
    if cjk is not None:
        dirs.append(cjk)
    dirs.extend(Path(d).expanduser().resolve() for d in extra if str(d).strip())
    return dirs


def extra_dirs_from(value: str | None) -> tuple[str, ...]:
    """PRESSROOM_FONTS_DIR: folders separated by the OS path separator (':' on Linux) or commas."""
    if not value:
        return ()
    parts = re.split(rf"[,{re.escape(os.pathsep)}]", value)
    return tuple(p.strip() for p in parts if p.strip())


def fontconfig_xml(dirs: Sequence[Path], base: Path | None) -> str:
    """The renderer's fontconfig file: the system's (for its fonts and rules) plus ours."""

    def families(names: Iterable[str]) -> str:
        return "".join(f"<family>{escape(n)}</family>" for n in names)

    lines = [
        '<?xml version="1.0"?>',
        '<!DOCTYPE fontconfig SYSTEM "urn:fontconfig:fonts.dtd">',
        "<fontconfig>",
    ]
    if base is not None:
        lines.append(f'  <include ignore_missing="yes">{escape(str(base))}</include>')
    lines += [f"  <dir>{escape(str(d))}</dir>" for d in dirs]
    # The per-user cache keeps font lookup off the render path: a render re-reads the
    # configuration, and without a cache fontconfig would scan every font file again.
    lines.append('  <cachedir prefix="xdg">fontconfig</cachedir>')
    stack = families(SANS_STACK)
    # <accept>, not <prefer>: a template's own @font-face of the same name, or the system's
    # choice for sans-serif, still comes first; these families follow for what it cannot draw.
    lines += [
        f'  <alias binding="same"><family>{STACK_NAME}</family><accept>{stack}</accept></alias>',
        f"  <alias><family>sans-serif</family><accept>{stack}</accept></alias>",
        f"  <alias><family>emoji</family><prefer>{families(['Noto Emoji'])}</prefer></alias>",
    ]
    # Han unification: the same code point has different forms in Japanese, Chinese and Korean.
    for lang, family in CJK_BY_LANG.items():
        lines.append(
            f'  <match target="pattern"><test name="lang" compare="contains">'
            f"<string>{lang}</string></test>"
            f'<edit name="family" mode="prepend" binding="weak">'
            f"<string>{escape(family)}</string></edit></match>"
        )
    lines.append("</fontconfig>")
    return "\n".join(lines) + "\n"


def _config_home() -> Path | None:
    try:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    except RuntimeError:  # no home directory at all
        return None
    return Path(cache) / "pressroom"


_configured: dict[str, str] = {}


def configure(extra: Sequence[str | Path] = ()) -> Path:
    """Point fontconfig (FONTCONFIG_FILE) at the renderer's configuration; cheap to repeat.

    Call before WeasyPrint loads fonts: WeasyPrint reads the configuration on every render, so
    a change (another PRESSROOM_FONTS_DIR) takes effect from the next render on.
    """
    key = "\0".join(str(e) for e in extra)
    if key in _configured and os.environ.get("FONTCONFIG_FILE") == _configured[key]:
        return Path(_configured[key])
    base = _base_config()
    text = fontconfig_xml(font_dirs(extra), base)
    path = _write_config(text)
    os.environ["FONTCONFIG_FILE"] = str(path)
    _configured[key] = str(path)
    return path


@cache
def _base_config() -> Path | None:
    """The configuration fontconfig would have read without us (the user's own, if set)."""
    own = os.environ.get("FONTCONFIG_FILE")
    if own and Path(own).is_file() and not Path(own).name.startswith("pressroom-fonts-"):
        return Path(own).resolve()
    return SYSTEM_CONFIG if SYSTEM_CONFIG.is_file() else None


def _write_config(text: str) -> Path:
    """Content-addressed, so every process of a machine shares one file (and fontconfig cache)."""
    name = f"pressroom-fonts-{hashlib.sha256(text.encode()).hexdigest()[:16]}.conf"
    for folder in (_config_home(), None):
        try:
            if folder is None:  # no writable cache folder: a private file of this process
                fd, tmp = tempfile.mkstemp(prefix="pressroom-fonts-", suffix=".conf")
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                return Path(tmp)
            path = folder / name
            if path.is_file() and path.read_text(encoding="utf-8") == text:
                return path
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".conf")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
            return path
        except OSError:
            continue
    raise OSError("cannot write the renderer's fontconfig file")  # pragma: no cover


def harfbuzz_subset_available() -> bool:
    """Whether WeasyPrint can subset fonts with HarfBuzz (fast) instead of fontTools (slow).

    Without it a report with Chinese, Japanese or Korean text takes 10-25 s longer: fontTools
    reads the whole 65,535-glyph CJK font on every render.
    """

    name = ctypes.util.find_library("harfbuzz-subset")
    if not name:
        return False
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


# ---- the glyph-coverage check -------------------------------------------------------------------
_NOTDEF = ".notdef glyph rendered"
_FONTTOOLS_SUBSET = "Using fontTools instead of HarfBuzz-Subset"


class _Watch(logging.Filter):
    """Collects the code points WeasyPrint drew as `.notdef` and keeps its per-font noise quiet."""

    def __init__(self) -> None:
        super().__init__()
        self.missing: Counter[int] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(_NOTDEF):
            args = record.args if isinstance(record.args, tuple) else ()
            codepoint = next((a for a in args if isinstance(a, int)), None)
            if codepoint is None:  # a wording we do not know: take the first character
                codepoint = ord(str(args[0])[0]) if args and str(args[0]) else 0xFFFD
            self.missing[codepoint] += 1
            return False
        return not message.startswith(_FONTTOOLS_SUBSET)


@contextmanager
def glyph_watch() -> Iterator[Counter[int]]:
    """While active, every character drawn without a font is counted (and not logged)."""
    watch = _Watch()
    logger = logging.getLogger("weasyprint")
    logger.addFilter(watch)
    try:
        yield watch.missing
    finally:
        logger.removeFilter(watch)


def script_of(char: str) -> str:
    """The Unicode script of a character as a person reads it: 'Han', 'Arabic', 'private use'."""
    # Imported here: heavy (font tables): only font inspection.
    from fontTools import unicodedata as ucd

    category = unicodedata.category(char)
    if category == "Co":
        return "private use"
    if category == "Cn":
        return "unassigned"
    code = ucd.script(char)
    if code in ("Zyyy", "Zinh", "Zzzz"):
        try:
            return f"{ucd.script_name(code)}: {unicodedata.name(char).lower()}"
        except ValueError:
            return str(ucd.script_name(code))
    return str(ucd.script_name(code))


def describe(codepoint: int) -> str:
    """'U+5C71 山 (Han)'."""
    char = chr(codepoint)
    shown = f" {char}" if char.isprintable() and unicodedata.category(char) not in ("Co",) else ""
    return f"U+{codepoint:04X}{shown} ({script_of(char)})"


def missing_reason(missing: Iterable[int], limit: int = 12) -> str:
    codepoints = sorted(set(missing))
    listed = ", ".join(describe(cp) for cp in codepoints[:limit])
    more = f" and {len(codepoints) - limit} more" if len(codepoints) > limit else ""
    return (
        f"no font for {listed}{more}: the PDF would show empty boxes. Add a font that covers "
        "them (PRESSROOM_FONTS_DIR) or set PRESSROOM_MISSING_GLYPHS=warn to deliver it anyway"
    )


def check_missing(missing: Iterable[int], policy: MissingGlyphPolicy) -> str | None:
    """Fail (raise MissingGlyphs) or return the warning to log; None when nothing is missing."""
    codepoints = list(missing)
    if not codepoints:
        return None
    reason = missing_reason(codepoints)
    if policy == "fail":
        raise MissingGlyphs(reason)
    return reason


# ---- what is installed --------------------------------------------------------------------------
@dataclass
class Family:
    name: str
    files: list[Path] = field(default_factory=list)
    styles: set[str] = field(default_factory=set)
    scripts: list[str] = field(default_factory=list)
    source: str = "system"  # "bundled", "PRESSROOM_FONTS_DIR" or "system"

    @property
    def bundled(self) -> bool:
        return self.source == "bundled"

    def as_dict(self) -> dict[str, Any]:
        return {
            "family": self.name,
            "styles": sorted(self.styles),
            "scripts": self.scripts,
            "bundled": self.bundled,
            "source": self.source,
            "files": [str(f) for f in self.files],
        }


def _fontconfig_fonts() -> list[tuple[str, str, Path]] | None:
    """(family, style, file) of every font fontconfig sees with the renderer's configuration."""
    try:
        # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
        from weasyprint.text.ffi import ffi, fontconfig
    except Exception:  # no Pango here: fall back to our own folders
        return None
    config = fontconfig.FcInitLoadConfigAndFonts()
    try:
        fonts = fontconfig.FcConfigGetFonts(config, fontconfig.FcSetSystem)
        found = []
        value = ffi.new("FcChar8 **")
        for i in range(fonts.nfont if fonts != ffi.NULL else 0):
            pattern = fonts.fonts[i]
            strings = []
            for key in (b"family", b"style", b"file"):
                ok = fontconfig.FcPatternGetString(pattern, key, 0, value) == 0
                strings.append(ffi.string(value[0]).decode() if ok else "")
            if strings[0] and strings[2]:
                found.append((strings[0], strings[1], Path(strings[2])))
        return found
    finally:
        fontconfig.FcConfigDestroy(config)


def _scan_dirs(dirs: Sequence[Path]) -> list[tuple[str, str, Path]]:
    # Imported here: heavy (font tables): only font inspection.
    from fontTools.ttLib import TTCollection, TTFont

    found = []
    for folder in dirs:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.suffix.lower() not in FONT_SUFFIXES:
                continue
            fonts = (
                TTCollection(path, lazy=True).fonts
                if path.suffix.lower() in (".ttc", ".otc")
                else [TTFont(path, lazy=True)]
            )
            for font in fonts:
                name = font["name"]
                found.append(
                    (
                        str(name.getDebugName(16) or name.getDebugName(1)),
                        str(name.getDebugName(17) or name.getDebugName(2)),
                        path,
                    )
                )
    return found


def _scripts_in(path: Path, min_chars: int) -> Counter[str]:
    """Scripts a font file covers (a collection's first face: its faces cover the same ones)."""
    # Imported here: heavy (font tables): only font inspection.
    from fontTools import unicodedata as ucd
    from fontTools.ttLib import TTCollection, TTFont

    if path.suffix.lower() in (".ttc", ".otc"):
        face = TTCollection(path, lazy=True).fonts[0]
    else:
        face = TTFont(path, lazy=True)
    counts: Counter[str] = Counter()
    for codepoint in face.getBestCmap() or {}:
        code = ucd.script(chr(codepoint))
        if code not in ("Zyyy", "Zinh", "Zzzz"):
            counts[code] += 1
        elif 0x1F300 <= codepoint <= 0x1FAFF:  # pictographs, emoticons, transport …
            counts["Emoji"] += 1
    return Counter({k: v for k, v in counts.items() if v >= min_chars})


def families(extra: Sequence[str | Path] = (), *, scripts: bool = True) -> list[Family]:
    """The families the renderer will use, bundled ones first, with the scripts each covers."""
    # Imported here: heavy (font tables): only font inspection.
    from fontTools import unicodedata as ucd

    configure(extra)
    ours = font_dirs(extra)
    seen = _fontconfig_fonts()
    if seen is None:
        seen = _scan_dirs(ours)
    by_name: dict[str, Family] = {}
    for family, style, path in seen:
        entry = by_name.setdefault(family, Family(family))
        if path not in entry.files:
            entry.files.append(path)
        entry.styles.add(style.split(",")[0] if style else "Regular")
        if any(path.is_relative_to(d) for d in ours[:2]):
            entry.source = "bundled"
        elif entry.source == "system" and any(path.is_relative_to(d) for d in ours[2:]):
            entry.source = "PRESSROOM_FONTS_DIR"
    if scripts:
        per_file: dict[Path, Counter[str]] = {}
        for entry in by_name.values():
            first = entry.files[0]
            if first not in per_file:
                per_file[first] = _scripts_in(first, min_chars=10)
            entry.scripts = [
                code if code == "Emoji" else str(ucd.script_name(code))
                for code, _ in per_file[first].most_common()
            ]
    order = {name: i for i, name in enumerate(SANS_STACK)}
    return sorted(
        by_name.values(), key=lambda f: (not f.bundled, order.get(f.name, len(order)), f.name)
    )


def available_family_names(extra: Sequence[str | Path] = ()) -> set[str]:
    names = {f.name.lower() for f in families(extra, scripts=False)}
    return names | {STACK_NAME.lower()}


# ---- templates that name fonts ------------------------------------------------------------------
_FONT_FACE = re.compile(r"@font-face\s*\{[^}]*?font-family\s*:\s*([^;}]+)", re.I | re.S)
_FONT_FAMILY = re.compile(r"(?<![\w-])font-family\s*:\s*([^;}{\"]*(?:\"[^\"]*\"[^;}{\"]*)*)", re.I)
_FONT_SHORTHAND = re.compile(r"(?<![\w-])font\s*:\s*([^;}{]+)", re.I)
_SIZE = re.compile(r"^(?:[\d.]+(?:[a-z%]+)?|xx?-small|small|medium|large|xx?-large|smaller|larger)")


def _split_families(value: str) -> list[str]:
    names = []
    for part in value.split(","):
        name = part.strip().strip("\"'").strip()
        name = re.sub(r"\s*!important$", "", name, flags=re.I)
        if name and "{{" not in name and "{%" not in name:
            names.append(name)
    return names


def families_named_in(source: str) -> tuple[list[tuple[str, int]], set[str]]:
    """Families a template's CSS names ((name, line) pairs) and the ones its @font-face defines."""
    defined = {n.lower() for m in _FONT_FACE.finditer(source) for n in _split_families(m[1])}
    named: list[tuple[str, int]] = []
    without_faces = _FONT_FACE.sub(lambda m: " " * len(m[0]), source)
    for match in _FONT_FAMILY.finditer(without_faces):
        line = without_faces.count("\n", 0, match.start()) + 1
        named += [(n, line) for n in _split_families(match[1])]
    for match in _FONT_SHORTHAND.finditer(without_faces):
        # font: [style] [weight] size[/line-height] family, family
        tokens = match[1].strip().split()
        for i, token in enumerate(tokens):
            if _SIZE.match(token.lower()) and not token.lower().startswith(("normal", "bold")):
                line = without_faces.count("\n", 0, match.start()) + 1
                rest = " ".join(tokens[i + 1 :])
                if tokens[i + 1 : i + 2] and tokens[i + 1].startswith("/"):
                    rest = " ".join(tokens[i + 2 :])
                named += [(n, line) for n in _split_families(rest)]
                break
    return named, defined


def unavailable_families(
    sources: Iterable[tuple[str, str]], available: set[str]
) -> list[tuple[str, int, str]]:
    """(file, line, family) for each family a template names that the renderer does not have."""
    sources = list(sources)
    defined: set[str] = set()
    for _, text in sources:
        defined |= families_named_in(text)[1]
    problems = []
    for file, text in sources:
        for name, line in families_named_in(text)[0]:
            key = name.lower()
            if key in GENERIC_FAMILIES or key in defined or key in available:
                continue
            if name.startswith(("var(", "--")):
                continue
            problems.append((file, line, name))
    return problems


def template_font_warnings(
    library: Any, names: Iterable[str], extra: Sequence[str] = ()
) -> list[str]:
    """'file:line: font family "X" is not installed …' for each family a template names in vain."""
    sources = []
    for name in names:
        for dep in library.dependencies(name)[0]:
            try:
                sources.append((dep, library.source(dep)))
            except Exception:  # validate() reports unreadable templates itself
                continue
    named = {n.lower() for _, text in sources for n, _ in families_named_in(text)[0]}
    known = {n.lower() for n in (*SANS_STACK, STACK_NAME)}
    # Listing the installed families loads fontconfig (~1 s): only when a template needs it.
    available = (
        known if named <= known | GENERIC_FAMILIES else known | available_family_names(extra)
    )
    seen = set()
    warnings = []
    for file, line, family in unavailable_families(dict(sources).items(), available):
        if (file, family) in seen:
            continue
        seen.add((file, family))
        warnings.append(
            f"{file}:{line}: font family '{family}' is not installed for the renderer; its text "
            "is set in the next family of the list (add the font: see `pressroom fonts`)"
        )
    return warnings
