"""Delivery channels, one module each, behind one small interface."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from shared.events import Artefact, ChannelResult, Delivery, ReportRendered
from shared.store import ArtefactStore, read_verified


@dataclass
class Parcel:
    """What a channel delivers: the rendered event and its artefacts' bytes, loaded once."""

    event: ReportRendered
    store: ArtefactStore
    _cache: dict[str, bytes] = field(default_factory=dict)

    @property
    def request_id(self) -> str:
        return self.event.request.request_id

    async def content(self, artefact: Artefact) -> bytes:
        if artefact.key not in self._cache:
            self._cache[artefact.key] = await read_verified(self.store, artefact)
        return self._cache[artefact.key]

    def filename(self, artefact: Artefact) -> str:
        return f"{self.request_id}.{artefact.format}"


class Channel(Protocol):
    """Delivers a parcel; raises TransientError or PermanentError with a reason."""

    async def deliver(self, delivery: Delivery, parcel: Parcel) -> ChannelResult: ...


def default_channels(settings: object) -> Mapping[str, Channel]:
    from services.distributor.channels.email import EmailChannel
    from services.distributor.channels.file import FileChannel
    from services.distributor.channels.s3 import S3Channel
    from services.distributor.channels.webhook import WebhookChannel
    from shared.settings import Settings

    assert isinstance(settings, Settings)
    return {
        "file": FileChannel(settings),
        "email": EmailChannel(settings),
        "s3": S3Channel(settings),
        "webhook": WebhookChannel(settings),
    }
