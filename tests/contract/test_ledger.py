"""The ledger contract (shared/adapters/ledger.py Ledger), the same for KvLedger over a real
JetStream KV
bucket and over shared/adapters/memory.py's MemoryKeyValue, and for the FailoverLedger the services
wrap
around it: a stage is claimed by one message at a time, finished work is never claimed again,
an id is bound to its content, and the first outcome is reported once."""

from __future__ import annotations

import asyncio

import pytest

from shared.adapters.ledger import Ledger
from shared.events import (
    Artefact,
    ChannelResult,
    DataReady,
    ReportDelivered,
    ReportRequested,
)

pytestmark = pytest.mark.integration


def request(rid: str, template: str = "weekly.html") -> ReportRequested:
    return ReportRequested(request_id=rid, template=template, requested_by="ops@example.test")


def delivered(rid: str) -> ReportDelivered:
    artefact = Artefact(
        format="pdf", key=f"reports/{rid}.pdf", size=3, sha256="0" * 64, content_type="x"
    )
    channel = ChannelResult(channel="file", ok=True, target="PRESSROOM_OUT_DIR/r.pdf")
    return ReportDelivered(
        request_id=rid, template="weekly.html", artefacts=[artefact], channels=[channel]
    )


async def test_an_unknown_request_has_no_entry(ledger: Ledger) -> None:
    assert await ledger.get("never-seen") is None


async def test_the_first_claim_proceeds_and_the_entry_shows_the_request(ledger: Ledger) -> None:
    assert await ledger.claim("r1", "fetcher", seq=10, attempt=1, request=request("r1")) == (
        "proceed"
    )
    entry = await ledger.get("r1")
    assert entry is not None
    assert (entry.request_id, entry.template, entry.requested_by) == (
        "r1",
        "weekly.html",
        "ops@example.test",
    )
    assert entry.stages["fetcher"].state == "running"


async def test_another_message_for_a_running_stage_is_busy(ledger: Ledger) -> None:
    await ledger.claim("r2", "fetcher", seq=10, attempt=1, request=request("r2"))
    assert await ledger.claim("r2", "fetcher", seq=11, attempt=1, request=request("r2")) == "busy"


async def test_a_finished_stage_is_done_for_any_later_message(ledger: Ledger) -> None:
    await ledger.claim("r3", "fetcher", seq=10, attempt=1, request=request("r3"))
    event = DataReady(request=request("r3"), context={"x": 1})
    await ledger.finish("r3", "fetcher", seconds=0.5, event=event)
    assert await ledger.claim("r3", "fetcher", seq=12, attempt=1, request=request("r3")) == "done"
    entry = await ledger.get("r3")
    assert entry is not None and entry.status == "fetched"
    assert entry.stages["fetcher"].state == "done"
    # The next stage is a stage of its own.
    assert await ledger.claim("r3", "renderer", seq=13, attempt=1, request=request("r3")) == (
        "proceed"
    )


async def test_an_id_is_bound_to_its_content(ledger: Ledger) -> None:
    await ledger.claim("r4", "fetcher", seq=10, attempt=1, request=request("r4"))
    other = request("r4", template="monthly.html")
    assert await ledger.claim("r4", "fetcher", seq=11, attempt=1, request=other) == "conflict"
    entry = await ledger.get("r4")
    assert entry is not None and entry.template == "weekly.html"


async def test_the_first_outcome_is_reported_once(ledger: Ledger) -> None:
    await ledger.claim("r5", "distributor", seq=10, attempt=1, request=request("r5"))
    first = await ledger.finish("r5", "distributor", seconds=1.0, event=delivered("r5"))
    assert first is not None and first.status == "delivered" and first.settled == "delivered"
    assert await ledger.finish("r5", "distributor", seconds=1.0, event=delivered("r5")) is None
    entry = await ledger.get("r5")
    assert entry is not None and entry.channels[0].target == "PRESSROOM_OUT_DIR/r.pdf"


async def test_a_failure_is_recorded_with_its_reason_and_stage(ledger: Ledger) -> None:
    await ledger.claim("r6", "renderer", seq=10, attempt=3, request=request("r6"))
    settled = await ledger.fail("r6", "renderer", reason="template 'weekly.html' not found")
    assert settled is not None and settled.settled == "failed"
    entry = await ledger.get("r6")
    assert entry is not None and entry.status == "failed"
    assert (entry.failed_stage, entry.error) == ("renderer", "template 'weekly.html' not found")


async def test_of_many_messages_claiming_at_once_exactly_one_proceeds(ledger: Ledger) -> None:
    results = await asyncio.gather(
        *(
            ledger.claim("r7", "renderer", seq=seq, attempt=1, request=request("r7"))
            for seq in range(20, 28)
        )
    )
    assert sorted(results) == ["busy"] * 7 + ["proceed"]


async def test_entries_lists_every_request(ledger: Ledger) -> None:
    for rid in ("r8", "r9"):
        await ledger.claim(rid, "fetcher", seq=10, attempt=1, request=request(rid))
    assert sorted(e.request_id for e in await ledger.entries()) == ["r8", "r9"]
