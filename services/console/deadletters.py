"""Dead letters as the operator handles them: list, show, find, replay, purge."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.js.errors import BadRequestError, NotFoundError

from services.console.busaccess import Bus
from shared.bus.names import DLQ_STREAM, MSG_ID, STAGES
from shared.bus.topology import IncompleteListing, JetStreamPublisher
from shared.errors import PressroomError
from shared.events import (
    CHILD_SEPARATOR,
    DLQ_PREFIX,
    DeadLetter,
    tenant_of_subject,
)
from shared.stage.deadletters import DEAD_LETTER_PREFIX


# ---- dead letters --------------------------------------------------------------------------
@dataclass
class DeadLetterRecord:
    id: int
    time: datetime | None
    letter: DeadLetter

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time.isoformat() if self.time else None,
            "stage": self.letter.stage,
            "subject": self.letter.subject,
            "request_id": self.letter.request_id,
            "attempts": self.letter.attempts,
            "permanent": self.letter.permanent,
            "reason": self.letter.reason,
        }


async def dead_letters(bus: Bus) -> list[DeadLetterRecord]:
    """Every dead letter, oldest first; a listing shorter than the stream's count is an error."""
    info = await bus.js.stream_info(DLQ_STREAM)
    state = info.state
    if not state.messages:
        return []
    records = []
    for seq in range(state.first_seq, state.last_seq + 1):
        record = await dead_letter(bus, seq)
        if record is not None:
            records.append(record)
    if len(records) < state.messages:
        raise IncompleteListing(
            f"read {len(records)} of {state.messages} dead letters (some unreadable?); try again"
        )
    return records


async def dead_letter(bus: Bus, seq: int) -> DeadLetterRecord | None:
    try:
        raw = await bus.js.get_msg(DLQ_STREAM, seq)
    except NotFoundError:
        return None
    try:
        letter = DeadLetter.model_validate_json(raw.data or b"{}")
    except ValueError as error:  # something else was published on dlq.*: show it, do not crash
        now = datetime.now(UTC)
        letter = DeadLetter(
            subject=str(raw.subject or "?").removeprefix(DLQ_PREFIX),
            payload=(raw.data or b"")[:4096].decode(errors="replace"),
            stage="?",
            reason=f"not a Pressroom dead letter: {str(error).splitlines()[0]}",
            permanent=True,
            attempts=0,
            first_failure=now,
            last_failure=now,
        )
    # When it failed (a restored letter's stream time is when it was restored).
    when = letter.last_failure if letter.stage != "?" else getattr(raw, "time", None)
    return DeadLetterRecord(seq, when if isinstance(when, datetime) else None, letter)


DEAD_LETTER_STAGES = tuple(STAGES)


async def find_dead_letters(
    bus: Bus, ref: str, listing: list[DeadLetterRecord] | None = None
) -> list[DeadLetterRecord]:
    """Dead letters by id (the DLQ stream sequence) or by the request_id they carry, oldest
    first: what an operator has at hand is usually the request id. A request id is looked up
    in `listing` when the caller has already read every dead letter."""
    if ref.isdigit():
        record = await dead_letter(bus, int(ref))
        return [record] if record is not None else []
    if listing is None:
        listing = await dead_letters(bus)
    # A burst's request id names its failed children's letters too: replaying the parent
    # re-runs only those.
    children = f"{ref}{CHILD_SEPARATOR}"
    return [
        r
        for r in listing
        if r.letter.request_id == ref or (r.letter.request_id or "").startswith(children)
    ]


# Where replays may go: the subjects the stages consume, nothing else (not `$JS.API…`).
REPLAYABLE = frozenset(lane.consumes for spec in STAGES.values() for lane in spec.lanes)


def _stored_body_key(letter: DeadLetter) -> str | None:
    """A dead letter's stored body, only ever under dead-letters/ (never another artefact)."""
    ref = letter.payload_ref
    if ref and (not ref.startswith(DEAD_LETTER_PREFIX) or ".." in ref.split("/")):
        raise PressroomError(
            f"dead letter refers to '{ref}', outside {DEAD_LETTER_PREFIX}: refused"
        )
    return ref


async def original_body(bus: Bus, letter: DeadLetter) -> bytes:
    """The whole original message: inline, or from the artefact store when it was too big."""
    key = _stored_body_key(letter)
    if key:
        try:
            return await (await bus.store()).get(key)
        except PressroomError as error:
            raise PressroomError(
                f"the original message of this dead letter is gone from the artefact store "
                f"({key}): {error.reason}"
            ) from None
    if letter.payload_encoding == "base64":
        return base64.b64decode(letter.payload)
    return letter.payload.encode()


