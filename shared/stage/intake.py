"""Where a request comes in (the fetcher's consumers): admission, lanes and shares.

Cheap work only, so a flood passes through in milliseconds per message: a requester over its
limit of queued reports or over its rate is refused at once (`report.failed`, a dead letter to
replay later); the request's lane is its priority within its publisher's cap; a requester with
more than its share of reports in the pipeline while renders wait has its next ones wait here,
in the order they came (`Holding`: they leave their fetch slot to others meanwhile, so another
requester's request behind them in the stream is fetched at once). Each calling system's
requests come in through consumers of their own (shared/stage/callers.py) and are fetched
there, whatever lane they run in; a request on the services' own subject is fetched where it
arrived when that is its lane, otherwise handed to its lane's own consumer
(`lane.<lane>.report.requested`, the body stamped as it came in).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from shared.admission import (
    OverLimit,
    QueuedCounts,
    Rate,
    limit_for,
    parse_limits,
    parse_rate,
    parse_rates,
    request_tag,
)
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

# Set by the slot a message is worked in (shared/stage/app.py `InFlight`): leaves the slot to
# other messages for as long as the block lasts (a request waiting for its share holds none).
STEP_ASIDE: ContextVar[Callable[[], AbstractAsyncContextManager[None]] | None] = ContextVar(
    "step_aside", default=None
)
# Set there too: gives the slot back and takes one of another lane's (a request a cap moved to
# that lane is fetched in its slots, not in those of the lane it was published on).
MOVE_TO_LANE: ContextVar[Callable[[str], Awaitable[None]] | None] = ContextVar(
    "move_to_lane", default=None
)
HOLD_TICK = 0.1  # seconds between looks at a held request's turn (and at idle renderers)
IdleCheck = Callable[[str], Awaitable[bool]]


@dataclass
class Intake:
    settings: Settings
    publisher: Publisher
    counts: QueuedCounts | None = None
    # Whether a renderer waits for work of a lane, none queued (lane → bool): a requester past
    # its share may use idle renderers. None: never idle (a share is a hard cap).
    idle: IdleCheck | None = None
    caps: dict[str, Priority] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    shares: dict[str, int] = field(default_factory=dict)
    rates: dict[str, Rate | None] = field(default_factory=dict)
    rate: Rate | None = None

    def __post_init__(self) -> None:
        self.caps = parse_caps(self.settings.priority_caps)
        self.limits = parse_limits(self.settings.requester_limits)
        self.shares = parse_limits(self.settings.requester_shares)
        self.rates = parse_rates(self.settings.requester_rates)
        self.rate = parse_rate(self.settings.requester_rate)
        self._holding = Holding(self)

    def requester(self, request: ReportRequested) -> str | None:
        return request.tenant or request.requested_by

    def limit(self, request: ReportRequested) -> int:
        return limit_for(self.requester(request), self.limits, self.settings.requester_max_queued)

    def share(self, requester: str | None) -> int:
        return limit_for(requester, self.shares, self.settings.requester_share)

    def rate_of(self, requester: str | None) -> Rate | None:
        return self.rates.get(requester or "anonymous", self.rate)

    def counted(self, requester: str | None) -> bool:
        """Whether the requester's queued reports are kept (it has a limit or a share)."""
        return bool(
            limit_for(requester, self.limits, self.settings.requester_max_queued)
            or self.share(requester)
        )

    async def admit(self, request: ReportRequested, *, first_delivery: bool) -> None:
        """Count the request in (once, however often it is delivered); OverLimit (a
        PermanentError) when its requester is full or over its rate."""
        if self.counts is None or not first_delivery:
            return
        who, rid = self.requester(request), request.request_id
        rate = self.rate_of(who)
        if rate is not None:
            await self.counts.arrived(who, rid, rate)
        if self.counted(who):
            await self.counts.add(who, rid, limit=self.limit(request))
        crash_if_asked(rid)

    async def settled(self, request: ReportRequested) -> None:
        """Count a settled report out (its requester may queue another)."""
        if request.parent is None:
            await self.count_out(self.requester(request), request.request_id)

    async def count_out(self, requester: str | None, request_id: str | None) -> None:
        if request_id and self.counts is not None and self.counted(requester):
            await self.counts.remove(requester, request_id)

    async def wait_turn(self, request: ReportRequested) -> None:
        """Return once the request may go into the pipeline: its requester has fewer than its
        share of earlier reports unsettled, or a renderer of its lane is idle."""
        share = self.share(self.requester(request))
        if share and self.counts is not None:
            await self._holding.wait(request, share)

    async def route(
        self, request: ReportRequested, *, here: str, hand_off: bool = True
    ) -> ReportRequested | None:
        """The request to fetch here, in lane `here` (its priority set to its lane), or None
        when it belongs in another lane and was handed on there. A calling system's consumer
        (`hand_off=False`) fetches all its requests itself, whatever their lane: handed on,
        those held past the system's share would wait in the lane's consumer shared by all."""
        lane = lane_for(request, caps=self.caps, default_cap=self.settings.priority_cap)
        laned = request.model_copy(update={"priority": lane})
        if lane == here or not hand_off:
            return laned
        ident = f"{request.request_id}:lane:{request_fingerprint(request)}:{lane}"
        await self.publisher.publish(
            f"{LANE_PREFIX}{lane}.{REPORT_REQUESTED}", encode(laned), msg_id=ident
        )
        return None


