"""Dead letters: the one way a failure is recorded — the letter in `dlq.<subject>`,
`report.failed` and the ledger's record — and the two ways a message gets there.

The stage runner (shared/stage/runner.py) dead-letters a message itself on its last attempt or a
permanent error (`publish_dead_letter`). A message whose worker crashed or timed out on every
delivery never reaches that point: JetStream then publishes
`$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`, which the advisory stream
keeps, and `settle_crash` turns it into the same dead letter and `report.failed` — unless the
runner had already settled the message.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from nats.js.errors import NotFoundError

from shared.adapters.ledger import Ledger, LedgerEntry
from shared.adapters.store import ArtefactStore, sha256_hex
from shared.bus.names import StageSpec
from shared.bus.topology import Publisher, encode
from shared.errors import TransientError
from shared.events import (
    DLQ_PREFIX,
    REPORT_FAILED,
    DeadLetter,
    ReportFailed,
    claimed_child,
    claimed_request_id,
    claimed_requester,
    utcnow,
)
from shared.metrics import stage_failed
from shared.observe.logging import get_logger
from shared.stage.bursts import child_landed
from shared.urls import mask_url_secrets

if TYPE_CHECKING:
    from nats.js import JetStreamContext

log = get_logger("pressroom.stage")

MAX_DEAD_LETTER_PAYLOAD = 256 * 1024
DEAD_LETTER_PREVIEW = 16 * 1024
DEAD_LETTER_PREFIX = "dead-letters/"
MAX_REASON_CHARS = 4000
MAX_HEADERS = 32
MAX_HEADER_CHARS = 2048

Outcome = Literal["dead_lettered", "settled", "gone", "unreadable"]


@dataclass(frozen=True)
class StoredMessage:
    """A message as the stream still holds it."""

    subject: str
    data: bytes
    headers: dict[str, str] = field(default_factory=dict)


# Reads a message of the stage's stream by sequence; None when the stream no longer holds it.
ReadMessage = Callable[[int], Awaitable[StoredMessage | None]]


def advised_consumer(advisory: bytes) -> str:
    """The consumer a max-deliveries advisory is about ("" when it cannot be read)."""
    try:
        found = json.loads(advisory)
    except ValueError:
        return ""
    consumer = found.get("consumer") if isinstance(found, dict) else None
    return consumer if isinstance(consumer, str) else ""


async def settle_crash(
    advisory: bytes,
    *,
    spec: StageSpec,
    read: ReadMessage,
    ledger: Ledger,
    publisher: Publisher,
    store: ArtefactStore | None = None,
    count_out: Callable[[str | None, str | None], Awaitable[None]] | None = None,
) -> Outcome:
    """Dead-letter the message a max-deliveries advisory names, once; a request it settles
    is counted out of its requester's admission (`count_out(requester, request_id)`).

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
    failure = Failure(
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
        kind="worker_crashed",
        template=entry.template if entry else None,
    )
    settled = await publish_dead_letter(publisher, ledger, failure, store=store)
    if settled is not None and count_out is not None and claimed_child(original.data) is None:
        with suppress(Exception):  # never the dead letter (counting out is idempotent)
            await count_out(claimed_requester(failure.subject, original.data), request_id)
    return "dead_lettered"


def stream_reader(js: JetStreamContext, stream: str) -> ReadMessage:
    """`ReadMessage` over a JetStream stream (a purged or deleted message reads as None)."""

    async def read(seq: int) -> StoredMessage | None:
        try:
            found = await js.get_msg(stream, seq)
        except NotFoundError:
            return None
        headers = {str(k): str(v) for k, v in (found.headers or {}).items()}
        return StoredMessage(found.subject or "", found.data or b"", headers)

    return read


@dataclass(frozen=True)
class Failure:
    """A message that failed for good, and what to say about it.

    `update_ledger=False`: the message did not own its request_id (unreadable, a conflict, an
    imitation): the ledger is left alone and `report.failed` says `refused`.
    """

    stage: str
    subject: str
    body: bytes
    headers: dict[str, str]
    reason: str
    permanent: bool
    attempts: int
    stream_seq: int
    first_failure: datetime | None
    request_id: str | None
    update_ledger: bool = True
    kind: str = "permanent_error"
    template: str | None = None
    fingerprint: str | None = None

    def __post_init__(self) -> None:
        # Whatever wrote the reason (an error's text, a library's message): no URL's secrets
        # reach the dead letter, `report.failed`, the ledger or the log line.
        object.__setattr__(self, "reason", mask_url_secrets(self.reason))

    @property
    def shown_id(self) -> str:
        return self.request_id or f"unknown-{self.stage}-{self.stream_seq}"


async def publish_dead_letter(
    publisher: Publisher, ledger: Ledger, failure: Failure, *, store: ArtefactStore | None = None
) -> LedgerEntry | None:
    """The dead letter, `report.failed` and the ledger's record of the failure — every time;
    the ledger entry when this settled the report. A burst's child also counts as failed in
    its parent's tally.

    A body too big for an envelope is stored whole in the artefact store (replay reads it from
    there) and the envelope keeps a preview. If the envelope still cannot be published,
    `report.failed` and the ledger record the failure anyway. Only when nothing at all could be
    recorded does this raise, so the message stays on the stream and comes back.
    """
    letter = await _letter(failure, store)
    dead_letter_seq = await _publish_letter(publisher, failure, letter)
    recorded = int(dead_letter_seq is not None)
    recorded += await _publish_failed(publisher, failure, dead_letter_seq)
    settled = None
    await _child_failed(publisher, ledger, failure)
    if failure.request_id and failure.update_ledger:
        try:
            settled = await ledger.fail(
                failure.request_id,
                failure.stage,
                reason=failure.reason[:MAX_REASON_CHARS],
                seq=failure.stream_seq,
                attempt=failure.attempts,
            )
            recorded += 1
        except Exception as error:
            log.warning(
                "failure not recorded in the ledger", stage=failure.stage, error=repr(error)
            )
    with suppress(Exception):  # metrics must never break dead-lettering
        stage_failed(failure.stage, failure.kind, failure.template, settled)
    if not recorded:
        raise TransientError(
            f"could not record the failure of {failure.shown_id} anywhere: {failure.reason}"
        )
    log.warning(
        "dead-lettered",
        request_id=failure.shown_id,
        stage=failure.stage,
        reason=failure.reason,
        attempts=failure.attempts,
    )
    return settled


