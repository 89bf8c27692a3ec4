"""What a render is asked and what it gives back: the types every render module shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.renderer.document import DocumentSpec
from services.renderer.exports import Export
from shared.errors import (
    PressroomError,
)


@dataclass(frozen=True)
class PageDefaults:
    size: str = "A4"
    orientation: str = "portrait"
    margin: str = "18mm"

    def css(self) -> str:
        # Given as a user stylesheet: a template's own @page rules win over it.
        return f"@page {{ size: {self.size} {self.orientation}; margin: {self.margin}; }}"


@dataclass(frozen=True)
class Signing:
    """Where the operator's signing key is: files, or a PKCS#11 module (never a request)."""

    key_file: str = ""
    cert_file: str = ""
    chain_file: str = ""
    key_password_file: str = ""
    pkcs11_module: str = ""
    pkcs11_token: str = ""
    pkcs11_key: str = ""
    pkcs11_pin_file: str = ""
    tsa_url: str = ""


@dataclass(frozen=True)
class Finish:
    """What finish.py does to a PDF, as its plan decided: paths and texts; the only secret in
    clear, the operator's owner password when given as a value, shows in no repr."""

    append: tuple[str, ...] = ()  # absolute paths of allowed PDFs, in order
    watermarks: tuple[str, ...] = ()
    # Encryption: the reader's password sealed (a request) or in a file (`pressroom render`);
    # neither shows in a repr, a log line or a traceback's locals.
    sealed_password: str | None = field(default=None, repr=False)
    seal_key_file: str = ""
    user_password_file: str = ""
    # The owner password: PRESSROOM_PDF_OWNER_PASSWORD's value, or the file holding it.
    owner_password: str = field(default="", repr=False)
    owner_password_file: str = ""
    permissions: tuple[bool, bool] | None = None  # (print, copy); set whenever encrypting
    signing: Signing | None = None

    @property
    def encrypt(self) -> bool:
        return self.permissions is not None

    def cache_material(self) -> dict[str, Any] | None:
        """What makes a finished PDF different, for the render cache's key; None: never reuse
        one (a reader's password is per request, a signature's time is the signing's own)."""
        if self.encrypt or self.signing is not None:
            return None
        stamps = []
        for path in self.append:  # another terms.pdf in the same place is another report
            stat = Path(path).stat()
            stamps.append([path, stat.st_size, stat.st_mtime_ns])
        return {"append": stamps, "watermarks": list(self.watermarks)}


@dataclass(frozen=True)
class RenderJob:
    templates_dir: str
    template: str
    context: dict[str, Any]
    formats: tuple[str, ...] = ("pdf",)
    page: PageDefaults = field(default_factory=PageDefaults)
    asset_allow: tuple[str, ...] = ()
    max_output_bytes: int = 5 * 1024 * 1024
    cache_dir: str | None = None
    missing_glyphs: str = "fail"  # or "warn": deliver a PDF with empty boxes, log why
    font_dirs: tuple[str, ...] = ()
    # Requests may name only listed templates; `pressroom render PATH` may render any file.
    listed_only: bool = True
    # Long reports: "auto" splits from `split_rows` table rows, "on" whenever possible, "off"
    # never (services/renderer/split.py); the template may say so too.
    split: str = "off"
    split_rows: int = 500
    # The render cache: also return the template's Analysis (from the same call, no other).
    analyse: bool = False
    # The PDF's standard, tags, metadata and provenance (document.py), and the CSV's BOM.
    document: DocumentSpec = field(default_factory=DocumentSpec)
    # Appended PDFs, watermark, encryption, signature (finish.py), on the PDF's final bytes.
    finish: Finish | None = None


@dataclass(frozen=True)
class Analysis:
    """What the render cache needs to know about a template, found inside a render process."""

    template: str  # the resolved name ("weekly" → "weekly.html")
    version: str
    variables: list[str] | None  # None: the template computes include names (reads anything)
    # The files it reads with their identity (templating.file_stamp): while they are unchanged,
    # so is this analysis. Empty when it computes include names (then it is not kept).
    files: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class RenderOutput:
    template_version: str
    html: bytes
    pdf: bytes | None
    html_seconds: float
    pdf_seconds: float
    pages: int
    notices: tuple[str, ...] = ()  # what a person should know although the render succeeded
    chunks: int = 1  # render processes the PDF was laid out in (split.py)
    analysis: Analysis | None = None  # when the job asked for it (RenderJob.analyse)
    exports: tuple[Export, ...] = ()  # the CSV files and XLSX workbook the job asked for
    variant: str | None = None  # the standard the PDF was written to (document.py)
    tagged: bool = False


class SplitAborted(PressroomError):
    """Another chunk of the same report failed; this one stopped waiting for it."""
