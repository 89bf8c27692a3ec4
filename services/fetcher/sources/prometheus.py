"""`prometheus` sources: instant or range queries; the template gets the API's `data.result`."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from services.fetcher.access import credential_for, destination, get_json
from shared.errors import PermanentError
from shared.events import Source
from shared.settings import Settings

_RELATIVE = re.compile(r"^(now)?-(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def to_timestamp(value: Any, *, now: float | None = None) -> float:
    """`now`, `-1h` (relative), a unix timestamp or an RFC 3339 time."""
    now = time.time() if now is None else now
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text == "now":
        return now
    if match := _RELATIVE.match(text):
        return now - int(match.group(2)) * _UNITS[match.group(3)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise PermanentError(
            f"cannot read time '{value}' (use now, -1h, unix or RFC 3339)"
        ) from None


class PrometheusSource:
    async def fetch(self, source: Source, settings: Settings, *, configured: bool = False) -> Any:
        extra = source.model_extra or {}
        given = extra.get("url")
        base = str(given or settings.prometheus_url or "").rstrip("/")
        if not base:
            raise PermanentError(
                f"source '{source.name}': no Prometheus URL (set `url` or PRESSROOM_PROMETHEUS_URL)"
            )
        query = extra.get("query")
        if not isinstance(query, str) or not query:
            raise PermanentError(f"source '{source.name}': a prometheus source needs a `query`")
        params: dict[str, Any] = {"query": query}
        if "start" in extra or "end" in extra:
            endpoint = "/api/v1/query_range"
            params["start"] = to_timestamp(extra.get("start", "-1h"))
            params["end"] = to_timestamp(extra.get("end", "now"))
            params["step"] = extra.get("step", "60s")
        else:
            endpoint = "/api/v1/query"
            if "time" in extra:
                params["time"] = to_timestamp(extra["time"])
        credential = credential_for(source, settings)
        # PRESSROOM_PROMETHEUS_URL is the operator's; a request's own `url` is checked.
        target = await destination(
            base + endpoint,
            source,
            settings,
            configured=configured or not given,
            credential=credential,
        )
        body, _ = await get_json(
            source, target, settings=settings, credential=credential, params=params, error_body=True
        )
        if not isinstance(body, dict) or body.get("status") != "success":
            raise PermanentError(
                f"source '{source.name}': Prometheus refused the query: "
                f"{body.get('errorType', '')} {body.get('error', '')}".strip()
            )
        try:
            return body["data"]["result"]
        except (KeyError, TypeError):
            raise PermanentError(
                f"source '{source.name}': Prometheus answered without data"
            ) from None
