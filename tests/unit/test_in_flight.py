"""Slots worked side by side (shared/stage/app.py InFlight): how a stage stops taking work."""

from __future__ import annotations

import asyncio

from shared.stage.app import InFlight
from shared.stage.intake import MOVE_TO_LANE


class Message:
    """What a slot's user does with a message: keeps it alive, or hands it back."""

    def __init__(self) -> None:
        self.kept_alive = 0
        self.handed_back = False

    async def in_progress(self) -> None:
        self.kept_alive += 1

    async def nack(self) -> None:
        self.handed_back = True


async def test_every_lane_turns_work_away_until_the_drain_is_over() -> None:
    side = InFlight(2)
    release = asyncio.Event()

    async def long_work() -> None:
        await release.wait()

    await side.start(long_work(), Message())
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


def one_slot_two_messages() -> tuple[
    InFlight, asyncio.Event, list[str], asyncio.Future[None], asyncio.Future[None], Message
]:
    """alpha's work in a lane's one slot until `release`; beta's message waiting for it."""
    side = InFlight(1, keep_alive_every=0.01)
    release, started = asyncio.Event(), []

    async def work(name: str) -> None:
        started.append(name)
        await release.wait()

    first = asyncio.ensure_future(side.start(work("alpha"), Message()))
    waiting = Message()
    second = asyncio.ensure_future(side.start(work("beta"), waiting))
    return side, release, started, first, second, waiting


async def test_a_message_fetched_for_a_slot_another_subscriber_took_is_kept_alive() -> None:
    # Two calling systems' consumers share a lane's one slot: both passed the gate when it was
    # free, and the second's message waits for the slot with its ack timer running.
    _, release, started, first, second, waiting = one_slot_two_messages()
    while waiting.kept_alive < 3:  # kept alive for as long as it waits, not once
        await asyncio.sleep(0.01)
    assert started == ["alpha"]
    release.set()
    await asyncio.wait_for(asyncio.gather(first, second), 30)
    while started != ["alpha", "beta"]:
        await asyncio.sleep(0.01)
    assert not waiting.handed_back


async def test_a_message_still_waiting_for_a_slot_when_the_drain_begins_is_handed_back() -> None:
    side, release, started, first, second, waiting = one_slot_two_messages()
    while not waiting.kept_alive:
        await asyncio.sleep(0.01)
    draining = asyncio.ensure_future(side.drain(grace=60))
    release.set()
    await asyncio.wait_for(asyncio.gather(draining, first, second), 30)
    assert waiting.handed_back and started == ["alpha"]


async def test_a_request_moved_to_another_lane_takes_that_lanes_slot() -> None:
    normal, bulk = InFlight(2), InFlight(1)
    normal.others = bulk.others = {"normal": normal, "bulk": bulk}
    release, moved = asyncio.Event(), asyncio.Event()

    async def capped_to_bulk() -> None:
        move = MOVE_TO_LANE.get()
        assert move is not None
        await move("bulk")
        moved.set()
        await release.wait()

    await normal.start(capped_to_bulk(), Message())
    await asyncio.wait_for(moved.wait(), 30)
    # Its normal slot is free again, and bulk's only slot is taken.
    assert not normal._free.locked() and bulk._free.locked()
    release.set()
    while bulk._free.locked():
        await asyncio.sleep(0.01)
