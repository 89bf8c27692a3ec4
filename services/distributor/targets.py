"""Per-target limits: one slow target (a webhook host, the SMTP server, an S3 endpoint) gets
only a share of the distributor's slots, so deliveries elsewhere go on while it hangs; and so do
all webhooks of one calling system together (it chooses their hosts and ports).

A target has at most `limit` deliveries in flight; as many again may wait for it, holding
their message's slot; beyond that a delivery is handed back (retried later with the usual
backoff) instead of taking one more slot. Both numbers stay below the distributor's
concurrency, so other targets always find a free slot.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from shared.errors import TransientError
from shared.events import Delivery
from shared.settings import Settings


def target_of(delivery: Delivery, settings: Settings) -> str:
    """What a delivery waits on: the webhook's host and port, the SMTP server, the S3 endpoint."""
    extra = delivery.model_extra or {}
    if delivery.channel == "webhook":
        try:
            parts = urlsplit(str(extra.get("url") or ""))
            return f"webhook {(parts.hostname or '').lower()}:{parts.port or parts.scheme}"
        except ValueError:
            return "webhook ?"  # the channel refuses the URL with its own reason
    if delivery.channel == "email":
        return f"smtp {settings.smtp_host}:{settings.smtp_port}"
    if delivery.channel == "s3":
        return f"s3 {settings.s3_endpoint}"
    return delivery.channel


def caller_of(delivery: Delivery, requested_by: str | None) -> str | None:
    """The share a delivery also counts against: a calling system's webhooks together.

    A webhook target is host:port, and a caller picks both: dripping receivers on a few ports
    (or names) would each get their own share and together take every slot. So all webhooks of
    one caller share one limit too. The services' own requests (scheduler, CLI) have none.
    """
    if delivery.channel != "webhook" or requested_by is None:
        return None
    return f"webhooks of {requested_by}"


@dataclass
class TargetLimits:
    limit: int
    waiting: int
    _held: dict[str, int] = field(default_factory=dict)  # in flight + waiting, per target
    _gates: dict[str, asyncio.Semaphore] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> TargetLimits:
        # Everything one target may hold stays below the distributor's concurrency.
        most = max(1, settings.distributor_concurrency - 1)
        limit = min(settings.delivery_target_limit, most)
        return cls(limit=limit, waiting=min(limit, most - limit))

    @asynccontextmanager
    async def slot(self, target: str) -> AsyncIterator[None]:
        held = self._held.get(target, 0)
        if held >= self.limit + self.waiting:
            raise TransientError(
                f"{target} already has {held} deliveries in flight or waiting "
                f"(PRESSROOM_DELIVERY_TARGET_LIMIT={self.limit}): handed back, retried later"
            )
        self._held[target] = held + 1
        gate = self._gates.setdefault(target, asyncio.Semaphore(self.limit))
        try:
            async with gate:
                yield
        finally:
            self._held[target] -= 1
            if not self._held[target]:  # nobody waits on it: forget the target
                del self._held[target], self._gates[target]

    def held(self, target: str) -> int:
        return self._held.get(target, 0)
