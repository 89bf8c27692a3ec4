"""One report in one piece: the template rendered to HTML and laid out by WeasyPrint, in a
render process (pool.py runs it; split.py lays long reports out in parts)."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.renderer import cellwidths, document, fonts, warm
from services.renderer.document import Resolved
from services.renderer.exports import Export, make_exports
from services.renderer.finish import appended_pages, finish, with_placeholders
from services.renderer.job import Analysis, RenderJob, RenderOutput
from services.renderer.sandbox import (
    check_output_size,
    engine_failures,
    warm_fetcher,
    weasyprint_errors,
)
from services.renderer.templating import TemplateLibrary

_libraries: dict[str, Any] = {}


def base_folder(job: RenderJob, name: str) -> Path:
    """Where the template's relative asset URLs resolve from."""
    library = template_library(job.templates_dir, job.cache_dir)
    return Path(library.folder / Path(name).parent)


def template_library(folder: str, cache_dir: str | None = None) -> Any:
    if folder not in _libraries:
        cache = Path(cache_dir) if cache_dir else None
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
        _libraries[folder] = TemplateLibrary(Path(folder), cache_dir=cache)
    return _libraries[folder]


def _resolve(library: Any, job: RenderJob) -> str:
    name: str = (
        library.resolve(job.template) if job.listed_only else library.check_name(job.template)
    )
    return name


def analyse_job(job: RenderJob) -> Analysis:
    """Version and cache variables of the job's template (compiles it: capped process only)."""
    library = template_library(job.templates_dir, job.cache_dir)
    return _analysis(library, _resolve(library, job))


def _analysis(library: Any, name: str) -> Analysis:
    facts = library.facts(name)  # kept per process until a file of the template changes
    variables = None if facts.dynamic else list(facts.variables)
    files = () if facts.dynamic else facts.files
    return Analysis(name, facts.version, variables, files)


def job_analysis(job: RenderJob, name: str) -> Analysis | None:
    """The Analysis a job asked for (RenderJob.analyse), found in the render's own call."""
    if not job.analyse:
        return None
    return _analysis(template_library(job.templates_dir, job.cache_dir), name)


def render_job(job: RenderJob) -> RenderOutput:
    """Template → HTML → PDF. Raises PermanentError subclasses with a one-line reason."""
    name, version, html, html_seconds = render_html(job)
    output = pdf_output(job, name, version, html, html_seconds)
    return replace(output, analysis=job_analysis(job, name)) if job.analyse else output


def render_html(job: RenderJob) -> tuple[str, str, str, float]:
    """The template's name, version and HTML, and the seconds Jinja took."""
    library = template_library(job.templates_dir, job.cache_dir)
    name = _resolve(library, job)
    version = library.version(name)
    started = time.perf_counter()
    html = library.render(name, job.context)
    _crash_if_asked(html)
    return name, version, html, time.perf_counter() - started


# Test-only fault injection: a render process whose environment names a marker dies of SIGSEGV
# on any report whose HTML contains it (tests/faults/test_renders.py: a renderer that crashes
# on a report every time). Unset in production.
CRASH_MARKER_ENV = "TEST_RENDER_CRASH_MARKER"  # not PRESSROOM_*: not a setting


def _crash_if_asked(html: str) -> None:
    marker = os.environ.get(CRASH_MARKER_ENV)
    if marker and marker in html:
        os.kill(os.getpid(), signal.SIGSEGV)


def resolved_document(job: RenderJob, name: str) -> Resolved:
    """What the PDF is, from the operator, the template's front matter and the request."""
    library = template_library(job.templates_dir, job.cache_dir)
    return document.resolve(job.document, library.front_matter(name), name)


def job_exports(job: RenderJob, name: str, html: str) -> tuple[Export, ...]:
    created = document.created_of(job.document)
    return make_exports(html, job.formats, name, bom=job.document.csv_bom, created=created)


def pdf_output(
    job: RenderJob, name: str, version: str, html: str, html_seconds: float
) -> RenderOutput:
    """The one-piece PDF of rendered HTML and the exports, with the output-size check."""
    html_bytes = html.encode("utf-8")
    pdf: bytes | None = None
    pages = 0
    pdf_seconds = 0.0
    notices: tuple[str, ...] = ()
    resolved = resolved_document(job, name)
    exports = job_exports(job, name, html)
    if "pdf" in job.formats:
        started = time.perf_counter()
        laid_out = html
        if job.finish is not None and job.finish.append:
            # Blank pages where the appended PDFs go: the footers' page counts include them.
            laid_out = with_placeholders(html, appended_pages(job.finish))
        pdf, pages, notices = _html_to_pdf(
            laid_out, base_folder(job, name), job, (name, version), resolved
        )
        if job.finish is not None:
            pdf = finish(pdf, job.finish)  # the last change to the PDF's bytes
        pdf_seconds = time.perf_counter() - started
    check_output_size(job, html_bytes if "html" in job.formats else None, pdf, exports)
    return RenderOutput(
        version,
        html_bytes,
        pdf,
        html_seconds,
        pdf_seconds,
        pages,
        notices,
        exports=exports,
        variant=resolved.variant,
        tagged=resolved.tagged,
    )


def _html_to_pdf(
    html: str, base: Path, job: RenderJob, template: tuple[str, str], resolved: Resolved
) -> tuple[bytes, int, tuple[str, ...]]:
    """The PDF, with the process's warm fonts and stylesheets (warm.py); `template` (name and
    version) scopes the template's own @font-face fonts, if any, apart from others'. The
    document's standard, tags, metadata and provenance as `resolved` says (document.py)."""
    fonts.configure(job.font_dirs)
    # Imported here: heavy (WeasyPrint): loaded in render processes, not by every service.
    from weasyprint import HTML

    warm.install_stylesheet_cache()
    cellwidths.install()
    fetcher = warm_fetcher(job.templates_dir, job.asset_allow)
    name, version = template
    options, finish = document.write_options(resolved, job.document, name, version, fetcher)

    def render(font_config: Any) -> tuple[Any, bytes | None]:
        with fonts.glyph_watch() as seen:
            rendered = HTML(string=html, base_url=f"{base.resolve()}/", url_fetcher=fetcher).render(
                stylesheets=[warm.page_css(job.page.css(), fetcher)], font_config=font_config
            )
            document.apply_metadata(rendered, resolved, job.document, name)
            pdf = rendered.write_pdf(finisher=finish, **options)
        missing.update(seen)
        return rendered, pdf

    missing: Counter[int] = Counter()
    with engine_failures(), weasyprint_errors():
        rendered, pdf = warm.with_fonts(f"{name}@{version}", render)
    assert pdf is not None
    # After the render, not during it: a report with boxes is never delivered, and the reason
    # lists every character at once.
    warning = fonts.check_missing(missing, "warn" if job.missing_glyphs == "warn" else "fail")
    # Here the finished PDF bytes of a one-piece render leave the document's making (split
    # reports: merge.merge_chunks). Whatever changes them afterwards (protection, signing)
    # chains on RenderOutput.pdf, never inside these functions.
    return pdf, len(rendered.pages), (warning,) if warning else ()
