"""Gather every source a request names, concurrently, into one template context."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.fetcher.access import check_available, check_file_path, expand_named
from services.fetcher.cache import SourceCache, ttl_for
from services.fetcher.sources import DataSource
from shared.adapters.store import ArtefactStore, context_key
from shared.errors import PermanentError, PressroomError, TransientError
from shared.events import DataReady, ReportRequested, Source, utcnow
from shared.lanes import rows_estimate
from shared.metrics import fetch_outcome, source_fetched
from shared.observe.telemetry import span
from shared.settings import Settings

MAX_CONCURRENT_SOURCES = 8  # per request: a wide request does not crowd out the others


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    # When each source's data was fetched (not for cache hits): the PDF/A provenance says so.
    fetched: dict[str, datetime] = field(default_factory=dict)


async def _one(
    source: Source,
    adapters: Mapping[str, DataSource],
    settings: Settings,
    request: ReportRequested,
    cache: SourceCache | None,
    stats: CacheStats,
) -> Any:
    try:
        return await _one_named(source, adapters, settings, request, cache, stats)
    except PressroomError as error:
        error.reason = as_spelled(error.reason, source)
        error.args = (error.reason,)
        raise


def as_spelled(reason: str, source: Source) -> str:
    """A source's error names it as the request spelled it: a config-file source by its
    config name (`portfolio-prs`, not the variable `portfolio_prs` made of it), and under
    another variable name by both."""
    if not source.source or source.source == source.name:
        return reason
    spelled = (
        f"source '{source.source}'"
        if re.sub(r"\W", "_", source.source) == source.name
        else f"source '{source.name}' (config source '{source.source}')"
    )
    return reason.replace(f"source '{source.name}'", spelled)


async def _one_named(
    source: Source,
    adapters: Mapping[str, DataSource],
    settings: Settings,
    request: ReportRequested,
    cache: SourceCache | None,
    stats: CacheStats,
) -> Any:
    named = source.source  # the config-file source it names (gone once expanded)
    # Another calling system's credentials or named source: refused before the cache and
    # before anything is sent. A calling system's answers are cached for it alone: the same
    # spec written into its request must not read what the operator's named source (or
    # another system) fetched — the cache is looked at before the allow-list (a review).
    source, configured = expand_named(source, settings, tenant=request.tenant)
    check_available(source, settings, request.tenant)
    check_file_path(source, settings, request.tenant, configured)
    scope = request.tenant
    ttl = ttl_for(source, request, settings) if cache is not None else None
    if cache is not None and ttl is not None:
        hit, data = await cache.get(source, ttl, scope=scope)
        if hit:
            stats.hits += 1
            return data
        stats.misses += 1
    with span(
        f"source {source.name}", request.request_id, **{"pressroom.source.kind": source.kind}
    ):
        started, failure = time.monotonic(), None
        try:
            data = await _fetch(source, adapters, settings, configured=configured)
            stats.fetched[source.name] = utcnow()
        except BaseException as error:
            failure = error
            raise
        finally:
            with suppress(Exception):  # metrics must never break a fetch
                seconds = time.monotonic() - started
                # Labelled by the config-file source it names, if any (whatever a request
                # calls it: `pressroom sources test <label>` then reaches it), else its own
                # name (known for schedules' sources; any other is `other`).
                label = named or source.name
                source_fetched(label, source.kind, fetch_outcome(failure), seconds)
    if cache is not None and ttl is not None:
        await cache.put(source, data, named=named, scope=scope)
    return data


async def _fetch(
    source: Source, adapters: Mapping[str, DataSource], settings: Settings, *, configured: bool
) -> Any:
    adapter = adapters.get(source.kind)
    if adapter is None:
        known = ", ".join(sorted(adapters))
        raise PermanentError(
            f"source '{source.name}': unknown kind '{source.kind}' (known: {known})"
        )
    try:
        return await asyncio.wait_for(
            adapter.fetch(source, settings, configured=configured), settings.fetch_timeout
        )
    except TimeoutError:
        raise TransientError(
            f"source '{source.name}' timed out after {settings.fetch_timeout:g}s"
        ) from None


async def gather_context(
    request: ReportRequested,
    adapters: Mapping[str, DataSource],
    settings: Settings,
    cache: SourceCache | None = None,
    stats: CacheStats | None = None,
) -> dict[str, Any]:
    """Each source's result under its name, then inline params over them (last wins)."""
    names = [s.name for s in request.sources]
    if len(set(names)) != len(names):
        raise PermanentError(f"source names must be unique, got {names}")
    stats = stats if stats is not None else CacheStats()
    gate = asyncio.Semaphore(MAX_CONCURRENT_SOURCES)

    async def bounded(source: Source) -> Any:
        async with gate:
            return await _one(source, adapters, settings, request, cache, stats)

    tasks = [bounded(s) for s in request.sources]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*tasks, return_exceptions=True), settings.fetch_deadline
        )
    except TimeoutError:
        raise TransientError(
            f"sources did not all answer within the {settings.fetch_deadline:g}s deadline"
        ) from None
    errors = [r for r in results if isinstance(r, BaseException)]
    permanent = [e for e in errors if isinstance(e, PermanentError)]
    if permanent:
        raise PermanentError("; ".join(e.reason for e in permanent))
    if errors:
        reasons = [e.reason if isinstance(e, PressroomError) else repr(e) for e in errors]
        transient = TransientError("; ".join(reasons))
        waits = [e.retry_after for e in errors if isinstance(e, TransientError) and e.retry_after]
        transient.retry_after = max(waits) if waits else None
        raise transient
    context: dict[str, Any] = {}
    for source, result in zip(request.sources, results, strict=True):
        context[source.name] = result
        # `merge: true` also spreads a mapping's keys into the top level (a data file of params).
        if (source.model_extra or {}).get("merge") and isinstance(result, dict):
            context.update(result)
    context.update(request.params)
    return context


async def fetch_data(
    request: ReportRequested,
    *,
    adapters: Mapping[str, DataSource],
    store: ArtefactStore,
    settings: Settings,
    cache: SourceCache | None = None,
    context: dict[str, Any] | None = None,
) -> DataReady:
    """`context`: the data already gathered (a schedule's run checked it was not empty)."""
    started = time.monotonic()
    stats = CacheStats()
    if context is None:
        context = await gather_context(request, adapters, settings, cache, stats)
    elapsed = time.monotonic() - started
    encoded = json.dumps(context, default=str).encode()
    # A big report renders for long: in the bulk lane, not ahead of everyone's small ones —
    # many rows, or much data in few (one long text lays out as long as thousands of rows).
    big = (settings.bulk_rows and rows_estimate(context) >= settings.bulk_rows) or (
        settings.bulk_bytes and len(encoded) >= settings.bulk_bytes
    )
    if big and request.priority != "bulk":
        request = request.model_copy(update={"priority": "bulk"})
    counts: dict[str, Any] = {
        "cache_hits": stats.hits,
        "cache_misses": stats.misses,
        "fetch_seconds": elapsed,
        "fetched_at": stats.fetched,
    }
    if len(encoded) <= settings.inline_context_limit:
        return DataReady(request=request, context=context, **counts)
    # Too big for a NATS message: park it in the store and pass the key (claim check).
    key = context_key(request.request_id)
    await store.put(key, encoded, content_type="application/json")
    return DataReady(request=request, context_ref=key, **counts)
