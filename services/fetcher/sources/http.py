"""`http` sources: a JSON GET, with credentials referenced by name from the config file."""

from __future__ import annotations

from typing import Any

import httpx

from shared.errors import PermanentError, TransientError
from shared.events import Source
from shared.settings import Settings

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def credentials_for(
    source: Source, settings: Settings, *, default: str | None = None
) -> dict[str, Any]:
    """Credentials named by the source (`credentials: NAME`) from the config file, never inline."""
    name = (source.model_extra or {}).get("credentials")
    if not name:
        return dict(settings.source_credentials.get(default, {})) if default else {}
    if name not in settings.source_credentials:
        known = ", ".join(sorted(settings.source_credentials)) or "none configured"
        raise PermanentError(
            f"source '{source.name}': unknown credentials '{name}' (known: {known})"
        )
    return dict(settings.source_credentials[name])


async def get_json(
    source: Source,
    url: str,
    *,
    settings: Settings,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    error_body: bool = False,
) -> httpx.Response:
    """GET `url`; map network errors and status codes to transient or permanent errors."""
    try:
        async with httpx.AsyncClient(
            timeout=settings.fetch_timeout, follow_redirects=True, transport=transport
        ) as client:
            response = await client.get(url, params=params, headers=headers)
    except httpx.TimeoutException:
        raise TransientError(
            f"source '{source.name}': {url} timed out after {settings.fetch_timeout:g}s"
        ) from None
    except httpx.TransportError as error:
        raise TransientError(f"source '{source.name}': cannot reach {url}: {error}") from None
    code = response.status_code
    if code in RETRYABLE_STATUS:
        transient = TransientError(f"source '{source.name}': {url} answered {code}")
        retry_after = response.headers.get("retry-after", "")
        if retry_after.isdigit():
            transient.retry_after = float(retry_after)
        raise transient
    if code >= 400 and not (error_body and code in (400, 422)):
        raise PermanentError(f"source '{source.name}': {url} answered {code}")
    return response


def parse_json(source: Source, response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise PermanentError(
            f"source '{source.name}': {response.request.url} did not return JSON"
        ) from None


class HttpSource:
    async def fetch(self, source: Source, settings: Settings) -> Any:
        extra = source.model_extra or {}
        url = extra.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise PermanentError(f"source '{source.name}': `url` must be an http(s) URL")
        creds = credentials_for(source, settings)
        headers = {**dict(extra.get("headers") or {}), **dict(creds.get("headers") or {})}
        if token := creds.get("token"):
            headers.setdefault("Authorization", f"Bearer {token}")
        response = await get_json(
            source, url, settings=settings, params=extra.get("params"), headers=headers
        )
        return parse_json(source, response)
