"""The console's routes: server-rendered pages (and their JSON twins under /api/) over the same
functions the `pressroom` command uses — ledger, dead letters, schedules, SLOs, health.

Nothing here decides anything the CLI decides differently: a page gathers what those functions
return, shows it, and turns a button into the same call (recorded in the audit trail).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import json
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from nats.errors import Error as NatsError
from pypdf import PdfReader
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.console import audit, busaccess, deadletters, redact, requests
from services.console import slo as sli
from services.console.health import stack_health
from services.console.monitoring import active_alerts, monitor_url
from services.console.schedules import stack_view
from services.console.web import charts
from services.console.web.auth import (
    ROLES,
    LoginLimiter,
    Role,
    User,
    check_password,
    load_users,
    sso_user,
    users_file,
)
from services.console.web.downloads import Gone, byte_range, open_artefact
from services.console.web.index import Filters, LedgerIndex, Row
from services.scheduler.state import pause, resume
from shared.adapters.ledger import PIPELINE, LedgerEntry, entry_as_dict
from shared.bus.names import SCHEDULES_BUCKET, STREAM
from shared.downloadlinks import (
    LinkRefused,
    console_secret,
    download_link,
    mint_token,
    verify_token,
)
from shared.errors import PressroomError
from shared.events import DeadLetter
from shared.observe.logging import get_logger
from shared.settings import Settings
from shared.templatename import canonical_template

log = get_logger("pressroom.console")
HERE = Path(__file__).parent
PAGE_SIZE = 50
SESSION_HOURS = 12
STATUSES = ("requested", "fetched", "rendered", "delivered", "failed", "conflict")
# The SLO view reads every ledger entry (as `pressroom slo` does): at 100,000 reports that is
# tens of seconds of CPU, so it is refreshed in the background at most every 10 minutes.
SLO_REFRESH = 600.0
SLO_WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


class Console:
    """What the routes share: settings, the bus, the ledger index, caches, the login limit."""

    def __init__(self, settings: Settings, bus: busaccess.Bus | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self.index = LedgerIndex()
        self.limiter = LoginLimiter()
        self.secret = console_secret(settings)
        self.users_path = users_file(settings)
        self._cache: dict[str, tuple[float, Any]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._refreshing: set[str] = set()

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


_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["when"] = _when
_env.filters["secs"] = _seconds


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    user = _user(request)
    context.setdefault("flash", request.session.pop("flash", None))
    body = _env.get_template(name).render(
        request=request,
        user=user,
        csrf_token=_csrf(request),
        may_act=bool(user and user.may("ops")),
        path=request.url.path,
        **context,
    )
    return HTMLResponse(body, status_code=status)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


# ---- sessions, users, CSRF -----------------------------------------------------------------
def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def _user(request: Request) -> User | None:
    name, role = request.session.get("user"), request.session.get("role")
    if not isinstance(name, str) or role not in ROLES:
        return None
    console: Console = request.app.state.console
    known = load_users(console.users_path).get(name)
    if known is None:  # removed (or its role changed) since it logged in
        return None
    return User(name, known[0])


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


async def _csrf_ok(request: Request) -> bool:
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
            user = _user(request)
            if user is None:
                if _wants_json(request) or request.method != "GET":
                    return JSONResponse({"error": "sign in first"}, status_code=401)
                return RedirectResponse(
                    f"/login?{urlencode({'next': request.url.path})}", status_code=303
                )
            if action and not await _csrf_ok(request):
                await _audit(request, "refused: no valid CSRF token", request.url.path, "403")
                return PlainTextResponse("refused: no valid CSRF token", status_code=403)
            if not user.may(role):
                if action:
                    await _audit(request, f"refused: needs {role}", request.url.path, "403")
                return PlainTextResponse(f"refused: this needs the {role} role", status_code=403)
            try:
                return await handler(request)
            except PressroomError as error:
                if _wants_json(request):
                    return JSONResponse({"error": error.reason}, status_code=400)
                return _page(request, "error.html", {"reason": error.reason}, status=400)
            except (NatsError, TimeoutError) as error:  # the bus is away: say so, in a page
                reason = f"NATS did not answer ({error or type(error).__name__}); try again"
                if _wants_json(request):
                    return JSONResponse({"error": reason}, status_code=503)
                return _page(request, "error.html", {"reason": reason}, status=503)

        return guarded

    return wrap


async def _audit(
    request: Request, action: str, target: str = "", outcome: str = "ok", who: str | None = None
) -> None:
    console: Console = request.app.state.console
    user = _user(request)
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
            source=f"console {_client(request)}",
        )
    except Exception as error:  # the action happened: say the trail missed it, loudly
        log.error("audit record not written", action=action, error=repr(error))


async def login_form(request: Request) -> Response:
    console: Console = request.app.state.console
    if _user(request) is not None:  # signed in already
        return RedirectResponse(_safe_next(request.query_params.get("next", "")), 303)
    return _page(
        request,
        "login.html",
        {
            "next": request.query_params.get("next", "/reports"),
            "sso": bool(console.settings.oidc_issuer),
            "error": "",
            "no_users": not load_users(console.users_path),
            "insecure": _plain_http(request),
        },
    )


def _plain_http(request: Request) -> bool:
    """Reached over plain HTTP from elsewhere than this machine: the browser will drop the
    Secure session cookie, so signing in cannot work (the page says so)."""
    host = request.url.hostname or ""
    return request.url.scheme == "http" and host not in ("127.0.0.1", "localhost", "::1")


def _safe_next(target: str) -> str:
    return target if target.startswith("/") and not target.startswith("//") else "/reports"


async def login(request: Request) -> Response:
    console: Console = request.app.state.console
    form = await request.form()
    name, password = str(form.get("username") or ""), str(form.get("password") or "")
    next_page = _safe_next(str(form.get("next") or "/reports"))
    context = {
        "next": next_page,
        "sso": bool(console.settings.oidc_issuer),
        "no_users": False,
        "insecure": _plain_http(request),
    }
    if not await _csrf_ok(request):
        return _page(
            request, "login.html", {**context, "error": "the form expired: try again"}, 403
        )
    wait = console.limiter.retry_after(_client(request), name)
    if wait:
        await _audit(request, "login refused: rate limit", name, "429", who=name or "?")
        response = _page(
            request,
            "login.html",
            {**context, "error": f"too many failed sign-ins: try again in {wait} s"},
            429,
        )
        response.headers["Retry-After"] = str(wait)
        return response
    user = await asyncio.to_thread(check_password, console.users_path, name, password)
    if user is None:
        console.limiter.failed(_client(request), name)
        await _audit(request, "login failed", name, "401", who=name or "?")
        return _page(
            request, "login.html", {**context, "error": "wrong user name or password"}, 401
        )
    _sign_in(request, user)
    await _audit(request, "login", user.name)
    return RedirectResponse(next_page, status_code=303)


def _sign_in(request: Request, user: User) -> None:
    request.session.clear()  # a fresh session (and CSRF token) at every sign-in
    request.session.update(
        {"user": user.name, "role": user.role, "csrf": secrets.token_urlsafe(32)}
    )


async def logout(request: Request) -> Response:
    if await _csrf_ok(request):
        await _audit(request, "logout")
        request.session.clear()
    return RedirectResponse("/login", status_code=303)


async def sso_start(request: Request) -> Response:
    console: Console = request.app.state.console
    client = request.app.state.oidc
    if client is None:
        return PlainTextResponse("single sign-on is not configured", status_code=404)
    redirect = (
        f"{(console.settings.public_url or str(request.base_url)).rstrip('/')}/login/sso/callback"
    )
    response: Response = await client.authorize_redirect(request, redirect)
    return response


async def sso_callback(request: Request) -> Response:
    console: Console = request.app.state.console
    client = request.app.state.oidc
    if client is None:
        return PlainTextResponse("single sign-on is not configured", status_code=404)
    try:
        token = await client.authorize_access_token(request)
    except Exception as error:  # authlib's OAuthError and friends: one line, back to login
        await _audit(request, "sso login failed", str(error)[:200], "401", who="?")
        return RedirectResponse("/login", status_code=303)
    claims = token.get("userinfo") or {}
    name = str(claims.get("email") or claims.get("preferred_username") or claims.get("sub") or "")
    user = sso_user(console.users_path, name)
    if user is None:
        await _audit(request, "sso login refused: not in the users file", name, "403", who=name)
        return PlainTextResponse(
            f"'{name}' signed in, but the console's users file does not name them", 403
        )
    _sign_in(request, user)
    await _audit(request, "login (sso)", name)
    return RedirectResponse("/reports", status_code=303)


# ---- reports -------------------------------------------------------------------------------
def _filters(request: Request) -> Filters:
    q = request.query_params

    def moment(name: str) -> datetime | None:
        text = q.get(name, "").strip()
        if not text:
            return None
        try:
            return requests.parse_since(text, name)
        except PressroomError:
            return None

    return Filters(
        status=q.get("status", "") if q.get("status", "") in STATUSES else "",
        template=q.get("template", "").strip(),
        requester=q.get("requester", "").strip(),
        schedule=q.get("schedule", "").strip(),
        since=moment("since"),
        until=moment("until"),
        q=q.get("q", "").strip(),
    )


def _row_dict(row: Row) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "status": row.status,
        "template": row.template,
        "requested_by": row.requested_by,
        "schedule": row.schedule or None,
        "requested_at": row.requested_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "error": row.error or None,
        "total_seconds": row.total_seconds,
    }


@page()
async def reports(request: Request) -> Response:
    console: Console = request.app.state.console
    filters = _filters(request)
    found = console.index.page(filters, request.query_params.get("cursor") or None, PAGE_SIZE)
    query = filters.query()
    if _wants_json(request):
        return JSONResponse(
            {
                "reports": [_row_dict(r) for r in found.rows],
                "next_cursor": found.next_cursor,
                "indexed": len(console.index),
                "loading": not console.index.loaded.is_set(),
            }
        )
    return _page(
        request,
        "reports.html",
        {
            "rows": found.rows,
            "filters": filters,
            "query": query,
            "first_page": not request.query_params.get("cursor"),
            "next_url": (
                f"/reports?{urlencode({**query, 'cursor': found.next_cursor})}"
                if found.next_cursor
                else None
            ),
            "stream_url": f"/reports/stream?{urlencode(query)}",
            "statuses": STATUSES,
            "templates": sorted(console.index.templates),
            "schedules": sorted(console.index.schedules),
            "indexed": len(console.index),
            "loading": not console.index.loaded.is_set(),
        },
    )


def _sse(event: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n"


@page()
async def reports_stream(request: Request) -> Response:
    """Server-sent events: each changed report that matches the page's filters, as the row
    the page shows (rendered here), for the page to put in place."""
    console: Console = request.app.state.console
    filters = _filters(request)
    row_template = _env.get_template("_row.html")

    async def events() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        with console.index.listen() as queue:
            while True:
                try:
                    row = await asyncio.wait_for(queue.get(), 15)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if filters.matches(row):
                    html = row_template.render(row=row)
                    payload = json.dumps({"id": row.request_id, "html": html})
                    yield _sse("row", payload)

    return StreamingResponse(events(), media_type="text/event-stream", headers=_NO_BUFFER)


_NO_BUFFER = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


async def _request_message(bus: busaccess.Bus, entry: LedgerEntry) -> tuple[dict[str, Any], str]:
    """The report.requested body and trace id of the generation the ledger records (from the
    stream, while it still holds it), or ({}, "")."""
    record = entry.stages.get("fetcher")
    if record is None:
        return {}, ""
    try:
        raw = await bus.js.get_msg(STREAM, record.seq)
        body = json.loads(raw.data or b"{}")
    except Exception:  # aged out of the stream, or not JSON: the page says it is not there
        return {}, ""
    if not isinstance(body, dict) or body.get("request_id") != entry.request_id:
        return {}, ""
    parent = (raw.headers or {}).get("traceparent", "")
    parts = parent.split("-")
    return body, parts[1] if len(parts) == 4 else ""


def _timeline(entry: LedgerEntry) -> list[dict[str, Any]]:
    """Queued, then each stage: attempts, reason, duration and the wait before it started."""
    steps: list[dict[str, Any]] = [
        {"name": "queued", "state": "done", "at": entry.requested_at, "seconds": None}
    ]
    previous = entry.requested_at
    for stage in PIPELINE:
        record = entry.stages.get(stage)
        if record is None:
            steps.append({"name": stage, "state": "waiting"})
            continue
        wait = (record.started_at - previous).total_seconds() if previous else None
        steps.append(
            {
                "name": stage,
                "state": record.state,
                "at": record.started_at,
                "finished": record.finished_at,
                "seconds": record.seconds,
                "wait": wait if wait is not None and wait >= 0 else None,
                "attempts": record.attempts,
                "error": record.error,
                "worker": record.worker,
            }
        )
        previous = record.finished_at or record.started_at
    return steps


@page()
async def report(request: Request) -> Response:
    console: Console = request.app.state.console
    bus = console.ready_bus()
    rid = request.path_params["rid"]
    user = _user(request)
    assert user is not None
    entry = await requests.ledger_entry(bus, rid)
    body, trace_id = await _request_message(bus, entry)
    # Bodies and delivery targets for ops only; secrets for nobody.
    shown = redact.redacted_json(body) if body and user.may("ops") else None
    channels = await requests.channel_outcomes(bus, rid)
    entry_shown = entry
    if not user.may("ops"):  # where a report went is for ops only
        channels = [c.model_copy(update={"target": "(ops only)"}) for c in channels]
        entry_shown = redact.redacted_entry(entry).model_copy(
            update={
                "channels": [c.model_copy(update={"target": "(ops only)"}) for c in entry.channels]
            }
        )
    letters = [
        r for r in await deadletters.dead_letters(bus) if r.letter.request_id == rid
    ]  # what replay would send back
    trace_link = (
        console.settings.trace_url.replace("{trace_id}", trace_id)
        if console.settings.trace_url and trace_id
        else None
    )
    if _wants_json(request):
        return JSONResponse(
            {
                "entry": entry_as_dict(entry_shown),
                "request": shown,
                "timeline": json.loads(json.dumps(_timeline(entry), default=str)),
                "deliveries": [c.model_dump(mode="json") for c in channels],
                "dead_letters": [r.summary() for r in letters],
                "trace_id": trace_id or None,
            }
        )
    where = requests.whereabouts(entry)
    return _page(
        request,
        "report.html",
        {
            "entry": entry_shown,
            "where": "" if where == entry.status else where,
            "request_json": json.dumps(shown, indent=2) if shown is not None else None,
            "timeline": _timeline(entry),
            "channels": channels,
            "letters": letters,
            "trace_id": trace_id,
            "trace_link": trace_link,
            "deliveries": (body.get("deliver") or []) if body else [],
        },
    )


@page()
async def report_stream(request: Request) -> Response:
    console: Console = request.app.state.console
    rid = request.path_params["rid"]

    async def events() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        with console.index.listen() as queue:
            while True:
                try:
                    row = await asyncio.wait_for(queue.get(), 15)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if row.request_id == rid:
                    yield _sse("changed", json.dumps({"status": row.status}))

    return StreamingResponse(events(), media_type="text/event-stream", headers=_NO_BUFFER)


async def _artefact_of(bus: busaccess.Bus, rid: str, fmt: str) -> Any:
    entry = await requests.ledger_entry(bus, rid)
    for artefact in entry.artefacts:
        if artefact.format == fmt:
            return artefact
    raise PressroomError(f"request '{rid}' has no {fmt} artefact")


@page()
async def report_download(request: Request) -> Response:
    """A download from the page: a short link of our own, the one way artefacts are served."""
    console: Console = request.app.state.console
    artefact = await _artefact_of(
        console.ready_bus(), request.path_params["rid"], request.path_params["fmt"]
    )
    token = mint_token(console.secret, artefact, datetime.now(UTC) + timedelta(minutes=5))
    return RedirectResponse(f"/a/{token}", status_code=303)


@page()
async def report_page_image(request: Request) -> Response:
    """Page N of the report's PDF as a PNG (poppler's pdftoppm, in a capped child process)."""
    console: Console = request.app.state.console
    bus = console.ready_bus()
    number = int(request.path_params["n"])
    tool = shutil.which("pdftoppm")
    if tool is None:
        return PlainTextResponse("page images need pdftoppm (Debian: poppler-utils)", 501)
    data = await requests.artefact_bytes(bus, request.path_params["rid"], "pdf")

    def draw() -> bytes:
        with tempfile.TemporaryDirectory() as folder:
            source = Path(folder) / "report.pdf"
            source.write_bytes(data)
            done = subprocess.run(
                [
                    tool,
                    "-png",
                    "-r",
                    "80",
                    "-f",
                    str(number),
                    "-l",
                    str(number),
                    "-singlefile",
                    str(source),
                    str(Path(folder) / "page"),
                ],
                capture_output=True,
                timeout=30,
                check=False,
            )
            image = Path(folder) / "page.png"
            if done.returncode != 0 or not image.is_file():
                raise PressroomError(f"the report has no page {number}")
            return image.read_bytes()

    png = await asyncio.to_thread(draw)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


@page()
async def report_pages(request: Request) -> Response:
    """The PDF's pages as images, one under the other (at most the first 50)."""
    console: Console = request.app.state.console
    rid = request.path_params["rid"]
    data = await requests.artefact_bytes(console.ready_bus(), rid, "pdf")
    try:
        count = len(PdfReader(io.BytesIO(data)).pages)
    except Exception as error:  # pypdf's many error types: the page says why
        raise PressroomError(f"the PDF of {rid} cannot be read: {error}") from None
    return _page(request, "pages.html", {"rid": rid, "count": count, "shown": min(count, 50)})