async def _child_failed(publisher: Publisher, ledger: Ledger, failure: Failure) -> None:
    """A burst's child counted as failed in its parent (idempotent: a redelivery counts once)."""
    child = claimed_child(failure.body) if failure.request_id and failure.update_ledger else None
    if child is None or failure.request_id is None:
        return
    try:
        await child_landed(
            ledger,
            publisher,
            parent=child[0],
            index=child[1],
            request_id=failure.request_id,
            outcome="failed",
            reason=failure.reason[:MAX_REASON_CHARS],
            template=failure.template or "",
            requested_by=claimed_requester(failure.subject, failure.body),
        )
    except Exception as error:
        log.warning("burst tally not updated", request_id=failure.request_id, error=repr(error))


async def _letter(failure: Failure, store: ArtefactStore | None) -> DeadLetter:
    """The envelope; a body over MAX_DEAD_LETTER_PAYLOAD goes whole to the store, a preview here."""
    body, stage = failure.body, failure.stage
    payload_ref = None
    inline = body
    if len(body) > MAX_DEAD_LETTER_PAYLOAD:
        inline = _preview(body, DEAD_LETTER_PREVIEW)
        if store is not None:
            key = f"{DEAD_LETTER_PREFIX}{stage}/{failure.stream_seq}-{sha256_hex(body)[:12]}.msg"
            try:
                await store.put(key, body, content_type="application/octet-stream")
                payload_ref = key
            except Exception as error:  # the preview, the reason and report.failed still go out
                log.warning("dead letter body not stored", stage=stage, error=repr(error))
    payload, encoding = _encoded(inline)
    reason = failure.reason
    if len(inline) < len(body):
        kept = "kept in the artefact store" if payload_ref else "NOT kept (store unavailable)"
        reason = f"{reason} (message of {len(body):,} bytes: preview here, whole {kept})"
    now = utcnow()
    return DeadLetter(
        subject=failure.subject,
        payload=payload,
        payload_encoding=encoding,  # type: ignore[arg-type]
        payload_size=len(body),
        payload_ref=payload_ref,
        headers=_kept_headers(failure.headers),
        stage=stage,
        reason=reason[:MAX_REASON_CHARS],
        permanent=failure.permanent,
        attempts=failure.attempts,
        first_failure=failure.first_failure or now,
        last_failure=now,
        request_id=failure.request_id,
    )


async def _publish_letter(publisher: Publisher, failure: Failure, letter: DeadLetter) -> int | None:
    """The letter on `dlq.<subject>` (without body and headers if it cannot go whole); its
    sequence, or None. The stream sequence makes the id stable across a crash between publish
    and terminate."""
    dlq_id = f"dlq:{failure.stage}:{failure.stream_seq}"
    for attempt in (letter, letter.model_copy(update={"payload": "", "headers": {}})):
        try:
            ack = await publisher.publish(
                f"{DLQ_PREFIX}{failure.subject}", encode(attempt), msg_id=dlq_id
            )
        except Exception as error:
            log.warning("dead letter not published", stage=failure.stage, error=repr(error))
            continue
        return int(ack.seq)
    return None


async def _publish_failed(
    publisher: Publisher, failure: Failure, dead_letter_seq: int | None
) -> int:
    """`report.failed` for the request (1 when published, 0 when not)."""
    failed = ReportFailed(
        request_id=failure.shown_id,
        stage=failure.stage,
        reason=failure.reason[:MAX_REASON_CHARS],
        attempts=failure.attempts,
        subject=failure.subject,
        dead_letter_seq=dead_letter_seq,
        refused=not failure.update_ledger,
        fingerprint=failure.fingerprint,
        requested_by=claimed_requester(failure.subject, failure.body),
    )
    try:
        await publisher.publish(
            REPORT_FAILED, encode(failed), msg_id=f"failed:{failure.stage}:{failure.stream_seq}"
        )
    except Exception as error:
        log.warning("report.failed not published", stage=failure.stage, error=repr(error))
        return 0
    return 1


def _encoded(body: bytes) -> tuple[str, str]:
    try:
        return body.decode(), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(body).decode(), "base64"


def _preview(body: bytes, limit: int) -> bytes:
    cut = body[:limit]
    # Do not split a UTF-8 character: a preview of text stays text.
    return cut.decode("utf-8", errors="ignore").encode() if _is_utf8(body) else cut


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode()
    except UnicodeDecodeError:
        return False
    return True


def _kept_headers(headers: dict[str, str]) -> dict[str, str]:
    kept = {k: v for k, v in headers.items() if not k.lower().startswith("nats-")}
    return {k[:MAX_HEADER_CHARS]: v[:MAX_HEADER_CHARS] for k, v in list(kept.items())[:MAX_HEADERS]}
