"""`pressroom templates`: list, validate and inspect templates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from services.console.adhoc import resolve_template
from services.console.cli._common import (
    checked,
    emit_json,
    err,
    fail,
    library,
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
        out.print(f"no templates in {literal(lib.folder)} (add .html files there)")
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
