"""Each calling system's own intake consumers, from a bus that had the layout before them.

Before, the fetcher's three consumers (one per lane) read every calling system's subjects too.
The first start of this version notes, per lane, the first message that lane's consumer had not
acknowledged; a calling system's consumer begins there, made at that start or months later: it
runs none of the requests already run, and loses none that were not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js import api

from services.console.embedded import free_port, start_nats_server
from shared.bus.names import FETCHER, STREAM, intake_of_subject
from shared.bus.topology import declare_intake, ensure_topology, intake_subjects
from shared.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[tuple[Any, Settings]]:
    port = free_port()
    server = start_nats_server(tmp_path / "nats", port)
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    try:
        yield nc, Settings(nats_url=f"nats://127.0.0.1:{port}")
    finally:
        await nc.close()
        server.terminate()
        server.wait(timeout=30)


async def old_layout(js: Any, settings: Settings) -> None:
    """The fetcher's consumers as the version before made them: no metadata, and each lane's
    reading the calling systems' subjects of that lane."""
    await ensure_topology(js, settings)
    for lane in FETCHER.lanes:
        await js.delete_consumer(STREAM, lane.durable)
        tenants = "report.requested.*" + ("" if lane.lane == "normal" else f".{lane.lane}")
        await js.add_consumer(
            STREAM,
            api.ConsumerConfig(
                durable_name=lane.durable,
                filter_subjects=[*lane.filter_subjects, tenants],
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
            ),
        )


async def run_by_old_fetcher(js: Any, durable: str, count: int) -> list[bytes]:
    sub = await js.pull_subscribe_bind(durable=durable, stream=STREAM)
    done = []
    for msg in await sub.fetch(count, timeout=5):
        await msg.ack_sync()
        done.append(msg.data)
    await sub.unsubscribe()
    return done


async def read_all(js: Any, spec: Any) -> list[bytes]:
    sub = await js.pull_subscribe_bind(durable=spec.durable, stream=STREAM)
    found: list[bytes] = []
    info = await js.consumer_info(STREAM, spec.durable)
    if info.num_pending:
        found = [m.data for m in await sub.fetch(int(info.num_pending), timeout=5)]
    await sub.unsubscribe()
    return found


async def test_a_calling_systems_consumer_begins_where_the_old_layout_stopped(
    bus: tuple[Any, Settings],
) -> None:
    nc, settings = bus
    js = nc.jetstream()
    await old_layout(js, settings)
    for n in range(5):
        await js.publish("report.requested.alpha", f"alpha {n}".encode())
        await js.publish("report.requested.alpha.interactive", f"alpha urgent {n}".encode())
    # The old fetcher ran three of alpha's plain requests and one of its interactive ones.
    assert await run_by_old_fetcher(js, "fetcher", 3) == [b"alpha 0", b"alpha 1", b"alpha 2"]
    assert await run_by_old_fetcher(js, "fetcher-interactive", 1) == [b"alpha urgent 0"]

    await ensure_topology(js, settings)  # the first start of this version
    reads = (await js.consumer_info(STREAM, "fetcher")).config.filter_subjects
    assert reads == ["report.requested", "lane.normal.report.requested"]
    # gamma asks for the first time only now.
    await js.publish("report.requested.gamma", b"gamma 0")
    found = await intake_subjects(js)
    assert [s.durable for s in found] == [
        "fetcher-in-interactive-alpha",
        "fetcher-in-normal-alpha",
        "fetcher-in-normal-gamma",
    ]
    for spec in found:
        await declare_intake(js, spec, settings)
    spec = intake_of_subject
    assert await read_all(js, spec("report.requested.alpha")) == [b"alpha 3", b"alpha 4"]
    assert await read_all(js, spec("report.requested.alpha.interactive")) == [
        f"alpha urgent {n}".encode() for n in range(1, 5)
    ]
    assert await read_all(js, spec("report.requested.gamma")) == [b"gamma 0"]

    # Started again: the floors stay where they were noted, and the consumers where they are.
    await ensure_topology(js, settings)
    await js.publish("report.requested.alpha", b"alpha 5")
    await declare_intake(js, FETCHER.of_tenant("alpha"), settings)
    assert await read_all(js, spec("report.requested.alpha")) == [b"alpha 5"]
    # The old consumers read none of the calling systems' requests any more.
    assert (await js.consumer_info(STREAM, "fetcher")).num_pending == 0


async def test_on_a_new_bus_a_calling_systems_consumer_reads_every_request(
    bus: tuple[Any, Settings],
) -> None:
    nc, settings = bus
    js = nc.jetstream()
    await ensure_topology(js, settings)
    await js.publish("report.requested.alpha.bulk", b"first")
    await js.publish("report.requested.Not-A-Name", b"ignored")  # no calling system's name
    [spec] = await intake_subjects(js)
    assert spec == FETCHER.of_tenant("alpha", "bulk")
    await declare_intake(js, spec, settings)
    assert await read_all(js, spec) == [b"first"]
