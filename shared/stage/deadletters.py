"""The second way a message becomes a dead letter: JetStream's max-deliveries advisory.

The stage runner (shared/stage/runner.py) dead-letters a message itself on its last attempt. A
message whose worker crashed or timed out on every delivery never reaches that point: JetStream
then publishes `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`, which the
advisory stream keeps, and `settle_crash` turns it into the same dead letter and
`report.failed` — unless the runner had already settled the message.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from shared.adapters.ledger import Ledger
from shared.adapters.store import ArtefactStore
from shared.bus.topology import Publisher, StageSpec
from shared.events import claimed_request_id
from shared.observe.logging import get_logger
from shared.stage.runner import publish_dead_letter

if TYPE_CHECKING:
    from nats.js import JetStreamContext

log = get_logger("pressroom.stage")

Outcome = Literal["dead_lettered", "settled", "gone", "unreadable"]


@dataclass(frozen=True)
class StoredMessage:
    """A message as the stream still holds it."""

    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


# Reads a message of the stage's stream by sequence; None when the stream no longer holds it.
ReadMessage = Callable[[int], Awaitable[StoredMessage | None]]


async def settle_crash(
    advisory: bytes,
    *,
    spec: StageSpec,
    read: ReadMessage,
    ledger: Ledger,
    publisher: Publisher,
    store: ArtefactStore | None = None,
) -> Outcome:
    """Dead-letter the message a max-deliveries advisory names, once.

    Returns what happened, so the caller can ack the advisory in every case: `unreadable` (not
    an advisory we can act on), `gone` (the stream no longer holds the message), `settled` (the
    runner already dead-lettered or finished it on its last attempt) or `dead_lettered`.
    A failure to record the dead letter anywhere raises, and the advisory comes back.
    """
    try:
        found = json.loads(advisory)
        seq = int(found["stream_seq"])
        deliveries = int(found.get("deliveries") or 0)
    except (ValueError, TypeError, KeyError):
        log.warning("max-deliveries advisory unreadable", stage=spec.name, body=advisory[:200])
        return "unreadable"
    if seq <= 0:
        log.warning("max-deliveries advisory without a stream sequence", stage=spec.name)
        return "unreadable"
    original = await read(seq)
    if original is None:
        return "gone"
    request_id = claimed_request_id(original.data)
    entry = await ledger.get(request_id) if request_id else None
    record = entry.stages.get(spec.name) if entry else None
    if record is not None and record.state in ("done", "failed") and record.seq == seq:
        return "settled"
    await publish_dead_letter(
        publisher,
        ledger,
        stage=spec.name,
        subject=original.subject or spec.consumes,
        body=original.data,
        headers=original.headers,
        reason=(
            f"no {spec.name} finished it in {deliveries} deliveries "
            "(worker crashed or timed out each time)"
        ),
        permanent=False,
        attempts=deliveries,
        stream_seq=seq,
        first_failure=None,
        request_id=request_id,
        store=store,
        kind="worker_crashed",
        template=entry.template if entry else None,
    )
    return "dead_lettered"


def stream_reader(js: JetStreamContext, stream: str) -> ReadMessage:
    """`ReadMessage` over a JetStream stream (a purged or deleted message reads as None)."""
    from nats.js.errors import NotFoundError

    async def read(seq: int) -> StoredMessage | None:
        try:
            found = await js.get_msg(stream, seq)
        except NotFoundError:
            return None
        headers = {str(k): str(v) for k, v in (found.headers or {}).items()}
        return StoredMessage(found.subject or "", found.data or b"", headers)

    return read
