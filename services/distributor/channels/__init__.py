"""Delivery channels, one module each, behind one interface (services/distributor/parcel.py)."""

from __future__ import annotations

from collections.abc import Mapping

from services.distributor.channels.email import EmailChannel
from services.distributor.channels.file import FileChannel
from services.distributor.channels.s3 import S3Channel
from services.distributor.channels.webhook import WebhookChannel
from services.distributor.parcel import Channel
from shared.settings import Settings


def default_channels(settings: Settings) -> Mapping[str, Channel]:
    return {
        "file": FileChannel(settings),
        "email": EmailChannel(settings),
        "s3": S3Channel(settings),
        "webhook": WebhookChannel(settings),
    }
