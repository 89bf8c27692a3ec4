"""The renderer service: data.ready → report.rendered (PDF work in a process pool)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from faststream import FastStream

from services.renderer.core import render_report
from services.renderer.pdf import RenderPool
from services.renderer.templating import TemplateLibrary
from shared.bus import RENDERER
from shared.events import DataReady, Event
from shared.metrics import template_problems
from shared.service import Deps, Work, stage_app
from shared.settings import Settings, load_settings

VALIDATE_EVERY = 60.0


def validate_templates(folder: Path) -> None:
    """The template-validation SLI: each template's problems, as `templates validate` sees them."""
    if not folder.is_dir():
        return
    library = TemplateLibrary(folder)
    template_problems({name: len(library.validate(name)) for name in library.names()})


def create_app(settings: Settings | None = None, *, deps: Deps | None = None) -> FastStream:
    settings = settings or load_settings()
    deps = deps or Deps()

    async def build(deps: Deps) -> Work:
        pool = deps.extra.get("pool")
        if pool is None:
            pool = RenderPool(
                settings.render_workers,
                memory_mb=settings.render_memory_mb,
                timeout=settings.render_timeout,
            )
            await pool.start()
            deps.extra["pool"] = pool

        cache = deps.extra.get("cache") if settings.render_cache else None

        async def work(event: Event) -> Event:
            assert isinstance(event, DataReady) and deps.store is not None
            return await render_report(
                event, renderer=pool, store=deps.store, settings=settings, cache=cache
            )

        return work

    async def close(deps: Deps) -> None:
        pool = deps.extra.get("pool")
        if isinstance(pool, RenderPool):
            await pool.close()

    last_check = [float("-inf")]

    async def observe(deps: Deps) -> None:
        if time.monotonic() - last_check[0] >= VALIDATE_EVERY:
            last_check[0] = time.monotonic()
            await asyncio.to_thread(validate_templates, settings.templates_dir)

    return stage_app(
        RENDERER,
        DataReady,
        settings,
        deps,
        build_work=build,
        close=close,
        # One message more than render processes: while one report uploads and publishes,
        # the next is already rendering (the extra one waits for a process, heartbeating).
        concurrency=settings.render_workers + settings.render_prefetch,
        observe=observe,
    )
