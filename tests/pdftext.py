"""What a reader sees of a PDF, page by page (poppler's pdftotext, as `make test-deps` installs)."""

from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

from pypdf import PdfReader


def page_texts(pdf: bytes, tmp_path: Path) -> list[str]:
    path = tmp_path / f"doc-{time.monotonic_ns()}.pdf"
    path.write_bytes(pdf)
    pages = len(PdfReader(io.BytesIO(pdf)).pages)
    return [
        subprocess.run(
            ["pdftotext", "-layout", "-f", str(n), "-l", str(n), str(path), "-"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for n in range(1, pages + 1)
    ]


def pdf_text(path: Path) -> str:
    """The text of every page of a PDF file, as pypdf extracts it."""
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(path.read_bytes())).pages)