@page("ops", action=True)
async def report_redeliver(request: Request) -> Response:
    console: Console = request.app.state.console
    bus = console.ready_bus()
    rid = request.path_params["rid"]
    entry = await requests.ledger_entry(bus, rid)
    body, _ = await _request_message(bus, entry)
    deliveries = (body.get("deliver") if body else None) or console.settings.delivery_defaults
    results = await requests.deliver_again(bus, rid, list(deliveries))
    outcome = ", ".join(f"{r['channel']}: {'ok' if r['ok'] else r['detail']}" for r in results)
    await _audit(request, "re-deliver", rid, outcome)
    return _done(request, f"re-delivered {rid}: {outcome}", f"/reports/{rid}", results)


@page("ops", action=True)
async def report_replay(request: Request) -> Response:
    console: Console = request.app.state.console
    rid = request.path_params["rid"]
    done = await deadletters.replay_many(console.ready_bus(), [rid])
    await _audit(request, "replay", rid, f"{len(done)} dead letter(s)")
    return _done(request, f"replayed {len(done)} dead letter(s) of {rid}", f"/reports/{rid}", done)


def _done(request: Request, message: str, back: str, data: Any = None) -> Response:
    if _wants_json(request):
        return JSONResponse({"message": message, "result": data})
    request.session["flash"] = message
    return RedirectResponse(back, status_code=303)


