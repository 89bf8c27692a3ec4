"""What every delivery channel is handed and what it promises: the parcel, the channel protocol."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

from shared.adapters.store import ArtefactStore, read_verified
from shared.events import Artefact, ChannelResult, Delivery, ReportRendered
from shared.filenames import folder_filename, report_filename


@dataclass
class Parcel:
    """What a channel delivers: the rendered event and its artefacts' bytes, loaded once."""

    event: ReportRendered
    store: ArtefactStore
    # What makes this sending of the report one delivery: "" for the distributor (its retries
    # are the same delivery, so receivers can de-duplicate them), a fresh value for each
    # manual `pressroom deliver` (a new delivery a receiver must not drop as a duplicate).
    occasion: str = ""
    _cache: dict[str, bytes] = field(default_factory=dict)
    _reads: dict[str, asyncio.Task[bytes]] = field(default_factory=dict)

    @property
    def request_id(self) -> str:
        return self.event.request.request_id

    async def content(self, artefact: Artefact) -> bytes:
        if artefact.key not in self._cache:
            reading = self._reads.pop(artefact.key, None)
            self._cache[artefact.key] = await (
                reading if reading is not None else read_verified(self.store, artefact)
            )
        return self._cache[artefact.key]

    def read_ahead(self) -> None:
        """Start reading every artefact now, while the delivery records are looked at and
        written (reading has no effect; a failed read fails the delivery that needs it)."""
        for artefact in self.event.artefacts:
            if artefact.key not in self._cache and artefact.key not in self._reads:
                self._reads[artefact.key] = asyncio.ensure_future(
                    read_verified(self.store, artefact)
                )

    async def close(self) -> None:
        """Reads started ahead that no delivery needed (all were delivered before)."""
        reads, self._reads = self._reads, {}
        for reading in reads.values():
            reading.cancel()
            with suppress(BaseException):
                await reading

    def filename(self, artefact: Artefact) -> str:
        """What a person sees (attachments, webhook bodies): the request's `filename`
        pattern, by default `{title}-{date}` (shared/filenames.py)."""
        return report_filename(self.event.request, artefact.ext)

    def folder_filename(self, artefact: Artefact) -> str:
        """The name in a shared folder (shared/filenames.py `folder_filename`)."""
        return folder_filename(self.event.request, artefact.ext)

    def delivery_id(self, delivery: Delivery) -> str:
        """An id the sender generates for one delivery (webhook-id, Message-ID): the same on
        every retry of it, new for each manual re-delivery, and not the request id (which a
        publisher chooses): a digest of request, delivery spec and occasion."""
        spec = json.dumps(delivery.model_dump(mode="json"), sort_keys=True)
        seed = f"{self.request_id}\n{spec}\n{self.occasion}".encode()
        digest = base64.b32encode(hashlib.sha256(seed).digest()).decode().rstrip("=").lower()
        return f"msg_{digest[:26]}"


class Channel(Protocol):
    """Delivers a parcel; raises TransientError or PermanentError with a reason."""

    async def deliver(self, delivery: Delivery, parcel: Parcel) -> ChannelResult: ...
