"""The fetcher service: report.requested → data.ready."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from faststream import FastStream

from services.fetcher.burst import fan_out
from services.fetcher.cache import SourceCache
from services.fetcher.core import fetch_data, gather_context
from services.fetcher.sources import DataSource, default_sources
from shared.adapters.cancel import skip
from shared.bus.names import CACHE_BUCKET, FETCHER
from shared.errors import PermanentError
from shared.events import Event, ReportRequested, RunSkipped
from shared.firing import empty_reason
from shared.schedules import check_not_forged, load_schedules
from shared.settings import Settings, load_settings
from shared.stage.app import Deps, Work, stage_app


@dataclass
class FetcherDeps(Deps):
    """The fetcher's adapters: one data source per kind (default: services/fetcher/sources)."""

    sources: Mapping[str, DataSource] | None = None


def create_app(settings: Settings | None = None, *, deps: FetcherDeps | None = None) -> FastStream:
    settings = settings or load_settings()
    deps = deps or FetcherDeps()

    async def build(deps: FetcherDeps) -> Work:
        adapters = deps.sources or default_sources()
        kv = deps.kv.get(CACHE_BUCKET)
        cache = SourceCache(kv) if kv is not None else None

        async def work(event: Event) -> Event:
            assert isinstance(event, ReportRequested) and deps.store is not None
            if event.burst is not None:  # the data once, then one child per item
                assert deps.ledger is not None and deps.publisher is not None
                started = time.monotonic()
                data = await gather_context(event, adapters, settings, cache)
                return await fan_out(
                    event,
                    data,
                    ledger=deps.ledger,
                    publisher=deps.publisher,
                    store=deps.store,
                    settings=settings,
                    fetch_seconds=time.monotonic() - started,
                )
            context: dict[str, Any] | None = None
            if event.skip_if_empty is not None:  # a schedule's run with nothing to say
                assert deps.ledger is not None
                context = await gather_context(event, adapters, settings, cache)
                reason = empty_reason(context, event.skip_if_empty)
                if reason is not None:
                    await deps.ledger.update(event.request_id, skip(reason), event)
                    return RunSkipped(request=event, reason=reason)
            return await fetch_data(
                event,
                adapters=adapters,
                store=deps.store,
                settings=settings,
                cache=cache,
                context=context,
            )

        return work

    schedules = load_schedules(settings.schedules)

    async def admit(event: Event) -> None:
        assert isinstance(event, ReportRequested)
        if event.parent is not None:
            raise PermanentError(
                f"request '{event.request_id}' names a parent: only Pressroom makes a burst's "
                "children (request ids with '/' are theirs)"
            )
        check_not_forged(event, schedules)

    return stage_app(
        FETCHER,
        ReportRequested,
        settings,
        deps,
        build_work=build,
        buckets=[CACHE_BUCKET],
        admit=admit,
        in_flight=settings.fetch_concurrency,  # a slow source holds one request, not all
    )