# ---- dead letters --------------------------------------------------------------------------
def _letter_template(letter: DeadLetter) -> str:
    try:
        body = json.loads(letter.payload)
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    name = body.get("template") or (body.get("request") or {}).get("template") or ""
    return canonical_template(str(name)) if name else ""


def _letter_filter(request: Request | None, form: Any = None) -> dict[str, Any]:
    source = form if form is not None else (request.query_params if request else {})
    since = str(source.get("since") or "").strip()
    return {
        "stage": str(source.get("stage") or "").strip(),
        "reason": str(source.get("reason") or "").strip(),
        "template": str(source.get("template") or "").strip(),
        "since": since,
    }


def _letters_matching(
    records: list[deadletters.DeadLetterRecord], wanted: dict[str, Any]
) -> list[Any]:
    since = requests.parse_since(wanted["since"]) if wanted["since"] else None
    template = canonical_template(wanted["template"]) if wanted["template"] else ""
    return [
        r
        for r in records
        if (not wanted["stage"] or r.letter.stage == wanted["stage"])
        and (not wanted["reason"] or wanted["reason"].lower() in r.letter.reason.lower())
        and (not template or _letter_template(r.letter) == template)
        and (since is None or (r.time is not None and r.time >= since))
    ]


@page()
async def dead_letters(request: Request) -> Response:
    console: Console = request.app.state.console
    wanted = _letter_filter(request)
    records = list(reversed(await deadletters.dead_letters(console.ready_bus())))  # newest first
    shown = _letters_matching(records, wanted)
    if _wants_json(request):
        return JSONResponse({"dead_letters": [r.summary() for r in shown], "total": len(records)})
    return _page(
        request,
        "dead_letters.html",
        {
            "records": shown,
            "total": len(records),
            "wanted": wanted,
            "query": urlencode({k: v for k, v in wanted.items() if v}),
            "stages": sorted({r.letter.stage for r in records}),
            "template_of": _letter_template,
            "flash": request.session.pop("flash", None),
        },
    )


