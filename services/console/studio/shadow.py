"""Shadow renders: a candidate version of a template rendered on the last N recorded payloads
of the live one, each compared with the report actually delivered (its stored PDF).

Per payload: `failed` (the candidate does not render), `same`, or `changed` — with the pages
that changed (share of pixels, regions, a highlighted image), a text diff of the extracted
text (masked values hidden), the page count, render time and size before and after. Payloads
whose delivered report is no longer stored (retention) or cannot be read are `skipped`.
The renders run in capped render processes (services/renderer/pool.py).
"""

from __future__ import annotations

import asyncio
import difflib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from services.console.studio import imagediff, masking, preview, versions
from services.renderer.core import build_context, document_spec, make_job, with_template_defaults
from services.renderer.finish import plan
from services.renderer.job import Finish, RenderOutput
from services.renderer.pooled import RenderPool
from services.renderer.recording import RecordInfo, listing, prune, read
from shared.adapters.store import ArtefactStore, sha256_hex
from shared.errors import PressroomError
from shared.events import ReportRequested
from shared.settings import Settings

DEFAULT_LAST = 20
KINDS = ("delivered", "candidate", "diff")


@dataclass
class Outcome:
    """One payload's shadow render; `images[(page, kind)]` the PNGs of changed pages."""

    result: dict[str, Any]
    images: dict[tuple[int, str], bytes] = field(default_factory=dict)


def verdict(results: list[dict[str, Any]], threshold: float) -> str:
    """fail: any payload failed; changed: any changed beyond the threshold; else pass."""
    if any(r["status"] == "failed" for r in results):
        return "fail"
    if any(beyond(r, threshold) for r in results):
        return "changed"
    return "pass"


def beyond(result: dict[str, Any], threshold: float) -> bool:
    """A change beyond `threshold` (the share of a page's pixels): any page count change, any
    page over it (threshold 0: any change at all)."""
    if result["status"] != "changed":
        return False
    pages = result.get("pages") or {}
    if pages.get("before") != pages.get("after"):
        return True
    ratios = [p["ratio"] for p in result.get("changed_pages", [])]
    if not ratios:
        return threshold <= 0  # the text changed, not a visible pixel
    return bool(max(ratios) > threshold)


def summary(results: list[dict[str, Any]], total: int, threshold: float) -> dict[str, Any]:
    count = {
        s: sum(1 for r in results if r["status"] == s)
        for s in ("failed", "changed", "same", "skipped")
    }
    return {
        "total": total,
        "done": len(results),
        **count,
        "beyond_threshold": sum(1 for r in results if beyond(r, threshold)),
        "verdict": verdict(results, threshold),
    }


def _finish(settings: Settings, request: ReportRequested, folder: Path) -> Finish | None:
    """What the delivered report was finished with that shows on its pages (watermarks,
    appended PDFs); no password, permissions or signature — those change no page."""
    if "pdf" not in request.formats:
        return None
    options = with_template_defaults(folder, request.template, request.pdf)
    if options is not None:
        options = options.model_copy(update={"password": None, "permissions": None, "sign": False})
    try:
        finished = plan(settings, options, templates_dir=folder, recipient=request.requested_by)
    except PressroomError:
        return None
    if finished is None:
        return None
    return replace(
        finished,
        sealed_password=None,
        owner_password="",
        owner_password_file="",
        permissions=None,
        signing=None,
    )


async def render_candidate(
    pool: RenderPool, settings: Settings, folder: Path, request: ReportRequested, data: Any
) -> RenderOutput:
    job = make_job(
        settings,
        request.template,
        build_context(request, data),
        ("pdf",),
        templates_dir=folder,
        document=document_spec(settings, request, data),
        finish=_finish(settings, request, folder),
    )
    return await pool.render(job)


async def shadow_one(
    pool: RenderPool,
    settings: Settings,
    store: ArtefactStore,
    info: RecordInfo,
    folder: Path,
    index: int,
    image_url: Callable[[int, int, str], str],
) -> Outcome:
    """One payload's shadow render; whatever it says is scrubbed of the payload's masked
    values (text diffs and reasons are scrubbed where made; this is the last net)."""
    record = await read(store, settings, info.template, info.id)
    hidden = masking.masked_values(record.get("data") or {}, settings.studio_mask_paths)
    outcome = await _shadow_one(pool, settings, store, info, record, folder, index, image_url)
    outcome.result = masking.scrub_strings(outcome.result, hidden)
    return outcome


