"""Untrusted templates, rendered safely: immutable Jinja2 sandbox, strict undefined, autoescape."""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import math
import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import update_wrapper
from pathlib import Path
from string import Formatter
from typing import Any

import yaml
from jinja2 import (
    BaseLoader,
    ChainableUndefined,
    Environment,
    FileSystemBytecodeCache,
    StrictUndefined,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
    meta,
    nodes,
    pass_context,
    pass_eval_context,
    select_autoescape,
)
from jinja2.exceptions import SecurityError
from jinja2.filters import do_center, do_format, do_indent
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from markupsafe import Markup, escape

from services.renderer import charts, document, localize
from shared.errors import PressroomError, TemplateError
from shared.templatefiles import TEMPLATE_SUFFIXES, template_names

_FRONT_MATTER = re.compile(r"^\s*\{#-?\s*---\s*\n(.*?)\n\s*---\s*-?#\}", re.DOTALL)

# What one expression may produce, checked before it is computed (the render process's memory
# cap is the last line of defence; these give a reason instead of "out of memory").
MAX_SEQUENCE = 10_000_000  # characters or items from `*`
MAX_INT_BITS = 100_000  # about 30,000 digits from `**`
MAX_WIDTH = 10_000  # padding/width arguments: center, ljust, "%9999d", "{:>9999}"
_PRINTF_WIDTH = re.compile(r"%[#0 +\-]*(\*|\d+)?(?:\.(\*|\d+))?")
_DIGITS = re.compile(r"\d+")
_WIDTH_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})


def _stem(name: str) -> str:
    """A template's name without its suffix, lower case: what a close match is judged on."""
    return re.sub(r"\.[^./]*$", "", name).lower()


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    description: str
    params: dict[str, str] = field(default_factory=dict)
    sample: str | None = None
    # The template's defaults for the request's `pdf` options (front matter `pdf:`).
    pdf: dict[str, Any] = field(default_factory=dict)


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


# Inside a quoted CSS string, these end the string (quotes, newlines), start an escape (a
# backslash), or end the <style> element (`</style>`); controls are escaped too. Written as CSS
# hex escapes with the space that ends one, so the next character is never read as hex.
_CSS_STRING_UNSAFE = re.compile(r"""[\x00-\x1f\x7f-\x9f"'\\<>&]""")


def _css_string(value: Any) -> Markup:
    """`|css_string`: a value as text inside a quoted CSS string, e.g. a page footer's
    `content: "{{ reporting_period | css_string }}"` — no value can end the string or the style.

    Rendered template text (a `{% filter css_string %}` section, autoescaped) is read as the
    text it shows: `&#34;` becomes a quote again, then is escaped for CSS."""
    text = value.unescape() if isinstance(value, Markup) else str(value)
    return Markup(_CSS_STRING_UNSAFE.sub(lambda m: f"\\{ord(m.group()):x} ", text))


# What HTML escaping leaves alone but a CSS string cannot hold: a value written into a template's
# <style> without `|css_string` then cannot end its string (a newline) or swallow the closing
# quote (a backslash). As character references they read the same everywhere else in HTML.
_CSS_BREAKERS = str.maketrans({"\n": "&#10;", "\r": "&#13;", "\f": "&#12;", "\\": "&#92;"})


@pass_eval_context
def _finalize(eval_ctx: EvalContext, value: Any) -> Any:
    """Every `{{ value }}` a template writes (Jinja's `finalize`), autoescaped here; markup
    (a chart, a macro, `|safe`) and `{% autoescape false %}` sections are left as they are."""
    if not eval_ctx.autoescape or hasattr(value, "__html__"):
        return value
    return Markup(str(escape(value)).translate(_CSS_BREAKERS))


def _status_class(value: Any) -> str:
    text = str(value).lower()
    if text in {"green", "ok", "on track", "on-track", "healthy", "done", "up"}:
        return "ok"
    if text in {"amber", "yellow", "at risk", "at-risk", "warning", "degraded"}:
        return "warn"
    if text in {"red", "blocked", "off track", "failed", "down", "critical"}:
        return "bad"
    return "neutral"


