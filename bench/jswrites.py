"""JetStream writes one report causes, counted from the server's own sequence numbers.

Every message a stream stores (an event publish, a KV put/update/create, an object-store chunk
or its meta record, a dead letter) advances that stream's last sequence by one; every ack of a
stage's message advances its durable consumer's ack floor. So running N reports one after
another on an otherwise idle stack and reading the sequences before and after gives the writes
per report, by kind, with nothing instrumented in Pressroom itself.

    python -m bench.jswrites            # a throw-away stack, 5 one-page reports, the table

`count_writes(stack, nc, run)` is what `make bench` and the tests call.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.bus.names import STAGES, STREAM
from tests.helpers import REPO, Stack, unique

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())


@dataclass(frozen=True)
class Writes:
    """Writes per report, by what was written (stream name, or `acks <durable>`)."""

    reports: int
    by_kind: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.by_kind.values())

    def ledger(self) -> float:
        return self.by_kind.get("KV_pressroom_ledger", 0.0)

    def table(self) -> str:
        rows = [f"{kind:32} {n:6.2f}" for kind, n in sorted(self.by_kind.items()) if n]
        return "\n".join([*rows, f"{'total per report':32} {self.total:6.2f}"])


async def sequences(js: Any) -> dict[str, int]:
    """Each stream's last sequence and each stage consumer's ack floor (stream sequence)."""
    found: dict[str, int] = {}
    for info in await js.streams_info():
        found[info.config.name] = int(info.state.last_seq)
    for stage in STAGES.values():
        consumer = await js.consumer_info(STREAM, stage.durable)
        found[f"acks {stage.durable}"] = int(consumer.ack_floor.consumer_seq or 0)
    return found


async def count_writes(nc: Any, run: Callable[[int], Awaitable[None]], reports: int = 5) -> Writes:
    """Writes per report while `run(i)` takes report i from publish to delivered (one at a
    time, nothing else running on the stack)."""
    js = nc.jetstream()
    before = await sequences(js)
    for i in range(reports):
        await run(i)
    await _settled(js)
    after = await sequences(js)
    by_kind = {k: (after.get(k, 0) - before.get(k, 0)) / reports for k in after}
    return Writes(reports, by_kind)


async def _settled(js: Any) -> None:
    """Until every stage has acked what it was delivered (the last ack follows the event)."""
    for _ in range(200):
        pending = 0
        for stage in STAGES.values():
            consumer = await js.consumer_info(STREAM, stage.durable)
            pending += int(consumer.num_ack_pending or 0) + int(consumer.num_pending or 0)
        if not pending:
            return
        await asyncio.sleep(0.05)


async def one_page_reports(stack: Stack, nc: Any, reports: int = 5) -> Writes:
    """Distinct one-page portfolio reports, each to a folder, one at a time."""
    delivered: dict[str, asyncio.Event] = {}

    async def on_delivered(msg: Any) -> None:
        rid = json.loads(msg.data).get("request_id")
        if rid in delivered:
            delivered[rid].set()

    sub = await nc.subscribe("report.delivered", cb=on_delivered)
    try:

        async def run(i: int) -> None:
            rid = unique("writes")
            delivered[rid] = asyncio.Event()
            body = {
                "request_id": rid,
                "template": "portfolio.html",
                "params": {**SAMPLE, "report_title": f"Writes {i} {rid}"},
                "deliver": [{"channel": "file", "path": "writes"}],
            }
            await nc.jetstream().publish("report.requested", json.dumps(body).encode())
            await asyncio.wait_for(delivered[rid].wait(), 180)

        return await count_writes(nc, run, reports)
    finally:
        await sub.unsubscribe()


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        stack = await Stack(Path(folder)).astart()
        try:
            nc = await stack.connect()
            await one_page_reports(stack, nc, 2)  # warm: fonts, caches, consumers
            writes = await one_page_reports(stack, nc, 5)
            await nc.drain()
        finally:
            stack.stop()
    print("JetStream writes per one-page report (file delivery):")
    print(writes.table())


if __name__ == "__main__":
    asyncio.run(main())
