"""The studio's JSON API, `/api/studio/...` (documented for the pages in STUDIO_API.md): the
`author` role edits, previews, saves and runs shadow renders; promotion needs a passing shadow
run, or an `ops` user's override with a reason (in the audit trail). Viewers get 403."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.console.studio import versions
from services.console.studio.service import Studio
from services.console.web.kit import (
    Console,
    Handler,
    audit_action,
    current_user,
    log,
    page,
    session_csrf,
)
from services.renderer import recording
from services.renderer.templating import TemplateLibrary
from shared.adapters.store import ArtefactStore
from shared.errors import PressroomError


def studio_of(request: Request) -> Studio:
    studio: Studio | None = getattr(request.app.state, "studio", None)
    if studio is None:
        console: Console = request.app.state.console
        studio = request.app.state.studio = Studio(console.settings)
    return studio


async def close(app: Any) -> None:
    """The studio's render processes stopped with the console."""
    studio: Studio | None = getattr(app.state, "studio", None)
    if studio is not None:
        await studio.close()


async def _store(request: Request) -> ArtefactStore:
    console: Console = request.app.state.console
    return await console.ready_bus().store()


def _found(handler: Handler) -> Handler:
    """LookupError (an unknown template, version, payload or run) as a 404."""

    @wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except LookupError as error:
            return JSONResponse({"error": str(error.args[0]) if error.args else "not found"}, 404)

    return wrapped


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise PressroomError("the request body must be JSON") from None
    if not isinstance(body, dict):
        raise PressroomError("the request body must be a JSON object")
    return body


def _name(request: Request) -> str:
    return studio_of(request).template(request.path_params["name"])


def _author(request: Request) -> str:
    user = current_user(request)
    return user.name if user else "anonymous"


def _run_mark(studio: Studio, name: str, vid: str) -> dict[str, Any] | None:
    run = studio.latest_run(name, vid)
    if run is None:
        return None
    verdict = run.view()["summary"]["verdict"]
    return {"run": run.id, "status": verdict}


def _report_version(studio: Studio, name: str, vid: str | None) -> str | None:
    """The `template_version` a report rendered from saved version `vid` would record (None
    for no version, or one whose files can no longer be read)."""
    if vid is None:
        return None
    try:
        return studio.report_version(name, vid)
    except (PressroomError, LookupError):
        return None


# ---- session and templates -----------------------------------------------------------------
@page("author")
async def me(request: Request) -> Response:
    user = current_user(request)
    assert user is not None
    return JSONResponse(
        {
            "user": user.name,
            "role": user.role,
            "may_override": user.may("ops"),
            "csrf_token": session_csrf(request),
        }
    )


@page("author")
async def templates(request: Request) -> Response:
    studio = studio_of(request)
    recorded = await recording.counts(await _store(request))
    rows = []
    for name in versions.listed(studio.folder):
        live: str | None
        live_report: str | None
        try:
            live = versions.version_id(studio.live(name))
            live_report = studio.live_report_version(name)
        except PressroomError:
            live = live_report = None
        head = studio.store_of_versions.head(name)
        try:
            description = TemplateLibrary(studio.folder).info(name).description
        except PressroomError:
            description = ""
        rows.append(
            {
                "name": name,
                "description": description,
                "live_version": live,
                "live_report_version": live_report,
                "head_version": head,
                "head_report_version": _report_version(studio, name, head),
                "payloads": recorded.get(name, 0),
            }
        )
    return JSONResponse(
        {
            "templates": rows,
            "writable": studio.settings.studio_promote != "export"
            and versions.writable(studio.folder, []),
            "folder": studio.folder.name,
        }
    )


