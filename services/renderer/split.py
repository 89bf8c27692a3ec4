"""Long reports laid out by several render processes at once and merged into one PDF.

A report renders as before — Jinja, then WeasyPrint, in one capped process — unless its HTML
has a table long enough to be worth cutting (PRESSROOM_RENDER_SPLIT=auto and at least
PRESSROOM_RENDER_SPLIT_ROWS body rows, or "on" from the request or the template's
`<meta name="pressroom-split" content="on">`) and the renderer has several render processes.
Then the process that ran Jinja returns a plan instead of a PDF: one HTML document per chunk of
rows (splitplan.py). The chunks are laid out at the same time, one per process (chunks.py), and
merged in another (merge.py). The result prints like the one-piece render: same pages, page
numbers, repeated table headers, fonts embedded once.

Every step runs in the capped render processes, under one render timeout for the whole report.
A chunk that fails fails the report once, with its reason; a document the chunks find they
cannot reproduce exactly (SplitUnsupported) is rendered in one piece instead.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from services.renderer import fonts, splitplan
from services.renderer.chunks import ChunkJob, ChunkResult, SplitUnsupported
from services.renderer.document import Resolved
from services.renderer.exports import Export
from services.renderer.finish import finish
from services.renderer.job import Finish, RenderJob, RenderOutput
from services.renderer.merge import merge_chunks
from services.renderer.pdf import (
    base_folder,
    job_analysis,
    job_exports,
    pdf_output,
    render_html,
    resolved_document,
)
from services.renderer.pool import CappedPool
from services.renderer.sandbox import check_output_size, fetcher_class
from shared.errors import PressroomError
from shared.observe.logging import get_logger

log = get_logger(__name__)
WEASYPRINT_MAJOR = "70"  # see chunks.py; test_split checks that long reports are split


@dataclass(frozen=True)
class SplitPlan:
    """What the Jinja process hands back when a report is worth splitting."""

    name: str
    template_version: str
    html: str
    html_seconds: float
    chunks: tuple[ChunkJob, ...]  # rendezvous and deadline are filled in by the coordinator
    analysis: Any = None  # the template's Analysis, when the job asked for it
    exports: tuple[Export, ...] = ()  # CSV/XLSX, made in the planning process
    resolved: Resolved | None = None  # the document's metadata (never PDF/A or tagged here)


# ---- in a render process --------------------------------------------------------------------
def render_or_plan(job: RenderJob, processes: int) -> RenderOutput | SplitPlan:
    """Jinja, then either the one-piece PDF (as render_job) or a plan to split it."""
    name, version, html, html_seconds = render_html(job)
    # Appended PDFs take placeholder pages at the end of the layout: in one piece.
    appends = job.finish is not None and bool(job.finish.append)
    if (
        "pdf" in job.formats
        and processes >= 2
        and job.split != "off"
        and not appends
        and chunks_supported()
    ):
        chunks = plan_chunks(job, name, html, processes, version)
        resolved = resolved_document(job, name) if chunks else None
        if resolved is not None and resolved.one_piece:
            # PDF/A, PDF/UA and tags are written for the whole document (one structure tree,
            # one output intent and XMP): the chunks' merge would lose them.
            log.info(
                "long report rendered in one piece", template=name, reason="it is tagged or PDF/A"
            )
        elif chunks:
            exports = job_exports(job, name, html)
            analysis = job_analysis(job, name)
            return SplitPlan(name, version, html, html_seconds, chunks, analysis, exports, resolved)
    output = pdf_output(job, name, version, html, html_seconds)
    return replace(output, analysis=job_analysis(job, name)) if job.analyse else output


def chunks_supported() -> bool:
    """chunks.py drives WeasyPrint's internals: only the major version it was written for."""

    return version("weasyprint").split(".")[0] == WEASYPRINT_MAJOR


def one_piece(job: RenderJob, plan: SplitPlan) -> RenderOutput:
    """The one-piece PDF of a plan's HTML (Jinja is not run again)."""
    output = pdf_output(job, plan.name, plan.template_version, plan.html, plan.html_seconds)
    return replace(output, analysis=plan.analysis)


def plan_chunks(
    job: RenderJob, name: str, html: str, processes: int, version: str = ""
) -> tuple[ChunkJob, ...]:
    """One job per chunk, or () when the document should be rendered in one piece."""
    if splitplan.count_rows_cheaply(html) < 2 * splitplan.MIN_CHUNK_ROWS:
        return ()  # short reports stop here, without parsing anything
    document = splitplan.read(html)
    rows = document.rows
    if rows is None:
        return ()
    if not splitplan.want_split(job.split, document.meta, len(rows), job.split_rows):
        return ()
    base = base_folder(job, name).resolve()
    reason = "internal links" if document.internal_links else None
    if reason is None:
        css = _stylesheets(job, base, document)
        reason = "an unreadable stylesheet" if css is None else splitplan.unsupported(css)
    if reason is not None:
        log.info("long report rendered in one piece", template=name, reason=f"it uses {reason}")
        return ()
    windows = splitplan.windows(len(rows), processes, *splitplan.around(html, rows))
    if len(windows) < 2:
        return ()
    targets = tuple(w.target for w in windows)
    return tuple(
        ChunkJob(
            index=w.index,
            count=len(windows),
            html=splitplan.chunk_html(html, rows, w),
            base_url=f"{base}/",
            templates_dir=job.templates_dir,
            asset_allow=job.asset_allow,
            page_css=job.page.css(),
            font_dirs=job.font_dirs,
            table_index=rows.table_index,
            first=w.first,
            rows=w.stop - w.first,
            targets=targets,
            rendezvous="",
            deadline=0.0,
            font_scope=f"{name}@{version}",
        )
        for w in windows
    )


