"""The console's routes: server-rendered pages (and their JSON twins under /api/) over the same
functions the `pressroom` command uses, the download links, and the application itself."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import importlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import URL, Headers
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from services.console import busaccess
from services.console.web import studio_api
from services.console.web.downloads import Gone, byte_range, open_artefact
from services.console.web.kit import (
    HERE,
    SESSION_HOURS,
    Console,
    Handler,
    audit_action,
    plain_loopback,
    refusal,
)
from services.console.web.letters import (
    dead_letter,
    dead_letter_replay,
    dead_letters,
    dead_letters_purge,
    dead_letters_replay,
)
from services.console.web.login import login, login_form, logout, sso_callback, sso_start
from services.console.web.operate import (
    audit_page,
    health,
    schedule_action,
    schedules,
    slo,
)
from services.console.web.reports import (
    mint_link,
    report,
    report_cancel,
    report_download,
    report_page_image,
    report_pages,
    report_redeliver,
    report_replay,
    report_stream,
    reports,
    reports_stream,
)
from services.console.web.studio_pages import studio_routes
from shared.downloadlinks import (
    LinkRefused,
    verify_token,
)
from shared.settings import Settings


# ---- download links ------------------------------------------------------------------------
async def download(request: Request) -> Response:
    """`GET /a/{token}`: the artefact a valid link names, streamed (ranges honoured). Changed,
    expired and purged links are refused, and each refusal goes in the audit trail."""
    console: Console = request.app.state.console
    token = request.path_params["token"]
    short = hashlib.sha256(token.encode()).hexdigest()[:12]
    try:
        claim = verify_token(console.secret, token)
    except LinkRefused as error:
        await audit_action(
            request, "download refused", f"link {short}", f"403: {error.reason}", "link"
        )
        return refusal(request, f"refused: {error.reason}", title="Link refused")
    try:
        stored = await open_artefact(console.ready_bus(), claim.key)
    except Gone:
        await audit_action(request, "download refused", claim.key, "404: no longer stored", "link")
        return refusal(request, "this report is no longer stored", 404, "Gone")
    if stored.sha256 and stored.sha256 != claim.sha256:  # the same key, other content
        await audit_action(request, "download refused", claim.key, "404: content changed", "link")
        return refusal(request, "this version of the report is no longer stored", 404, "Gone")
    try:
        wanted = byte_range(request.headers.get("range"), stored.size)
    except ValueError:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{stored.size}"})
    start, end = wanted or (0, stored.size)
    name = Path(claim.key).name
    headers = {
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start),
        "Content-Disposition": f'attachment; filename="{name}"',
        "Cache-Control": "private, no-store",
        "ETag": f'"{claim.sha256}"',
        "X-Content-Type-Options": "nosniff",
    }
    status = 200
    if wanted is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{stored.size}"
    await audit_action(request, "download", claim.key, f"{status} bytes {start}-{end}", "link")
    return StreamingResponse(
        stored.read(start, end), status_code=status, media_type=stored.content_type, headers=headers
    )


async def healthz(request: Request) -> Response:
    console: Console = request.app.state.console
    ok = console.bus is not None and console.bus.nc.is_connected
    return JSONResponse(
        {"status": "ok" if ok else "no bus", "indexed": len(console.index)},
        status_code=200 if ok else 503,
    )


async def favicon(request: Request) -> Response:
    return Response(status_code=204)


async def home(request: Request) -> Response:
    return RedirectResponse("/reports", status_code=303)


# ---- the application -----------------------------------------------------------------------
def _routes() -> list[Any]:
    pages: list[tuple[str, Handler]] = [
        ("/reports", reports),
        ("/reports/{rid:path}/events", report_stream),
        ("/reports/{rid:path}/artefacts/{fmt}/link", mint_link),
        ("/reports/{rid:path}/artefacts/{fmt}", report_download),
        ("/reports/{rid:path}/pages/{n:int}.png", report_page_image),
        ("/reports/{rid:path}/pages", report_pages),
        ("/reports/{rid:path}", report),
        ("/dead-letters", dead_letters),
        ("/dead-letters/{seq:int}", dead_letter),
        ("/schedules", schedules),
        ("/slo", slo),
        ("/health", health),
        ("/audit", audit_page),
    ]
    actions: list[tuple[str, Handler]] = [
        ("/reports/{rid:path}/redeliver", report_redeliver),
        ("/reports/{rid:path}/replay", report_replay),
        ("/reports/{rid:path}/cancel", report_cancel),
        ("/dead-letters/replay", dead_letters_replay),
        ("/dead-letters/purge", dead_letters_purge),
        ("/dead-letters/{seq:int}/replay", dead_letter_replay),
        ("/schedules/{name}/{verb}", schedule_action),
    ]
    routes: list[Any] = [
        *studio_api.routes(),
        Route("/", home),
        Route("/healthz", healthz),
        Route("/favicon.ico", favicon),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/login/sso", sso_start),
        Route("/login/sso/callback", sso_callback),
        Route("/a/{token}", download),
        Route("/reports/stream", reports_stream),
    ]
    for path, handler in actions:  # before the pages: /reports/{rid:path} would take them
        routes += [
            Route(path, handler, methods=["POST"]),
            Route(f"/api{path}", handler, methods=["POST"]),
        ]
    for path, handler in pages:
        routes += [Route(path, handler), Route(f"/api{path}", handler)]
    routes += studio_routes()
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    return routes


async def _security_headers(request: Request, call_next: Any) -> Response:
    response: Response = await call_next(request)
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    )
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def create_app(settings: Settings, *, bus: busaccess.Bus | None = None) -> Starlette:
    """The console; without `bus` it opens its own (the ops identity) for its lifetime."""
    # What "run now" and "deliver again" use (services/console/requests.py imports them where
    # it uses them, for the CLI's start-up): loaded with the app, not on its event loop later.
    for module in ("services.distributor.channels", "services.scheduler.app"):
        importlib.import_module(module)

    console = Console(settings, bus)
    session_key = hmac.new(console.secret, b"console-session", hashlib.sha256).hexdigest()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if console.bus is None:
                console.bus = await stack.enter_async_context(
                    busaccess.open_bus(settings, lasting=True)
                )
            tasks = [
                asyncio.create_task(console.index.follow(console.bus)),
                asyncio.create_task(console.slo.keep(console.bus)),
            ]
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                await studio_api.close(app)

    app = Starlette(
        routes=_routes(),
        lifespan=lifespan,
        middleware=[
            Middleware(BaseHTTPMiddleware, dispatch=_security_headers),
            Middleware(
                _Session,
                secret_key=session_key,
                always_secure=urlsplit(settings.public_url or "").scheme.lower() == "https",
            ),
        ],
    )
    app.state.console = console
    app.state.oidc = _oidc(settings)
    return app


class _Session:
    """The session cookie: `Secure`, except over plain HTTP on this machine's loopback
    address — the default 127.0.0.1:8480 — when the console's public URL is not HTTPS.
    There a `Secure` cookie would be kept by browsers (they trust loopback) but never sent
    back by other HTTP clients (httpx, requests, scripts): they could not sign in. Reached
    over plain HTTP from elsewhere, it stays `Secure`: browsers drop it, and the login page
    says to use HTTPS, rather than the session travelling the network in clear."""

    def __init__(self, app: ASGIApp, *, secret_key: str, always_secure: bool) -> None:
        def session(secure: bool) -> SessionMiddleware:
            return SessionMiddleware(
                app,
                secret_key=secret_key,
                session_cookie="pressroom_session",
                max_age=SESSION_HOURS * 3600,
                same_site="lax",  # Strict would lose the sign-on redirect back to us
                https_only=secure,
            )

        self.plain, self.secure = session(False), session(True)
        self.always_secure = always_secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan: no cookie either way
            await self.plain(scope, receive, send)
            return
        url, headers = URL(scope=scope), Headers(scope=scope)
        plain = not self.always_secure and plain_loopback(url, headers)
        await (self.plain if plain else self.secure)(scope, receive, send)


def _oidc(settings: Settings) -> Any:
    if not settings.oidc_issuer:
        return None
    from authlib.integrations.starlette_client import OAuth  # only with single sign-on

    oauth = OAuth()
    return oauth.register(
        "sso",
        server_metadata_url=f"{settings.oidc_issuer.rstrip('/')}/.well-known/openid-configuration",
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret,
        client_kwargs={"scope": "openid email profile"},
    )
