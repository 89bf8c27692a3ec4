"""Operations over a running Pressroom: publish, wait, inspect, dead letters, artefacts.

The CLI is a thin shell over these functions; tests call them directly too.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tarfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.bus import (
    DLQ_STREAM,
    LEDGER_BUCKET,
    MSG_ID,
    STREAM,
    connect,
    ensure_topology,
    msg_id,
)
from shared.errors import PressroomError
from shared.events import (
    DLQ_PREFIX,
    REPORT_DELIVERED,
    REPORT_FAILED,
    REPORT_REQUESTED,
    DeadLetter,
    ReportRequested,
)
from shared.failover import LEADERLESS, describe_error
from shared.ledger import KvLedger, LedgerEntry
from shared.settings import Settings
from shared.store import ArtefactStore, open_store


class BusUnavailable(PressroomError):
    """The NATS server cannot be reached."""


@dataclass
class Bus:
    nc: Client
    js: JetStreamContext
    settings: Settings

    async def ledger(self) -> KvLedger:
        return KvLedger(await self.js.key_value(LEDGER_BUCKET))

    async def store(self) -> ArtefactStore:
        return await open_store(self.settings, self.js)


async def _quiet(error: Exception) -> None:
    """The CLI reports a failed connection itself, in one line."""


@asynccontextmanager
async def open_bus(settings: Settings, *, setup: bool = True) -> AsyncIterator[Bus]:
    try:
        nc = await connect(
            settings,
            name="pressroom-cli",
            # nats-py reads 0 as "no limit" when picking servers: 1 means try once, then stop.
            max_reconnect_attempts=1,
            connect_timeout=3,
            allow_reconnect=False,
            error_cb=_quiet,
        )
    except Exception as error:
        where = settings.bus_display
        hint = (
            ""
            if settings.nats_url
            else " (start it with `pressroom up`, or set PRESSROOM_NATS_URL)"
        )
        raise BusUnavailable(f"cannot reach NATS at {where}{hint}: {error}") from None
    js = nc.jetstream(timeout=5)
    try:
        if setup:
            await ensure_topology(js, settings)
        yield Bus(nc, js, settings)
    except LEADERLESS as error:
        raise BusUnavailable(
            f"NATS at {settings.bus_display} does not answer JetStream requests "
            f"({describe_error(error)}): in a cluster, is a majority of the servers up? "
            "(`pressroom health` shows which)"
        ) from None
    finally:
        await nc.drain()


# ---- requests ------------------------------------------------------------------------------
async def publish_request(bus: Bus, request: ReportRequested) -> int:
    try:
        ack = await bus.js.publish(
            REPORT_REQUESTED,
            request.model_dump_json().encode(),
            headers={MSG_ID: msg_id(request.request_id, "request")},
        )
    except LEADERLESS as error:
        raise BusUnavailable(
            f"request {request.request_id} was not acknowledged by NATS at "
            f"{bus.settings.bus_display} ({describe_error(error)}): start the missing cluster "
            "servers, then send it again (the same request_id is never done twice)"
        ) from None
    return int(ack.seq)


@dataclass
class Outcome:
    subject: str
    payload: dict[str, Any]

    @property
    def delivered(self) -> bool:
        return self.subject == REPORT_DELIVERED


@asynccontextmanager
async def watch_outcome(bus: Bus, request_id: str) -> AsyncIterator[asyncio.Future[Outcome]]:
    """Subscribe before publishing, so a fast pipeline cannot finish unseen."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Outcome] = loop.create_future()

    async def on_message(msg: Any) -> None:
        try:
            payload = json.loads(msg.data)
        except ValueError:
            return
        if payload.get("request_id") == request_id and not future.done():
            future.set_result(Outcome(msg.subject, payload))

    subs = [await bus.nc.subscribe(s, cb=on_message) for s in (REPORT_DELIVERED, REPORT_FAILED)]
    try:
        yield future
    finally:
        for sub in subs:
            await sub.unsubscribe()


async def outcome_from_ledger(bus: Bus, request_id: str) -> Outcome | None:
    entry = await (await bus.ledger()).get(request_id)
    if entry is None:
        return None
    if entry.status == "delivered":
        return Outcome(
            REPORT_DELIVERED,
            {
                "request_id": request_id,
                "channels": [c.model_dump(mode="json") for c in entry.channels],
            },
        )
    if entry.status == "failed":
        return Outcome(
            REPORT_FAILED,
            {"request_id": request_id, "reason": entry.error, "stage": entry.failed_stage},
        )
    return None


