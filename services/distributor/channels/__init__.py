"""Delivery channels, one module each, behind one interface (services/distributor/parcel.py)."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module

from services.distributor.parcel import Channel, Parcel
from shared.errors import PermanentError
from shared.events import ChannelResult, Delivery
from shared.settings import Settings

# name -> (module in this package, class). A channel's module is imported at its first
# delivery: a distributor that never emails does not load smtplib (nor minio's or httpx's
# clients for S3 and webhooks) — 0.3 s of every distributor's start.
CHANNELS = {
    "file": ("file", "FileChannel"),
    "email": ("email", "EmailChannel"),
    "s3": ("s3", "S3Channel"),
    "webhook": ("webhook", "WebhookChannel"),
}


class OnFirstDelivery:
    """A channel made from its module when it first delivers."""

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self._channel: Channel | None = None

    def channel(self) -> Channel:
        if self._channel is None:
            module, cls = CHANNELS[self.name]
            try:
                loaded = import_module(f"{__name__}.{module}")
            except ImportError as error:  # a library missing from this install: no retry helps
                raise PermanentError(
                    f"the {self.name} channel cannot be loaded ({type(error).__name__}: {error}): "
                    "reinstall Pressroom's dependencies, then replay"
                ) from None
            made: Channel = getattr(loaded, cls)(self.settings)
            self._channel = made
        return self._channel

    async def deliver(self, delivery: Delivery, parcel: Parcel) -> ChannelResult:
        return await self.channel().deliver(delivery, parcel)


def default_channels(settings: Settings) -> Mapping[str, Channel]:
    return {name: OnFirstDelivery(name, settings) for name in CHANNELS}
