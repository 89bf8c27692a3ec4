"""Render a request's context into stored artefacts: the function the service and CLI share."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from nats.js.errors import KeyNotFoundError
from opentelemetry import trace
from pydantic import ValidationError

from services.renderer import recording
from services.renderer.document import DOCUMENT_KEYS, DocumentSpec
from services.renderer.exports import CONTENT_TYPES as EXPORT_TYPES
from services.renderer.finish import plan
from services.renderer.fonts import FONT_SET, extra_dirs_from
from services.renderer.job import Analysis, Finish, PageDefaults, RenderJob, RenderOutput
from services.renderer.pdf import analyse_job, render_job
from services.renderer.splitplan import split_mode
from services.renderer.templating import TemplateLibrary, bytecode_cache_dir, files_unchanged
from shared.adapters.store import (
    ArtefactMissing,
    ArtefactStore,
    ArtefactTampered,
    artefact_key,
    context_key,
    read_verified,
    sha256_hex,
)
from shared.aio import all_settled
from shared.bus.kv import KeyValue
from shared.errors import PermanentError, PressroomError
from shared.events import (
    Artefact,
    DataReady,
    PdfOptions,
    ReportRendered,
    ReportRequested,
)
from shared.observe.logging import get_logger
from shared.observe.telemetry import record_span, span
from shared.settings import Settings
from shared.stage.runner import ATTEMPT, while_publishing

CONTENT_TYPES = {"pdf": "application/pdf", "html": "text/html; charset=utf-8", **EXPORT_TYPES}


class Renderer(Protocol):
    """Runs template code: RenderPool (capped processes) in services, InProcess in unit tests."""

    async def render(self, job: RenderJob) -> RenderOutput: ...
    async def analyse(self, job: RenderJob) -> Analysis: ...


class InProcess:
    """The Renderer contract without processes or caps: for unit tests only."""

    async def render(self, job: RenderJob) -> RenderOutput:
        return render_job(job)

    async def analyse(self, job: RenderJob) -> Analysis:
        return analyse_job(job)


log = get_logger(__name__)


def build_context(request: ReportRequested, data: dict[str, Any]) -> dict[str, Any]:
    """What every template may rely on, under the request's own data (which wins).

    `generation_time` is when the report was asked for, not the clock: the same request
    renders to the same bytes (a re-render, a replay), so its content hash means something.
    """
    return {
        "request_id": request.request_id,
        "template_name": request.template,
        "generation_time": request.requested_at.isoformat(timespec="seconds"),
        "requested_by": request.requested_by,
        "locale": request.locale,
        **data,
    }


def make_job(
    settings: Settings,
    template: str,
    context: dict[str, Any],
    formats: tuple[str, ...],
    templates_dir: Path | None = None,
    cache_dir: str | None = None,
    split: str | None = None,
    document: DocumentSpec | None = None,
    finish: Finish | None = None,
) -> RenderJob:
    return RenderJob(
        templates_dir=str((templates_dir or settings.templates_dir).resolve()),
        template=template,
        context=context,
        formats=formats,
        page=PageDefaults(settings.page_size, settings.page_orientation, settings.page_margin),
        asset_allow=tuple(settings.asset_allow_list),
        max_output_bytes=settings.max_output_bytes,
        cache_dir=cache_dir,
        missing_glyphs=settings.missing_glyphs,
        font_dirs=extra_dirs_from(settings.fonts_dir),
        split=split_mode(settings.render_split, split),
        split_rows=settings.render_split_rows,
        document=document or DocumentSpec(),
        finish=finish,
    )


def data_digest(data: Any) -> str:
    """sha256 of the data as canonical JSON: what the provenance and the /ID name."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.trace_id else None


def document_spec(
    settings: Settings,
    request: ReportRequested,
    data: Any,
    *,
    fetched_at: dict[str, datetime] | None = None,
    trace_id: str | None = None,
) -> DocumentSpec:
    """What the renderer knows of the document (document.py resolves it in the render process
    against the template): the request's pdf options, the operator's, the provenance."""
    given = request.pdf.given() if request.pdf is not None else {}
    fetched_at = fetched_at or {}
    sources = [
        {
            "name": source.name,
            "kind": source.kind or None,
            "config_source": source.source,
            # Sources served from the fetch cache have no fetch time of this request.
            "fetched_at": fetched_at[source.name].isoformat()
            if source.name in fetched_at
            else None,
        }
        for source in request.sources
    ]
    provenance = {
        "request_id": request.request_id,
        "requested_at": request.requested_at.isoformat(),
        "requested_by": request.requested_by,
        "trace_id": trace_id,
        "sources": sources,
    }
    return DocumentSpec(
        given={k: given[k] for k in DOCUMENT_KEYS if k in given},
        default_variant=settings.pdf_variant,
        default_tagged=settings.pdf_tagged,
        require=tuple(p for p in settings.pdf_require.split(",") if p),
        author=settings.pdf_author,
        creator=settings.pdf_creator,
        created=request.requested_at.isoformat(timespec="seconds"),
        request_id=request.request_id,
        data_hash=data_digest(data),
        locale=request.locale,
        provenance=provenance,
        encrypted=bool(given.get("password") or given.get("permissions")),
        csv_bom=settings.export_csv_bom if request.csv_bom is None else request.csv_bom,
    )


