"""Untrusted templates, rendered safely: immutable Jinja2 sandbox, strict undefined, autoescape."""

from __future__ import annotations

import hashlib
import re
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from jinja2 import (
    FileSystemBytecodeCache,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    nodes,
    pass_context,
    select_autoescape,
)
from jinja2.exceptions import SecurityError, TemplateRuntimeError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from services.renderer import charts, localize
from shared.errors import TemplateError

TEMPLATE_SUFFIXES = (".html", ".htm")
# Folders beside the templates that hold no report templates of their own.
NON_TEMPLATE_DIRS = {"samples", "assets", "static", "partials", "fonts", "img", "css"}
_FRONT_MATTER = re.compile(r"^\s*\{#-?\s*---\s*\n(.*?)\n\s*---\s*-?#\}", re.DOTALL)


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    description: str
    params: dict[str, str] = field(default_factory=dict)
    sample: str | None = None


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


def _number(value: Any, digits: int = 0) -> str:
    try:
        return f"{float(value):,.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def _percent(value: Any, digits: int = 1) -> str:
    try:
        return f"{float(value):.{digits}f}%"
    except (TypeError, ValueError):
        return str(value)


def _datetime(value: Any, fmt: str = "%Y-%m-%d %H:%M UTC") -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return str(value)
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return str(value.strftime(fmt)) if isinstance(value, datetime) else str(value)


# The request's `locale` (in the context when given) decides how numbers and dates read; without
# one, the filters keep writing them as they always have.
@pass_context
def _number_l(ctx: Context, value: Any, digits: int = 0) -> str:
    locale = ctx.get("locale")
    return localize.number(value, digits, locale) if locale else _number(value, digits)


@pass_context
def _percent_l(ctx: Context, value: Any, digits: int = 1) -> str:
    locale = ctx.get("locale")
    return localize.percent(value, digits, locale) if locale else _percent(value, digits)


@pass_context
def _datetime_l(ctx: Context, value: Any, fmt: str | None = None) -> str:
    locale, moment = ctx.get("locale"), localize.as_datetime(value)
    if locale and fmt is None and isinstance(moment, datetime):
        return localize.when(moment, locale)
    return _datetime(value, fmt or "%Y-%m-%d %H:%M UTC")


@pass_context
def _date_l(ctx: Context, value: Any, style: str = "medium") -> str:
    moment = localize.as_datetime(value)
    if moment is None:
        return str(value)
    return localize.day(moment, ctx.get("locale") or "en", style)


@pass_context
def _currency_l(ctx: Context, value: Any, currency: str = "USD") -> str:
    return localize.money(value, currency, ctx.get("locale") or "en")


def _status_class(value: Any) -> str:
    text = str(value).lower()
    if text in {"green", "ok", "on track", "on-track", "healthy", "done", "up"}:
        return "ok"
    if text in {"amber", "yellow", "at risk", "at-risk", "warning", "degraded"}:
        return "warn"
    if text in {"red", "blocked", "off track", "failed", "down", "critical"}:
        return "bad"
    return "neutral"


