"""Each calling system's requests read by a consumer of its own (the fetcher's).

A calling system publishes on `report.requested.<name>[.<lane>]`. Were those read by one shared
consumer in the order they came, one system's flood — invalid requests, requests over its rate,
requests held past its share (shared/stage/intake.py) — would be read before every other
system's requests behind it, and held requests past the consumer's limit of unacknowledged
messages would stop it for everyone. So each of those subjects has a durable consumer of its
own (`fetcher-in-<lane>-<name>`, shared/bus/names.py), and the fetcher reads them side by side:
they share the lane's fetch slots, whose waiters take turns, so a request of one system waits
for at most a slot, never for another system's backlog.

The fetcher finds the subjects in the stream's own index of subjects (`intake_subjects`): at
start-up and every `LOOK_EVERY` seconds after, so the first request of a system never seen
before waits up to that long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js import JetStreamContext

from shared.bus.names import StageSpec
from shared.bus.topology import declare_intake, intake_subjects
from shared.observe.logging import get_logger
from shared.settings import Settings

log = get_logger("pressroom.intake")
LOOK_EVERY = 1.0  # seconds between looks for a calling system's subject not read yet
RETRY_REFUSED = 60.0  # at most this long before a subject it could not read is tried again


class CallerIntakes:
    """The calling systems' consumers one fetcher reads; `start(spec)` binds one to its runner
    and starts reading it."""

    def __init__(
        self,
        js: JetStreamContext,
        settings: Settings,
        start: Callable[[StageSpec], Awaitable[Any]],
    ) -> None:
        self._js = js
        self._settings = settings
        self._start = start
        self.reading: dict[str, StageSpec] = {}  # by durable name
        self._subscribers: list[Any] = []  # held here: FastStream keeps only weak references
        # durable → (when to try again, the wait before that): a subject it could not read
        self._refused: dict[str, tuple[float, float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def look(self) -> None:
        """Read every calling system's subject the stream holds messages of."""
        now = time.monotonic()
        for spec in await intake_subjects(self._js):
            if spec.durable in self.reading:
                continue
            later, wait = self._refused.get(spec.durable, (0.0, 0.0))
            if now < later:
                continue
            try:
                await declare_intake(self._js, spec, self._settings)
                self._subscribers.append(await self._start(spec))
            except Exception as error:  # not in this fetcher's permissions, or the bus busy
                wait = min(max(2 * wait, LOOK_EVERY), RETRY_REFUSED)  # 1, 2, 4 … 60 s
                self._refused[spec.durable] = (now + wait, wait)
                log.error(
                    "cannot read a calling system's requests",
                    consumer=spec.durable,
                    subject=spec.consumes,
                    error=str(error) or repr(error),
                    retry_in=wait,
                    hint="is it named in `pressroom bus auth --publisher`? (run it again, "
                    "and reload nats-server)",
                )
                continue
            self._refused.pop(spec.durable, None)
            self.reading[spec.durable] = spec
            log.info("reading a calling system's requests", consumer=spec.durable)

    def watch(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            try:
                await self.look()
            except Exception as error:  # the bus away for a while: the next look again
                log.warning("cannot look for calling systems' subjects", error=repr(error))
            await asyncio.sleep(LOOK_EVERY)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
