"""`pressroom render`: one template rendered here, without the bus, as the renderer would."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.renderer.core import build_context, make_job
from shared.errors import PressroomError
from shared.events import ReportRequested
from shared.settings import Settings


def resolve_template(cfg: Settings, template: str) -> tuple[Path, str]:
    """A path renders from its own folder; a name renders from PRESSROOM_TEMPLATES_DIR."""
    as_path = Path(template)
    if as_path.is_file():
        return as_path.parent.resolve(), as_path.name
    return cfg.templates_dir.resolve(), template


def output_format(fmt: str | None, output: Path | None) -> str:
    chosen = fmt or (output.suffix.lstrip(".") if output and output.suffix else "pdf")
    if chosen not in ("pdf", "html"):
        raise PressroomError(f"--format must be pdf or html, got '{chosen}'")
    return chosen


def adhoc_job(
    cfg: Settings,
    template: str,
    data: dict[str, Any],
    *,
    formats: tuple[str, ...],
    locale: str | None,
    split: str | None,
) -> Any:
    """The render job for a template name or path: a path is the operator's own file, a name
    must be a listed template."""

    folder, name = resolve_template(cfg, template)
    try:
        req = ReportRequested(
            template=name, request_id=f"adhoc-{int(time.time())}", requested_by="cli"
        )
    except ValueError as error:
        raise PressroomError(f"invalid template name '{name}': {error}") from None
    if locale:
        try:
            req = req.model_copy(update={"locale": ReportRequested.checked_locale(locale)})
        except ValueError as error:
            raise PressroomError(str(error)) from None
    if split not in (None, "auto", "on", "off"):
        raise PressroomError(f"--split must be auto, on or off, got '{split}'")
    job = make_job(cfg, name, build_context(req, data), formats, templates_dir=folder, split=split)
    return replace(job, listed_only=folder == cfg.templates_dir.resolve())