async def render_report(
    event: DataReady,
    *,
    renderer: Renderer,
    store: ArtefactStore,
    settings: Settings,
    cache: KeyValue | None = None,
    record_payloads: bool = False,
) -> ReportRendered:
    """The report rendered (or an identical render of it reused) and its artefacts stored;
    `record_payloads`: its payload recorded for the studio (recording.py), a write that
    report.rendered does not wait for (`while_publishing`: stored before the renderer acks)."""
    data = await _context(event, store)

    async def record(rendered: ReportRendered) -> None:
        await while_publishing(recording.record(store, settings, event, data, rendered))

    return await _render_data(
        event,
        data,
        renderer=renderer,
        store=store,
        settings=settings,
        cache=cache,
        alongside=record if record_payloads else None,
    )


async def _render_data(
    event: DataReady,
    data: Any,
    *,
    renderer: Renderer,
    store: ArtefactStore,
    settings: Settings,
    cache: KeyValue | None,
    alongside: Callable[[ReportRendered], Awaitable[None]] | None = None,
) -> ReportRendered:
    """Render (or reuse) and store. The writes that follow a render go to the bus side by side
    (each is a round trip): the artefacts, the render-cache entry and `alongside`'s (in the
    renderer, the studio's record, which report.rendered does not wait for). A cache entry written
    before its artefacts is safe: a reader checks the artefacts' digests and renders afresh
    when one is not there (`_reuse`)."""
    request = event.request
    job = make_job(
        settings,
        request.template,
        build_context(request, data),
        tuple(request.formats),
        cache_dir=str(bytecode_cache_dir((settings.data_dir / "jinja-cache").resolve())),
        split=request.split,
        document=document_spec(
            settings, request, data, fetched_at=event.fetched_at, trace_id=current_trace_id()
        ),
        finish=finish_for(settings, request),
    )
    if job.finish is not None and job.finish.cache_material() is None:
        cache = None  # a reader's password or a signature is this request's own: never reused
    if EXPORTS & set(request.formats):
        cache = None  # exports are made with every render: no cache entry names them
    # The renderer's own generation time does not make a report different — but a request
    # that sets `generation_time` in its data does.
    volatile = VOLATILE - set(data)
    cache_key = None
    if cache is not None:
        # What the template reads, as the render process last said (one call per template
        # change, not per request: the render itself returns it afresh).
        analysis = known_analysis(job)
        if analysis is None:
            analysis = remember(job, await renderer.analyse(job))
        cache_key = render_key(analysis, job, volatile=volatile)
        # Only the same request is ever served a stored render (its PDF carries its own /ID,
        # dates and provenance): a first delivery has none to find, a redelivery may.
        if ATTEMPT.get() != 1:
            reused = await _reuse(cache, cache_key, request, store, alongside)
            if reused is not None:
                return reused
        job = replace(job, analyse=True)
    output = await renderer.render(job)
    if output.analysis is not None:
        # The key of what was rendered: the template may have changed since the lookup.
        cache_key = render_key(remember(job, output.analysis), job, volatile=volatile)
    for notice in output.notices:  # e.g. PRESSROOM_MISSING_GLYPHS=warn and a character had no font
        log.warning("render notice", request_id=request.request_id, reason=notice)
    _render_spans(request, output)
    outputs = _outputs(request, output)
    rendered = ReportRendered(
        request=request,
        artefacts=[artefact for artefact, _ in outputs],
        template_version=output.template_version,
        render_seconds=output.html_seconds + output.pdf_seconds,
    )
    writes: list[Awaitable[Any]] = [
        put_artefact(store, request, artefact, content, output.template_version)
        for artefact, content in outputs
    ]
    if cache is not None and cache_key is not None:
        entry = {
            "template_version": output.template_version,
            "artefacts": {a.format: a.key for a in rendered.artefacts},
            "sha256": {a.format: a.sha256 for a in rendered.artefacts},
        }
        writes.append(cache.put(cache_key, json.dumps(entry).encode()))
    if alongside is not None:
        writes.append(alongside(rendered))
    await all_settled(writes)
    return rendered