@page("author")
@_found
async def template(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    files = studio.live(name)
    sample = studio.folder / "samples" / f"{Path(name).stem}.json"
    head = studio.store_of_versions.head(name)
    return JSONResponse(
        {
            "name": name,
            "live_version": versions.version_id(files),
            "live_report_version": studio.live_report_version(name),
            "head_version": head,
            "head_report_version": _report_version(studio, name, head),
            "files": studio.describe(files, name),
            "sample": f"samples/{sample.name}" if sample.is_file() else None,
            "writable": studio.writable(name),
        }
    )


@page("author")
@_found
async def sample(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    return JSONResponse({"data": studio.masked(studio.sample(name))})


# ---- versions ------------------------------------------------------------------------------
@page("author")
@_found
async def history(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    live = versions.version_id(studio.live(name))
    rows = [
        {
            "id": e.id,
            "author": e.author,
            "at": e.at,
            "message": e.message,
            "event": e.event,
            "restored_from": e.restored_from,
            "live": e.id == live,
            "report_version": _report_version(studio, name, e.id),
            "shadow": _run_mark(studio, name, e.id),
        }
        for e in studio.store_of_versions.history(name)
    ]
    return JSONResponse(
        {
            "live_version": live,
            "live_report_version": studio.live_report_version(name),
            "versions": rows,
        }
    )


@page("author")
@_found
async def version(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    vid = request.path_params["vid"]
    files = studio.files_of(name, vid)
    entry = next((e for e in studio.store_of_versions.history(name) if e.id == vid), None)
    return JSONResponse(
        {
            "id": versions.version_id(files),
            "author": entry.author if entry else None,
            "at": entry.at if entry else None,
            "message": entry.message if entry else None,
            "files": studio.describe(files, name),
        }
    )


def _changes(body: dict[str, Any]) -> dict[str, Any]:
    """The edited files of a save or a preview (`files`: path → text)."""
    changes = body.get("files") or {}
    if not isinstance(changes, dict):
        raise PressroomError("files must be an object of path → text")
    return changes


@page("author", action=True)
@_found
async def save(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    body = await _body(request)
    changes = _changes(body)
    entry, created = studio.save(
        name, changes, body.get("base"), _author(request), str(body.get("message") or "")
    )
    await audit_action(request, "studio save", f"{name} {entry.id}", entry.message or "ok")
    return JSONResponse(
        {
            "id": entry.id,
            "report_version": _report_version(studio, name, entry.id),
            "created": created,
            "author": entry.author,
            "at": entry.at,
            "message": entry.message,
        },
        status_code=201,
    )


@page("author", action=True)
@_found
async def restore(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    body = await _body(request)
    vid = request.path_params["vid"]
    try:
        entry = studio.store_of_versions.restore(
            name, vid, author=_author(request), message=str(body.get("message") or "")
        )
    except PressroomError as error:
        raise LookupError(error.reason) from None
    await audit_action(request, "studio restore", f"{name} {vid}")
    return JSONResponse({"id": entry.id, "event": "restore"})


@page("author")
@_found
async def diff(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    old_id = request.query_params.get("from") or "live"
    new_id = request.query_params.get("to") or "head"
    old, new = studio.files_of(name, old_id), studio.files_of(name, new_id)
    return JSONResponse(
        {
            "from": versions.version_id(old),
            "to": versions.version_id(new),
            "files": versions.diff(old, new),
        }
    )


# ---- recorded payloads ---------------------------------------------------------------------
@page("author")
@_found
async def payloads(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    try:
        limit = max(1, min(int(request.query_params.get("limit", "50")), 500))
    except ValueError:
        raise PressroomError("limit must be a number") from None
    store = await _store(request)
    rows = []
    for row in await studio.payloads(store, name, limit):
        try:
            record = await studio.payload(store, name, row["id"])
        except LookupError as error:  # said, not skipped: most often a key not shared
            log.warning("recorded payload not readable", payload=row["id"], error=str(error))
            rows.append({**row, "readable": False, "error": str(error.args[0])})
            continue
        rows.append(
            {
                **row,
                "readable": True,
                "error": None,
                "request_id": (record.get("request") or {}).get("request_id"),
                "template_version": record.get("template_version"),
                "artefacts": [a.get("format") for a in record.get("artefacts", [])],
            }
        )
    settings = studio.settings
    return JSONResponse(
        {
            "payloads": rows,
            "encrypted": True,
            "masked_paths": studio.mask_paths,
            "keep": f"{settings.studio_keep_days:g}d",
            "max": settings.studio_max_payloads,
        }
    )


@page("author")
@_found
async def payload(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    record = await studio.payload(await _store(request), name, request.path_params["pid"])
    return JSONResponse(
        {
            "id": record["id"],
            "request_id": (record.get("request") or {}).get("request_id"),
            "recorded_at": record.get("recorded_at"),
            "data": studio.masked(record.get("data")),
        }
    )


# ---- preview -------------------------------------------------------------------------------
@page("author", action=True)
@_found
async def preview(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    body = await _body(request)
    changes = _changes(body)
    files = studio.overlay(name, studio.files_of(name, body.get("version")), changes)
    spec = body.get("data") or {"source": "default"}
    if not isinstance(spec, dict):
        raise PressroomError("data must be an object with a source")
    store = await _store(request) if spec.get("source") == "payload" else None
    data = await studio.data_for(store, name, spec)
    return JSONResponse(await studio.preview(name, files, data))


def _preview_of(request: Request) -> Any:
    found = studio_of(request).previews.get(request.path_params["pid"])
    if found is None:
        raise LookupError("this preview is no longer kept: preview again")
    return found


@page("author")
@_found
async def preview_page(request: Request) -> Response:
    found = _preview_of(request)
    number = int(request.path_params["n"])
    if not 1 <= number <= len(found.images):
        raise LookupError(f"the preview has no page {number}")
    return Response(
        found.images[number - 1], media_type="image/png", headers={"Cache-Control": "private"}
    )


@page("author")
@_found
async def preview_html(request: Request) -> Response:
    found = _preview_of(request)
    return Response(
        found.html,
        media_type="text/html; charset=utf-8",
        headers={
            "Content-Security-Policy": "sandbox; default-src 'none'; style-src 'unsafe-inline' "
            "data:; img-src data:; font-src data:; frame-ancestors 'self'",
            "X-Frame-Options": "SAMEORIGIN",
        },
    )


# ---- shadow --------------------------------------------------------------------------------
@page("author", action=True)
@_found
async def shadow_start(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    body = await _body(request)
    try:
        last = int(body.get("last") or 20)
        threshold = float(body.get("threshold") or 0.0)
    except (TypeError, ValueError):
        raise PressroomError("last must be a whole number, threshold a number") from None
    if not 1 <= last <= 200:
        raise PressroomError("last must be between 1 and 200")
    if not 0.0 <= threshold <= 1.0:
        raise PressroomError("threshold is a share of a page's pixels, 0 to 1")
    files = studio.files_of(name, body.get("version"))
    vid = versions.version_id(files)
    run = studio.start_shadow(await _store(request), name, vid, files, last, threshold)
    await audit_action(request, "studio shadow", f"{name} {vid}", f"run {run.id}")
    return JSONResponse({"run": run.id, "status": run.status}, status_code=202)


@page("author")
@_found
async def shadow_view(request: Request) -> Response:
    return JSONResponse(studio_of(request).run(request.path_params["run"]).view())


@page("author")
@_found
async def shadow_runs(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    return JSONResponse(
        {
            "runs": [
                {
                    "run": r.id,
                    "version": r.version,
                    "status": r.status,
                    "summary": r.view()["summary"],
                    "started_at": r.started_at,
                }
                for r in studio.runs_of(name)
            ]
        }
    )


@page("author")
@_found
async def shadow_image(request: Request) -> Response:
    p = request.path_params
    png = studio_of(request).image(p["run"], int(p["index"]), int(p["n"]), p["kind"])
    return Response(png, media_type="image/png", headers={"Cache-Control": "private"})


# ---- promotion -----------------------------------------------------------------------------
@page("author", action=True)
@_found
async def promote(request: Request) -> Response:
    studio, name = studio_of(request), _name(request)
    body = await _body(request)
    user = current_user(request)
    assert user is not None
    vid = str(body.get("version") or "")
    files = studio.files_of(name, vid or "head")
    vid = versions.version_id(files)
    override = str(body.get("override_reason") or "").strip() or None
    run = studio.latest_run(name, vid)
    failed = run.view()["summary"]["failed"] if run else None
    refusal = None
    if run is None:
        refusal = f"version {vid} has no finished shadow run: run one first"
    elif failed:
        refusal = f"{failed} recorded payload(s) fail with version {vid}"
    if refusal and override:
        if not user.may("ops"):
            await audit_action(
                request, "studio promote refused", f"{name} {vid}", "403: override needs ops"
            )
            return JSONResponse({"error": "only an ops user may override"}, status_code=403)
        await audit_action(
            request, "studio promote override", f"{name} {vid}", f"{refusal}; reason: {override}"
        )
    elif refusal:
        await audit_action(request, "studio promote refused", f"{name} {vid}", refusal)
        return JSONResponse(
            {"error": refusal, "run": run.id if run else None, "failed": failed or 0},
            status_code=409,
        )
    done = studio.promote(name, vid, user.name, override)
    await audit_action(
        request,
        "studio promote",
        f"{name} {vid}",
        f"{done.mode}: {', '.join(done.files) or 'no change'}",
    )
    if done.mode == "written":
        return JSONResponse(
            {
                "promoted": True,
                "version": vid,
                "mode": "written",
                "files": done.files,
                "message": f"{name} is now version {vid} in the templates folder",
            }
        )
    assert done.export is not None
    return JSONResponse(
        {
            "promoted": True,
            "version": vid,
            "mode": "export",
            "files": done.files,
            "export_url": f"/api/studio/exports/{done.export.name}",
            "message": "the templates folder is read-only: apply the exported change there",
        }
    )


@page("author")
@_found
async def export(request: Request) -> Response:
    studio = studio_of(request)
    name = request.path_params["file"]
    path = studio.root / "exports" / name
    if "/" in name or name.startswith(".") or not path.is_file():
        raise LookupError(f"no export {name}")
    return Response(
        path.read_bytes(),
        media_type="application/gzip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def routes() -> list[Route]:
    """The studio's routes, under /api/studio (registered by web/app.py)."""
    base = "/api/studio"
    gets: list[tuple[str, Callable[..., Any]]] = [
        ("", templates),  # the /studio page's JSON twin (DESIGN.md: a twin for each page)
        ("/me", me),
        ("/templates", templates),
        ("/templates/{name}", template),
        ("/templates/{name}/sample", sample),
        ("/templates/{name}/versions", history),
        ("/templates/{name}/versions/{vid}", version),
        ("/templates/{name}/diff", diff),
        ("/templates/{name}/payloads", payloads),
        ("/templates/{name}/payloads/{pid}", payload),
        ("/templates/{name}/shadow", shadow_runs),
        ("/previews/{pid}/pages/{n:int}.png", preview_page),
        ("/previews/{pid}/html", preview_html),
        ("/shadow/{run}", shadow_view),
        ("/shadow/{run}/{index:int}/pages/{n:int}/{kind}.png", shadow_image),
        ("/exports/{file}", export),
    ]
    posts: list[tuple[str, Callable[..., Any]]] = [
        ("/templates/{name}/versions", save),
        ("/templates/{name}/versions/{vid}/restore", restore),
        ("/templates/{name}/preview", preview),
        ("/templates/{name}/shadow", shadow_start),
        ("/templates/{name}/promote", promote),
    ]
    return [Route(base + path, fn, methods=["GET"]) for path, fn in gets] + [
        Route(base + path, fn, methods=["POST"]) for path, fn in posts
    ]