async def _shadow_one(
    pool: RenderPool,
    settings: Settings,
    store: ArtefactStore,
    info: RecordInfo,
    record: dict[str, Any],
    folder: Path,
    index: int,
    image_url: Callable[[int, int, str], str],
) -> Outcome:
    base: dict[str, Any] = {"index": index, "payload": info.id, "request_id": None, "error": None}
    request = ReportRequested.model_validate(record["request"])
    base["request_id"] = request.request_id
    data = record.get("data") or {}
    hidden = masking.masked_values(data, settings.studio_mask_paths)
    pdf = next((a for a in record.get("artefacts", []) if a.get("format") == "pdf"), None)
    if pdf is None:
        return Outcome({**base, "status": "skipped", "error": _err("the report had no PDF")})
    try:
        delivered = await store.get(pdf["key"])
    except PressroomError:
        return Outcome(
            {**base, "status": "skipped", "error": _err("the delivered report is no longer stored")}
        )
    if sha256_hex(delivered) != pdf.get("sha256"):
        return Outcome(
            {
                **base,
                "status": "skipped",
                "error": _err("the delivered report changed in the store"),
            }
        )
    before = {"seconds": float(record.get("render_seconds") or 0.0), "bytes": len(delivered)}
    started = time.perf_counter()
    try:
        output = await render_candidate(pool, settings, folder, request, data)
    except PressroomError as error:
        problem = preview.problem_of(masking.scrub_text(error.reason, hidden), request.template)
        return Outcome(
            {
                **base,
                "status": "failed",
                "error": problem.as_dict(),
                "pages": {"before": None, "after": None},
                "changed_pages": [],
                "text_diff": "",
                "seconds": {
                    "before": before["seconds"],
                    "after": round(time.perf_counter() - started, 3),
                },
                "bytes": {"before": before["bytes"], "after": None},
            }
        )
    candidate = output.pdf or b""
    try:
        old_pages, new_pages = await asyncio.gather(
            preview.page_images(delivered), preview.page_images(candidate)
        )
        old_text, new_text = await asyncio.gather(
            asyncio.to_thread(preview.pdf_text, delivered),
            asyncio.to_thread(preview.pdf_text, candidate),
        )
    except PressroomError as error:
        return Outcome({**base, "status": "skipped", "error": _err(error.reason)})
    outcome = Outcome({})
    changed_pages = []
    cover: list[list[preview.Box]] = []  # where each page prints a masked value, either side
    if hidden:
        old_boxes, new_boxes = await asyncio.gather(
            asyncio.to_thread(preview.masked_boxes, delivered, hidden),
            asyncio.to_thread(preview.masked_boxes, candidate, hidden),
        )
        for n in range(max(len(old_boxes), len(new_boxes))):
            cover.append(
                (old_boxes[n] if n < len(old_boxes) else [])
                + (new_boxes[n] if n < len(new_boxes) else [])
            )
    for number in range(1, max(len(old_pages), len(new_pages)) + 1):
        old = old_pages[number - 1] if number <= len(old_pages) else None
        new = new_pages[number - 1] if number <= len(new_pages) else None
        if old is not None and old == new:
            continue
        compared = await asyncio.to_thread(imagediff.compare, old, new)
        if not compared.regions and old is not None and new is not None:
            continue
        boxes = cover[number - 1] if number <= len(cover) else []
        for kind, png in (("delivered", old), ("candidate", new), ("diff", compared.highlight)):
            if png is not None:
                outcome.images[(number, kind)] = imagediff.redact(png, boxes, preview.PAGE_DPI)
        changed_pages.append(
            {
                "page": number,
                "ratio": round(compared.ratio, 6),
                "regions": [r.as_dict() for r in compared.regions],
                "size": {"w": compared.width, "h": compared.height},
                "images": {
                    kind: image_url(index, number, kind)
                    for kind in KINDS
                    if (number, kind) in outcome.images
                },
            }
        )
    text_diff = "".join(
        difflib.unified_diff(
            masking.scrub_text(old_text, hidden).splitlines(keepends=True),
            masking.scrub_text(new_text, hidden).splitlines(keepends=True),
            "delivered",
            "candidate",
        )
    )
    same = not changed_pages and not text_diff and len(old_pages) == len(new_pages)
    outcome.result = {
        **base,
        "status": "same" if same else "changed",
        "pages": {"before": len(old_pages), "after": len(new_pages)},
        "changed_pages": changed_pages,
        "text_diff": text_diff,
        "seconds": {
            "before": round(before["seconds"], 3),
            "after": round(output.html_seconds + output.pdf_seconds, 3),
        },
        "bytes": {"before": before["bytes"], "after": len(candidate)},
    }
    return outcome


