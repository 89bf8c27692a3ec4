"""`pressroom templates`: list, validate and inspect templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from services.console.adhoc import resolve_template
from services.console.cli._audit import audited
from services.console.cli._common import (
    checked,
    emit_json,
    err,
    fail,
    library,
    on_bus,
    out,
    settings,
    validate_capped,
)
from services.console.cli._output import Col, literal, print_table, visible
from services.renderer import fonts
from services.renderer.pool import run_capped
from services.renderer.templating import variables_in_folder
from shared.errors import PressroomError


def listed_name(lib: Any, name: str) -> str:
    """A listed template by its canonical name (`weekly` is `weekly.html`, as requests
    accept it); any other file of the folder (a partial) as given."""
    try:
        return str(lib.resolve(name))
    except PressroomError:
        return name


templates_app = typer.Typer(help="List, validate and inspect templates.", no_args_is_help=True)


@templates_app.command("ls")
def templates_ls(as_json: bool = typer.Option(False, "--json")) -> None:
    """Templates with their descriptions."""
    lib = library(settings())
    infos = [lib.info(n) for n in lib.names()]
    if as_json:
        emit_json(
            [
                {"name": i.name, "description": i.description, "version": lib.version(i.name)}
                for i in infos
            ]
        )
        return
    if not infos:
        out.print(f"no templates in {literal(lib.folder)} (add .html files there)", soft_wrap=True)
        return
    print_table(
        out,
        [Col("template"), Col("version"), Col("description", long=True)],
        [[i.name, lib.version(i.name), i.description] for i in infos],
    )


@templates_app.command("validate")
def templates_validate(
    name: str | None = typer.Argument(None),
    all_: bool = typer.Option(False, "--all"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Check syntax, filters and declared variables; exit 1 on any problem."""

    cfg = settings()
    if not name and not all_:
        fail("give a template NAME or --all")
    if name and Path(name).is_file():
        folder, name = resolve_template(cfg, name)
        lib = library(cfg, folder)
    else:
        lib = library(cfg)
        name = listed_name(lib, name) if name else name
    found = validate_capped(cfg, lib.folder, None if all_ else [str(name)])
    names, problems = list(found), [p for ps in found.values() for p in ps]
    listed = [n for n in names if n and n in lib.names()]
    warnings = fonts.template_font_warnings(lib, listed, fonts.extra_dirs_from(cfg.fonts_dir))
    if as_json:
        emit_json({"checked": names, "problems": [str(p) for p in problems], "warnings": warnings})
    else:
        for problem in problems:
            err.print(visible(problem), highlight=False, soft_wrap=True, markup=False)
        for warning in warnings:
            err.print(f"warning: {visible(warning)}", highlight=False, soft_wrap=True, markup=False)
        if not problems:
            out.print(f"ok: {len(names)} template(s) valid")
    if problems:
        raise typer.Exit(1)


@templates_app.command("vars")
def templates_vars(name: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """The variables a template reads (and what its header says about them)."""

    cfg = settings()
    folder, name = resolve_template(cfg, name)
    lib = library(cfg, folder)
    name = checked(lambda: lib.check_name(listed_name(lib, name)))
    variables, params = checked(
        lambda: run_capped(variables_in_folder, str(lib.folder), name, label=name, settings=cfg)
    )
    if as_json:
        emit_json({"template": name, "variables": variables, "params": params})
        return
    print_table(
        out,
        [Col("variable"), Col("description", long=True)],
        [[var, params.get(var, "")] for var in variables],
    )


@templates_app.command("shadow")
@audited("templates shadow")
def templates_shadow(
    name: str = typer.Argument(..., help="The live template (its recorded payloads)."),
    last: int = typer.Option(20, "--last", min=1, max=200, help="Recorded payloads to render."),
    candidate: Path | None = typer.Option(
        None,
        "--candidate",
        help="The changed template file, or a changed templates folder (default: the "
        "templates folder as it is now).",
    ),
    threshold: float = typer.Option(
        0.0,
        "--threshold",
        min=0.0,
        max=1.0,
        help="Share of a page's pixels that may change (0: any change counts).",
    ),
    images: Path | None = typer.Option(
        None, "--images", help="Write the changed pages (delivered, candidate, diff) here."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Render a candidate on the last recorded payloads of NAME and compare each with the
    report delivered; exit 1 when one fails or changes beyond the threshold."""

    cfg = settings()
    lib = library(cfg)
    name = listed_name(lib, name)
    if name not in lib.names():
        fail(f"no template '{name}' in {lib.folder} (`pressroom templates ls` lists them)")

    # Here, not at the top: every CLI process loads this module, and only `templates shadow`
    # needs the studio's renderer machinery (a sixth of a second of imports).
    from services.console.studio.shadow import shadow_command

    async def work(bus: Any) -> Any:
        return await shadow_command(
            await bus.store(),
            cfg,
            name,
            candidate,
            last=last,
            threshold=threshold,
            images=images,
        )

    report = on_bus(cfg, work)
    if as_json:
        emit_json(report.as_dict())
    else:
        _print_shadow(report)
    if not report.passed:
        raise typer.Exit(1)


def _print_shadow(report: Any) -> None:
    rows = []
    for r in report.results:
        pages = r.get("pages") or {}
        secs = r.get("seconds") or {}
        size = r.get("bytes") or {}
        changed = r.get("changed_pages") or []
        if r["status"] in ("failed", "skipped"):
            error = r.get("error") or {}
            message = str(error.get("message", ""))
            where = f"{error.get('file')}:{error.get('line')}"
            detail = message if not error.get("line") or where in message else f"{where}: {message}"
        elif changed:
            detail = ", ".join(
                f"p{p['page']} {len(p['regions'])} region(s) {p['ratio'] * 100:.2f}%"
                for p in changed
            )
        else:
            detail = ""
        rows.append(
            [
                r.get("request_id") or r["payload"],
                r["status"],
                _change(pages.get("before"), pages.get("after"), ""),
                _change(secs.get("before"), secs.get("after"), "s"),
                _change(size.get("before"), size.get("after"), "B"),
                detail,
            ]
        )
    if rows:
        print_table(
            out,
            [
                Col("report"),
                Col("result"),
                Col("pages"),
                Col("time"),
                Col("size"),
                Col("detail", long=True),
            ],
            rows,
        )
    count = {
        s: sum(1 for r in report.results if r["status"] == s)
        for s in ("failed", "changed", "same", "skipped")
    }
    verdict = "pass" if report.passed else "FAIL"
    out.print(
        f"{verdict}: {literal(report.template)} {report.live} → {report.candidate} on "
        f"{len(report.results)} recorded payload(s): {count['failed']} failed, "
        f"{count['changed']} changed, {count['same']} same, {count['skipped']} skipped",
        highlight=False,
    )


def _change(before: Any, after: Any, unit: str) -> str:
    if before is None and after is None:
        return ""

    def show(value: Any) -> str:
        if value is None:
            return "–"
        if unit == "":
            return str(value)
        if unit == "B":
            return f"{value / 1024:.0f}k" if value >= 1024 else f"{value}B"
        return f"{value:.1f}s"

    return f"{show(before)}→{show(after)}"


def register(app: typer.Typer) -> None:
    app.add_typer(templates_app, name="templates")
