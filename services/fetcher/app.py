"""The fetcher service: report.requested → data.ready."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from faststream import FastStream

from services.fetcher.cache import SourceCache
from services.fetcher.core import fetch_data
from services.fetcher.sources import DataSource, default_sources
from shared.bus.topology import CACHE_BUCKET, FETCHER
from shared.events import Event, ReportRequested
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
            return await fetch_data(
                event, adapters=adapters, store=deps.store, settings=settings, cache=cache
            )

        return work

    schedules = load_schedules(settings.schedules)

    async def admit(event: Event) -> None:
        assert isinstance(event, ReportRequested)
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
