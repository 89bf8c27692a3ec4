"""Which files in the templates folder are report templates: what `pressroom templates ls` lists.

One definition for the renderer (which renders them) and for every stage's metrics (which
name a template in a label only when it is one of these, shared/metrics.py).
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_SUFFIXES = (".html", ".htm")
# Folders beside the templates that hold no report templates of their own.
NON_TEMPLATE_DIRS = {"samples", "assets", "static", "partials", "fonts", "img", "css"}


def template_names(folder: Path) -> list[str]:
    """The report templates under `folder`, as relative POSIX paths (partials `_x` excluded)."""
    found = []
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        rel = path.relative_to(folder)
        if (
            path.suffix in TEMPLATE_SUFFIXES
            and path.is_file()
            and not rel.name.startswith(("_", "."))
            and not (set(rel.parts[:-1]) & NON_TEMPLATE_DIRS)
        ):
            found.append(rel.as_posix())
    return found
