"""The distributor service: report.rendered → report.delivered (or report.failed)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass

from faststream import FastStream

from services.distributor.channels import default_channels
from services.distributor.core import distribute
from services.distributor.parcel import Channel
from services.distributor.targets import TargetLimits
from shared.bus.names import DELIVERIES_BUCKET, DISTRIBUTOR
from shared.events import Event, ReportRendered
from shared.metrics import storage
from shared.settings import Settings, load_settings
from shared.stage.app import Deps, Work, stage_app


@dataclass
class DistributorDeps(Deps):
    """The distributor's adapters: one channel per name (default: services/distributor/channels)."""

    channels: Mapping[str, Channel] | None = None


def create_app(
    settings: Settings | None = None, *, deps: DistributorDeps | None = None
) -> FastStream:
    settings = settings or load_settings()
    deps = deps or DistributorDeps()

    async def build(deps: DistributorDeps) -> Work:
        channels = deps.channels or default_channels(settings)
        # Intent before sending, outcome after: each channel delivers once across redeliveries.
        outcomes = deps.kv[DELIVERIES_BUCKET]
        limits = TargetLimits.from_settings(settings)  # shared by the messages in flight

        async def work(event: Event) -> Event:
            assert isinstance(event, ReportRendered) and deps.store is not None
            assert deps.ledger is not None
            ledger = deps.ledger

            async def cancelled() -> bool:
                """`pressroom cancel` of the request (or of its burst), read after the intent."""
                request = event.request
                for rid in (request.request_id, request.parent):
                    entry = await ledger.get(rid) if rid else None
                    if entry is not None and entry.cancelled_at is not None:
                        return True
                return False

            return await distribute(
                event,
                channels=channels,
                store=deps.store,
                outcomes=outcomes,
                settings=settings,
                limits=limits,
                cancelled=cancelled,
            )

        return work

    async def observe(deps: DistributorDeps) -> None:
        # The legacy "report storage" alert: the filesystem the file channel writes to.
        if settings.out_dir.is_dir():
            usage = shutil.disk_usage(settings.out_dir)
            storage("out", usage.used, usage.used + usage.free)

    return stage_app(
        DISTRIBUTOR,
        ReportRendered,
        settings,
        deps,
        build_work=build,
        buckets=[DELIVERIES_BUCKET],
        observe=observe,
        # Reports side by side: a slow target holds its own deliveries, not everyone's.
        in_flight=settings.distributor_concurrency,
    )