# ---- ledger --------------------------------------------------------------------------------
async def ledger_entries(bus: Bus) -> list[LedgerEntry]:
    entries = await (await bus.ledger()).entries()
    return sorted(entries, key=lambda e: e.updated_at, reverse=True)


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
    info = await bus.js.stream_info(DLQ_STREAM)
    state = info.state
    if not state.messages:
        return []
    records = []
    for seq in range(state.first_seq, state.last_seq + 1):
        record = await dead_letter(bus, seq)
        if record is not None:
            records.append(record)
    return records


async def dead_letter(bus: Bus, seq: int) -> DeadLetterRecord | None:
    try:
        raw = await bus.js.get_msg(DLQ_STREAM, seq)
    except NotFoundError:
        return None
    letter = DeadLetter.model_validate_json(raw.data or b"{}")
    when = getattr(raw, "time", None)
    return DeadLetterRecord(seq, when if isinstance(when, datetime) else None, letter)


def original_body(letter: DeadLetter) -> bytes:
    if letter.payload_encoding == "base64":
        return base64.b64decode(letter.payload)
    return letter.payload.encode()


async def replay(bus: Bus, seq: int) -> str:
    """Republish a dead letter to its subject with a fresh message id, then remove it."""
    record = await dead_letter(bus, seq)
    if record is None:
        raise PressroomError(f"no dead letter with id {seq}")
    letter = record.letter
    headers = {**letter.headers, MSG_ID: f"replay:{seq}:{uuid.uuid4().hex[:12]}"}
    await bus.js.publish(letter.subject, original_body(letter), headers=headers, stream=STREAM)
    await bus.js.delete_msg(DLQ_STREAM, seq)
    return letter.subject


async def purge(bus: Bus, seqs: list[int] | None) -> int:
    if seqs is None:
        info = await bus.js.stream_info(DLQ_STREAM)
        await bus.js.purge_stream(DLQ_STREAM)
        return int(info.state.messages)
    removed = 0
    for seq in seqs:
        try:
            await bus.js.delete_msg(DLQ_STREAM, seq)
            removed += 1
        except NotFoundError:
            continue
    return removed


# ---- backup and restore ----------------------------------------------------------------------
async def backup(
    bus: Bus, target: Path, templates_dir: Path, config: Path | None
) -> dict[str, int]:
    """templates, config, ledger entries and dead letters in one tar.gz."""
    entries = await ledger_entries(bus)
    letters = await dead_letters(bus)
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "ledger_entries": len(entries),
        "dead_letters": len(letters),
    }

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(datetime.now(UTC).timestamp())
        tar.addfile(info, io.BytesIO(data))

    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz") as tar:
        add(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
        add(tar, "ledger.jsonl", "".join(e.model_dump_json() + "\n" for e in entries).encode())
        add(
            tar,
            "dead-letters.jsonl",
            "".join(r.letter.model_dump_json() + "\n" for r in letters).encode(),
        )
        if templates_dir.is_dir():
            tar.add(templates_dir, arcname="templates")
        if config is not None and config.is_file():
            tar.add(config, arcname="config.yaml")
    return {"ledger_entries": len(entries), "dead_letters": len(letters)}


async def restore(bus: Bus, source: Path) -> dict[str, int]:
    """Put back ledger entries and dead letters that are missing; nothing is overwritten."""
    from nats.js.errors import KeyWrongLastSequenceError

    with tarfile.open(source, "r:gz") as tar:

        def read(name: str) -> list[str]:
            member = tar.extractfile(name)
            return member.read().decode().splitlines() if member else []

        ledger_lines, letter_lines = read("ledger.jsonl"), read("dead-letters.jsonl")
    kv = await bus.js.key_value(LEDGER_BUCKET)
    restored = 0
    for line in ledger_lines:
        entry = LedgerEntry.model_validate_json(line)
        try:
            await kv.create(entry.request_id, line.encode())
            restored += 1
        except KeyWrongLastSequenceError:
            continue  # already there: the live ledger wins
    present = {(r.letter.subject, r.letter.payload) for r in await dead_letters(bus)}
    letters = 0
    for line in letter_lines:
        letter = DeadLetter.model_validate_json(line)
        if (letter.subject, letter.payload) in present:
            continue
        await bus.js.publish(
            f"{DLQ_PREFIX}{letter.subject}",
            line.encode(),
            headers={MSG_ID: f"restore:{uuid.uuid4().hex}"},
        )
        letters += 1
    return {"ledger_entries": restored, "dead_letters": letters}