def _stylesheets(job: RenderJob, base: Path, document: splitplan.Document) -> list[str] | None:
    """Inline CSS and the linked stylesheets (through the template's own URL fetcher)."""

    fetcher = fetcher_class()(Path(job.templates_dir), job.asset_allow)
    texts = list(document.css)
    pending = [urljoin(f"file://{base}/", href) for href in document.stylesheets if href]
    # What a <style> block @imports is checked as well (a reviewer's attack hid zebra stripes
    # there).
    pending += [
        urljoin(f"file://{base}/", ref) for css in texts for ref in splitplan.imports_in(css)
    ]
    seen: set[str] = set()
    while pending:
        url = pending.pop()
        if url in seen or len(seen) > 50:
            continue
        seen.add(url)
        try:
            response = fetcher.fetch(url)
            body = response.read()
            response.close()
        except Exception:
            return None
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        texts.append(text)
        pending.extend(urljoin(url, ref) for ref in splitplan.imports_in(text))
    return texts


def merge_and_finish(
    results: list[ChunkResult], document: tuple[Any, ...] | None, spec: Finish | None
) -> tuple[bytes, int]:
    """The chunks merged into one PDF with the document's metadata, XMP and /ID (merge.py),
    then finished (watermark, encryption, signature: finish.py)."""
    pdf, pages = merge_chunks(results, document)
    return (finish(pdf, spec) if spec is not None else pdf), pages


# ---- in the service (or the CLI) --------------------------------------------------------------
async def render(pool: CappedPool, job: RenderJob) -> RenderOutput:
    """The report's PDF, split across the pool's processes when that pays off."""
    started = time.monotonic()
    result = await pool.run(render_or_plan, job, pool.workers, label=job.template)
    if isinstance(result, RenderOutput):
        return result
    plan: SplitPlan = result
    try:
        return await _render_split(pool, job, plan, started)
    except SplitUnsupported as why:
        log.info("long report rendered in one piece", template=job.template, reason=why.reason)
    except PressroomError:
        raise  # the report's own failure (a blocked asset, a timeout …): as one piece would
    except Exception as error:
        # Not the report's fault: WeasyPrint internals the chunks rely on behaved unexpectedly.
        log.warning(
            "split render failed, rendering in one piece",
            template=job.template,
            error=f"{type(error).__name__}: {error}",
        )
    output: RenderOutput = await pool.run(one_piece, job, plan, label=job.template)
    return output


async def _render_split(
    pool: CappedPool, job: RenderJob, plan: SplitPlan, started: float
) -> RenderOutput:
    # One timeout for the whole report: what Jinja and planning took is spent already.
    def remaining() -> float:
        return max(pool.timeout - (time.monotonic() - started), 0.001)

    folder = tempfile.mkdtemp(prefix="pressroom-split-")
    try:
        laid_out = time.perf_counter()
        deadline = time.time() + remaining()
        jobs = [replace(chunk, rendezvous=folder, deadline=deadline) for chunk in plan.chunks]
        token = object()  # the merge may use the chunks' processes before they collect
        results: list[ChunkResult] = await pool.run_group(
            _layout_chunk, jobs, label=job.template, timeout=remaining, split=token
        )
        merging = time.perf_counter()
        document = (plan.resolved, job.document, plan.name, plan.template_version)
        pdf, pages = await pool.run(
            merge_and_finish,
            results,
            document,
            job.finish,
            label=job.template,
            timeout=remaining(),
            merge_of=token,
        )
        pdf_seconds = time.perf_counter() - laid_out
        merge_seconds = time.perf_counter() - merging
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    missing = sorted({cp for result in results for cp in result.missing})
    # Every chunk's characters at once: under "fail" this raises MissingGlyphs for the report.
    warning = fonts.check_missing(missing, "warn" if job.missing_glyphs == "warn" else "fail")
    html_bytes = plan.html.encode("utf-8")
    check_output_size(job, html_bytes if "html" in job.formats else None, pdf, plan.exports)
    log.info(
        "long report split",
        template=job.template,
        chunks=len(results),
        pages=pages,
        seconds=round(pdf_seconds, 2),
        merge_seconds=round(merge_seconds, 2),
        chunk_pages=[result.pages for result in results],
    )
    log.debug("split render chunks", stats=[result.stats for result in results])
    return RenderOutput(
        plan.template_version,
        html_bytes,
        pdf,
        plan.html_seconds,
        pdf_seconds,
        pages,
        (warning,) if warning else (),
        chunks=len(results),
        analysis=plan.analysis,
        exports=plan.exports,
    )


def render_capped(job: RenderJob, settings: Any) -> RenderOutput:
    """`pressroom render`: the service's render, in PRESSROOM_RENDER_WORKERS capped processes."""

    async def once() -> RenderOutput:
        workers = settings.render_workers if "pdf" in job.formats else 1
        pool = CappedPool(
            workers,
            memory_mb=settings.render_memory_mb,
            timeout=settings.render_timeout,
            # Several processes warm up side by side, while one would do it during the render.
            warm=workers > 1,
            collect_after=None,  # the processes exit after this one render
        )
        try:
            return await render(pool, job)
        finally:
            await pool.close()

    return asyncio.run(once())


def _layout_chunk(job: ChunkJob) -> ChunkResult:
    """One chunk's layout, run in a render process."""
    # Imported here: heavy (WeasyPrint's internals): only render processes load chunklayout.py.
    from services.renderer.chunklayout import layout_chunk

    return layout_chunk(job)