@page()
async def dead_letter(request: Request) -> Response:
    console: Console = request.app.state.console
    user = _user(request)
    assert user is not None
    record = await deadletters.dead_letter(console.ready_bus(), int(request.path_params["seq"]))
    if record is None:
        raise PressroomError(f"no dead letter {request.path_params['seq']} (replayed or purged?)")
    letter = redact.redacted_letter(record.letter)  # secrets never; the body for ops only
    try:
        body = json.dumps(json.loads(letter.payload), indent=2)
    except ValueError:
        body = letter.payload
    if not user.may("ops"):
        body = "(request bodies are shown to the ops role)"
    if _wants_json(request):
        return JSONResponse({**record.summary(), "body": body, "headers": letter.headers})
    return _page(request, "dead_letter.html", {"record": record, "letter": letter, "body": body})


@page("ops", action=True)
async def dead_letter_replay(request: Request) -> Response:
    console: Console = request.app.state.console
    seq = str(request.path_params["seq"])
    done = await deadletters.replay_many(console.ready_bus(), [seq])
    await _audit(request, "replay dead letter", seq, f"to {done[0]['subject']}")
    return _done(
        request, f"replayed dead letter {seq} to {done[0]['subject']}", "/dead-letters", done
    )


@page("ops", action=True)
async def dead_letters_replay(request: Request) -> Response:
    """Replay every dead letter the filters select; `dry_run` only says which."""
    console: Console = request.app.state.console
    bus = console.ready_bus()
    form = await request.form()
    wanted = _letter_filter(None, form)
    chosen = _letters_matching(await deadletters.dead_letters(bus), wanted)
    if form.get("dry_run"):
        return (
            _page(
                request,
                "dead_letters_confirm.html",
                {"records": chosen, "wanted": wanted, "verb": "replay", "dry_run": True},
            )
            if not _wants_json(request)
            else JSONResponse({"would_replay": [r.summary() for r in chosen]})
        )
    done = await deadletters.replay_many(bus, [str(r.id) for r in chosen]) if chosen else []
    await _audit(request, "replay dead letters", json.dumps(wanted), f"{len(done)} replayed")
    return _done(request, f"replayed {len(done)} dead letter(s)", "/dead-letters", done)


