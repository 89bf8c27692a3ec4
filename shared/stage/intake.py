"""Where a request comes in (the fetcher's consumers): admission and lanes.

Cheap work only, so a flood passes through in milliseconds per message: a requester over its
limit of queued reports is refused at once (`report.failed`, a dead letter to replay later);
the request's lane is its priority within its publisher's cap. A request is fetched where it
arrived when that is its lane (a calling system asks for one by publishing on
`report.requested.<lane>`, which no flood on `report.requested` holds up); otherwise it is
handed to its lane's own consumer (`lane.<lane>.report.requested`, the body stamped as it
came in).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.admission import OverLimit, QueuedCounts, limit_for, parse_limits
from shared.bus.topology import Publisher, encode
from shared.events import (
    LANE_PREFIX,
    REPORT_REQUESTED,
    Priority,
    ReportRequested,
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

    async def route(self, request: ReportRequested, *, here: str) -> ReportRequested | None:
        """The request to fetch here, in lane `here` (its priority set to the lane), or None
        when it belongs in another lane and was handed on there."""
        lane = lane_for(request, caps=self.caps, default_cap=self.settings.priority_cap)
        laned = request.model_copy(update={"priority": lane})
        if lane == here:
            return laned
        ident = f"{request.request_id}:lane:{request_fingerprint(request)}:{lane}"
        await self.publisher.publish(
            f"{LANE_PREFIX}{lane}.{REPORT_REQUESTED}", encode(laned), msg_id=ident
        )
        return None


__all__ = ["Intake", "OverLimit"]