def _too_big(what: str) -> SecurityError:
    return SecurityError(f"{what} (a template expression may not produce that much)")


def _check_widths(numbers: list[str], what: str) -> None:
    for number in numbers:
        # Length first: int() of a 5,000-digit string is itself refused (and slow).
        if number == "*" or (number.isdigit() and (len(number) > 6 or int(number) > MAX_WIDTH)):
            shown = number if len(number) <= 12 else f"{number[:12]}… ({len(number)} digits)"
            raise _too_big(f"{what} asks for a width of {shown}, over {MAX_WIDTH:,}")


class Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, refusing absurd results before computing them.

    Intercepted operators are also never folded at compile time, so `{{ "x" * 5000000000 }}`
    cannot blow up whoever merely compiles the template.
    """

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int):
                    size = len(seq) * times
                    if size > MAX_SEQUENCE:
                        raise _too_big(f"repeating a sequence {times:,} times gives {size:,} items")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            bits = right * math.log2(abs(left)) if abs(left) > 1 else 0
            if bits > MAX_INT_BITS:
                raise _too_big(f"{left} ** {right} has about {int(bits * 0.30103):,} digits")
        elif operator == "%" and isinstance(left, str):
            for width, precision in _PRINTF_WIDTH.findall(left):
                _check_widths([n for n in (width, precision) if n], "a % format")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        method = getattr(__obj, "__name__", "")
        if isinstance(getattr(__obj, "__self__", None), str) and method in _WIDTH_METHODS:
            widths = [str(a) for a in (*args, *kwargs.values()) if isinstance(a, int)]
            _check_widths(widths, f"str.{method}")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        """str.format / format_map, as Jinja's sandbox wraps them, but with each field's spec
        checked once it is complete: a width can come from an argument (`"{:{w}}"`), so only
        the spec the formatter is about to use tells how big the result would be."""
        if super().wrap_str_format(value) is None:
            return None
        owner: str = value.__self__
        formatter: SandboxedFormatter = (
            _CheckedEscapeFormatter(self, escape=owner.escape)
            if isinstance(owner, Markup)
            else _CheckedFormatter(self)
        )
        is_format_map = value.__name__ == "format_map"

        def checked(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                kwargs = args[0]
                args = ()
            return type(owner)(formatter.vformat(owner, args, kwargs))

        return update_wrapper(checked, value)


class _SpecChecked(Formatter):
    """Refuses a field whose final spec asks for a width or precision over MAX_WIDTH."""

    def format_field(self, value: Any, format_spec: str) -> Any:
        _check_widths(_DIGITS.findall(format_spec), "a {} format")
        return super().format_field(value, format_spec)


class _CheckedFormatter(_SpecChecked, SandboxedFormatter):
    pass


class _CheckedEscapeFormatter(_SpecChecked, SandboxedEscapeFormatter):
    pass


def _checked_width_filter(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def checked(value: Any, width: Any = 80, *args: Any, **kwargs: Any) -> Any:
        if isinstance(width, int) and width > MAX_WIDTH:
            raise _too_big(f"|{name}({width}) is over the {MAX_WIDTH:,} width limit")
        return fn(value, width, *args, **kwargs)

    return checked


def _checked_format(value: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(value, str):
        for width, precision in _PRINTF_WIDTH.findall(value):
            _check_widths([n for n in (width, precision) if n], "|format")
    return do_format(value, *args, **kwargs)


MAX_FRONT_MATTER = 16 * 1024


class _PlainYaml(yaml.SafeLoader):
    """Safe YAML without anchors and aliases: a few hundred bytes of nested aliases expand to
    gigabytes (billion laughs), and a template header needs none."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases are not allowed in a template header", None
            )
        return super().compose_node(parent, index)


# ---- the identity of template files: what says a cached fact about a template still holds ---
FACTS_KEPT = 256
# Path, size, mtime and a hash of the content (templates are small: reading one costs
# microseconds, parsing it milliseconds; two writes within one clock tick still differ).
Stamp = tuple[int, int, str] | None  # None: no such file


