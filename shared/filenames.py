"""Names of delivered files: a pattern per request or schedule (`filename`), filled from a fixed
table and sanitised for every channel (DESIGN.md "Output options").

A name is ASCII letters, digits, `.`, `_` and `-` only, at most MAX_STEM characters before
its extension: safe on every file system and short enough that an email's
`Content-Disposition` keeps it in one piece (RFC 2231 folds longer ones, and some mail
tools then lose the name).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from shared.placeholders import fill

if TYPE_CHECKING:
    from shared.events import ReportRequested

DEFAULT_PATTERN = "{title}-{date}"
MAX_STEM = 40
MAX_FOLDER_STEM = 64  # a folder name has no mail header to fit in
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str) -> str:
    """`Weekly Portfolio — Q4` → `weekly-portfolio-q4`."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _UNSAFE.sub("-", ascii_text).strip("-._").lower()


def filename_fields(request: ReportRequested) -> dict[str, str]:
    """The placeholders a `filename` pattern may use."""
    stem = slug(PurePosixPath(request.template).stem)
    title = request.params.get("report_title")
    period = request.params.get("reporting_period")
    date = request.requested_at.strftime("%Y-%m-%d")
    return {
        "title": (slug(title) if isinstance(title, str) else "") or stem.replace("_", "-"),
        "template": stem,
        "date": date,
        "period": (slug(period) if isinstance(period, str) else "") or date,
        "request_id": slug(request.request_id),
        "short_id": slug(request.request_id)[-8:],
    }


def request_tag(request_id: str) -> str:
    """Eight hex characters that tell one request's files from another's in a shared folder."""
    return hashlib.sha256(request_id.encode()).hexdigest()[:8]


def folder_filename(request: ReportRequested, fmt: str) -> str:
    """The name in a shared folder: the request's `filename` pattern when it has one, else
    `weekly-portfolio-2026-11-23-3f9a1c2e.pdf` — title, date and the request's tag, so two
    reports of one day never replace each other. A long title is cut; the date and the tag never
    are (at most MAX_FOLDER_STEM characters before the extension)."""
    if request.filename:
        return report_filename(request, fmt)
    fields = filename_fields(request)
    tail = f"{fields['date']}-{request_tag(request.request_id)}"
    title = fields["title"][: MAX_FOLDER_STEM - len(tail) - 1].rstrip("-._")
    return f"{title}-{tail}.{slug(fmt) or 'bin'}" if title else f"{tail}.{slug(fmt) or 'bin'}"


def report_filename(request: ReportRequested, fmt: str, pattern: str | None = None) -> str:
    """`weekly-portfolio-2026-11-23.pdf`: the request's `filename` pattern (or `pattern`, or
    DEFAULT_PATTERN) filled in, sanitised and cut to MAX_STEM characters, then `.fmt`."""
    chosen = request.filename or pattern or DEFAULT_PATTERN
    stem = slug(fill(chosen, filename_fields(request), what=f"filename pattern '{chosen}'"))
    stem = stem[:MAX_STEM].rstrip("-._") or "report"
    return f"{stem}.{slug(fmt) or 'bin'}"
