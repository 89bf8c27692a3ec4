"""A renderer's free render process goes to the most urgent lane's render first."""

from __future__ import annotations

import asyncio

from services.renderer.pool import Slots, lane


def test_an_interactive_render_takes_the_next_process_before_bulk_renders_waiting() -> None:
    async def scenario() -> list[str]:
        slots = Slots(1)
        order: list[str] = []
        first_done = asyncio.Event()

        async def render(name: str, priority: str, hold: asyncio.Event | None = None) -> None:
            with lane(priority):
                async with slots.hold(1):
                    order.append(name)
                    if hold is not None:
                        await hold.wait()

        running = asyncio.create_task(render("bulk-0", "bulk", first_done))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(render(f"bulk-{n}", "bulk")) for n in (1, 2, 3)]
        await asyncio.sleep(0)
        normal = asyncio.create_task(render("normal", "normal"))
        await asyncio.sleep(0)
        urgent = asyncio.create_task(render("interactive", "interactive"))
        await asyncio.sleep(0)
        first_done.set()
        await asyncio.gather(running, *waiting, normal, urgent)
        assert slots.free == 1
        return order

    assert asyncio.run(scenario()) == [
        "bulk-0",  # in progress: never interrupted
        "interactive",
        "normal",
        "bulk-1",
        "bulk-2",
        "bulk-3",
    ]
