"""The renderer service: data.ready → report.rendered (PDF work in a process pool)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faststream import FastStream

from services.renderer.core import render_report
from services.renderer.pool import lane
from services.renderer.pooled import RenderPool
from services.renderer.templating import validate_in_folder
from shared.bus.names import RENDER_CACHE_BUCKET, RENDERER
from shared.events import DataReady, Event
from shared.metrics import template_problems
from shared.settings import Settings, load_settings
from shared.stage.app import Deps, Work, stage_app

VALIDATE_EVERY = 60.0


def folder_state(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a template changes (names, sizes, times): revalidate only then."""
    return tuple(
        (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    )


async def validate_templates(folder: Path, pool: RenderPool) -> None:
    """The template-validation SLI: each template's problems, as `templates validate` sees them.

    Validation compiles templates, so it runs in a capped render process like any render —
    never in this service's process.
    """
    if not folder.is_dir():
        return
    found = await pool.run(validate_in_folder, str(folder.resolve()), None, label="validation")
    template_problems({name: len(problems) for name, problems in found.items()})


@dataclass
class RendererDeps(Deps):
    """The renderer's adapters: the pool of render processes (started at start-up if None)."""

    pool: RenderPool | None = None


def create_app(settings: Settings | None = None, *, deps: RendererDeps | None = None) -> FastStream:
    settings = settings or load_settings()
    deps = deps or RendererDeps()

    async def build(deps: RendererDeps) -> Work:
        pool = deps.pool
        if pool is None:
            pool = deps.pool = RenderPool(
                settings.render_workers,
                memory_mb=settings.render_memory_mb,
                timeout=settings.render_timeout,
                max_renders=settings.render_max_renders,
                max_rss_mb=settings.render_max_rss_mb,
            )
            await pool.start()

        cache = deps.kv.get(RENDER_CACHE_BUCKET) if settings.render_cache else None

        async def work(event: Event) -> Event:
            assert isinstance(event, DataReady) and deps.store is not None
            with lane(event.request.priority):  # its renders wait for a process by its lane
                return await render_report(
                    event,
                    renderer=pool,
                    store=deps.store,
                    settings=settings,
                    cache=cache,
                    record_payloads=True,
                )

        return work

    async def close(deps: RendererDeps) -> None:
        if deps.pool is not None:
            await deps.pool.close()

    last_check: list[Any] = [float("-inf"), None]

    async def observe(deps: RendererDeps) -> None:
        pool = deps.pool
        if pool is None or time.monotonic() - last_check[0] < VALIDATE_EVERY:
            return
        last_check[0] = time.monotonic()
        state = await asyncio.to_thread(folder_state, settings.templates_dir)
        if state != last_check[1]:
            await validate_templates(settings.templates_dir, pool)
            last_check[1] = state

    return stage_app(
        RENDERER,
        DataReady,
        settings,
        deps,
        build_work=build,
        buckets=[RENDER_CACHE_BUCKET] if settings.render_cache else [],
        close=close,
        # One message more than render processes, each slot refilled as soon as it frees:
        # while one report uploads and publishes, the next is already rendering and another
        # waits for a process (heartbeating), so a render process never waits for the bus.
        in_flight=settings.render_workers + settings.render_prefetch,
        observe=observe,
    )