def file_stamp(folder: Path, rel: str) -> Stamp:
    try:
        path = folder / rel
        st = path.stat()
        content = path.read_bytes() if path.is_file() else b""
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, hashlib.blake2b(content, digest_size=16).hexdigest())


def folder_listing(folder: Path) -> tuple[tuple[str, Stamp], ...]:
    """Every template file of a folder with its stamp (for templates that compute includes)."""
    found = []
    for path in sorted(folder.rglob("*")):
        if path.suffix in TEMPLATE_SUFFIXES:
            rel = path.relative_to(folder).as_posix()
            found.append((rel, file_stamp(folder, rel)))
    return tuple(found)


def files_unchanged(
    folder: Path,
    files: tuple[tuple[str, Stamp], ...],
    listing: tuple[tuple[str, Stamp], ...] | None = None,
) -> bool:
    """Whether every file is as it was stamped (stat only: no template is read or run)."""
    if listing is not None and folder_listing(folder) != listing:
        return False
    return all(file_stamp(folder, rel) == stamp for rel, stamp in files)


@dataclass(frozen=True)
class TemplateFacts:
    name: str
    files: tuple[tuple[str, Stamp], ...]  # what it reads, and referenced names not there (None)
    listing: tuple[tuple[str, Stamp], ...] | None  # the folder's templates, if it computes names
    dependencies: tuple[str, ...]
    dynamic: bool
    version: str
    variables: tuple[str, ...]


