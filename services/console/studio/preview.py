"""Previews: a template version rendered on some data in the renderer's capped render processes
(services/renderer/pool.py — never in the console's process), its PDF's pages as PNG images,
and its problems at their file and line (syntax, undefined variables, missing includes, and
the font-coverage warnings `pressroom templates validate` gives)."""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.renderer import fonts
from services.renderer.templating import TemplateLibrary, validate_in_folder
from shared.errors import PressroomError

# "weekly.html:12", as the renderer's reasons say where (templating.py, _template_location).
_WHERE = re.compile(r"([\w./~-]+\.(?:html|htm|j2|jinja|xml|css|svg)):(\d+)")
_QUOTED = re.compile(r"'([\w./~-]+\.(?:html|htm|j2|jinja|xml))'")
PAGE_DPI = 60
MAX_PAGES = 60


@dataclass
class Problem:
    file: str | None
    line: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "message": self.message}


def problem_of(reason: str, default_file: str | None = None) -> Problem:
    """A render's or validation's reason as file, line and message."""
    found = _WHERE.search(reason)
    if found:
        return Problem(found.group(1), int(found.group(2)), reason)
    quoted = _QUOTED.search(reason)
    return Problem(quoted.group(1) if quoted else default_file, None, reason)


def located(problem: Problem, files: dict[str, bytes]) -> Problem:
    """A problem without a line that names a variable or template: the first line of its
    file that mentions it (what an editor can point at)."""
    if problem.line is not None or problem.file not in files:
        return problem
    named = re.findall(r"'([^']+)'", problem.message)
    if not named:
        return problem
    text = files[problem.file].decode("utf-8", errors="replace")
    for number, line in enumerate(text.splitlines(), 1):  # the last name quoted is the culprit
        if re.search(rf"(?<![\w.]){re.escape(named[-1])}(?!\w)", line):
            return Problem(problem.file, number, problem.message)
    return problem


def validation_problem(text: str) -> Problem:
    """'file:line: message' or 'file: message' (templating.Problem's str)."""
    match = re.match(r"^([^:\s]+?)(?::(\d+))?: (.*)$", text, re.DOTALL)
    if not match:
        return Problem(None, None, text)
    return Problem(match.group(1), int(match.group(2)) if match.group(2) else None, match.group(3))


def checks_in_folder(folder: str, name: str, font_dirs: list[str]) -> dict[str, list[str]]:
    """Run in a capped render process: what `pressroom templates validate NAME` says —
    problems and font-coverage warnings."""
    problems = validate_in_folder(folder, [name]).get(name, [])
    library = TemplateLibrary(Path(folder))
    warnings = fonts.template_font_warnings(library, [name], font_dirs)
    return {"problems": problems, "warnings": warnings}


@dataclass
class Pages:
    """A PDF's pages as PNG images (`pdftoppm`, a child process with a timeout)."""

    images: list[bytes] = field(default_factory=list)


def rasterize(pdf: bytes, *, dpi: int = PAGE_DPI, max_pages: int = MAX_PAGES) -> list[bytes]:
    tool = shutil.which("pdftoppm")
    if tool is None:
        raise PressroomError("page images need pdftoppm (Debian: poppler-utils)")
    with tempfile.TemporaryDirectory(prefix="pressroom-pages-") as folder:
        source = Path(folder) / "doc.pdf"
        source.write_bytes(pdf)
        done = subprocess.run(
            [tool, "-png", "-r", str(dpi), "-l", str(max_pages), str(source), f"{folder}/p"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise PressroomError(f"the PDF could not be drawn: {done.stderr.decode()[:200]}")
        pages = sorted(Path(folder).glob("p-*.png"), key=lambda p: int(p.stem.split("-")[-1]))
        return [p.read_bytes() for p in pages]


async def page_images(pdf: bytes, *, dpi: int = PAGE_DPI) -> list[bytes]:
    return await asyncio.to_thread(rasterize, pdf, dpi=dpi)


def pdf_text(pdf: bytes) -> str:
    """The PDF's text, page by page (`pdftotext -layout`; form feeds between pages)."""
    tool = shutil.which("pdftotext")
    if tool is None:
        raise PressroomError("text diffs need pdftotext (Debian: poppler-utils)")
    done = subprocess.run(
        [tool, "-layout", "-enc", "UTF-8", "-", "-"],
        input=pdf,
        capture_output=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise PressroomError(f"the PDF's text could not be read: {done.stderr.decode()[:200]}")
    return done.stdout.decode("utf-8", errors="replace")


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in PDF points
_PAGE = re.compile(r'<page width="([\d.]+)" height="([\d.]+)">(.*?)</page>', re.DOTALL)
_WORD = re.compile(
    r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*?)</word>'
)


def masked_boxes(pdf: bytes, values: set[str]) -> list[list[Box]]:
    """Per page, where the PDF prints a masked value (`pdftotext -bbox`): each word that is
    one, or a piece of one (a value printed in groups, "DE44 5001 …"), or contains one."""
    tool = shutil.which("pdftotext")
    wanted = [v for v in values if len(v) >= 2]
    if tool is None or not wanted:
        return []
    done = subprocess.run(
        [tool, "-bbox", "-enc", "UTF-8", "-", "-"],
        input=pdf,
        capture_output=True,
        timeout=120,
        check=False,
    )
    pages: list[list[Box]] = []
    for page in _PAGE.finditer(done.stdout.decode("utf-8", errors="replace")):
        boxes: list[Box] = []
        for match in _WORD.finditer(page.group(3)):
            word = html.unescape(match.group(5)).strip(".,;:()[]\"'")
            if not word:
                continue
            if any(word == v or v in word or (len(word) >= 4 and word in v) for v in wanted):
                x0, y0, x1, y1 = (float(match.group(i)) for i in range(1, 5))
                boxes.append((x0, y0, x1, y1))
        pages.append(boxes)
    return pages
