"""Render a request's context into stored artefacts: the function the service and CLI share."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from nats.js.errors import KeyNotFoundError

from services.renderer.fonts import FONT_SET, extra_dirs_from
from services.renderer.pdf import PageDefaults, RenderJob, RenderOutput, template_library
from shared.events import Artefact, DataReady, ReportRendered, ReportRequested, utcnow
from shared.logging import get_logger
from shared.settings import Settings
from shared.store import ArtefactMissing, ArtefactStore, artefact_key, sha256_hex
from shared.telemetry import record_span, span

CONTENT_TYPES = {"pdf": "application/pdf", "html": "text/html; charset=utf-8"}
Renderer = Callable[[RenderJob], Awaitable[RenderOutput]]
log = get_logger(__name__)


def build_context(request: ReportRequested, data: dict[str, Any]) -> dict[str, Any]:
    """What every template may rely on, under the request's own data (which wins)."""
    return {
        "request_id": request.request_id,
        "template_name": request.template,
        "generation_time": utcnow().isoformat(timespec="seconds"),
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
    )


async def render_report(
    event: DataReady,
    *,
    render: Renderer,
    store: ArtefactStore,
    settings: Settings,
    cache: RenderCache | None = None,
) -> ReportRendered:
    request = event.request
    if event.context is not None:
        data = event.context
    else:
        assert event.context_ref, "data.ready carries neither context nor context_ref"
        data = json.loads(await store.get(event.context_ref))
    job = make_job(
        settings,
        request.template,
        build_context(request, data),
        tuple(request.formats),
        cache_dir=str((settings.data_dir / "jinja-cache").resolve()),
    )
    cache_key = render_key(job) if cache is not None else None
    if cache is not None and cache_key is not None:
        reused = await _reuse(cache, cache_key, request, store)
        if reused is not None:
            return reused
    output = await render(job)
    for notice in output.notices:  # e.g. PRESSROOM_MISSING_GLYPHS=warn and a character had no font
        log.warning("render notice", request_id=request.request_id, reason=notice)
    end = time.time_ns()
    pdf_start = end - int(output.pdf_seconds * 1e9)
    html_start = pdf_start - int(output.html_seconds * 1e9)
    rid = request.request_id
    record_span(
        "template render", html_start, pdf_start, rid, **{"pressroom.template": request.template}
    )
    if output.pdf is not None:
        record_span("pdf render", pdf_start, end, rid, **{"pressroom.pdf.pages": output.pages})
    artefacts: list[Artefact] = []
    for fmt in request.formats:
        content = output.pdf if fmt == "pdf" else output.html
        assert content is not None
        with span(f"upload {fmt}", rid, **{"pressroom.bytes": len(content)}):
            artefacts.append(
                await store_artefact(store, request, fmt, content, output.template_version)
            )
    if cache is not None and cache_key is not None:
        entry = {
            "template_version": output.template_version,
            "artefacts": {a.format: a.key for a in artefacts},
        }
        await cache.put(cache_key, json.dumps(entry).encode())
    return ReportRendered(
        request=request,
        artefacts=artefacts,
        template_version=output.template_version,
        render_seconds=output.html_seconds + output.pdf_seconds,
    )


async def store_artefact(
    store: ArtefactStore,
    request: ReportRequested,
    fmt: str,
    content: bytes,
    template_version: str,
    *,
    reused_from: str | None = None,
) -> Artefact:
    """Store one rendered file under its dated key, with its digest and template version."""
    key = artefact_key(request.request_id, fmt, request.requested_at)
    digest = sha256_hex(content)
    metadata = {
        "sha256": digest,
        "template": request.template,
        "template-version": template_version,
        "request-id": request.request_id,
    }
    if reused_from:
        metadata["reused-from"] = reused_from
    await store.put(key, content, content_type=CONTENT_TYPES[fmt], metadata=metadata)
    return Artefact(
        format=fmt,  # type: ignore[arg-type]
        key=key,
        size=len(content),
        sha256=digest,
        content_type=CONTENT_TYPES[fmt],
    )


class RenderCache(Protocol):
    """Key-value index of earlier renders (the JetStream KV cache bucket in production)."""

    async def get(self, key: str) -> Any: ...
    async def put(self, key: str, value: bytes) -> int: ...


# Values a template may print that do not make its output different "data": a reused render
# keeps the generation time of the render it reuses.
VOLATILE = frozenset({"generation_time"})
_VARIABLES: dict[tuple[str, str, str], list[str]] = {}


def render_key(job: RenderJob) -> str:
    """Content address of a render: template version + formats + page + every value it reads."""
    library = template_library(job.templates_dir, job.cache_dir)
    name = library.check_name(job.template)
    version = library.version(name)
    # Parsing every template per report is wasted work: the variables only change with the version.
    known = (job.templates_dir, name, version)
    if known not in _VARIABLES:
        _VARIABLES[known] = [v for v in library.variables(name) if v not in VOLATILE]
    used = _VARIABLES[known]
    material = {
        "version": version,
        "formats": sorted(job.formats),
        "page": job.page.css(),
        "context": {v: job.context.get(v) for v in used},
    }
    # Another font set, missing-glyph policy or font folders draw another PDF: not reused.
    material["fonts"] = [FONT_SET, job.missing_glyphs, *job.font_dirs]
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode())
    return f"render.{digest.hexdigest()[:48]}"


async def _reuse(
    cache: RenderCache, key: str, request: ReportRequested, store: ArtefactStore
) -> ReportRendered | None:
    """The same template version and data were rendered before: copy, do not render."""
    try:
        entry = json.loads((await cache.get(key)).value or b"{}")
    except KeyNotFoundError:
        return None
    artefacts = []
    with span("render cache hit", request.request_id):
        for fmt in request.formats:
            old = entry.get("artefacts", {}).get(fmt)
            try:
                content = await store.get(old) if old else None
            except ArtefactMissing:
                content = None  # removed by retention: render again
            if content is None:
                return None
            version = entry.get("template_version", "")
            artefacts.append(
                await store_artefact(store, request, fmt, content, version, reused_from=old)
            )
    return ReportRendered(
        request=request,
        artefacts=artefacts,
        template_version=entry.get("template_version", ""),
        render_seconds=0.0,
    )
