"""Slots worked side by side (shared/stage/app.py InFlight): how a stage stops taking work."""

from __future__ import annotations

import asyncio

from shared.stage.app import InFlight


async def test_every_lane_turns_work_away_until_the_drain_is_over() -> None:
    side = InFlight(2)
    release = asyncio.Event()

    async def long_work() -> None:
        await release.wait()

    await side.start(long_work())
    draining = asyncio.ensure_future(side.drain(grace=60))
    await asyncio.sleep(0)
    assert side.closing
    # A message fetched meanwhile is handed back; the fetch loop must then wait, not fetch the
    # same message again at once (each fetch is a delivery: max_deliver would dead-letter it).
    turned = asyncio.ensure_future(side.turned_away())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not turned.done() and not draining.done()
    release.set()
    await asyncio.wait_for(draining, 30)
    await asyncio.wait_for(turned, 30)


async def test_a_drain_with_nothing_in_flight_releases_the_fetch_loop_at_once() -> None:
    side = InFlight(2)
    await side.drain(grace=60)
    await asyncio.wait_for(side.turned_away(), 30)
