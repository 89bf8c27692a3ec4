"""Lanes, admission, schedule jitter and backfill, cancel and burst tallies, without I/O."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.adapters import children
from shared.adapters.cancel import apply_cancel, skip
from shared.adapters.ledger import KvLedger
from shared.adapters.memory import MemoryKeyValue
from shared.admission import OverLimit, QueuedCounts, parse_limits, parse_rate, parse_rates
from shared.errors import PermanentError
from shared.events import ReportRequested
from shared.firing import backfill_fires, due, empty_reason, jitter_seconds
from shared.lanes import lane_for, parse_caps, rows_estimate
from shared.settings import Settings


def request(**fields: object) -> ReportRequested:
    return ReportRequested.model_validate({"request_id": "r1", "template": "t.html", **fields})


def test_a_publisher_gets_at_most_its_cap_and_children_and_big_reports_run_as_bulk() -> None:
    caps = parse_caps("billing=interactive, batch=bulk")
    asks = request(priority="interactive", tenant="batch")
    assert lane_for(asks, caps=caps, default_cap="normal") == "bulk"
    assert (
        lane_for(asks.model_copy(update={"tenant": "billing"}), caps=caps, default_cap="normal")
        == "interactive"
    )
    assert (
        lane_for(asks.model_copy(update={"tenant": "other"}), caps=caps, default_cap="normal")
        == "normal"
    )
    assert lane_for(request(priority="interactive"), caps=caps, default_cap="bulk") == "interactive"
    child = request(request_id="p/c", parent="p")
    assert lane_for(child, caps=caps, default_cap="normal") == "bulk"
    rows = rows_estimate({"t": [{"x": [1, 2]}] * 10})
    assert rows >= 10
    assert lane_for(request(), caps=caps, default_cap="normal", rows=rows, bulk_rows=5) == "bulk"
    with pytest.raises(ValueError, match="'x=urgent' is not NAME=PRIORITY"):
        parse_caps("x=urgent")


def test_a_requester_over_its_limit_is_refused_and_counts_are_exact() -> None:
    async def scenario() -> None:
        counts = QueuedCounts(MemoryKeyValue())
        for n in range(3):
            await counts.add("A", f"r{n}", limit=3)
        assert await counts.add("A", "r1", limit=3) == 3  # a redelivery counts once
        with pytest.raises(OverLimit, match="requester A is over its limit of 3 queued reports"):
            await counts.add("A", "r3", limit=3)
        assert await counts.queued("A") == 3
        assert await counts.add("B", "r0", limit=3) == 1  # another requester is not affected
        assert await counts.position("A", "r2") == 2
        assert await counts.remove("A", "r0") == 2
        assert await counts.remove("A", "r0") == 2  # settled twice (a replay): counted out once
        assert await counts.position("A", "r2") == 1
        assert await counts.add("A", "r3", limit=3) == 3
        rate = parse_rate("2/min")
        assert rate is not None
        await counts.arrived("A", "x1", rate, now=100.0)
        await counts.arrived("A", "x1", rate, now=101.0)  # the same request again
        await counts.arrived("A", "x2", rate, now=102.0)
        with pytest.raises(
            OverLimit, match="requester A is over its rate of 2 requests per minute"
        ):
            await counts.arrived("A", "x3", rate, now=103.0)
        await counts.arrived("A", "x3", rate, now=161.0)  # x1 has left the window

    asyncio.run(scenario())
    assert parse_limits("a=1,b=20") == {"a": 1, "b": 20}
    assert parse_rates("a=10/s,b=0/h") == {"a": parse_rate("10/s"), "b": None}
    with pytest.raises(ValueError, match="is not a rate like 600/min"):
        parse_rate("10/fortnight")


def test_jitter_is_the_same_in_every_replica_and_spread_across_schedules() -> None:
    assert jitter_seconds("weekly", 300) == jitter_seconds("weekly", 300)
    spread = {round(jitter_seconds(f"s{i}", 300)) for i in range(50)}
    assert len(spread) > 30 and all(0 <= s < 300 for s in spread)
    fire = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
    wait = jitter_seconds("weekly", 300)
    assert not due(fire, "weekly", 300, fire + timedelta(seconds=wait - 1))
    assert due(fire, "weekly", 300, fire + timedelta(seconds=wait + 1))
    assert jitter_seconds("weekly", 0) == 0


def test_skip_if_empty_names_what_was_empty() -> None:
    data = {"orders": [], "stats": {"rows": [1]}}
    assert empty_reason(data, "orders") == "skipped: 'orders' is empty (skip_if_empty)"
    assert empty_reason(data, "stats.rows") is None
    assert "is not in the fetched data" in (empty_reason(data, "nope") or "")


def test_backfill_takes_the_fires_in_range_and_refuses_a_reversed_one() -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC)
    hourly = (start + timedelta(hours=h) for h in range(10_000))
    assert len(backfill_fires(hourly, start, start + timedelta(hours=5))) == 6
    with pytest.raises(PermanentError, match="is before --from"):
        backfill_fires(iter([]), start, start - timedelta(hours=1))


def test_a_cancel_is_recorded_and_no_stage_claims_the_request_after_it() -> None:
    async def scenario() -> None:
        ledger = KvLedger(MemoryKeyValue())
        req = request()
        assert await ledger.claim("r1", "fetcher", seq=1, attempt=1, request=req) == "proceed"
        now = datetime.now(UTC)
        outcome = await ledger.update("r1", lambda e: apply_cancel(e, now, "ops"))
        assert outcome == "cancelled"
        entry = await ledger.get("r1")
        assert entry is not None and entry.status == "cancelled"
        assert await ledger.claim("r1", "renderer", seq=2, attempt=1, request=req) == "cancelled"
        again = await ledger.update("r1", lambda e: apply_cancel(e, now, "ops"))
        assert again == "already_cancelled"
        # the distributor at work first: a cancel says it is too late, and changes nothing
        await ledger.claim("r2", "distributor", seq=3, attempt=1, request=request(request_id="r2"))
        late = await ledger.update("r2", lambda e: apply_cancel(e, now, "ops"))
        assert late == "too_late"
        # An id no stage has seen (queued behind others, or a typo): marked, and said so.
        unseen = await ledger.update("r9", lambda e: apply_cancel(e, now, "ops"))
        assert unseen == "unseen"
        assert await ledger.claim("r9", "fetcher", seq=9, attempt=1, request=req) == "cancelled"
        # A failed report has nothing left to stop: its outcome stays failed.
        await ledger.claim("r4", "fetcher", seq=4, attempt=1, request=request(request_id="r4"))
        await ledger.fail("r4", "fetcher", reason="unreachable")
        finished = await ledger.update("r4", lambda e: apply_cancel(e, now, "ops"))
        assert finished == "finished"
        failed = await ledger.get("r4")
        assert failed is not None and failed.status == "failed" and failed.cancelled_at is None
        await ledger.update("r3", skip("skipped: 'orders' is empty (skip_if_empty)"), request())
        skipped = await ledger.get("r3")
        assert skipped is not None and skipped.status == "skipped"

    asyncio.run(scenario())


def test_a_burst_parent_settles_once_when_its_last_child_lands() -> None:
    async def scenario() -> None:
        ledger = KvLedger(MemoryKeyValue())
        await ledger.claim("p", "fetcher", seq=1, attempt=1, request=request(request_id="p"))
        await ledger.update("p", children.start(3))
        done = [
            await ledger.update("p", children.record(0, "a", "delivered")),
            await ledger.update("p", children.record(0, "a", "delivered")),
            await ledger.update("p", children.record(1, "b", "failed", "refused")),
            await ledger.update("p", children.record(2, "c", "delivered")),
        ]
        assert [d is not None for d in done] == [False, False, False, True]
        entry = await ledger.get("p")
        assert entry is not None and entry.status == "failed" and entry.settled == "failed"
        assert entry.error == "burst: delivered 2, failed 1 (failed: b)"
        # a redelivered parent (its fetcher died mid-fan-out) finds the tally as it was
        again = await ledger.update("p", children.start(3))
        assert (again.delivered, again.failed) == (2, 1)
        # the failed child replayed from its dead letter delivers: the parent turns delivered
        assert await ledger.update("p", children.record(1, "b", "delivered")) is not None
        entry = await ledger.get("p")
        assert entry is not None and entry.status == "delivered"

    asyncio.run(scenario())


async def test_a_schedule_with_jitter_fires_that_much_later_in_every_replica() -> None:
    from services.scheduler.app import tick
    from shared.adapters.memory import MemoryPublisher
    from shared.schedules import load_schedules
    from shared.settings import Settings

    spec = {"name": "hourly", "cron": "0 * * * *", "jitter": 600, "request": {"template": "t.html"}}
    schedules = load_schedules([spec])
    wait = jitter_seconds("hourly", 600)
    fire = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    settings = Settings(schedule_grace=3600)
    for replica in range(2):
        publisher, kv = MemoryPublisher(), MemoryKeyValue()
        await kv.put("hourly", (fire - timedelta(minutes=1)).isoformat().encode())
        early = fire + timedelta(seconds=wait - 2)
        assert await tick(publisher, kv, schedules, settings, early) == [], replica  # type: ignore[arg-type]
        late = fire + timedelta(seconds=wait + 2)
        fired = await tick(publisher, kv, schedules, settings, late)  # type: ignore[arg-type]
        assert fired == ["hourly-20261122T1000Z"]
        (body,) = publisher.decoded("report.requested")
        assert body["requested_at"].startswith("2026-11-22T10:00:00")  # the fire keeps its time


def test_much_data_in_few_rows_runs_as_bulk_too() -> None:
    """One long text lays out as long as thousands of rows: a report with as much data as
    PRESSROOM_BULK_BYTES runs in the bulk lane, not ahead of everyone's small ones."""
    from services.fetcher.core import fetch_data
    from shared.adapters.store import MemoryArtefacts

    async def lane_of(context: dict[str, Any], **settings: Any) -> str:
        ready = await fetch_data(
            request(),
            adapters={},
            store=MemoryArtefacts(),
            settings=Settings(**settings),  # type: ignore[arg-type]
            context=context,
        )
        return ready.request.priority

    words = {"notes": "word " * 60_000}  # 300 KB in one string, no list at all
    assert asyncio.run(lane_of(words)) == "bulk"
    assert asyncio.run(lane_of(words, bulk_bytes=0)) == "normal"
    assert asyncio.run(lane_of({"notes": "a short note"})) == "normal"
