"""The distributor service: report.rendered → report.delivered (or report.failed)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from faststream import FastStream

from services.distributor.channels import default_channels
from services.distributor.core import distribute
from services.distributor.parcel import Channel
from services.distributor.signing import tenant_secrets
from services.distributor.targets import TargetLimits
from shared.bus.names import DELIVERIES_BUCKET, DISTRIBUTOR
from shared.events import Event, ReportRendered
from shared.metrics import storage
from shared.settings import Settings, load_settings
from shared.stage.app import Deps, Work, stage_app

STORAGE_ANSWER = 5.0  # seconds a look waits for the filesystem's answer


@dataclass
class DistributorDeps(Deps):
    """The distributor's adapters: one channel per name (default: services/distributor/channels)."""

    channels: Mapping[str, Channel] | None = None


def _usage(folder: Path) -> tuple[int, int] | None:
    """(used, total) bytes of the filesystem under `folder`, as df counts; None without it."""
    if not folder.is_dir():
        return None
    usage = shutil.disk_usage(folder)
    return usage.used, usage.used + usage.free


def storage_gauge(folder: Path) -> Callable[[object], Awaitable[None]]:
    """The legacy "report storage" alert's gauge: the filesystem the file channel writes to,
    looked at in a thread (statvfs on a hung network mount blocks); one look at a time, so a
    hung one takes one thread, not one per scrape."""
    looking: list[asyncio.Future[tuple[int, int] | None]] = []

    async def observe(_deps: object) -> None:
        if looking and not looking[0].done():
            return
        looking[:] = [asyncio.ensure_future(asyncio.to_thread(_usage, folder))]
        try:
            found = await asyncio.wait_for(asyncio.shield(looking[0]), STORAGE_ANSWER)
        except TimeoutError:
            return  # the gauge keeps what it last saw; `pressroom health` says it hangs
        if found is not None:
            storage("out", *found)

    return observe


def create_app(
    settings: Settings | None = None, *, deps: DistributorDeps | None = None
) -> FastStream:
    settings = settings or load_settings()
    tenant_secrets(settings)  # an unreadable or wrong secrets file stops the start, not a delivery
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

    return stage_app(
        DISTRIBUTOR,
        ReportRendered,
        settings,
        deps,
        build_work=build,
        buckets=[DELIVERIES_BUCKET],
        observe=storage_gauge(settings.out_dir),
        # Reports side by side: a slow target holds its own deliveries, not everyone's.
        in_flight=settings.distributor_concurrency,
    )
