"""`http` sources: a JSON GET, with credentials referenced by name from the config file."""

from __future__ import annotations

from typing import Any

import httpx

from shared.errors import PermanentError, TransientError
from shared.events import Source
from shared.settings import Settings

RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


def _credentials(source: Source, settings: Settings) -> dict[str, Any]:
    name = getattr(source, "credentials", None)
    if not name:
        return {}
    if name not in settings.source_credentials:
        raise PermanentError(f"source '{source.name}': unknown credentials '{name}' in config")
    return dict(settings.source_credentials[name])


async def get_json(
    source: Source,
    url: str,
    *,
    settings: Settings,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
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
    if response.status_code in RETRYABLE_STATUS:
        raise TransientError(f"source '{source.name}': {url} answered {response.status_code}")
    if response.status_code >= 400:
        raise PermanentError(f"source '{source.name}': {url} answered {response.status_code}")
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
        creds = _credentials(source, settings)
        headers = {**dict(extra.get("headers") or {}), **dict(creds.get("headers") or {})}
        if token := creds.get("token"):
            headers.setdefault("Authorization", f"Bearer {token}")
        response = await get_json(
            source, url, settings=settings, params=extra.get("params"), headers=headers
        )
        return parse_json(source, response)
