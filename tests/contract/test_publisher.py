"""The publisher contract (shared/bus/topology.py Publisher), the same for JetStreamPublisher on a
real
nats-server, the FailoverPublisher the services wrap around it, and shared/adapters/memory.py's
MemoryPublisher the unit tests use: what is published is stored once per message id, with its
body and headers, and a taken id never makes another request's message vanish."""

from __future__ import annotations

import json

import pytest

from tests.contract.conftest import PublishTo

pytestmark = pytest.mark.integration


def body(rid: str, **extra: object) -> bytes:
    return json.dumps({"request_id": rid, "template": "weekly.html", **extra}).encode()


async def test_a_message_is_stored_with_its_body_id_and_headers(publish_to: PublishTo) -> None:
    subject = f"{publish_to.prefix}.report.requested"
    ack = await publish_to.publisher.publish(
        subject, body("r1"), msg_id="r1:fetcher", headers={"Pressroom-Tenant": "acme"}
    )
    assert ack.seq > 0 and not ack.duplicate
    [stored] = await publish_to.stored()
    assert (stored.subject, stored.body, stored.msg_id) == (subject, body("r1"), "r1:fetcher")
    assert stored.headers["Pressroom-Tenant"] == "acme"


async def test_the_same_message_under_the_same_id_is_stored_once(publish_to: PublishTo) -> None:
    subject = f"{publish_to.prefix}.data.ready"
    first = await publish_to.publisher.publish(subject, body("r2"), msg_id="r2:fetcher")
    again = await publish_to.publisher.publish(subject, body("r2"), msg_id="r2:fetcher")
    assert again.duplicate and not first.duplicate
    assert [s.msg_id for s in await publish_to.stored()] == ["r2:fetcher"]


async def test_messages_under_different_ids_are_all_stored_in_order(
    publish_to: PublishTo,
) -> None:
    subject = f"{publish_to.prefix}.report.failed"
    acks = [
        await publish_to.publisher.publish(subject, body(rid), msg_id=f"{rid}:failed")
        for rid in ("r3", "r4", "r5")
    ]
    assert acks[0].seq < acks[1].seq < acks[2].seq
    assert [json.loads(s.body)["request_id"] for s in await publish_to.stored()] == [
        "r3",
        "r4",
        "r5",
    ]


async def test_another_requests_message_under_a_taken_id_is_still_stored(
    publish_to: PublishTo,
) -> None:
    """Anyone may publish with any message id: one taken first by a message about another
    request must not make the real one vanish as a 'duplicate'."""
    subject = f"{publish_to.prefix}.report.requested"
    await publish_to.publisher.publish(subject, body("squatter"), msg_id="victim:schedule")
    await publish_to.publisher.publish(subject, body("victim"), msg_id="victim:schedule")
    stored = [json.loads(s.body)["request_id"] for s in await publish_to.stored()]
    assert stored == ["squatter", "victim"]