@page("ops", action=True)
async def dead_letters_purge(request: Request) -> Response:
    """Purge what the filters (or the ids given) select, once confirmed: the first POST shows
    what would go and asks again."""
    console: Console = request.app.state.console
    bus = console.ready_bus()
    form = await request.form()
    wanted = _letter_filter(None, form)
    ids = [str(i) for i in form.getlist("id") if str(i).isdigit()]
    records = await deadletters.dead_letters(bus)
    chosen = [r for r in records if str(r.id) in ids] if ids else _letters_matching(records, wanted)
    if form.get("confirm") != "yes":
        if _wants_json(request):
            return JSONResponse(
                {"would_purge": [r.summary() for r in chosen], "confirm": "send confirm=yes"}
            )
        return _page(
            request,
            "dead_letters_confirm.html",
            {"records": chosen, "wanted": wanted, "verb": "purge", "dry_run": False, "ids": ids},
        )
    removed = await deadletters.purge(bus, [str(r.id) for r in chosen]) if chosen else 0
    await _audit(request, "purge dead letters", ",".join(str(r.id) for r in chosen), f"{removed}")
    return _done(request, f"purged {removed} dead letter(s)", "/dead-letters", removed)


# ---- schedules -----------------------------------------------------------------------------
async def _schedule_view(console: Console) -> Any:
    return await asyncio.to_thread(stack_view, console.settings)


