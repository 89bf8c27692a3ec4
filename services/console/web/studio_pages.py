"""The studio's pages (issue #32), for the `author` role and above: the template list, the
editor beside its live preview, a template's versions, a shadow render and its promotion.

The pages are the shell; what they show comes from the studio's JSON API under
`/api/studio/...` (`studio_api.py`), called by `static/studio.js`. Nothing is rendered in
this process: previews and shadow renders run in the renderer's capped workers.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.console.web.kit import Console, current_user, page, render_page
from services.renderer.templating import TemplateLibrary
from shared.errors import PressroomError

SHADOW_DEFAULT = 20  # payloads a shadow render takes unless the author says otherwise


def _library(console: Console) -> TemplateLibrary:
    folder = console.settings.templates_dir
    if not folder.is_dir():
        raise PressroomError("the templates folder does not exist (set PRESSROOM_TEMPLATES_DIR)")
    return TemplateLibrary(folder)


def _listing(console: Console) -> list[dict[str, Any]]:
    lib = _library(console)
    return [{"name": name, "description": lib.info(name).description} for name in lib.names()]


def _template(console: Console, name: str) -> str:
    """The listed template's canonical name (an unknown one: the error page says why)."""
    return _library(console).resolve(name)


def _context(request: Request, name: str, tab: str) -> dict[str, Any]:
    user = current_user(request)
    return {
        "name": name,
        "tab": tab,
        "may_override": bool(user and user.may("ops")),
    }


@page("author")
async def studio(request: Request) -> Response:
    console: Console = request.app.state.console
    rows = await asyncio.to_thread(_listing, console)
    return render_page(request, "studio.html", {"rows": rows})


@page("author")
async def studio_edit(request: Request) -> Response:
    console: Console = request.app.state.console
    name = await asyncio.to_thread(_template, console, request.path_params["name"])
    return render_page(request, "studio_edit.html", _context(request, name, "edit"))


@page("author")
async def studio_versions(request: Request) -> Response:
    console: Console = request.app.state.console
    name = await asyncio.to_thread(_template, console, request.path_params["name"])
    return render_page(request, "studio_versions.html", _context(request, name, "versions"))


@page("author")
async def studio_shadow(request: Request) -> Response:
    console: Console = request.app.state.console
    name = await asyncio.to_thread(_template, console, request.path_params["name"])
    context = _context(request, name, "shadow")
    context["version"] = request.query_params.get("version", "")
    context["last"] = SHADOW_DEFAULT
    return render_page(request, "studio_shadow.html", context)


def studio_routes() -> list[Route]:
    """The pages only: their JSON is `studio_api.py`'s (`/api/studio` is the list's twin)."""
    return [
        Route("/studio", studio),
        Route("/studio/edit/{name:path}", studio_edit),
        Route("/studio/versions/{name:path}", studio_versions),
        Route("/studio/shadow/{name:path}", studio_shadow),
    ]
