"""Gather every source a request names, concurrently, into one template context."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from services.fetcher.sources import DataSource
from shared.errors import PermanentError, PressroomError, TransientError
from shared.events import DataReady, ReportRequested, Source
from shared.settings import Settings
from shared.store import ArtefactStore


async def _one(source: Source, adapters: Mapping[str, DataSource], settings: Settings) -> Any:
    adapter = adapters.get(source.kind)
    if adapter is None:
        known = ", ".join(sorted(adapters))
        raise PermanentError(
            f"source '{source.name}': unknown kind '{source.kind}' (known: {known})"
        )
    try:
        return await asyncio.wait_for(adapter.fetch(source, settings), settings.fetch_timeout)
    except TimeoutError:
        raise TransientError(
            f"source '{source.name}' timed out after {settings.fetch_timeout:g}s"
        ) from None


async def gather_context(
    request: ReportRequested, adapters: Mapping[str, DataSource], settings: Settings
) -> dict[str, Any]:
    """Each source's result under its name, then inline params over them (last wins)."""
    names = [s.name for s in request.sources]
    if len(set(names)) != len(names):
        raise PermanentError(f"source names must be unique, got {names}")
    tasks = [_one(s, adapters, settings) for s in request.sources]
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
        raise TransientError("; ".join(reasons))
    context: dict[str, Any] = dict(zip(names, results, strict=True))
    context.update(request.params)
    return context


async def fetch_data(
    request: ReportRequested,
    *,
    adapters: Mapping[str, DataSource],
    store: ArtefactStore,
    settings: Settings,
) -> DataReady:
    started = time.monotonic()
    context = await gather_context(request, adapters, settings)
    elapsed = time.monotonic() - started
    encoded = json.dumps(context, default=str).encode()
    if len(encoded) <= settings.inline_context_limit:
        return DataReady(request=request, context=context, fetch_seconds=elapsed)
    # Too big for a NATS message: park it in the store and pass the key (claim check).
    key = f"contexts/{request.request_id}.json"
    await store.put(key, encoded, content_type="application/json")
    return DataReady(request=request, context_ref=key, fetch_seconds=elapsed)
