"""What a render is asked and what it gives back: the types every render module shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


class SplitAborted(PressroomError):
    """Another chunk of the same report failed; this one stopped waiting for it."""
