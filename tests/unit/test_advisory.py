"""A message no worker finished in max_deliver deliveries becomes a dead letter, exactly once."""

from __future__ import annotations

import json

import pytest

from shared.adapters.ledger import KvLedger
from shared.adapters.memory import MemoryKeyValue, MemoryMessage, MemoryPublisher
from shared.adapters.store import MemoryArtefacts
from shared.bus.names import FETCHER
from shared.errors import TransientError
from shared.events import DataReady, Event, ReportRequested
from shared.settings import Settings
from shared.stage.deadletters import StoredMessage, settle_crash
from shared.stage.runner import StageRunner


def request_body(rid: str) -> bytes:
    return ReportRequested(template="weekly.html", request_id=rid).model_dump_json().encode()


def advisory(seq: int, deliveries: int = 5) -> bytes:
    """What nats-server publishes on $JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<c>."""
    return json.dumps(
        {
            "type": "io.nats.jetstream.advisory.v1.max_deliver",
            "stream": "PRESSROOM",
            "consumer": "fetcher",
            "stream_seq": seq,
            "deliveries": deliveries,
        }
    ).encode()


class Stream:
    """The stage's stream as `settle_crash` reads it: messages by sequence."""

    def __init__(self) -> None:
        self.messages: dict[int, StoredMessage] = {}

    async def read(self, seq: int) -> StoredMessage | None:
        return self.messages.get(seq)


@pytest.fixture
def parts() -> tuple[Stream, KvLedger, MemoryPublisher]:
    return Stream(), KvLedger(MemoryKeyValue()), MemoryPublisher()  # type: ignore[arg-type]


async def test_a_message_whose_worker_crashed_every_time_is_dead_lettered(parts) -> None:
    stream, ledger, publisher = parts
    stream.messages[7] = StoredMessage("report.requested", request_body("r1"), {"x-team": "ops"})
    store = MemoryArtefacts()

    outcome = await settle_crash(
        advisory(7), spec=FETCHER, read=stream.read, ledger=ledger, publisher=publisher, store=store
    )

    assert outcome == "dead_lettered"
    [letter] = publisher.decoded("dlq.report.requested")
    assert letter["reason"] == (
        "no fetcher finished it in 5 deliveries (worker crashed or timed out each time)"
    )
    assert letter["attempts"] == 5 and not letter["permanent"] and letter["stage"] == "fetcher"
    assert json.loads(letter["payload"])["request_id"] == "r1"
    assert letter["headers"] == {"x-team": "ops"}
    [failed] = publisher.decoded("report.failed")
    assert failed["request_id"] == "r1" and failed["dead_letter_seq"] is not None
    entry = await ledger.get("r1")
    assert entry is not None and entry.status == "failed"


async def test_an_advisory_for_a_message_the_runner_already_dead_lettered_changes_nothing(
    parts,
) -> None:
    stream, ledger, publisher = parts
    settings = Settings(max_attempts=5)
    runner = StageRunner(FETCHER, settings, ledger, publisher)

    async def refused(event: Event) -> Event:
        raise TransientError("connection refused")

    body = request_body("r2")
    stream.messages[9] = StoredMessage("report.requested", body)
    last = MemoryMessage(body, attempt=5, stream_seq=9)
    await runner.handle(last, ReportRequested, refused)  # the last attempt dead-letters it
    assert last.settled == [("term", None)]
    before = list(publisher.messages)

    outcome = await settle_crash(
        advisory(9), spec=FETCHER, read=stream.read, ledger=ledger, publisher=publisher
    )

    assert outcome == "settled"
    assert publisher.messages == before  # one dead letter, one report.failed: no second pair


async def test_an_advisory_for_work_finished_before_the_ack_was_lost_changes_nothing(
    parts,
) -> None:
    stream, ledger, publisher = parts
    runner = StageRunner(FETCHER, Settings(), ledger, publisher)

    async def ready(event: Event) -> Event:
        assert isinstance(event, ReportRequested)
        return DataReady(request=event, context={})

    body = request_body("r3")
    stream.messages[11] = StoredMessage("report.requested", body)
    await runner.handle(MemoryMessage(body, attempt=5, stream_seq=11), ReportRequested, ready)

    outcome = await settle_crash(
        advisory(11), spec=FETCHER, read=stream.read, ledger=ledger, publisher=publisher
    )

    assert outcome == "settled"
    assert publisher.on("dlq.report.requested") == []
    entry = await ledger.get("r3")
    assert entry is not None and entry.stages["fetcher"].state == "done"


async def test_the_same_request_settled_under_another_sequence_does_not_count(parts) -> None:
    """A copy published again (another stream sequence) that failed does not settle this one."""
    stream, ledger, publisher = parts
    runner = StageRunner(FETCHER, Settings(max_attempts=1), ledger, publisher)

    async def refused(event: Event) -> Event:
        raise TransientError("connection refused")

    body = request_body("r4")
    await runner.handle(MemoryMessage(body, stream_seq=20), ReportRequested, refused)
    stream.messages[21] = StoredMessage("report.requested", body)

    outcome = await settle_crash(
        advisory(21), spec=FETCHER, read=stream.read, ledger=ledger, publisher=publisher
    )

    assert outcome == "dead_lettered"
    assert len(publisher.on("dlq.report.requested")) == 2


async def test_a_message_the_stream_no_longer_holds_is_left_alone(parts) -> None:
    stream, ledger, publisher = parts
    outcome = await settle_crash(
        advisory(40), spec=FETCHER, read=stream.read, ledger=ledger, publisher=publisher
    )
    assert outcome == "gone"
    assert publisher.messages == []


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"stream_seq": 0}', b"[1]"])
async def test_an_unreadable_advisory_is_dropped_without_touching_anything(
    parts, body: bytes
) -> None:
    stream, ledger, publisher = parts
    stream.messages[0] = StoredMessage("report.requested", request_body("r5"))
    outcome = await settle_crash(
        body, spec=FETCHER, read=stream.read, ledger=ledger, publisher=publisher
    )
    assert outcome == "unreadable"
    assert publisher.messages == []


async def test_a_message_without_a_readable_request_id_is_still_dead_lettered(parts) -> None:
    stream, ledger, publisher = parts
    stream.messages[3] = StoredMessage("report.requested", b"\xff\xfe binary")
    outcome = await settle_crash(
        advisory(3, deliveries=2),
        spec=FETCHER,
        read=stream.read,
        ledger=ledger,
        publisher=publisher,
    )
    assert outcome == "dead_lettered"
    [letter] = publisher.decoded("dlq.report.requested")
    assert letter["payload_encoding"] == "base64" and letter["request_id"] is None
    [failed] = publisher.decoded("report.failed")
    assert failed["request_id"] == "unknown-fetcher-3"