class TemplateLibrary:
    """One templates folder: listing, metadata, validation, versions and rendering."""

    def __init__(self, folder: Path, *, cache_dir: Path | None = None) -> None:
        self.folder = folder.resolve()
        self.env = ImmutableSandboxedEnvironment(
            loader=FileSystemLoader(str(self.folder)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(TEMPLATE_SUFFIXES, default_for_string=True),
            auto_reload=True,
            bytecode_cache=FileSystemBytecodeCache(str(cache_dir)) if cache_dir else None,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(
            number=_number_l,
            percent=_percent_l,
            datetime=_datetime_l,
            date=_date_l,
            currency=_currency_l,
            lang_tag=localize.lang_tag,
            status_class=_status_class,
        )
        self.env.globals.update(
            bar_chart=charts.bar_chart, line_chart=charts.line_chart, sparkline=charts.sparkline
        )

    # ---- discovery -------------------------------------------------------------------------
    def names(self) -> list[str]:
        found = []
        for path in sorted(self.folder.rglob("*")):
            rel = path.relative_to(self.folder)
            if (
                path.suffix in TEMPLATE_SUFFIXES
                and path.is_file()
                and not rel.name.startswith(("_", "."))
                and not (set(rel.parts[:-1]) & NON_TEMPLATE_DIRS)
            ):
                found.append(rel.as_posix())
        return found

    def check_name(self, name: str) -> str:
        """The template's name if it exists inside the folder, else a helpful TemplateError."""
        parts = name.replace("\\", "/").split("/")
        candidate = (self.folder / name).resolve()
        if name.startswith("/") or ".." in parts or not candidate.is_relative_to(self.folder):
            raise TemplateError(f"template '{name}' is outside the templates folder {self.folder}")
        if not candidate.is_file():
            known = ", ".join(self.names()) or "none"
            raise TemplateError(f"template '{name}' not found in {self.folder} (known: {known})")
        return Path(name).as_posix()

    def source(self, name: str) -> str:
        return (self.folder / self.check_name(name)).read_text(encoding="utf-8")

    def info(self, name: str) -> TemplateInfo:
        front = self._front_matter(name)
        sample = self.folder / "samples" / f"{Path(name).stem}.json"
        return TemplateInfo(
            name=name,
            description=str(front.get("description", "")).strip(),
            params={str(k): str(v) for k, v in (front.get("params") or {}).items()},
            sample=str(sample.relative_to(self.folder)) if sample.is_file() else None,
        )

    def _front_matter(self, name: str) -> dict[str, Any]:
        match = _FRONT_MATTER.match(self.source(name))
        if not match:
            return {}
        try:
            data = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            return {}
        return data if isinstance(data, dict) else {}

    # ---- dependencies and versions ---------------------------------------------------------
    def dependencies(self, name: str) -> list[str]:
        """The template and every template it extends, includes or imports, transitively."""
        seen: list[str] = []
        pending = [self.check_name(name)]
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.append(current)
            try:
                ast = self.env.parse(self.source(current), current)
            except TemplateSyntaxError:
                continue
            for ref in meta.find_referenced_templates(ast):
                if ref and (self.folder / ref).is_file():
                    pending.append(ref)
        return seen

    def version(self, name: str) -> str:
        digest = hashlib.sha256()
        for dep in sorted(self.dependencies(name)):
            digest.update(dep.encode() + b"\0")
            digest.update((self.folder / dep).read_bytes())
        return digest.hexdigest()[:16]

    # ---- validation ------------------------------------------------------------------------
    def variables(self, name: str) -> list[str]:
        """Variables the template (and what it includes) reads from the context."""
        found: set[str] = set()
        for dep in self.dependencies(name):
            try:
                ast = self.env.parse(self.source(dep), dep)
            except TemplateSyntaxError:
                continue
            try:
                found |= meta.find_undeclared_variables(ast)
            except TemplateSyntaxError:  # e.g. an unknown filter stops code generation
                names = list(ast.find_all(nodes.Name))
                stored = {n.name for n in names if n.ctx in ("store", "param")}
                found |= {n.name for n in names if n.ctx == "load"} - stored
        return sorted(found - set(self.env.globals))

    def validate(self, name: str) -> list[Problem]:
        try:
            name = self.check_name(name)
        except TemplateError as error:
            return [Problem(name, None, error.reason)]
        problems: list[Problem] = []
        declared = set(self.info(name).params)
        for dep in self.dependencies(name):
            try:
                source = self.source(dep)
                ast = self.env.parse(source, dep)
            except TemplateSyntaxError as error:
                problems.append(Problem(dep, error.lineno, error.message or "syntax error"))
                continue
            except TemplateError as error:
                problems.append(Problem(dep, None, error.reason))
                continue
            for ref in meta.find_referenced_templates(ast):
                if ref and not (self.folder / ref).is_file():
                    problems.append(Problem(dep, None, f"includes missing template '{ref}'"))
            unknown = [n for n in ast.find_all(nodes.Filter) if n.name not in self.env.filters]
            for node in unknown:
                problems.append(Problem(dep, node.lineno, f"unknown filter '{node.name}'"))
            if not unknown:
                try:
                    self.env.compile(source, dep)
                except TemplateSyntaxError as error:
                    problems.append(Problem(dep, error.lineno, error.message or "invalid"))
        if declared:
            for var in self.variables(name):
                if var not in declared:
                    problems.append(
                        Problem(name, None, f"variable '{var}' is used but not declared in params")
                    )
        return problems

    # ---- rendering -------------------------------------------------------------------------
    def render(self, name: str, context: dict[str, Any]) -> str:
        name = self.check_name(name)
        try:
            template = self.env.get_template(name)
            return template.render(context)
        except TemplateSyntaxError as error:
            where = f"{error.filename or name}:{error.lineno}"
            raise TemplateError(f"template syntax error at {where}: {error.message}") from None
        except TemplateNotFound as error:
            raise TemplateError(
                f"template '{name}' includes missing template '{error.name}'"
            ) from None
        except UndefinedError as error:
            raise TemplateError(
                f"undefined variable in {_template_location(error, name)}: {error.message}"
            ) from None
        except SecurityError as error:
            raise TemplateError(
                f"template {_template_location(error, name)} tried an unsafe operation: {error}"
            ) from None
        except TemplateRuntimeError as error:
            raise TemplateError(
                f"template error in {_template_location(error, name)}: {error}"
            ) from None
        except (TypeError, ValueError, ZeroDivisionError, KeyError, AttributeError) as error:
            raise TemplateError(
                f"template error in {_template_location(error, name)}: "
                f"{error.__class__.__name__}: {error}"
            ) from None


def _template_location(error: BaseException, fallback: str) -> str:
    """'weekly.html:12' from the traceback Jinja rewrites to point into templates."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename.endswith(TEMPLATE_SUFFIXES):
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return fallback