async def _context(event: DataReady, store: ArtefactStore) -> Any:
    """The fetched data: in the event, or parked by the fetcher under the request's own key."""
    if event.context is not None:
        return event.context
    assert event.context_ref, "data.ready carries neither context nor context_ref"
    if event.context_ref != context_key(event.request.request_id):
        # Only the fetcher parks contexts, under the request's own key: anything else is
        # someone trying to render another request's data.
        raise PermanentError(
            f"data.ready names context '{event.context_ref}', not this request's own"
        )
    return json.loads(await store.get(event.context_ref))


def _render_spans(request: ReportRequested, output: RenderOutput) -> None:
    """The render's two steps as spans, timed by the render process."""
    end = time.time_ns()
    pdf_start = end - int(output.pdf_seconds * 1e9)
    html_start = pdf_start - int(output.html_seconds * 1e9)
    rid = request.request_id
    record_span(
        "template render", html_start, pdf_start, rid, **{"pressroom.template": request.template}
    )
    if output.pdf is not None:
        attributes: dict[str, Any] = {
            "pressroom.pdf.pages": output.pages,
            "pressroom.pdf.tagged": output.tagged,
        }
        if output.variant:
            attributes["pressroom.pdf.variant"] = output.variant
        record_span("pdf render", pdf_start, end, rid, **attributes)


def _outputs(request: ReportRequested, output: RenderOutput) -> list[tuple[Artefact, bytes]]:
    """Every format the request asked for (an export per table), described as stored."""
    found: list[tuple[Artefact, bytes]] = []
    for fmt in request.formats:
        files: list[tuple[str | None, bytes | None]]
        if fmt in EXPORTS:
            files = [(e.name, e.content) for e in output.exports if e.format == fmt]
        else:
            files = [(None, output.pdf if fmt == "pdf" else output.html)]
        for name, content in files:
            assert content is not None
            found.append((describe_artefact(request, fmt, content, name=name), content))
    return found


def finish_for(settings: Settings, request: ReportRequested) -> Finish | None:
    """The request's PDF finishing: the template's defaults (front matter `pdf:`) under the
    request's own options, under the operator's limits (PermanentError: refused)."""
    if "pdf" not in request.formats:
        if request.pdf is not None:
            raise PermanentError("pdf options were given, but `formats` asks for no PDF")
        return None
    return plan(
        settings,
        with_template_defaults(settings.templates_dir, request.template, request.pdf),
        templates_dir=settings.templates_dir,
        recipient=request.requested_by or request.tenant,
    )


_libraries: dict[Path, TemplateLibrary] = {}


def with_template_defaults(
    templates_dir: Path, template: str, options: PdfOptions | None
) -> PdfOptions | None:
    """The template's `pdf:` front matter, each field the request sets replacing its own
    (reading the front matter runs no template code)."""
    folder = templates_dir.resolve()
    library = _libraries.get(folder)
    if library is None:
        library = _libraries[folder] = TemplateLibrary(folder)
    try:
        defaults = library.info(library.resolve(template)).pdf
    except PressroomError:
        return options  # an unknown template fails its render, with the library's reason
    if not defaults:
        return options
    if "password" in defaults:
        raise PermanentError(f"template '{template}': front matter may not set pdf.password")
    asked = options.model_dump(exclude_unset=True, by_alias=True) if options else {}
    try:
        return PdfOptions.model_validate({**defaults, **asked})
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise PermanentError(
            f"template '{template}': front matter pdf.{where}: {problem['msg']}"
        ) from None


def describe_artefact(
    request: ReportRequested, fmt: str, content: bytes, *, name: str | None = None
) -> Artefact:
    """One rendered file as it is stored: its dated key and digest (one table's CSV under
    `<request>.<name>.csv`)."""
    ext = f"{name}.{fmt}" if name else fmt
    return Artefact(
        format=fmt,  # type: ignore[arg-type]
        name=name,
        key=artefact_key(request.request_id, ext, request.requested_at),
        size=len(content),
        sha256=sha256_hex(content),
        content_type=CONTENT_TYPES[fmt],
    )


