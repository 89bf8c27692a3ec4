"""The one retry / dead-letter mechanism, with in-memory fakes (no broker)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from shared.adapters.ledger import KvLedger
from shared.adapters.memory import MemoryKeyValue, MemoryMessage, MemoryPublisher
from shared.bus.names import FETCHER, RENDERER, msg_id
from shared.errors import PermanentError, TransientError
from shared.events import DataReady, Event, ReportRendered, ReportRequested
from shared.settings import Settings
from shared.stage.runner import StageRunner


def request_body(rid: str = "r1") -> bytes:
    return ReportRequested(template="weekly.html", request_id=rid).model_dump_json().encode()


@pytest.fixture
def parts() -> tuple[StageRunner, MemoryPublisher, KvLedger]:
    publisher = MemoryPublisher()
    ledger = KvLedger(MemoryKeyValue())  # type: ignore[arg-type]
    settings = Settings(max_attempts=3, retry_backoff="2,10")
    return StageRunner(FETCHER, settings, ledger, publisher), publisher, ledger


async def ready(event: Event) -> Event:
    assert isinstance(event, ReportRequested)
    return DataReady(request=event, context={"x": 1})


async def test_success_publishes_the_next_event_with_a_message_id_and_acks(parts) -> None:
    runner, publisher, ledger = parts
    message = MemoryMessage(request_body())
    await runner.handle(message, ReportRequested, ready)

    [published] = publisher.on("data.ready")
    assert published.msg_id == msg_id("r1", "fetcher")
    assert message.settled == [("ack", None)]
    entry = await ledger.get("r1")
    assert entry is not None and entry.status == "fetched"
    assert entry.stages["fetcher"].state == "done"


async def test_a_duplicate_of_finished_work_is_acked_and_skipped(parts) -> None:
    runner, publisher, _ = parts
    await runner.handle(MemoryMessage(request_body(), stream_seq=1), ReportRequested, ready)
    duplicate = MemoryMessage(request_body(), stream_seq=2)
    await runner.handle(duplicate, ReportRequested, ready)
    assert len(publisher.on("data.ready")) == 1
    assert duplicate.settled == [("ack", None)]


async def test_a_permanent_error_dead_letters_at_once_and_emits_report_failed(parts) -> None:
    runner, publisher, ledger = parts

    async def unknown_template(event: Event) -> Event:
        raise PermanentError("template 'x.html' not found")

    message = MemoryMessage(request_body())
    await runner.handle(message, ReportRequested, unknown_template)

    [letter] = publisher.decoded("dlq.report.requested")
    assert letter["reason"] == "template 'x.html' not found"
    assert letter["stage"] == "fetcher" and letter["attempts"] == 1 and letter["permanent"]
    assert json.loads(letter["payload"])["request_id"] == "r1"
    [failed] = publisher.decoded("report.failed")
    assert failed["request_id"] == "r1" and failed["stage"] == "fetcher"
    assert message.settled == [("term", None)]
    entry = await ledger.get("r1")
    assert entry is not None and entry.status == "failed" and "x.html" in (entry.error or "")


async def test_a_transient_error_is_nacked_with_the_computed_backoff(parts) -> None:
    runner, publisher, _ = parts

    async def flaky(event: Event) -> Event:
        raise TransientError("source 'prs' timed out")

    first, second = (
        MemoryMessage(request_body(), attempt=1),
        MemoryMessage(request_body(), attempt=2),
    )
    await runner.handle(first, ReportRequested, flaky)
    await runner.handle(second, ReportRequested, flaky)
    assert first.settled == [("nack", 2.0)]
    assert second.settled == [("nack", 10.0)]
    assert publisher.messages == []


async def test_the_last_attempt_dead_letters_instead_of_retrying_forever(parts) -> None:
    runner, publisher, _ = parts

    async def flaky(event: Event) -> Event:
        raise ConnectionRefusedError("connection refused")

    message = MemoryMessage(request_body(), attempt=3)
    await runner.handle(message, ReportRequested, flaky)
    [letter] = publisher.decoded("dlq.report.requested")
    assert letter["reason"].startswith("gave up after 3 attempts")
    assert "connection refused" in letter["reason"] and not letter["permanent"]
    assert message.settled == [("term", None)]


async def test_an_invalid_payload_is_dead_lettered_with_the_field_named(parts) -> None:
    runner, publisher, _ = parts
    message = MemoryMessage(json.dumps({"request_id": "r9", "formats": ["docx"]}).encode())
    await runner.handle(message, ReportRequested, ready)
    [letter] = publisher.decoded("dlq.report.requested")
    assert "template" in letter["reason"] and "formats" in letter["reason"]
    assert letter["request_id"] == "r9"
    assert message.settled == [("term", None)]


async def test_a_replayed_message_after_a_dead_letter_runs_again(parts) -> None:
    runner, publisher, _ = parts

    async def broken(event: Event) -> Event:
        raise PermanentError("missing")

    await runner.handle(MemoryMessage(request_body(), stream_seq=1), ReportRequested, broken)
    replayed = MemoryMessage(request_body(), stream_seq=9)
    await runner.handle(replayed, ReportRequested, ready)
    assert len(publisher.on("data.ready")) == 1
    assert replayed.settled == [("ack", None)]


# ---- the renderer's claim, read while its work starts (CLAIM_MEANWHILE_STAGES) --------------
class GatedKeyValue(MemoryKeyValue):
    """A ledger bucket whose reads wait for `gate` (a slow ledger)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()

    async def get(self, key: str) -> Any:
        await self.gate.wait()
        return await super().get(key)


