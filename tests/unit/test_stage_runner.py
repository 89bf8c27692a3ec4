"""The one retry / dead-letter mechanism, with in-memory fakes (no broker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from shared.adapters.ledger import KvLedger
from shared.adapters.memory import MemoryKeyValue, MemoryMessage, MemoryPublisher
from shared.bus.names import FETCHER, msg_id
from shared.errors import PermanentError, TransientError
from shared.events import DataReady, Event, ReportRequested
from shared.settings import Settings
from shared.stage.runner import StageRunner, while_publishing


async def wait_until(condition: Callable[[], bool]) -> None:
    """Let the event loop run until `condition` holds (only this test's tasks run on it):
    a bounded number of turns, not a time."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


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


async def test_a_write_left_to_the_runner_goes_out_beside_the_event_and_before_the_ack(
    parts,
) -> None:
    runner, publisher, ledger = parts
    held = asyncio.Event()
    begun: list[str] = []

    async def write() -> None:
        begun.append("write")
        await held.wait()  # a slow outcome record

    async def work(event: Event) -> Event:
        await while_publishing(write())
        return await ready(event)

    message = MemoryMessage(request_body())
    handling = asyncio.ensure_future(runner.handle(message, ReportRequested, work))
    # The event went out while the write was still on its way …
    await wait_until(lambda: len(publisher.on("data.ready")) == 1)
    assert begun == ["write"]
    # … and the message is not acked, nor the stage recorded done, before it is stored.
    assert message.settled == []
    entry = await ledger.get("r1")
    assert entry is not None and entry.stages["fetcher"].state != "done"
    held.set()
    await handling
    assert message.settled == [("ack", None)]
    entry = await ledger.get("r1")
    assert entry is not None and entry.stages["fetcher"].state == "done"


async def test_a_failed_write_left_to_go_with_the_event_retries_the_message(parts) -> None:
    runner, _, ledger = parts

    async def lost() -> None:
        raise ConnectionRefusedError("the bucket is away")

    async def work(event: Event) -> Event:
        await while_publishing(lost())
        return await ready(event)

    message = MemoryMessage(request_body())
    await runner.handle(message, ReportRequested, work)
    assert message.settled == [("nack", 2.0)]  # not acked: the next attempt writes it
    entry = await ledger.get("r1")
    assert entry is not None and entry.stages["fetcher"].state != "done"


async def test_a_write_left_by_work_that_then_failed_is_stored_before_the_retry(parts) -> None:
    runner, _, _ = parts
    held = asyncio.Event()
    written: list[str] = []

    async def outcome() -> None:
        await held.wait()  # a slow record of the failed delivery
        written.append("failed delivery recorded")

    async def work(event: Event) -> Event:
        await while_publishing(outcome())
        raise TransientError("webhook answered 503")

    message = MemoryMessage(request_body())
    handling = asyncio.ensure_future(runner.handle(message, ReportRequested, work))
    for _ in range(200):  # many turns of the loop: the runner would have settled by now
        await asyncio.sleep(0)
    assert message.settled == []  # not handed back while the record is on its way
    held.set()
    await handling
    assert written == ["failed delivery recorded"]
    assert message.settled == [("nack", 2.0)]


async def test_outside_a_stage_a_write_left_for_the_event_is_made_at_once() -> None:
    written: list[str] = []

    async def write() -> None:
        written.append("done")

    await while_publishing(write())
    assert written == ["done"]