class FolderLoader(BaseLoader):
    """Reads templates from one folder only: no dotfiles, nothing a symlink leads out to.

    Every name the engine asks for — static or computed include, extends, import — is checked
    here, on the resolved path, so no way of computing a name can leave the folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path_of(self, name: str) -> Path:
        parts = name.replace("\\", "/").split("/")
        if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise TemplateError(f"template name '{name}' is not a plain name inside the folder")
        if any(p.startswith(".") for p in parts):
            raise TemplateError(f"template '{name}' is a hidden file: never read")
        path = (self.folder / "/".join(parts)).resolve()
        if not path.is_relative_to(self.folder):
            raise TemplateError(f"template '{name}' leads outside the templates folder: refused")
        return path

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        path = self.path_of(template)
        if not path.is_file():
            raise TemplateNotFound(template)
        stamp = file_stamp(path.parent, path.name)
        source = path.read_text(encoding="utf-8")

        def uptodate() -> bool:
            # Not the mtime alone: two writes within one clock tick share it.
            return stamp is not None and file_stamp(path.parent, path.name) == stamp

        return source, str(path), uptodate


@functools.lru_cache(maxsize=256)
def _parsed_front_matter(text: str) -> dict[str, Any]:
    """Front matter YAML parsed once per process for each distinct text (the renderer service
    reads a template's `pdf:` defaults for every request; parsing it was most of that)."""
    try:
        data = yaml.load(text, Loader=_PlainYaml)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


class TemplateLibrary:
    """One templates folder: listing, metadata, validation, versions and rendering."""

    def __init__(self, folder: Path, *, cache_dir: Path | None = None) -> None:
        self.folder = folder.resolve()
        self.loader = FolderLoader(self.folder)
        self.env = Sandbox(
            loader=self.loader,
            undefined=StrictUndefined,
            autoescape=select_autoescape(TEMPLATE_SUFFIXES, default_for_string=True),
            auto_reload=True,
            bytecode_cache=FileSystemBytecodeCache(str(cache_dir)) if cache_dir else None,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=_finalize,
        )
        self.env.filters.update(
            number=_number_l,
            percent=_percent_l,
            datetime=_datetime_l,
            date=_date_l,
            currency=_currency_l,
            lang_tag=localize.lang_tag,
            status_class=_status_class,
            css_string=_css_string,
            center=_checked_width_filter(do_center, "center"),
            indent=_checked_width_filter(do_indent, "indent"),
            format=_checked_format,
        )
        self.env.globals.update(
            bar_chart=charts.bar_chart, line_chart=charts.line_chart, sparkline=charts.sparkline
        )
        self._facts: dict[str, TemplateFacts] = {}

    # ---- discovery -------------------------------------------------------------------------
    def names(self) -> list[str]:
        return template_names(self.folder)

    def check_name(self, name: str) -> str:
        """A file inside the folder (any, partials included): for `pressroom render PATH`."""
        path = self.loader.path_of(name)
        if not path.is_file():
            raise TemplateError(f"template '{name}' not found in the templates folder")
        return Path(name).as_posix()

    def resolve(self, name: str) -> str:
        """The listed template a request names ('weekly' or 'weekly.html'), else why not.

        Only what `pressroom templates ls` lists can be asked for: no partials, dotfiles,
        samples or assets. The reason never shows server paths (it travels on the bus).
        """
        listed = self.names()
        wanted = name.replace("\\", "/")
        for candidate in (wanted, *(wanted + suffix for suffix in TEMPLATE_SUFFIXES)):
            if candidate in listed:
                return candidate
        known = ", ".join(listed) or "none"
        # A suggestion only when one is close, the names compared without their suffix: the
        # `.html` every template has made any `x.html` look like some other.
        stems = {_stem(n): n for n in listed}
        close = difflib.get_close_matches(_stem(wanted), list(stems), n=1, cutoff=0.75)
        hint = f"; did you mean {stems[close[0]]}?" if close else ""
        try:
            exists = self.loader.path_of(wanted).is_file()
        except TemplateError:
            exists = True  # a hidden or outside path: say it cannot be asked for
        if exists:
            raise TemplateError(
                f"template '{name}' cannot be requested: only report templates listed by "
                f"`pressroom templates ls` can (known: {known})"
            )
        raise TemplateError(f"template '{name}' not found (known: {known}){hint}")

    def source(self, name: str) -> str:
        return self.loader.path_of(name).read_text(encoding="utf-8")

    def info(self, name: str) -> TemplateInfo:
        front = self._front_matter(name)
        sample = self.folder / "samples" / f"{Path(name).stem}.json"
        return TemplateInfo(
            name=name,
            description=str(front.get("description", "")).strip(),
            params={str(k): str(v) for k, v in (front.get("params") or {}).items()},
            sample=str(sample.relative_to(self.folder)) if sample.is_file() else None,
            pdf=front["pdf"] if isinstance(front.get("pdf"), dict) else {},
        )

    def front_matter(self, name: str) -> dict[str, Any]:
        """The template's own front matter (`description`, `params`, `pdf` …), or {}."""
        return self._front_matter(name)

    def _front_matter(self, name: str) -> dict[str, Any]:
        match = _FRONT_MATTER.match(self.source(name))
        if not match or len(match.group(1)) > MAX_FRONT_MATTER:
            return {}
        # A copy: callers may change what they are given, the parsed original is kept.
        return copy.deepcopy(_parsed_front_matter(match.group(1)))

    # ---- dependencies and versions ---------------------------------------------------------
    def dependencies(self, name: str) -> tuple[list[str], bool]:
        """The template and every template it extends, includes or imports, transitively;
        and whether any of those names is computed (then anything in the folder may be read)."""
        seen, dynamic, _ = self._scan(name)
        return seen, dynamic

    def _scan(self, name: str) -> tuple[list[str], bool, list[str]]:
        """dependencies(), and the names referenced that are not (yet) readable."""
        seen: list[str] = []
        absent: list[str] = []
        dynamic = False
        pending = [self.check_name(name)]
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.append(current)
            try:
                ast = self.env.parse(self.source(current), current)
            except (TemplateSyntaxError, TemplateError):
                continue
            for ref in meta.find_referenced_templates(ast):
                if ref is None:
                    dynamic = True
                elif self._readable(ref):
                    pending.append(ref)
                elif ref not in absent:
                    absent.append(ref)
        return seen, dynamic, absent

    def facts(self, name: str) -> TemplateFacts:
        """Version, dependencies and variables of a template, worked out once per identity of
        the files it reads (kept per process: a render process answers every request for the
        template from here until one of its files changes, appears or goes)."""
        name = self.check_name(name)
        kept = self._facts.get(name)
        if kept is not None and files_unchanged(self.folder, kept.files, kept.listing):
            return kept
        deps, dynamic, absent = self._scan(name)
        files = tuple((rel, file_stamp(self.folder, rel)) for rel in (*deps, *absent))
        listing = folder_listing(self.folder) if dynamic else None
        digest = hashlib.sha256()
        for dep in sorted(self._all_files() if dynamic else deps):
            digest.update(dep.encode() + b"\0")
            digest.update(self.loader.path_of(dep).read_bytes())
        facts = TemplateFacts(
            name=name,
            files=files,
            listing=listing,
            dependencies=tuple(deps),
            dynamic=dynamic,
            version=digest.hexdigest()[:16],
            variables=tuple(self._variables(deps)),
        )
        if not files_unchanged(self.folder, files, listing):
            return facts  # a file changed while it was read: worked out afresh next time
        self._facts[name] = facts
        while len(self._facts) > FACTS_KEPT:
            self._facts.pop(next(iter(self._facts)))
        return facts

    def _readable(self, ref: str) -> bool:
        try:
            return self.loader.path_of(ref).is_file()
        except TemplateError:
            return False

    def _all_files(self) -> list[str]:
        found = []
        for path in sorted(self.folder.rglob("*")):
            rel = path.relative_to(self.folder).as_posix()
            if path.suffix in TEMPLATE_SUFFIXES and self._readable(rel):
                found.append(rel)
        return found

    def version(self, name: str) -> str:
        """Content hash of what the template can read: itself and its includes — or, when it
        computes an include's name, every template file in the folder."""
        return self.facts(name).version

    # ---- validation ------------------------------------------------------------------------
    def variables(self, name: str) -> list[str]:
        """Variables the template (and what it includes) reads from the context."""
        return list(self.facts(name).variables)

    def _variables(self, deps: list[str]) -> list[str]:
        found: set[str] = set()
        for dep in deps:
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
        try:  # the front matter's `pdf:` (variant, tagged, metadata), as a render reads it
            document.template_pdf(self.front_matter(name), name)
        except PressroomError as error:
            problems.append(Problem(name, None, error.reason))
        for dep in self.dependencies(name)[0]:
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
                if ref and not self._readable(ref):
                    problems.append(Problem(dep, None, f"includes missing template '{ref}'"))
            unknown = [n for n in ast.find_all(nodes.Filter) if n.name not in self.env.filters]
            for node in unknown:
                problems.append(Problem(dep, node.lineno, f"unknown filter '{node.name}'"))
            if not unknown:
                try:
                    self.env.compile(source, dep)
                except TemplateSyntaxError as error:
                    problems.append(Problem(dep, error.lineno, error.message or "invalid"))
                except MemoryError:
                    problems.append(Problem(dep, None, "compiling it runs out of memory"))
                    return problems  # nothing more can be learnt from it
                except Exception as error:  # constant folding runs template code
                    problems.append(
                        Problem(dep, None, f"cannot compile: {type(error).__name__}: {error}")
                    )
                    return problems
        if declared:
            for var in self.variables(name):
                if var not in declared:
                    problems.append(
                        Problem(name, None, f"variable '{var}' is used but not declared in params")
                    )
        return problems

    # ---- rendering -------------------------------------------------------------------------
    def cache_variables(self, name: str) -> list[str] | None:
        """What a render of `name` can depend on from the context, for the render cache key:
        the variables it reads, or None when it computes an include name (then: everything).
        Compiles the template: call it only inside a capped render process."""
        facts = self.facts(name)
        return None if facts.dynamic else list(facts.variables)

    def _more_missing(self, template: Any, context: dict[str, Any], first: Any) -> list[str]:
        """The other top-level variables a render misses after `first`: render again with
        each missing one stood in by an empty value, until it renders or fails otherwise."""
        missing = _missing_name(first)
        if missing is None:
            return []
        found: list[str] = []
        trial = dict(context)
        trial[missing] = ChainableUndefined(name=missing)
        for _ in range(50):  # a bound: each round finds one more
            try:
                template.render(trial)
                break
            except UndefinedError as error:
                name = _missing_name(error)
                if name is None or name in trial:
                    break
                found.append(name)
                trial[name] = ChainableUndefined(name=name)
            except Exception:  # a stand-in the template could not use: stop here
                break
        return found

    def render(self, name: str, context: dict[str, Any]) -> str:
        """Render a template; any failure of template code is a TemplateError (permanent)."""
        name = self.check_name(name)
        template = None
        try:
            template = self.env.get_template(name)
            return template.render(context)
        except PressroomError:
            raise  # the loader's refusals already say what happened
        except TemplateSyntaxError as error:
            raise syntax_error(error, name) from None
        except TemplateNotFound as error:
            raise TemplateError(
                f"template '{name}' includes missing template '{error.name}'"
            ) from None
        except UndefinedError as error:
            where = _template_location(error, name)
            others = [] if template is None else self._more_missing(template, context, error)
            if others:  # every missing variable at once, not one per attempt
                listed = ", ".join(f"'{v}'" for v in [_missing_name(error), *others])
                raise TemplateError(
                    f"undefined variables in {where}: {listed} are undefined"
                ) from None
            raise TemplateError(f"undefined variable in {where}: {error.message}") from None
        except SecurityError as error:
            raise TemplateError(
                f"template {_template_location(error, name)} tried an unsafe operation: {error}"
            ) from None
        except MemoryError:
            raise TemplateError(
                f"template '{name}' ran out of memory (a loop or value far too large?)"
            ) from None
        except RecursionError:
            raise TemplateError(f"template '{name}' recursed too deeply") from None
        except Exception as error:
            # Whatever template code raises (OverflowError from range(), IndexError, OSError
            # from a date filter …) is the template's or the data's fault: retrying won't help.
            raise TemplateError(
                f"template error in {_template_location(error, name)}: "
                f"{error.__class__.__name__}: {error}"
            ) from None


_UNDEFINED = re.compile(r"^'(\w+)' is undefined$")


def _missing_name(error: UndefinedError) -> str | None:
    """The top-level variable an UndefinedError is about ('x' is undefined), if it is one."""
    match = _UNDEFINED.match(error.message or "")
    return match.group(1) if match else None


def bytecode_cache_dir(base: Path) -> Path:
    """Jinja's bytecode cache keys templates by name and source only; compiled code also
    depends on the filters and the sandbox (a filter that became `pass_context` is called
    differently). A folder per version of this module keeps an upgrade from reusing stale
    bytecode."""
    return base / _module_code()


@functools.cache
def _module_code() -> str:
    """This module's content hash (read once per process, not per request)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]


def validate_in_folder(folder: str, names: list[str] | None) -> dict[str, list[str]]:
    """Problems per template (all listed ones when `names` is None).

    Compiles the templates, so it runs in a capped process."""
    library = TemplateLibrary(Path(folder))
    checked = library.names() if names is None else names
    return {n: [str(p) for p in library.validate(n)] for n in checked}


def syntax_error(error: TemplateSyntaxError, name: str) -> TemplateError:
    """A template that does not parse, at its file (`name` unless Jinja names another) and line."""
    where = f"{error.name or name}:{error.lineno}"
    return TemplateError(f"template syntax error at {where}: {error.message}")


def variables_in_folder(folder: str, name: str) -> tuple[list[str], dict[str, str]]:
    """(variables, declared params) of a template — compiles it: run it in a capped process.
    A file of it that does not parse is a TemplateError at its line (its variables could not
    all be known)."""
    library = TemplateLibrary(Path(folder))
    for dep in library.facts(name).dependencies:
        try:
            library.env.parse(library.source(dep), dep)
        except TemplateSyntaxError as error:
            raise syntax_error(error, dep) from None
    return library.variables(name), library.info(name).params


def _template_location(error: BaseException, fallback: str) -> str:
    """'weekly.html:12' from the traceback Jinja rewrites to point into templates."""
    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if frame.filename.endswith(TEMPLATE_SUFFIXES):
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return fallback