@page()
async def schedules(request: Request) -> Response:
    console: Console = request.app.state.console
    view = await _schedule_view(console)
    now = datetime.now(UTC)
    rows = []
    for schedule in view.schedules:
        last = console.index.page(Filters(schedule=schedule.name), None, 1).rows
        delivered = console.index.page(
            Filters(schedule=schedule.name, status="delivered"), None, 1
        ).rows
        rows.append(
            {
                "name": schedule.name,
                "cron": schedule.cron,
                "timezone": schedule.timezone,
                "template": schedule.request.get("template"),
                "enabled": schedule.enabled,
                "paused": schedule.name in view.paused,
                "next_fire": schedule.next_fire(now),
                "last": last[0] if last else None,
                "last_delivered": delivered[0] if delivered else None,
            }
        )
    if _wants_json(request):
        return JSONResponse(
            {
                "note": view.note,
                "schedules": [
                    {
                        **{k: v for k, v in r.items() if k not in ("last", "last_delivered")},
                        "next_fire": r["next_fire"].isoformat(),
                        "last": _row_dict(r["last"]) if r["last"] else None,
                        "last_delivered": (
                            r["last_delivered"].requested_at.isoformat()
                            if r["last_delivered"]
                            else None
                        ),
                    }
                    for r in rows
                ],
            }
        )
    return _page(
        request,
        "schedules.html",
        {"rows": rows, "note": view.note, "flash": request.session.pop("flash", None)},
    )


