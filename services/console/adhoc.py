"""`pressroom render`: one template rendered here, without the bus, as the renderer would."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from shared.errors import PressroomError
from shared.events import ReportRequested
from shared.settings import Settings


def resolve_template(cfg: Settings, template: str) -> tuple[Path, str]:
    """A path renders from its own folder; a name renders from PRESSROOM_TEMPLATES_DIR."""
    as_path = Path(template)
    if as_path.is_file():
        return as_path.parent.resolve(), as_path.name
    return cfg.templates_dir.resolve(), template


FORMATS = ("pdf", "html", "csv", "xlsx")


def output_format(fmt: str | None, output: Path | None) -> str:
    chosen = fmt or (output.suffix.lstrip(".") if output and output.suffix else "pdf")
    if chosen not in FORMATS:
        raise PressroomError(f"--format must be pdf, html, csv or xlsx, got '{chosen}'")
    return chosen


def pdf_options(
    variant: str | None,
    tagged: bool | None,
    author: str | None,
    subject: str | None,
    keywords: list[str],
) -> dict[str, Any] | None:
    """The request's `pdf` object from `pressroom render`'s flags (`--pdf-variant none`: a
    plain PDF); None when no flag says anything (the template's and operator's defaults)."""
    options: dict[str, Any] = {}
    if variant is not None:
        options["variant"] = None if variant.lower() in ("none", "") else variant.lower()
    if tagged is not None:
        options["tagged"] = tagged
    metadata = {"author": author, "subject": subject, "keywords": keywords or None}
    if any(v is not None for v in metadata.values()):
        options["metadata"] = {k: v for k, v in metadata.items() if v is not None}
    return options or None


def export_paths(output: Path, fmt: str, names: list[str | None]) -> list[Path]:
    """Where `pressroom render -o report.csv` writes: report.<table>.csv per table."""
    if fmt != "csv":
        return [output]
    stem = output.with_suffix("") if output.suffix == ".csv" else output
    return [stem.with_name(f"{stem.name}.{name}.csv") for name in names]


def adhoc_job(
    cfg: Settings,
    template: str,
    data: dict[str, Any],
    *,
    formats: tuple[str, ...],
    locale: str | None,
    split: str | None,
    pdf: dict[str, Any] | None = None,
    csv_bom: bool | None = None,
    password_file: Path | None = None,
) -> Any:
    """The render job for a template name or path: a path is the operator's own file, a name
    must be a listed template."""
    # Here, not at the top: every CLI command loads this module (`resolve_template`), and only
    # `render` needs the renderer (a fifth of a second of imports, in every CLI process).
    from services.renderer.core import (
        build_context,
        document_spec,
        make_job,
        with_template_defaults,
    )
    from services.renderer.finish import plan

    folder, name = resolve_template(cfg, template)
    try:
        req = ReportRequested(
            template=name, request_id=f"adhoc-{int(time.time())}", requested_by="cli"
        )
    except ValueError as error:
        raise PressroomError(f"invalid template name '{name}': {error}") from None
    try:
        req = ReportRequested.model_validate(
            {**req.model_dump(), "formats": list(formats), "pdf": pdf, "csv_bom": csv_bom}
        )
    except ValueError as error:
        first = error.errors()[0] if hasattr(error, "errors") else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "options"
        raise PressroomError(f"invalid {where}: {first.get('msg', error)}") from None
    if locale:
        try:
            req = req.model_copy(update={"locale": ReportRequested.checked_locale(locale)})
        except ValueError as error:
            raise PressroomError(str(error)) from None
    if split not in (None, "auto", "on", "off"):
        raise PressroomError(f"--split must be auto, on or off, got '{split}'")
    finish = None
    if "pdf" in formats:
        if password_file is not None and not password_file.is_file():
            raise PressroomError(f"--password-file: no file '{password_file}'")
        finish = plan(
            cfg,
            with_template_defaults(folder, name, req.pdf),
            templates_dir=folder,
            recipient=req.requested_by,
            user_password_file=str(password_file.resolve()) if password_file else "",
        )
    job = make_job(
        cfg,
        name,
        build_context(req, data),
        formats,
        templates_dir=folder,
        split=split,
        document=document_spec(cfg, req, data),
        finish=finish,
    )
    return replace(job, listed_only=folder == cfg.templates_dir.resolve())
