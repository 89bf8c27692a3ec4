"""`http` sources: a JSON GET from an allowed URL, with credentials bound to their origins."""

from __future__ import annotations

from typing import Any

from services.fetcher.access import credential_base, credential_for, destination, get_json
from shared.errors import PermanentError
from shared.events import Source
from shared.settings import Settings

# Headers the HTTP layer sets itself: a request setting them would smuggle or confuse.
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer"}
)


class HttpSource:
    async def fetch(self, source: Source, settings: Settings, *, configured: bool = False) -> Any:
        extra = source.model_extra or {}
        credential = credential_for(source, settings)
        url = extra.get("url") or credential_base(credential)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise PermanentError(f"source '{source.name}': `url` must be an http(s) URL")
        target = await destination(
            url, source, settings, configured=configured, credential=credential
        )
        headers = {str(k): str(v) for k, v in dict(extra.get("headers") or {}).items()}
        reserved = sorted(k for k in headers if k.lower() in RESERVED_HEADERS)
        if reserved:
            raise PermanentError(
                f"source '{source.name}': header(s) {', '.join(reserved)} may not be set"
            )
        data, _ = await get_json(
            source,
            target,
            settings=settings,
            credential=credential,
            params=extra.get("params"),
            headers=headers,
        )
        return data