async def _schedule(console: Console, name: str) -> Any:
    view = await _schedule_view(console)
    if view.mismatch:
        raise PressroomError(view.mismatch)
    for schedule in view.schedules:
        if schedule.name == name:
            return schedule, view
    raise PressroomError(f"no schedule '{name}' in the stack's config")


@page("ops", action=True)
async def schedule_action(request: Request) -> Response:
    console: Console = request.app.state.console
    bus = console.ready_bus()
    name, verb = request.path_params["name"], request.path_params["verb"]
    schedule, _view = await _schedule(console, name)
    user = _user(request)
    assert user is not None
    kv = await bus.js.key_value(SCHEDULES_BUCKET)
    if verb == "run":
        fire = datetime.now(UTC).replace(second=0, microsecond=0)
        request_ = schedule.request_for(fire)
        await requests.submit(bus, request_, wait=False, timeout=0, schedule=schedule)
        message = f"fired {name} as {request_.request_id}"
    elif verb == "pause":
        await pause(kv, name, f"console {user.name}")
        message = f"paused {name}"
    elif verb == "resume":
        message = f"resumed {name}" if await resume(kv, name) else f"{name} was not paused"
    else:
        raise PressroomError(f"unknown action '{verb}' (run, pause, resume)")
    await _audit(request, f"schedule {verb}", name, message)
    return _done(request, message, "/schedules")


# ---- SLOs, health, audit -------------------------------------------------------------------
async def _slo_view(console: Console, window: str) -> dict[str, Any]:
    span = SLO_WINDOWS[window]
    entries = list(sli.in_window(await requests.ledger_entries(console.ready_bus()), span))
    rows = sli.objectives(entries, on_time_seconds=console.settings.schedule_on_time)
    # Burn rate: how fast the error budget goes (1 = exactly on budget over the window).
    finished = [e for e in sli.reports(entries) if e.status in ("delivered", "failed")]
    failed = sum(1 for e in finished if e.status == "failed")
    burn = (failed / len(finished)) / 0.01 if finished else None
    buckets = 24 if window == "24h" else (7 * 4 if window == "7d" else 30)
    start = datetime.now(UTC) - span
    step = span / buckets
    labels: list[str] = []
    success: list[float | None] = []
    p95: list[float | None] = []
    slots: list[list[LedgerEntry]] = [[] for _ in range(buckets)]
    for entry in finished:
        when = entry.requested_at or entry.updated_at
        at = int((when - start) / step)
        if 0 <= at < buckets:
            slots[at].append(entry)
    spelling = {"24h": "%H:%M", "7d": "%a %Hh"}.get(window, "%m-%d")
    for n, period in enumerate(slots):
        labels.append((start + step * n).strftime(spelling))
        ok = sum(1 for e in period if e.status == "delivered")
        success.append(ok / len(period) * 100 if period else None)
        totals = [t for e in period if (t := e.total_seconds) is not None]
        p95.append(sli.percentile(totals, 95))
    return {
        "window": window,
        "objectives": [r.as_dict() for r in rows],
        "burn_rate": burn,
        "computed_at": datetime.now(UTC).isoformat(),
        "series": {"labels": labels, "success": success, "p95": p95},
    }


@page()
async def slo(request: Request) -> Response:
    console: Console = request.app.state.console
    window = request.query_params.get("window", "7d")
    window = window if window in SLO_WINDOWS else "7d"
    view = await console.cached(f"slo:{window}", SLO_REFRESH, lambda: _slo_view(console, window))
    if _wants_json(request):
        return JSONResponse(view)
    series = view["series"]
    return _page(
        request,
        "slo.html",
        {
            "view": view,
            "windows": list(SLO_WINDOWS),
            "success_chart": charts.line(
                series["labels"], series["success"], "Success rate (%)", unit="%"
            ),
            "p95_chart": charts.line(
                series["labels"], series["p95"], "p95 generation time (s)", unit="s"
            ),
        },
    )