class Holding:
    """Requests past their requester's share, waiting at intake in the order they came in.

    One look at each held requester's queued set (and at each lane's renderers) per tick,
    whatever the number of its requests held here. A held request leaves its fetch slot to
    others (`STEP_ASIDE`), so a requester's flood is read past, not waited behind.
    """

    def __init__(self, intake: Intake) -> None:
        self._intake = intake
        self._seen: dict[str | None, tuple[float, list[str]]] = {}
        self._idle: dict[str, tuple[float, bool]] = {}
        self._released: dict[str, float] = {}  # lane → when one went on to idle renderers

    async def _tags(self, requester: str | None) -> list[str]:
        at, tags = self._seen.get(requester, (0.0, []))
        if time.monotonic() - at >= HOLD_TICK:
            assert self._intake.counts is not None
            tags = await self._intake.counts.tags(requester)
            self._seen[requester] = (time.monotonic(), tags)
        return tags

    async def _renderers_idle(self, lane: str) -> bool:
        """A renderer of the lane is idle; then one held request goes on per tick (the next
        look sees whether renderers are still idle)."""
        check = self._intake.idle
        if check is None:
            return False
        at, idle = self._idle.get(lane, (0.0, False))
        now = time.monotonic()
        if now - at >= HOLD_TICK:
            idle = await check(lane)
            self._idle[lane] = (now, idle)
        if not idle or now - self._released.get(lane, 0.0) < HOLD_TICK:
            return False
        self._released[lane] = now
        return True

    async def wait(self, request: ReportRequested, share: int) -> None:
        tag = request_tag(request.request_id)
        who = self._intake.requester(request)
        assert self._intake.counts is not None
        tags = await self._intake.counts.tags(who)  # fresh: it was counted in just now
        self._seen[who] = (time.monotonic(), tags)
        if tag not in tags or tags.index(tag) < share:
            return
        aside = STEP_ASIDE.get()
        async with aside() if aside is not None else _nothing():
            while True:
                await asyncio.sleep(HOLD_TICK)
                tags = await self._tags(who)
                if tag not in tags or tags.index(tag) < share:
                    return
                if await self._renderers_idle(request.priority):
                    return


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


# Test-only fault injection: a fetcher whose environment names a request id exits right after
# counting that request in, before handing it on (tests/integration/test_burst.py: a crash
# between count and publish counts the request once). Unset in production.
CRASH_AFTER_ADMISSION_ENV = "TEST_CRASH_AFTER_ADMISSION"  # not PRESSROOM_*: not a setting


def crash_if_asked(request_id: str) -> None:
    if os.environ.get(CRASH_AFTER_ADMISSION_ENV) == request_id:
        os._exit(17)


__all__ = ["MOVE_TO_LANE", "STEP_ASIDE", "Holding", "Intake", "OverLimit"]