async def replay(bus: Bus, record: DeadLetterRecord) -> str | None:
    """Republish a dead letter to its subject, then remove it: its subject, or None when
    another replay of the same letter (a second operator, at the same moment) published it
    first — the message id is the letter's own, so JetStream keeps one of the two."""
    seq, letter = record.id, record.letter
    if letter.subject not in REPLAYABLE and tenant_of_subject(letter.subject) is None:
        raise PressroomError(
            f"dead letter {seq} names subject '{letter.subject}': only "
            f"{', '.join(sorted(REPLAYABLE))} can be replayed"
        )
    headers = {k: v for k, v in letter.headers.items() if k != MSG_ID}
    body = await original_body(bus, letter)
    # Not the original message id (dropped as a duplicate inside the window): the letter's.
    failed = letter.first_failure.timestamp()
    ack = await JetStreamPublisher(bus.js).publish(
        letter.subject, body, msg_id=f"replay:{seq}:{failed:.6f}", headers=headers
    )
    if ack.duplicate:
        return None  # the other replay sent it, and removes the letter
    await _delete_letter(bus, seq)
    await _forget_body(bus, letter)
    return letter.subject


async def _delete_letter(bus: Bus, seq: int) -> bool:
    """The dead letter removed: False when it was gone already (JetStream says "not found" as
    a 404 or, for a sequence, as a 400 with err_code 10043)."""
    try:
        await bus.js.delete_msg(DLQ_STREAM, seq)
    except NotFoundError:
        return False
    except BadRequestError as error:
        if error.err_code != 10043:
            raise
        return False
    return True


async def _forget_body(bus: Bus, letter: DeadLetter) -> None:
    try:
        key = _stored_body_key(letter)
    except PressroomError:
        return  # a forged reference: never delete what it points at
    if key:
        await (await bus.store()).delete(key)


async def dead_letters_named(bus: Bus, refs: list[str] | None) -> list[DeadLetterRecord]:
    """The dead letters `refs` name — ids, or request ids (each of that request's letters) —
    or every one when `refs` is None; a ref that names none is an error, before anything
    is changed. Every dead letter is read at most once, however many request ids."""
    if refs is None:
        return await dead_letters(bus)
    listing = await dead_letters(bus) if not all(r.isdigit() for r in refs) else None
    named: dict[int, DeadLetterRecord] = {}
    for ref in refs:
        found = await find_dead_letters(bus, ref, listing)
        if not found:
            kind = "id" if ref.isdigit() else "request_id"
            raise PressroomError(f"no dead letter with {kind} {ref}: nothing was changed")
        for record in found:
            named.setdefault(record.id, record)
    return list(named.values())


async def replay_many(
    bus: Bus, refs: list[str] | None, on_each: Callable[[int, int], None] | None = None
) -> list[dict[str, Any]]:
    """Replay the dead letters `refs` name (ids or request ids), or every one when `refs` is
    None (as `purge`); `on_each(done, total)` after each."""
    targets = await dead_letters_named(bus, refs)
    done: list[dict[str, Any]] = []
    for count, record in enumerate(targets, 1):
        subject = await replay(bus, record)
        if subject is not None:  # else replayed by someone else just now: not counted twice
            done.append({"id": record.id, "subject": subject})
        if on_each is not None:
            on_each(count, len(targets))
    return done


async def purge(bus: Bus, refs: list[str] | None) -> int:
    """Delete the dead letters `refs` name (ids or request ids; every one when None), with any
    bodies they stored."""
    removed = 0
    for record in await dead_letters_named(bus, refs):
        if not await _delete_letter(bus, record.id):
            continue  # gone since it was read (replayed or purged meanwhile)
        await _forget_body(bus, record.letter)
        removed += 1
    return removed


def letter_identity(letter: DeadLetter) -> tuple[str, str, str, datetime, datetime]:
    """What makes a dead letter the same one wherever it is stored: its request, stage and when
    it failed (not its JSON spelling, nor its payload, which a backup may have redacted)."""
    return (
        letter.subject,
        letter.stage,
        letter.request_id or "",
        letter.first_failure,
        letter.last_failure,
    )


def letter_identity_id(letter: DeadLetter) -> str:
    subject, stage, rid, first, last = letter_identity(letter)
    text = f"{subject}|{stage}|{rid}|{first.isoformat()}|{last.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]