def _err(message: str) -> dict[str, Any]:
    return {"file": None, "line": None, "message": message}


async def run_shadow(
    pool: RenderPool,
    settings: Settings,
    store: ArtefactStore,
    template: str,
    folder: Path,
    *,
    last: int,
    image_url: Callable[[int, int, str], str],
    landed: Callable[[Outcome], Awaitable[None]] | None = None,
    total: Callable[[int], None] | None = None,
) -> list[Outcome]:
    """The candidate in `folder` (a templates folder) on the last `last` recorded payloads
    of `template`, one after another (the render processes are the operator's)."""
    if last < 1:
        raise PressroomError("--last must be at least 1")
    await prune(store, settings, template)  # never a payload past its age or count
    records = (await listing(store, template))[:last]
    if total is not None:
        total(len(records))
    outcomes = []
    for index, info in enumerate(records):
        try:
            outcome = await shadow_one(pool, settings, store, info, folder, index, image_url)
        except (PressroomError, ValueError, KeyError) as error:  # the record is not usable
            reason = error.reason if isinstance(error, PressroomError) else "not a usable record"
            outcome = Outcome(
                {
                    "index": index,
                    "payload": info.id,
                    "request_id": None,
                    "status": "skipped",
                    "error": _err(reason),
                }
            )
        outcomes.append(outcome)
        if landed is not None:
            await landed(outcome)
    return outcomes


@dataclass
class Report:
    """A shadow run from the command line: the results and what the exit code says."""

    template: str
    candidate: str  # its version id
    live: str
    threshold: float
    results: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "candidate": self.candidate,
            "live": self.live,
            "threshold": self.threshold,
            "summary": summary(self.results, len(self.results), self.threshold),
            "results": self.results,
        }

    @property
    def passed(self) -> bool:
        return verdict(self.results, self.threshold) == "pass"


def candidate_files(folder: Path, name: str, candidate: Path | None) -> dict[str, bytes]:
    """What `--candidate` names: nothing (the templates folder as it is now), a file (the
    template's own file changed; its includes as they are) or a folder (a whole templates
    folder: the template and its includes from there)."""
    if candidate is None:
        return versions.read_files(folder, name)
    if candidate.is_dir():
        return versions.read_files(candidate.resolve(), name)
    if candidate.is_file():
        live = versions.read_files(folder, name)
        live[name] = candidate.read_bytes()
        with versions.workspace(folder, live) as scratch:
            return versions.read_files(scratch, name)
    raise PressroomError(f"--candidate: no file or folder '{candidate}'")


async def shadow_command(
    store: ArtefactStore,
    settings: Settings,
    name: str,
    candidate: Path | None,
    *,
    last: int,
    threshold: float,
    images: Path | None,
) -> Report:
    """`pressroom templates shadow`: the candidate on the last `last` recorded payloads, in
    render processes of this command (capped like the renderer's)."""
    folder = settings.templates_dir.resolve()
    if name not in versions.listed(folder):
        raise PressroomError(f"no template '{name}' in {folder}")
    live = versions.read_files(folder, name)
    files = candidate_files(folder, name, candidate)
    if images is not None:
        images.mkdir(parents=True, exist_ok=True)

    def where(index: int, page: int, kind: str) -> str:
        return str(images / f"{index + 1}-page{page}-{kind}.png") if images else ""

    async def landed(outcome: Outcome) -> None:
        if images is None:
            return
        for (page, kind), png in outcome.images.items():
            Path(where(outcome.result["index"], page, kind)).write_bytes(png)

    # Warm (WeasyPrint loaded before the first render): render times compare fairly.
    pool = RenderPool(1, memory_mb=settings.render_memory_mb, timeout=settings.render_timeout)
    try:
        with versions.workspace(folder, files) as scratch:
            outcomes = await run_shadow(
                pool, settings, store, name, scratch, last=last, image_url=where, landed=landed
            )
    finally:
        await pool.close()
    for outcome in outcomes:
        if images is None:
            for page in outcome.result.get("changed_pages", []):
                page["images"] = {}
    return Report(
        name,
        versions.version_id(files),
        versions.version_id(live),
        threshold,
        [o.result for o in outcomes],
    )
