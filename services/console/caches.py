"""The fetch cache and the render cache as an operator sees them: what is kept, and clearing
it (the legacy runbook's "clear specific cache patterns")."""

from __future__ import annotations

import json
import time
from contextlib import suppress
from dataclasses import dataclass

from nats.js.errors import NotFoundError

from services.console.busaccess import Bus
from shared.bus.names import CACHE_BUCKET, RENDER_CACHE_BUCKET
from shared.bus.topology import kv_snapshot


@dataclass(frozen=True)
class CachedSource:
    """One fetch-cache entry: a source's answer, kept for the requests that allow it."""

    key: str
    source: str  # the request's name for it ("?" for an entry written before names were kept)
    config_source: str
    age_seconds: float | None
    size: int

    def named(self, name: str) -> bool:
        return name in (self.source, self.config_source)


async def cached_sources(bus: Bus) -> list[CachedSource]:
    """Every entry of the fetch cache, newest first."""
    rows = []
    now = time.time()
    for key, value in (await kv_snapshot(bus.js, CACHE_BUCKET)).items():
        try:
            record = json.loads(value)
            stored_at = float(record["stored_at"])
            names = (str(record.get("source") or "?"), str(record.get("config_source") or ""))
        except (ValueError, TypeError, KeyError):  # not a cache record: shown, and clearable
            stored_at, names = float("nan"), ("?", "")
        age = now - stored_at if stored_at == stored_at else None
        rows.append(CachedSource(key, *names, age_seconds=age, size=len(value)))
    return sorted(rows, key=lambda r: (r.age_seconds is None, r.age_seconds or 0.0))


async def rendered_entries(bus: Bus) -> int:
    """Reports the render cache holds (none when the renderers run without it)."""
    try:
        info = await bus.js.stream_info(f"KV_{RENDER_CACHE_BUCKET}")
    except NotFoundError:
        return 0
    return int(info.state.messages)


async def clear_sources(bus: Bus, names: list[str] | None) -> tuple[list[CachedSource], list[str]]:
    """Remove the fetch-cache entries of the sources named, or every entry (None); the next
    request fetches afresh. An entry goes when the names stored with it match (the request's
    name for a source, or the config-file source it named), and so does the entry of every
    config-file or schedule source called that (`sources test`'s names): another request may
    have written that entry last, under a name of its own. Returns the entries cleared and the
    names that had none."""
    entries = await cached_sources(bus)
    if names is None:
        await bus.js.purge_stream(f"KV_{CACHE_BUCKET}")
        return entries, []
    keys = _keys_of(bus, names)

    def of(name: str, row: CachedSource) -> bool:
        return row.named(name) or row.key in keys.get(name, set())

    cleared = [r for r in entries if any(of(name, r) for name in names)]
    kv = await bus.js.key_value(CACHE_BUCKET)
    for row in cleared:
        await kv.purge(row.key)
    return cleared, [n for n in names if not any(of(n, r) for r in cleared)]


def _keys_of(bus: Bus, names: list[str]) -> dict[str, set[str]]:
    """The cache keys of the configured and scheduled sources called each of `names`."""
    # Imported here: the fetcher's modules cost `cache ls` its start-up time.
    from services.console.probes import matching_sources, testable_sources
    from services.fetcher.access import expand_named
    from services.fetcher.cache import cache_key
    from shared.errors import PressroomError

    keys: dict[str, set[str]] = {}
    sources = testable_sources(bus.settings)  # the schedules' requests built once
    for name in names:
        try:
            matches = matching_sources(bus.settings, name, sources)
        except PressroomError:  # no such source: only the names stored with entries count
            continue
        for _, source in matches.values():
            with suppress(PressroomError):
                keys.setdefault(name, set()).add(cache_key(expand_named(source, bus.settings)[0]))
    return keys


async def clear_renders(bus: Bus) -> int:
    """Empty the render cache: every report renders afresh, even a redelivered one."""
    kept = await rendered_entries(bus)
    if kept:
        await bus.js.purge_stream(f"KV_{RENDER_CACHE_BUCKET}")
    return kept