async def put_artefact(
    store: ArtefactStore,
    request: ReportRequested,
    artefact: Artefact,
    content: bytes,
    template_version: str,
    reused_from: str | None = None,
) -> None:
    """Store one described file with its digest and template version (a span per upload)."""
    metadata = {
        "sha256": artefact.sha256,
        "template": request.template,
        "template-version": template_version,
        "request-id": request.request_id,
    }
    if reused_from:
        metadata["reused-from"] = reused_from
    with span(f"upload {artefact.format}", request.request_id, **{"pressroom.bytes": len(content)}):
        await store.put(
            artefact.key, content, content_type=artefact.content_type, metadata=metadata
        )


# Analyses of the templates this process renders, valid while their files are unchanged.
_analyses: dict[tuple[str, str], Analysis] = {}
ANALYSES_KEPT = 256


def known_analysis(job: RenderJob) -> Analysis | None:
    """The template's analysis if none of the files it reads changed since (stat and hash
    only: no template code runs in the service)."""
    analysis = _analyses.get((job.templates_dir, job.template))
    if analysis is None or not analysis.files:
        return None
    if not files_unchanged(Path(job.templates_dir), analysis.files):
        return None
    return analysis


def remember(job: RenderJob, analysis: Analysis) -> Analysis:
    _analyses[(job.templates_dir, job.template)] = analysis
    while len(_analyses) > ANALYSES_KEPT:
        _analyses.pop(next(iter(_analyses)))
    return analysis


EXPORTS = frozenset({"csv", "xlsx"})

# Values a template may print that do not make its output different "data": a reused render
# keeps the generation time of the render it reuses.
VOLATILE = frozenset({"generation_time"})


def render_key(
    analysis: Analysis, job: RenderJob, *, volatile: frozenset[str] | set[str] = VOLATILE
) -> str:
    """Content address of a render: everything its output can depend on.

    The template version, formats, page defaults, and the context values the template reads —
    or, when it computes the name of an include (so static analysis cannot see what it
    reads), the whole context: two tenants' data never share a cached report.
    """
    if analysis.variables is None:
        context = {k: v for k, v in job.context.items() if k not in volatile}
    else:
        context = {v: job.context.get(v) for v in analysis.variables if v not in volatile}
    material = {
        "template": analysis.template,
        "version": analysis.version,
        "formats": sorted(job.formats),
        "page": job.page.css(),
        "whole_context": analysis.variables is None,
        "context": context,
    }
    # Another font set, missing-glyph policy or font folders draw another PDF: not reused.
    material["fonts"] = [FONT_SET, job.missing_glyphs, *job.font_dirs]
    # Locale-aware filters read `locale` from the context itself, unseen by static analysis.
    material["locale"] = job.context.get("locale")
    # The document's standard, metadata, dates, /ID and provenance are in the PDF too.
    material["document"] = dataclasses.asdict(job.document)
    if job.finish is not None:  # appended PDFs and watermarks (protected PDFs are not cached)
        material["finish"] = job.finish.cache_material()
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode())
    return f"render.{digest.hexdigest()[:48]}"


async def _reuse(
    cache: KeyValue,
    key: str,
    request: ReportRequested,
    store: ArtefactStore,
    alongside: Callable[[ReportRendered], Awaitable[None]] | None = None,
) -> ReportRendered | None:
    """The same template version and data were rendered before: copy, do not render.

    The stored bytes must still match the digest recorded with the cache entry; anything
    else (a retention sweep, a changed object) renders afresh.
    """
    try:
        entry = json.loads((await cache.get(key)).value or b"{}")
    except KeyNotFoundError:
        return None
    version = str(entry.get("template_version", ""))
    found: list[tuple[str, str, bytes]] = []
    for fmt in request.formats:
        old = entry.get("artefacts", {}).get(fmt)
        digest = entry.get("sha256", {}).get(fmt)
        if not old or not digest:
            return None
        recorded = Artefact(
            format=fmt, key=old, size=0, sha256=digest, content_type=CONTENT_TYPES[fmt]
        )
        try:
            found.append((fmt, old, await read_verified(store, recorded)))
        except (ArtefactMissing, ArtefactTampered):
            return None
    copies = [
        (describe_artefact(request, fmt, content), content, old) for fmt, old, content in found
    ]
    rendered = ReportRendered(
        request=request,
        artefacts=[artefact for artefact, _, _ in copies],
        template_version=version,
        render_seconds=0.0,
    )
    with span("render cache hit", request.request_id):
        writes = [
            put_artefact(store, request, artefact, content, version, reused_from=old)
            for artefact, content, old in copies
        ]
        await all_settled([*writes, *([alongside(rendered)] if alongside else [])])
    return rendered