def data_ready_body(rid: str = "r1") -> bytes:
    request = ReportRequested(template="weekly.html", request_id=rid)
    return DataReady(request=request, context={"x": 1}).model_dump_json().encode()


def rendered(event: Event) -> ReportRendered:
    assert isinstance(event, DataReady)
    return ReportRendered(
        request=event.request, artefacts=[], template_version="v1", render_seconds=0.1
    )


@pytest.fixture
def renderer() -> tuple[StageRunner, MemoryPublisher, KvLedger, GatedKeyValue]:
    publisher = MemoryPublisher()
    kv = GatedKeyValue()
    ledger = KvLedger(kv)  # type: ignore[arg-type]
    runner = StageRunner(RENDERER, Settings(max_attempts=3), ledger, publisher)
    return runner, publisher, ledger, kv


async def test_a_render_starts_while_its_claim_is_read_and_is_published_once_it_says_go(
    renderer,
) -> None:
    runner, publisher, _, kv = renderer
    kv.gate.clear()  # the ledger is slow to answer
    started = asyncio.Event()

    async def render(event: Event) -> Event:
        started.set()
        return rendered(event)

    message = MemoryMessage(data_ready_body(), subject="data.ready")
    handling = asyncio.ensure_future(runner.handle(message, DataReady, render))
    await asyncio.wait_for(started.wait(), 30)  # the work began before the claim was read
    for _ in range(20):
        await asyncio.sleep(0)
    assert publisher.on("report.rendered") == [] and message.settled == []
    kv.gate.set()
    await handling
    assert len(publisher.on("report.rendered")) == 1
    assert message.settled == [("ack", None)]


async def test_a_duplicate_render_is_stopped_as_soon_as_its_claim_says_done(renderer) -> None:
    runner, publisher, _, _ = renderer
    first = MemoryMessage(data_ready_body(), subject="data.ready", stream_seq=1)
    await runner.handle(first, DataReady, lambda e: _now(rendered(e)))
    stopped = asyncio.Event()

    async def endless(event: Event) -> Event:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()
        raise AssertionError("never returns")

    duplicate = MemoryMessage(data_ready_body(), subject="data.ready", stream_seq=2)
    await asyncio.wait_for(runner.handle(duplicate, DataReady, endless), 30)
    assert stopped.is_set()  # the duplicate's render was stopped, not left running
    assert len(publisher.on("report.rendered")) == 1
    assert duplicate.settled == [("ack", None)]


async def test_a_duplicate_whose_render_failed_first_is_not_dead_lettered(renderer) -> None:
    runner, publisher, ledger, kv = renderer
    first = MemoryMessage(data_ready_body(), subject="data.ready", stream_seq=1)
    await runner.handle(first, DataReady, lambda e: _now(rendered(e)))
    kv.gate.clear()  # the render fails before the claim is read

    async def broken(event: Event) -> Event:
        kv.gate.set()
        raise PermanentError("template error")

    duplicate = MemoryMessage(data_ready_body(), subject="data.ready", stream_seq=2)
    await runner.handle(duplicate, DataReady, broken)
    assert duplicate.settled == [("ack", None)]  # a duplicate: the claim settled it
    assert publisher.on("dlq.data.ready") == [] and publisher.on("report.failed") == []
    entry = await ledger.get("r1")
    assert entry is not None and entry.stages["renderer"].state == "done"


async def _now(event: Event) -> Event:
    return event