async def _health_view(console: Console) -> dict[str, Any]:
    registry = Path(console.settings.data_dir) / "workers.json"
    workers: dict[str, str] = {}
    if registry.is_file():
        with contextlib.suppress(ValueError, OSError):
            workers.update(json.loads(registry.read_text()))
    report_ = await stack_health(console.settings, workers)
    alerts: list[dict[str, Any]] | None = None
    alerts_note = ""
    try:
        url = monitor_url(None, console.settings.monitor_url, Path(console.settings.data_dir))
        alerts = [a.__dict__ for a in await active_alerts(url)]
    except PressroomError as error:
        alerts_note = error.reason
    return {**report_, "alerts": alerts, "alerts_note": alerts_note}


@page()
async def health(request: Request) -> Response:
    console: Console = request.app.state.console
    view = await console.cached("health", 5, lambda: _health_view(console))
    if _wants_json(request):
        return JSONResponse(json.loads(json.dumps(view, default=str)))
    return _page(request, "health.html", {"view": view})


@page()
async def audit_page(request: Request) -> Response:
    console: Console = request.app.state.console
    records = await audit.trail(console.ready_bus(), limit=500)
    if _wants_json(request):
        return JSONResponse({"audit": [r.as_dict() for r in records]})
    return _page(request, "audit.html", {"records": records})


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
        await _audit(request, "download refused", f"link {short}", f"403: {error.reason}", "link")
        return PlainTextResponse(f"refused: {error.reason}", status_code=403)
    try:
        stored = await open_artefact(console.ready_bus(), claim.key)
    except Gone:
        await _audit(request, "download refused", claim.key, "404: no longer stored", "link")
        return PlainTextResponse("this report is no longer stored", status_code=404)
    if stored.sha256 and stored.sha256 != claim.sha256:  # the same key, other content
        await _audit(request, "download refused", claim.key, "404: content changed", "link")
        return PlainTextResponse("this version of the report is no longer stored", 404)
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
    await _audit(request, "download", claim.key, f"{status} bytes {start}-{end}", "link")
    return StreamingResponse(
        stored.read(start, end), status_code=status, media_type=stored.content_type, headers=headers
    )


@page()
async def mint_link(request: Request) -> Response:
    """A link to share (PRESSROOM_PUBLIC_URL/a/…), valid 24 h: what `get --url` prints."""
    console: Console = request.app.state.console
    artefact = await _artefact_of(
        console.ready_bus(), request.path_params["rid"], request.path_params["fmt"]
    )
    link = download_link(console.settings, artefact, timedelta(hours=24))
    return JSONResponse({"url": link})


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
        ("/dead-letters/replay", dead_letters_replay),
        ("/dead-letters/purge", dead_letters_purge),
        ("/dead-letters/{seq:int}/replay", dead_letter_replay),
        ("/schedules/{name}/{verb}", schedule_action),
    ]
    routes: list[Any] = [
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


async def _prewarm(console: Console) -> None:
    """The SLO page's default view computed once the ledger is read, not on its first visit."""
    await console.index.loaded.wait()
    try:
        await console.cached("slo:7d", SLO_REFRESH, lambda: _slo_view(console, "7d"))
    except Exception as error:
        log.warning("SLO view not computed ahead", error=repr(error))


def create_app(settings: Settings, *, bus: busaccess.Bus | None = None) -> Starlette:
    """The console; without `bus` it opens its own (the ops identity) for its lifetime."""
    console = Console(settings, bus)
    session_key = hmac.new(console.secret, b"console-session", hashlib.sha256).hexdigest()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if console.bus is None:
                console.bus = await stack.enter_async_context(busaccess.open_bus(settings))
            tasks = [
                asyncio.create_task(console.index.follow(console.bus)),
                asyncio.create_task(_prewarm(console)),
            ]
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    app = Starlette(
        routes=_routes(),
        lifespan=lifespan,
        middleware=[
            Middleware(BaseHTTPMiddleware, dispatch=_security_headers),
            Middleware(
                SessionMiddleware,
                secret_key=session_key,
                session_cookie="pressroom_session",
                max_age=SESSION_HOURS * 3600,
                same_site="strict",
                https_only=True,
            ),
        ],
    )
    app.state.console = console
    app.state.oidc = _oidc(settings)
    return app


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
