"""The fetcher service: report.requested → data.ready."""

from __future__ import annotations

from collections.abc import Mapping

from faststream import FastStream

from services.fetcher.cache import SourceCache
from services.fetcher.core import fetch_data
from services.fetcher.sources import DataSource, default_sources
from services.scheduler.cron import check_not_forged, load_schedules
from shared.bus import FETCHER
from shared.events import Event, ReportRequested
from shared.service import Deps, Work, stage_app
from shared.settings import Settings, load_settings


def create_app(settings: Settings | None = None, *, deps: Deps | None = None) -> FastStream:
    settings = settings or load_settings()
    deps = deps or Deps()

    async def build(deps: Deps) -> Work:
        adapters: Mapping[str, DataSource] = deps.extra.get("sources") or default_sources()
        cache = SourceCache(deps.extra["cache"]) if deps.extra.get("cache") else None
        assert deps.store is not None

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

    return stage_app(FETCHER, ReportRequested, settings, deps, build_work=build, admit=admit)
