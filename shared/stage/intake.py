"""Where a request comes in (the fetcher's `report.requested` consumer): admission and lanes.

Cheap work only, so a flood passes through in milliseconds per message: a requester over its
limit of queued reports is refused at once (`report.failed`, a dead letter to replay later);
the request's lane is its priority within its publisher's cap; `interactive` and `bulk`
requests are handed to their lane's own consumer (`lane.<lane>.report.requested`, the body
stamped as it came in), `normal` ones are fetched right here as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.admission import OverLimit, QueuedCounts, limit_for, parse_limits
from shared.bus.topology import Publisher, encode
from shared.events import (
    REPORT_REQUESTED,
    Priority,
    ReportRequested,
    lane_subject,
    request_fingerprint,
)
from shared.lanes import lane_for, parse_caps
from shared.settings import Settings


@dataclass
class Intake:
    settings: Settings
    publisher: Publisher
    counts: QueuedCounts | None = None
    caps: dict[str, Priority] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.caps = parse_caps(self.settings.priority_caps)
        self.limits = parse_limits(self.settings.requester_limits)

    def requester(self, request: ReportRequested) -> str | None:
        return request.tenant or request.requested_by

    def limit(self, request: ReportRequested) -> int:
        return limit_for(self.requester(request), self.limits, self.settings.requester_max_queued)

    async def admit(self, request: ReportRequested, *, first_delivery: bool) -> None:
        """Count the request in; OverLimit (a PermanentError) when its requester is full."""
        limit = self.limit(request)
        if limit and self.counts is not None and first_delivery:
            await self.counts.add(self.requester(request), 1, limit=limit)

    async def settled(self, request: ReportRequested) -> None:
        """Count a settled report out (its requester may queue another)."""
        if request.parent is None:
            await self.count_out(self.requester(request))

    async def count_out(self, requester: str | None) -> None:
        limit = limit_for(requester, self.limits, self.settings.requester_max_queued)
        if limit and self.counts is not None:
            await self.counts.add(requester, -1)

    async def route(self, request: ReportRequested) -> ReportRequested | None:
        """The request to fetch here (its lane's priority set), or None when handed on."""
        lane = lane_for(request, caps=self.caps, default_cap=self.settings.priority_cap)
        laned = (
            request if request.priority == lane else request.model_copy(update={"priority": lane})
        )
        if lane == "normal":
            return laned
        ident = f"{request.request_id}:lane:{request_fingerprint(request)}"
        await self.publisher.publish(
            lane_subject(REPORT_REQUESTED, lane), encode(laned), msg_id=ident
        )
        return None


__all__ = ["Intake", "OverLimit"]
