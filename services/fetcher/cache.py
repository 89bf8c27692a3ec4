"""The per-source fetch cache (JetStream KV): opt-in per source (`cache: SECONDS`) or request."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from nats.js.errors import KeyNotFoundError

from shared.bus.kv import KeyValue
from shared.events import ReportRequested, Source
from shared.observe.logging import get_logger
from shared.settings import Settings

log = get_logger("pressroom.fetcher.cache")
MAX_CACHED_BYTES = 900 * 1024  # KV values are capped by max_payload (1 MB)


def cache_key(source: Source, scope: str | None = None) -> str:
    """The key of a source's answer: a hash of its whole spec and, for a calling system's
    request, of that system (`scope`): one calling system's answer is never another's, nor
    is the operator's."""
    spec = source.model_dump(mode="json", exclude={"name", "cache"})
    spec.pop("cache", None)
    keyed: dict[str, Any] = spec if scope is None else {"spec": spec, "tenant": scope}
    digest = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()
    return f"{source.kind}.{digest[:40]}"


def ttl_for(source: Source, request: ReportRequested, settings: Settings) -> float | None:
    """Seconds the source may be served from cache, or None when caching is off for it."""
    setting = (source.model_extra or {}).get("cache")
    if setting is False:
        return None
    if isinstance(setting, int | float) and not isinstance(setting, bool) and setting > 0:
        return float(setting)
    if setting is True or request.use_cache:
        return settings.cache_ttl
    return None


@dataclass
class SourceCache:
    kv: KeyValue

    async def get(
        self, source: Source, ttl: float, *, scope: str | None = None
    ) -> tuple[bool, Any]:
        try:
            entry = await self.kv.get(cache_key(source, scope))
        except KeyNotFoundError:
            return False, None
        if not entry.value:
            return False, None
        try:
            stored = json.loads(entry.value)
            age = time.time() - float(stored["stored_at"])
            data = stored["data"]
        except (ValueError, TypeError, KeyError) as error:
            # Not a cache record (something else wrote the key): a miss, fetched afresh and
            # overwritten, never a failed request.
            log.warning(
                "unreadable fetch cache entry ignored",
                source=source.name,
                key=cache_key(source, scope),
                why=repr(error)[:200],
            )
            return False, None
        if age > ttl:
            return False, None
        return True, data

    async def put(
        self, source: Source, data: Any, *, named: str | None = None, scope: str | None = None
    ) -> None:
        # The names go with the data — the request's name for it and the config-file source
        # it named (`named`) — so `pressroom cache ls` and `cache clear NAME` find it (the
        # key is a hash of the source's whole spec).
        names = {"source": source.name, **({"config_source": named} if named else {})}
        record = {"stored_at": time.time(), **names, "data": data}
        value = json.dumps(record, default=str).encode()
        if len(value) <= MAX_CACHED_BYTES:
            await self.kv.put(cache_key(source, scope), value)
