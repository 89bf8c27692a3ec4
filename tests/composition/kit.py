"""Run a stage service as its `create_app(settings, deps=...)` builds it, in this process.

FastStream's `TestNatsBroker` stands in for the bus (no server, no stream semantics: what
JetStream itself does is tested against a real server in tests/integration/), `TestApp` runs the
service's own lifespan, and the adapters are the in-memory fakes of shared/adapters/memory.py and
shared/adapters/store.py handed in through `deps`. A message reaches the stage's subscriber the way
a
durable pull consumer delivers it: with a JetStream reply subject, which carries the delivery
attempt and the stream sequence the stage runner reads.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from faststream import FastStream, TestApp
from faststream.nats import NatsBroker, TestNatsBroker
from nats.js import JetStreamContext

from shared.adapters.ledger import KvLedger
from shared.adapters.memory import MemoryKeyValue, MemoryPublisher
from shared.adapters.store import MemoryArtefacts
from shared.bus.names import STREAM, StageSpec
from shared.events import DLQ_PREFIX, REPORT_FAILED, Event
from shared.settings import Settings
from shared.stage.app import Deps

D = TypeVar("D", bound=Deps)


class OfflineJetStream:
    """`Deps.js` for a service run in process: given one, the lifespan neither connects nor
    declares a topology. Its KV buckets are in memory (whichever bucket the service opens, the
    test reads through `Fakes.bucket`); anything else a service asks of it is an error, and
    only the gauge refresh asks (logging at debug level that it could not)."""

    def __init__(self, buckets: dict[str, MemoryKeyValue]) -> None:
        self._buckets = buckets

    async def key_value(self, bucket: str) -> MemoryKeyValue:
        return self._buckets.setdefault(bucket, MemoryKeyValue())

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"in-process test: no JetStream here (asked for js.{name})")


@dataclass
class Fakes:
    """The in-memory adapters one service is given; the test reads what they recorded."""

    publisher: MemoryPublisher = field(default_factory=MemoryPublisher)
    store: MemoryArtefacts = field(default_factory=MemoryArtefacts)
    ledger: KvLedger = field(default_factory=lambda: KvLedger(MemoryKeyValue()))  # type: ignore[arg-type]
    buckets: dict[str, MemoryKeyValue] = field(default_factory=dict)

    def bucket(self, name: str) -> MemoryKeyValue:
        return self.buckets.setdefault(name, MemoryKeyValue())

    def deps(self, kind: type[D], **extra: Any) -> D:
        """The service's deps: these fakes, and the KV buckets it opens, in memory."""
        return kind(
            ledger=self.ledger,
            publisher=self.publisher,
            store=self.store,
            js=cast(JetStreamContext, OfflineJetStream(self.buckets)),
            **extra,
        )

    def next_events(self, subject: str) -> list[Any]:
        return self.publisher.decoded(subject)

    def dead_letters(self, spec: StageSpec) -> list[Any]:
        return self.publisher.decoded(f"{DLQ_PREFIX}{spec.consumes}")

    def failures(self) -> list[Any]:
        return self.publisher.decoded(REPORT_FAILED)


def settings_in(folder: Path, **overrides: Any) -> Settings:
    """Settings whose folders all live in the test's tmp dir; no health port."""
    values: dict[str, Any] = {
        "data_dir": folder / "data",
        "templates_dir": folder / "templates",
        "out_dir": folder / "out",
        "health_port": None,
    }
    return Settings(**{**values, **overrides})


class Delivery:
    """Delivers messages to one stage's subscriber as its durable consumer would."""

    def __init__(self, broker: NatsBroker, spec: StageSpec) -> None:
        self._broker = broker
        self._spec = spec
        self._sequence = itertools.count(1)

    async def deliver(self, event: Event | bytes, *, attempt: int = 1) -> None:
        body = event if isinstance(event, bytes) else event.model_dump_json().encode()
        seq = next(self._sequence)
        # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>
        reply = f"$JS.ACK.{STREAM}.{self._spec.durable}.{attempt}.{seq}.{seq}.{time.time_ns()}.0"
        await self._broker.publish(body, self._spec.consumes, reply_to=reply)


@asynccontextmanager
async def running(app: FastStream, spec: StageSpec) -> AsyncIterator[Delivery]:
    """The service started (its lifespan included) on TestNatsBroker, and stopped after."""
    assert isinstance(app.broker, NatsBroker)
    async with TestNatsBroker(app.broker, connect_only=True) as broker, TestApp(app):
        yield Delivery(broker, spec)
