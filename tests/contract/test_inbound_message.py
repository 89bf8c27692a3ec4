"""The inbound-message contract (shared/stage/runner.py InboundMessage), the same for NatsInbound
(shared/stage/app.py) over a real JetStream pull consumer and for shared/adapters/memory.py's
MemoryMessage:
what the stage runner reads of a delivery, and what each way of settling it does — ack ends it,
term ends it for good, nack hands it back for another attempt, in_progress keeps it ours."""

from __future__ import annotations

import pytest

from tests.contract.conftest import Inbound

pytestmark = pytest.mark.integration

BODY = b'{"request_id": "r1", "template": "weekly.html"}'


async def test_a_first_delivery_shows_its_subject_body_headers_and_attempt(
    inbound: Inbound,
) -> None:
    message = await inbound.deliver(BODY, {"traceparent": "00-abc-def-01"})
    assert (message.subject, message.body, message.attempt) == (inbound.subject, BODY, 1)
    assert message.headers["traceparent"] == "00-abc-def-01"
    assert message.stream_seq >= 1
    second = await inbound.deliver(BODY, {})
    assert second.stream_seq > message.stream_seq  # names a dead letter: dlq:<stage>:<seq>
    await message.ack()
    await second.ack()


async def test_ack_ends_the_delivery(inbound: Inbound) -> None:
    message = await inbound.deliver(BODY, {})
    await message.ack()
    await inbound.saw(message, "acked")


async def test_term_ends_the_delivery_for_good(inbound: Inbound) -> None:
    message = await inbound.deliver(BODY, {})
    await message.term()
    await inbound.saw(message, "terminated")


async def test_nack_hands_the_message_back_for_the_next_attempt(inbound: Inbound) -> None:
    message = await inbound.deliver(BODY, {})
    await message.nack(0.2)
    delay = await inbound.saw(message, "retry")
    if inbound.records_delay:
        assert delay == 0.2


async def test_in_progress_keeps_the_message_ours_until_it_is_acked(inbound: Inbound) -> None:
    message = await inbound.deliver(BODY, {})
    await message.in_progress()
    await inbound.saw(message, "ours")
    await message.ack()
    await inbound.saw(message, "acked")
