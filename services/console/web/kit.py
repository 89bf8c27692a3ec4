"""What every console page shares: the Console (settings, bus, reports index, caches), the
templates, sessions and users, the CSRF check, the `page` guard, the audit record of an action."""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from nats.errors import Error as NatsError
from starlette.datastructures import URL, Headers
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)

from services.console import audit, busaccess, sloindex
from services.console import slo as sli
from services.console.web.auth import (
    ROLES,
    LoginLimiter,
    Role,
    User,
    load_users,
    users_file,
)
from services.console.web.index import LedgerIndex
from shared.downloadlinks import (
    LOOPBACK_HOSTS,
    console_secret,
)
from shared.errors import PressroomError
from shared.observe.logging import get_logger
from shared.settings import Settings

log = get_logger("pressroom.console")
HERE = Path(__file__).parent
SESSION_HOURS = 12


class Console:
    """What the routes share: settings, the bus, the ledger index, caches, the login limit."""

    def __init__(self, settings: Settings, bus: busaccess.Bus | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self.index = LedgerIndex()
        self.slo = sloindex.Keeper()  # keeps the SLO index current
        self.limiter = LoginLimiter()
        self.secret = console_secret(settings)
        self.users_path = users_file(settings)
        self._cache: dict[str, tuple[float, Any]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._refreshing: set[str] = set()
        self._validated: tuple[str, tuple[int, int]] | None = None
        self._validating = asyncio.Lock()

    async def templates_valid(self) -> tuple[int, int] | None:
        """(valid, listed) templates for the SLO table, as `pressroom slo` counts them:
        validated again only when the folder changed; None when they cannot be validated
        (the row then says "no data")."""
        folder = self.settings.templates_dir
        async with self._validating:
            mark = await asyncio.to_thread(sli.templates_fingerprint, folder)
            if self._validated is None or self._validated[0] != mark:
                if not folder.is_dir():
                    return None
                try:
                    self._validated = (mark, await sli.validate_templates(self.settings))
                except PressroomError as error:
                    log.warning("templates not validated for the SLO table", error=error.reason)
                    return None
            return self._validated[1]

    def ready_bus(self) -> busaccess.Bus:
        if self.bus is None:
            raise PressroomError("the console is not connected to NATS yet")
        return self.bus

    async def cached(self, key: str, seconds: float, compute: Callable[[], Awaitable[Any]]) -> Any:
        """A slow view (SLOs over every report, health): computed once, then answered from
        the last result while a fresh one is computed in the background when it is older
        than `seconds` (one computation at a time per view)."""
        loop = asyncio.get_running_loop()
        hit = self._cache.get(key)
        if hit is None:
            value = await compute()
            self._cache[key] = (loop.time(), value)
            return value
        if loop.time() - hit[0] >= seconds and key not in self._refreshing:
            self._refreshing.add(key)

            async def refresh() -> None:
                try:
                    self._cache[key] = (loop.time(), await compute())
                except Exception as error:  # the last good view stays; the log says why
                    log.warning("console view not refreshed", view=key, error=repr(error))
                finally:
                    self._refreshing.discard(key)

            self._tasks.append(asyncio.create_task(refresh()))
            self._tasks = [t for t in self._tasks if not t.done()]
        return hit[1]


# ---- templates -----------------------------------------------------------------------------
def _when(value: Any) -> str:
    if not isinstance(value, datetime):
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: Any) -> str:
    return f"{value:.2f} s" if isinstance(value, int | float) else "—"


templates_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates_env.filters["when"] = _when
templates_env.filters["secs"] = _seconds


def render_page(
    request: Request, name: str, context: dict[str, Any], status: int = 200
) -> Response:
    user = current_user(request)
    context.setdefault("flash", request.session.pop("flash", None))
    body = templates_env.get_template(name).render(
        request=request,
        user=user,
        csrf_token=session_csrf(request),
        may_act=bool(user and user.may("ops")),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(body, status_code=status)


PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host")


def on_loopback(url: URL, headers: Headers) -> bool:
    """Reached on this machine's loopback address, by a client on this machine: not through
    a proxy (which may rewrite the Host to 127.0.0.1 for users anywhere)."""
    proxied = any(name in headers for name in PROXY_HEADERS)
    return not proxied and (url.hostname or "") in LOOPBACK_HOSTS


def plain_loopback(url: URL, headers: Headers) -> bool:
    """Reached over plain HTTP on this machine's loopback address (the console's default
    127.0.0.1:8480): the one place the session cookie goes without `Secure`, since browsers
    keep a Secure cookie there but other HTTP clients would never send it back."""
    return url.scheme in ("http", "ws") and on_loopback(url, headers)


def wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


# ---- sessions, users, CSRF -----------------------------------------------------------------
def session_csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def current_user(request: Request) -> User | None:
    name, role = request.session.get("user"), request.session.get("role")
    if not isinstance(name, str) or role not in ROLES:
        return None
    console: Console = request.app.state.console
    known = load_users(console.users_path).get(name)
    if known is None:  # removed (or its role changed) since it logged in
        return None
    return User(name, known[0])


def client_address(request: Request) -> str:
    return request.client.host if request.client else "?"


async def csrf_ok(request: Request) -> bool:
    expected = request.session.get("csrf")
    form = await request.form()
    given = form.get("csrf_token") or request.headers.get("x-csrf-token") or ""
    return bool(expected) and hmac.compare_digest(str(given), str(expected))


Handler = Callable[[Request], Awaitable[Response]]


def page(role: Role = "viewer", *, action: bool = False) -> Callable[[Handler], Handler]:
    """A route for signed-in users of at least `role`; `action`: a POST that changes
    something, refused without the session's CSRF token."""

    def wrap(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            user = current_user(request)
            if user is None:
                if wants_json(request) or request.method != "GET":
                    return JSONResponse({"error": "sign in first"}, status_code=401)
                return RedirectResponse(
                    f"/login?{urlencode({'next': request.url.path})}", status_code=303
                )
            if action and not await csrf_ok(request):
                await audit_action(request, "refused: no valid CSRF token", request.url.path, "403")
                return refusal(request, "refused: no valid CSRF token (reload the page)")
            if not user.may(role):
                if action:
                    await audit_action(request, f"refused: needs {role}", request.url.path, "403")
                return refusal(
                    request, f"refused: this needs the {role} role (you are {user.role})"
                )
            try:
                return await handler(request)
            except PressroomError as error:
                if wants_json(request):
                    return JSONResponse({"error": error.reason}, status_code=400)
                return render_page(request, "error.html", {"reason": error.reason}, status=400)
            except (NatsError, TimeoutError) as error:  # the bus is away: say so, in a page
                reason = f"NATS did not answer ({error or type(error).__name__}); try again"
                if wants_json(request):
                    return JSONResponse({"error": reason}, status_code=503)
                return render_page(request, "error.html", {"reason": reason}, status=503)

        return guarded

    return wrap


def refusal(
    request: Request, reason: str, status: int = 403, title: str = "Not allowed"
) -> Response:
    """A refusal as the rest of the console answers: JSON under /api/, else the styled page
    with the header and navigation (never a bare line of text)."""
    if wants_json(request):
        return JSONResponse({"error": reason}, status_code=status)
    return render_page(request, "error.html", {"reason": reason, "title": title}, status=status)


async def audit_action(
    request: Request, action: str, target: str = "", outcome: str = "ok", who: str | None = None
) -> None:
    console: Console = request.app.state.console
    user = current_user(request)
    name = who or (user.name if user else "anonymous")
    if console.bus is None:
        log.warning("audit record not written: no bus", who=name, action=action)
        return
    try:
        await audit.record(
            console.bus,
            who=name,
            action=action,
            target=target,
            outcome=outcome,
            source=f"console {client_address(request)}",
        )
    except Exception as error:  # the action happened: say the trail missed it, loudly
        log.error("audit record not written", action=action, error=repr(error))


def finish_action(request: Request, message: str, back: str, data: Any = None) -> Response:
    if wants_json(request):
        return JSONResponse({"message": message, "result": data})
    request.session["flash"] = message
    return RedirectResponse(back, status_code=303)


NO_BUFFER = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def sse_event(event: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n"
