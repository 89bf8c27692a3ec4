"""The studio as the console runs it: versions, previews, recorded payloads, shadow runs and
promotion, over the settings, the artefact store and a pool of capped render processes of
its own (started on first use; templates are never rendered in the console's process)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import shutil
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from services.console.studio import masking, preview, shadow, versions
from services.console.studio.versions import Files, HistoryEntry
from services.renderer import recording
from services.renderer.core import make_job
from services.renderer.fonts import extra_dirs_from
from services.renderer.pooled import RenderPool
from services.renderer.templating import TemplateLibrary
from shared.adapters.store import ArtefactStore
from shared.errors import PressroomError
from shared.observe.logging import get_logger
from shared.settings import Settings

log = get_logger("pressroom.studio")
PREVIEWS_KEPT = 20
RUNS_KEPT = 20
RUNS_ON_DISK = 100  # a template's promotion looks for its version's newest run
MAX_DATA_BYTES = 5 * 1024 * 1024
DEFAULT_TRIES = 5  # recorded reports tried, newest first, for a template with no sample


@dataclass
class Preview:
    id: str
    html: bytes
    images: list[bytes]


@dataclass
class Run:
    id: str
    template: str
    version: str
    threshold: float
    started_at: str
    status: str = "running"  # running | done | error
    error: str | None = None
    finished_at: str | None = None
    total: int = 0
    results: list[dict[str, Any]] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {
            "run": self.id,
            "template": self.template,
            "version": self.version,
            "status": self.status,
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "threshold": self.threshold,
            "summary": shadow.summary(self.results, self.total, self.threshold),
            "results": self.results,
        }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def parse_data(text: str, fmt: str) -> dict[str, Any]:
    """Uploaded data (JSON or YAML): an object, or a one-line reason."""
    if len(text.encode()) > MAX_DATA_BYTES:
        raise PressroomError("the data is over 5 MB")
    try:
        value = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise PressroomError(f"the {fmt.upper()} data cannot be read: {str(error)[:300]}") from None
    if not isinstance(value, dict):
        raise PressroomError("the data must be an object (a mapping of names to values)")
    return value


class Studio:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.folder = settings.templates_dir.resolve()
        self.root = Path(settings.data_dir).resolve() / "studio"
        self.store_of_versions = versions.VersionStore(self.root)
        self.previews: OrderedDict[str, Preview] = OrderedDict()
        self.runs: OrderedDict[str, Run] = OrderedDict()
        self._pool: RenderPool | None = None
        self._pool_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.mask_paths = settings.studio_mask_paths
        self._report_versions: dict[tuple[str, str], str] = {}  # (template, studio id) → id

    # ---- the render processes --------------------------------------------------------------
    async def pool(self) -> RenderPool:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = RenderPool(
                    self.settings.render_workers,
                    max_renders=self.settings.render_max_renders,
                    max_rss_mb=self.settings.render_max_rss_mb,
                    memory_mb=self.settings.render_memory_mb,
                    timeout=self.settings.render_timeout,
                )
                await self._pool.start()
            return self._pool

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # ---- templates and versions ------------------------------------------------------------
    def template(self, name: str) -> str:
        name = name.replace("~", "/")
        if name not in versions.listed(self.folder):
            raise LookupError(f"no template '{name}' in the templates folder")
        return name

    def live(self, name: str) -> Files:
        return versions.read_files(self.folder, name)

    def live_report_version(self, name: str) -> str:
        """The live template's version as a report records it (`template_version`)."""
        return TemplateLibrary(self.folder).version(name)

    def report_version(self, name: str, vid: str) -> str:
        """A saved version's id as a report rendered from it would record it (kept: a
        studio id names its content for good)."""
        key = (name, vid)
        if key not in self._report_versions:
            self._report_versions[key] = versions.report_version(name, self.files_of(name, vid))
        return self._report_versions[key]

    def files_of(self, name: str, vid: object) -> Files:
        """A version's files: `live` (disk), `head` (newest saved, else live), or an id."""
        vid = None if vid is None else str(vid)
        if vid in (None, "", "head"):
            vid = self.store_of_versions.head(name) or "live"
        if vid == "live":
            return self.live(name)
        try:
            return self.store_of_versions.files(name, vid)
        except PressroomError as error:
            raise LookupError(error.reason) from None

    def describe(self, files: Files, name: str) -> list[dict[str, Any]]:
        deps = set(files) - {name}
        out = []
        for rel, data in files.items():
            text = data.decode() if versions.is_text(rel, data) else None
            kind = (
                "template"
                if rel == name
                else (
                    "include"
                    if Path(rel).suffix in (".html", ".htm", ".j2", ".jinja", ".xml")
                    and rel in deps
                    else "asset"
                )
            )
            out.append(
                {
                    "path": rel,
                    "kind": kind,
                    "text": text,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "editable": text is not None,
                }
            )
        return out

    def overlay(self, name: str, base: Files, changes: dict[str, str]) -> Files:
        """`base` with the edited texts over it; the file set worked out afresh (an edit may
        add an include or an asset)."""
        edited: Files = dict(base)
        for rel, text in changes.items():
            rel = versions.checked_path(rel)
            if not isinstance(text, str):
                raise PressroomError(f"the content of {rel} must be text")
            if Path(rel).suffix.lower() not in versions.TEXT_SUFFIXES:
                raise PressroomError(f"{rel} is not a text file the studio edits")
            edited[rel] = text.encode()
        with versions.workspace(self.folder, edited) as scratch:
            return versions.read_files(scratch, name)

    def save(
        self, name: str, changes: dict[str, str], base: str | None, author: str, message: str
    ) -> tuple[HistoryEntry, bool]:
        files = self.overlay(name, self.files_of(name, base), changes)
        return self.store_of_versions.save(name, files, author=author, message=message)

    def writable(self, name: str) -> bool:
        if self.settings.studio_promote == "export":
            return False
        try:
            paths = list(self.live(name))
        except PressroomError:
            paths = [name]
        return versions.writable(self.folder, paths)

    # ---- data ------------------------------------------------------------------------------
    def sample(self, name: str) -> dict[str, Any]:
        path = self.folder / "samples" / f"{Path(name).stem}.json"
        if not path.is_file():
            raise LookupError(f"{name} has no sample file (samples/{path.name})")
        return parse_data(path.read_text(encoding="utf-8"), "json")

    async def payloads(self, store: ArtefactStore, name: str, limit: int) -> list[dict[str, Any]]:
        # Past their age or count, even when no report of the template came since.
        await recording.prune(store, self.settings, name)
        found = await recording.listing(store, name)
        return [
            {"id": r.id, "recorded_at": r.recorded_at.isoformat(), "size": r.size}
            for r in found[:limit]
        ]

    async def payload(self, store: ArtefactStore, name: str, pid: str) -> dict[str, Any]:
        try:
            record = await recording.read(store, self.settings, name, pid)
        except PressroomError as error:
            raise LookupError(error.reason) from None
        return record

    def masked(self, data: Any) -> Any:
        return masking.mask(data, self.mask_paths)

    async def recorded_context(self, store: ArtefactStore, name: str, pid: str) -> dict[str, Any]:
        """A recorded report's context as the template saw it, masked."""
        record = await self.payload(store, name, pid)
        data = record.get("data")
        request = record.get("request") or {}
        context = {
            "request_id": request.get("request_id"),
            "template_name": request.get("template"),
            "generation_time": request.get("requested_at"),
            "requested_by": request.get("requested_by"),
            "locale": request.get("locale"),
            **(data if isinstance(data, dict) else {}),
        }
        return dict(self.masked(context))

    async def data_for(
        self, store: ArtefactStore | None, name: str, spec: dict[str, Any]
    ) -> dict[str, Any]:
        """The data a preview renders on: the sample, a recorded payload (masked: the author
        sees what they may see) or uploaded JSON/YAML. By default the sample; without one,
        the newest recorded report that opens; without either, no data."""
        source = spec.get("source", "default")
        if source == "default":
            try:
                return self.sample(name)
            except LookupError:
                pass
            if store is not None:
                for found in (await recording.listing(store, name))[:DEFAULT_TRIES]:
                    try:
                        return await self.recorded_context(store, name, found.id)
                    except LookupError:  # not readable here (a key not shared): the next
                        continue
            return {}
        if source == "sample":
            return self.sample(name)
        if source == "payload":
            if store is None:
                raise PressroomError("recorded payloads need the bus")
            return await self.recorded_context(store, name, str(spec.get("id", "")))
        if source == "inline":
            fmt = str(spec.get("format", "json")).lower()
            if fmt not in ("json", "yaml"):
                raise PressroomError("data.format must be json or yaml")
            return parse_data(str(spec.get("text", "")), fmt)
        raise PressroomError("data.source must be sample, payload or inline")

    # ---- preview ---------------------------------------------------------------------------
    async def preview(self, name: str, files: Files, data: dict[str, Any]) -> dict[str, Any]:
        pool = await self.pool()
        started = time.perf_counter()
        pid = secrets.token_urlsafe(9)
        context = {
            "request_id": f"studio-{pid}",
            "template_name": name,
            "generation_time": _now(),
            "requested_by": "studio",
            "locale": None,
            **data,
        }
        errors: list[dict[str, Any]] = []
        warnings: list[str] = []
        html, images = b"", []
        with versions.workspace(self.folder, files) as scratch:
            checks = await pool.run(
                preview.checks_in_folder,
                str(scratch),
                name,
                list(extra_dirs_from(self.settings.fonts_dir)),
                label=name,
            )
            problems = [preview.validation_problem(p) for p in checks["problems"]]
            warnings += checks["warnings"]
            job = make_job(self.settings, name, context, ("pdf", "html"), templates_dir=scratch)
            try:
                output = await pool.render(job)
            except PressroomError as error:
                problems.insert(0, preview.problem_of(error.reason, name))
            else:
                html = output.html
                warnings += list(output.notices)
                images = await preview.page_images(output.pdf or b"")
            seen: set[tuple[str | None, int | None]] = set()
            for problem in (preview.located(p, files) for p in problems):
                if (problem.file, problem.line) not in seen or problem.line is None:
                    seen.add((problem.file, problem.line))
                    errors.append(problem.as_dict())
        self.previews[pid] = Preview(pid, html, images)
        while len(self.previews) > PREVIEWS_KEPT:
            self.previews.popitem(last=False)
        return {
            "ok": not errors,
            "preview": pid,
            "pages": len(images),
            "images": [
                f"/api/studio/previews/{pid}/pages/{n}.png" for n in range(1, len(images) + 1)
            ],
            "html_url": f"/api/studio/previews/{pid}/html" if html else None,
            "errors": errors,
            "warnings": warnings,
            "seconds": round(time.perf_counter() - started, 3),
        }

    # ---- shadow runs -----------------------------------------------------------------------
    def _run_dir(self, rid: str) -> Path:
        return self.root / "runs" / rid

    def start_shadow(
        self, store: ArtefactStore, name: str, vid: str, files: Files, last: int, threshold: float
    ) -> Run:
        run = Run(secrets.token_hex(6), name, vid, threshold, _now())
        self._forget_old_runs()
        self.runs[run.id] = run
        while len(self.runs) > RUNS_KEPT:
            self.runs.popitem(last=False)
        task = asyncio.create_task(self._shadow(store, run, files, last))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def _shadow(self, store: ArtefactStore, run: Run, files: Files, last: int) -> None:
        folder = self._run_dir(run.id)

        def url(index: int, page: int, kind: str) -> str:
            return f"/api/studio/shadow/{run.id}/{index}/pages/{page}/{kind}.png"

        async def landed(outcome: shadow.Outcome) -> None:
            for (page, kind), png in outcome.images.items():
                target = folder / str(outcome.result["index"]) / f"{page}-{kind}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(png)
            run.results.append(outcome.result)

        def total(count: int) -> None:
            run.total = count

        try:
            pool = await self.pool()
            with versions.workspace(self.folder, files) as scratch:
                await shadow.run_shadow(
                    pool,
                    self.settings,
                    store,
                    run.template,
                    scratch,
                    last=last,
                    image_url=url,
                    landed=landed,
                    total=total,
                )
            run.status = "done"
        except PressroomError as error:
            run.status, run.error = "error", error.reason
        except Exception as error:  # a run that broke says so; the console stays up
            log.error("shadow run failed", run=run.id, error=repr(error))
            run.status, run.error = "error", f"{type(error).__name__}: {error}"
        finally:
            run.finished_at = _now()
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "run.json").write_text(json.dumps(asdict(run)))

    def _forget_old_runs(self) -> None:
        """Runs (and their page images) on disk: the newest RUNS_ON_DISK, across templates."""
        folder = self.root / "runs"
        if not folder.is_dir():
            return
        done = sorted(
            (p for p in folder.iterdir() if (p / "run.json").is_file()),
            key=lambda p: (p / "run.json").stat().st_mtime,
            reverse=True,
        )
        for old in done[RUNS_ON_DISK:]:
            shutil.rmtree(old, ignore_errors=True)
            self.runs.pop(old.name, None)

    def run(self, rid: str) -> Run:
        if rid in self.runs:
            return self.runs[rid]
        if not rid.isalnum():
            raise LookupError(f"no shadow run {rid}")
        path = self._run_dir(rid) / "run.json"
        if not path.is_file():
            raise LookupError(f"no shadow run {rid}")
        return Run(**json.loads(path.read_text()))

    def runs_of(self, name: str) -> list[Run]:
        found: dict[str, Run] = {}
        runs_dir = self.root / "runs"
        for path in runs_dir.glob("*/run.json") if runs_dir.is_dir() else []:
            try:
                run = Run(**json.loads(path.read_text()))
            except (ValueError, TypeError):
                continue
            found[run.id] = run
        found.update(self.runs)
        return sorted(
            (r for r in found.values() if r.template == name),
            key=lambda r: r.started_at,
            reverse=True,
        )

    def latest_run(self, name: str, vid: str) -> Run | None:
        for run in self.runs_of(name):
            if run.version == vid and run.status == "done":
                return run
        return None

    def image(self, rid: str, index: int, page: int, kind: str) -> bytes:
        if kind not in shadow.KINDS:
            raise LookupError("no such image")
        self.run(rid)
        path = self._run_dir(rid) / str(index) / f"{page}-{kind}.png"
        if not path.is_file():
            raise LookupError("no such image")
        return path.read_bytes()

    # ---- promotion -------------------------------------------------------------------------
    def promote(self, name: str, vid: str, author: str, override: str | None) -> versions.Promotion:
        files = self.files_of(name, vid)
        done = versions.promote(
            self.folder,
            files,
            self.root / "exports",
            f"{Path(name).stem}-{vid}",
            export=self.settings.studio_promote == "export",
        )
        self.store_of_versions.add(
            name,
            HistoryEntry(
                vid, author, _now(), f"promoted ({done.mode})", "promote", override=override
            ),
        )
        return done
