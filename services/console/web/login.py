"""Signing in and out: the users file (argon2 hashes) with a login rate limit, or single
sign-on (OpenID Connect through authlib)."""

from __future__ import annotations

import asyncio
import secrets

from starlette.requests import Request
from starlette.responses import (
    RedirectResponse,
    Response,
)

from services.console.web.auth import (
    User,
    check_password,
    load_users,
    sso_user,
)
from services.console.web.kit import (
    Console,
    audit_action,
    client_address,
    csrf_ok,
    current_user,
    plain_loopback,
    refusal,
    render_page,
)


async def login_form(request: Request) -> Response:
    console: Console = request.app.state.console
    if current_user(request) is not None:  # signed in already
        return RedirectResponse(_safe_next(request.query_params.get("next", "")), 303)
    return render_page(
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
    return request.url.scheme == "http" and not plain_loopback(request.url, request.headers)


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
    if not await csrf_ok(request):
        return render_page(
            request, "login.html", {**context, "error": "the form expired: try again"}, 403
        )
    wait = console.limiter.retry_after(client_address(request), name)
    if wait:
        await audit_action(request, "login refused: rate limit", name, "429", who=name or "?")
        response = render_page(
            request,
            "login.html",
            {**context, "error": f"too many failed sign-ins: try again in {wait} s"},
            429,
        )
        response.headers["Retry-After"] = str(wait)
        return response
    user = await asyncio.to_thread(check_password, console.users_path, name, password)
    if user is None:
        console.limiter.failed(client_address(request), name)
        await audit_action(request, "login failed", name, "401", who=name or "?")
        return render_page(
            request, "login.html", {**context, "error": "wrong user name or password"}, 401
        )
    _sign_in(request, user)
    await audit_action(request, "login", user.name)
    return RedirectResponse(next_page, status_code=303)


def _sign_in(request: Request, user: User) -> None:
    request.session.clear()  # a fresh session (and CSRF token) at every sign-in
    request.session.update(
        {"user": user.name, "role": user.role, "csrf": secrets.token_urlsafe(32)}
    )


async def logout(request: Request) -> Response:
    if await csrf_ok(request):
        await audit_action(request, "logout")
        request.session.clear()
    return RedirectResponse("/login", status_code=303)


async def sso_start(request: Request) -> Response:
    console: Console = request.app.state.console
    client = request.app.state.oidc
    if client is None:
        return refusal(request, "single sign-on is not configured", 404, "Not found")
    redirect = (
        f"{(console.settings.public_url or str(request.base_url)).rstrip('/')}/login/sso/callback"
    )
    response: Response = await client.authorize_redirect(request, redirect)
    return response


async def sso_callback(request: Request) -> Response:
    console: Console = request.app.state.console
    client = request.app.state.oidc
    if client is None:
        return refusal(request, "single sign-on is not configured", 404, "Not found")
    try:
        token = await client.authorize_access_token(request)
    except Exception as error:  # authlib's OAuthError and friends: one line, back to login
        await audit_action(request, "sso login failed", str(error)[:200], "401", who="?")
        return RedirectResponse("/login", status_code=303)
    claims = token.get("userinfo") or {}
    name = str(claims.get("email") or claims.get("preferred_username") or claims.get("sub") or "")
    user = sso_user(console.users_path, name)
    if user is None:
        await audit_action(
            request, "sso login refused: not in the users file", name, "403", who=name
        )
        return refusal(
            request, f"'{name}' signed in, but the console's users file does not name them"
        )
    _sign_in(request, user)
    await audit_action(request, "login (sso)", name)
    return RedirectResponse("/reports", status_code=303)
