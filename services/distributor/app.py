"""The distributor service: report.rendered → report.delivered (or report.failed)."""

from __future__ import annotations

import shutil

from faststream import FastStream

from services.distributor.channels import default_channels
from services.distributor.core import distribute
from shared.bus import DISTRIBUTOR
from shared.events import Event, ReportRendered
from shared.metrics import storage
from shared.service import Deps, Work, stage_app
from shared.settings import Settings, load_settings


def create_app(settings: Settings | None = None, *, deps: Deps | None = None) -> FastStream:
    settings = settings or load_settings()
    deps = deps or Deps()

    async def build(deps: Deps) -> Work:
        channels = deps.extra.get("channels") or default_channels(settings)
        outcomes = deps.extra["deliveries"]

        async def work(event: Event) -> Event:
            assert isinstance(event, ReportRendered) and deps.store is not None
            return await distribute(
                event, channels=channels, store=deps.store, outcomes=outcomes, settings=settings
            )

        return work

    async def observe(deps: Deps) -> None:
        # The legacy "report storage" alert: the filesystem the file channel writes to.
        if settings.out_dir.is_dir():
            usage = shutil.disk_usage(settings.out_dir)
            storage("out", usage.used, usage.used + usage.free)

    return stage_app(DISTRIBUTOR, ReportRendered, settings, deps, build_work=build, observe=observe)
