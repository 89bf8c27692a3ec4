"""Operations over a running Pressroom: publish, wait, inspect, dead letters, artefacts.

The CLI is a thin shell over these functions; tests call them directly too.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import tarfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from nats.aio.client import Client
from nats.errors import AuthorizationError
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.bus import (
    DLQ_STREAM,
    LEDGER_BUCKET,
    MSG_ID,
    STAGES,
    IncompleteListing,
    JetStreamPublisher,
    connect,
    ensure_topology,
    msg_id,
)
from shared.busauth import REFUSALS, BusRefused, identity
from shared.errors import PressroomError
from shared.events import (
    DLQ_PREFIX,
    REPORT_DELIVERED,
    REPORT_FAILED,
    REPORT_REQUESTED,
    Artefact,
    DeadLetter,
    ReportRequested,
    mask_url_secrets,
    request_fingerprint,
    tenant_of_subject,
)
from shared.failover import LEADERLESS, describe_error
from shared.ledger import KvLedger, LedgerEntry
from shared.settings import SECRET_FIELDS, Settings
from shared.stage import DEAD_LETTER_PREFIX
from shared.store import ArtefactStore, open_store, read_verified


class BusUnavailable(PressroomError):
    """The NATS server cannot be reached."""


@dataclass
class Bus:
    nc: Client
    js: JetStreamContext
    settings: Settings

    async def ledger(self) -> KvLedger:
        return KvLedger(await self.js.key_value(LEDGER_BUCKET), js=self.js)

    async def store(self) -> ArtefactStore:
        return await open_store(self.settings, self.js)


CONNECT_TIMEOUT = 3.0


def connect_failure(error: BaseException, seen: list[BaseException]) -> str:
    """Why a connection failed, in words: nats-py's own error is often empty ("") or says
    only "no servers available", while the socket error it met on the way says more."""
    for candidate in [*reversed(seen), error]:
        if isinstance(candidate, ConnectionRefusedError):
            return "connection refused: nothing listens there (is the server running?)"
        if isinstance(candidate, TimeoutError | asyncio.TimeoutError):
            return (
                f"no answer within {CONNECT_TIMEOUT:g}s: a wrong address, or a firewall "
                "dropping the packets?"
            )
        if isinstance(candidate, OSError) and candidate.strerror:
            return candidate.strerror
    return str(error) or type(error).__name__


@asynccontextmanager
async def open_bus(settings: Settings, *, setup: bool = True) -> AsyncIterator[Bus]:
    """The CLI's connection, as the ops identity; `setup` declares the topology if needed."""
    who = identity(settings, "ops")
    seen: list[BaseException] = []

    async def quiet(error: Exception) -> None:
        """The CLI reports a failed connection itself, in one line (refusals are remembered)."""
        REFUSALS.record(error)
        seen.append(error)

    try:
        nc = await connect(
            settings,
            name="pressroom-cli",
            role="ops",
            # nats-py reads 0 as "no limit" when picking servers: 1 means try once, then stop.
            max_reconnect_attempts=1,
            connect_timeout=CONNECT_TIMEOUT,
            allow_reconnect=False,
            error_cb=quiet,
        )
    except Exception as error:
        where = settings.bus_url_public
        text = str(error) or type(error).__name__
        if "authorization" in text.lower() or isinstance(error, AuthorizationError):
            raise BusUnavailable(
                f"NATS at {where} refused {who.describe()}: {text} "
                "(check PRESSROOM_NATS_CREDENTIALS_DIR / PRESSROOM_NATS_NKEY)"
            ) from None
        hint = (
            ""
            if settings.nats_url
            else " (start it with `pressroom up`, or set PRESSROOM_NATS_URL)"
        )
        reason = connect_failure(error, seen)
        raise BusUnavailable(f"cannot reach NATS at {where}{hint}: {reason}") from None
    js = nc.jetstream(timeout=5)
    try:
        if setup:
            await ensure_topology(js, settings)
        yield Bus(nc, js, settings)
    except LEADERLESS as error:
        refused = REFUSALS.last()
        if refused:  # a refused request is never answered: the refusal is the reason
            raise BusRefused(refused) from None
        raise BusUnavailable(
            f"NATS at {settings.bus_url_public} does not answer JetStream requests "
            f"({describe_error(error)}): in a cluster, is a majority of the servers up? "
            "(`pressroom health` shows which)"
        ) from None
    finally:
        await nc.drain()


async def ready(bus: Bus) -> None:
    """Nothing more to do: `open_bus` (setup=True) declared the streams, consumers, buckets."""


# ---- requests ------------------------------------------------------------------------------
def build_request(
    body: dict[str, Any],
    *,
    params: dict[str, Any],
    deliver: list[dict[str, Any]],
    requested_by: str,
    **fields: Any,
) -> ReportRequested:
    """A report.requested from a JSON body plus what flags add: params merged over the
    body's, deliveries appended, other fields (template, formats, …) set when given."""
    from pydantic import ValidationError

    body = {**body, "params": {**body.get("params", {}), **params}}
    body.update({k: v for k, v in fields.items() if v})
    if deliver or body.get("deliver"):
        body["deliver"] = [*body.get("deliver", []), *deliver]
    body.setdefault("requested_by", requested_by)
    try:
        return ReportRequested.model_validate(body)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'payload'}: {e['msg']}" for e in error.errors()
        )
        raise PressroomError(f"invalid request: {problems}") from None


async def submit(
    bus: Bus,
    request: ReportRequested,
    *,
    wait: bool,
    timeout: float,
    schedule: Any = None,
    progress: Callable[[str], None] | None = None,
) -> Outcome | None:
    """Publish a request (as its schedule fires it, when given one) and, with `wait`, its
    outcome. Needs no topology set-up: a publisher identity may do this."""

    async def publish(bus: Bus) -> None:
        if schedule is None:
            await publish_request(bus, request)
        else:  # exactly as the scheduler fires it, so the fetcher knows it for the schedule's
            from services.scheduler.app import fire

            await fire(JetStreamPublisher(bus.js), schedule, request.requested_at, bus.js)

    if not wait:
        await publish(bus)
        return None
    return await publish_and_wait(bus, request, publish, timeout, progress)


async def publish_request(bus: Bus, request: ReportRequested) -> int:
    """Publish once: the message id carries the content, so the same request again is
    de-duplicated, and other content under the same request_id reaches the fetcher (which
    refuses it loudly) instead of being dropped as a duplicate."""
    fingerprint = request_fingerprint(request)
    try:
        ack = await JetStreamPublisher(bus.js).publish(
            REPORT_REQUESTED,
            request.model_dump_json().encode(),
            msg_id=f"{msg_id(request.request_id, 'request')}:{fingerprint}",
        )
    except LEADERLESS as error:
        raise BusUnavailable(
            f"request {request.request_id} was not acknowledged by NATS at "
            f"{bus.settings.bus_url_public} ({describe_error(error)}): in a cluster, is a "
            "majority of the servers up? Start the missing ones, then send it again (the same "
            "request_id is never done twice)"
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
async def watch_outcome(
    bus: Bus, request_id: str, fingerprint: str | None = None
) -> AsyncIterator[asyncio.Future[Outcome]]:
    """Subscribe before publishing, so a fast pipeline cannot finish unseen.

    A `refused` failure is about some other message that used this id; it counts only when
    its fingerprint is ours (our own request refused, e.g. the id was used before)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Outcome] = loop.create_future()

    async def on_message(msg: Any) -> None:
        try:
            payload = json.loads(msg.data)
        except ValueError:
            return
        if payload.get("request_id") != request_id or future.done():
            return
        if payload.get("refused") and payload.get("fingerprint") != fingerprint:
            return
        future.set_result(Outcome(msg.subject, payload))

    subs = [await bus.nc.subscribe(s, cb=on_message) for s in (REPORT_DELIVERED, REPORT_FAILED)]
    try:
        yield future
    finally:
        for sub in subs:
            await sub.unsubscribe()


async def _entry(bus: Bus, request_id: str) -> LedgerEntry | None:
    try:
        return await (await bus.ledger()).get(request_id)
    except (PressroomError, NatsError, TimeoutError):
        return None  # an identity that may not read the ledger (publisher) waits for events


def outcome_of(entry: LedgerEntry | None) -> Outcome | None:
    """The final outcome the ledger records, if any."""
    if entry is None:
        return None
    if entry.status == "delivered":
        return Outcome(
            REPORT_DELIVERED,
            {
                "request_id": entry.request_id,
                "channels": [c.model_dump(mode="json") for c in entry.channels],
            },
        )
    if entry.status == "failed":
        return Outcome(
            REPORT_FAILED,
            {"request_id": entry.request_id, "reason": entry.error, "stage": entry.failed_stage},
        )
    return None


async def outcome_from_ledger(bus: Bus, request_id: str) -> Outcome | None:
    return outcome_of(await _entry(bus, request_id))


_NEXT_STAGE = {"requested": "fetcher", "fetched": "renderer", "rendered": "distributor"}


def whereabouts(entry: LedgerEntry | None) -> str:
    """Where a request in flight is, in words, from its ledger entry (its last stage)."""
    if entry is None:
        return "published; no fetcher has picked it up yet"
    if entry.stages:
        stage, record = list(entry.stages.items())[-1]
        if record.state == "running":
            again = f", attempt {record.attempts}" if record.attempts > 1 else ""
            return f"{stage} working on it{again}"
    if entry.status in _NEXT_STAGE:
        return f"{entry.status}; waiting for a {_NEXT_STAGE[entry.status]}"
    return entry.status


class StillRunning(PressroomError):
    """--wait ran out of time; the request carries on without us."""


async def publish_and_wait(
    bus: Bus,
    request: ReportRequested,
    publish: Callable[[Bus], Awaitable[None]],
    timeout: float,
    progress: Callable[[str], None] | None = None,
) -> Outcome:
    """Publish (through `publish`) and wait for the request's outcome, telling `progress`
    where it is about once a second. An already finished request id (idempotency) emits
    nothing new: the ledger answers for it."""
    rid = request.request_id
    async with watch_outcome(bus, rid, request_fingerprint(request)) as future:
        await publish(bus)
        deadline = asyncio.get_running_loop().time() + timeout
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                outcome = await asyncio.wait_for(asyncio.shield(future), min(1.0, left))
            except TimeoutError:
                entry = await _entry(bus, rid)
                known = outcome_of(entry)
                if known is not None:
                    return known
                if progress is not None:
                    progress(whereabouts(entry))
                continue
            # The ledger records the last stage just after its event: let it catch up, so a
            # `pressroom status` right after --wait agrees with what we printed.
            with suppress(TimeoutError):
                await asyncio.wait_for(_settled(bus, rid), 5)
            return outcome
    where = whereabouts(await _entry(bus, rid))
    raise StillRunning(
        f"no outcome for {rid} within {timeout:g}s; it is still running ({where}): "
        f"follow it with `pressroom status {rid}`"
    )


async def _settled(bus: Bus, request_id: str) -> None:
    while await outcome_from_ledger(bus, request_id) is None:
        await asyncio.sleep(0.05)


# ---- time windows --------------------------------------------------------------------------
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str, option: str = "--window") -> timedelta:
    """An age like 90s, 30m, 24h, 7d or 4w: the one spelling every option with a duration
    takes (`--window`, `--since`, `--older-than`, `--expires`)."""
    number, unit = text[:-1], text[-1:]
    if unit not in _UNITS or not number.isdigit():
        raise PressroomError(f"{option} expects an age like 30m, 24h, 7d or 4w, got '{text}'")
    return timedelta(seconds=int(number) * _UNITS[unit])


def parse_since(text: str, option: str = "--since") -> datetime:
    """A moment: an age back from now (2h) or an ISO time (UTC when it names no zone)."""
    if text[-1:] in _UNITS and text[:-1].isdigit():
        return datetime.now(UTC) - parse_age(text, option)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise PressroomError(
            f"{option} expects an ISO time or an age like 30m, 24h, 7d, got '{text}'"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# ---- ledger --------------------------------------------------------------------------------
async def ledger_entries(
    bus: Bus, *, status: str | None = None, template: str | None = None
) -> list[LedgerEntry]:
    """Ledger entries, newest first; only those with the given status / template."""
    entries = await (await bus.ledger()).entries()
    return sorted(
        (
            e
            for e in entries
            if (not status or e.status == status) and (not template or e.template == template)
        ),
        key=lambda e: e.updated_at,
        reverse=True,
    )


async def ledger_entry(bus: Bus, request_id: str) -> LedgerEntry:
    entry = await (await bus.ledger()).get(request_id)
    if entry is None:
        raise PressroomError(f"no request '{request_id}' in the ledger")
    return entry


# ---- artefacts -----------------------------------------------------------------------------
async def _artefact(bus: Bus, request_id: str, fmt: str) -> Artefact:
    entry = await (await bus.ledger()).get(request_id)
    if entry is None:
        raise PressroomError(f"no request '{request_id}' in the ledger")
    matches = [a for a in entry.artefacts if a.format == fmt]
    if not matches:
        have = ", ".join(a.format for a in entry.artefacts) or "none yet"
        raise PressroomError(f"request '{request_id}' has no {fmt} artefact (has: {have})")
    return matches[0]


async def artefact_bytes(bus: Bus, request_id: str, fmt: str) -> bytes:
    """The artefact's bytes, refused if they no longer match the recorded sha256."""
    artefact = await _artefact(bus, request_id, fmt)
    return await read_verified(await bus.store(), artefact)


async def artefact_url(bus: Bus, request_id: str, fmt: str, expires: timedelta) -> str:
    """A download link minted now (never stored anywhere): S3 stores only, at most 7 days."""
    if expires > timedelta(days=7):
        raise PressroomError("a download link can last at most 7 days (S3's limit)")
    artefact = await _artefact(bus, request_id, fmt)
    link = await (await bus.store()).presign(artefact.key, expires)
    if link is None:
        raise PressroomError(
            "the artefact store has no download links (JetStream object store): "
            "use `pressroom get --output FILE`, or configure S3"
        )
    return link


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
    when = getattr(raw, "time", None)
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
    return [r for r in listing if r.letter.request_id == ref]


# Where replays may go: the subjects the stages consume, nothing else (not `$JS.API…`).
REPLAYABLE = frozenset(spec.consumes for spec in STAGES.values())


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


async def replay(bus: Bus, record: DeadLetterRecord) -> str:
    """Republish a dead letter to its subject with a fresh message id, then remove it."""
    seq, letter = record.id, record.letter
    if letter.subject not in REPLAYABLE and tenant_of_subject(letter.subject) is None:
        raise PressroomError(
            f"dead letter {seq} names subject '{letter.subject}': only "
            f"{', '.join(sorted(REPLAYABLE))} can be replayed"
        )
    headers = {k: v for k, v in letter.headers.items() if k != MSG_ID}
    body = await original_body(bus, letter)
    # A fresh message id: the original one would be dropped as a duplicate inside the window.
    await JetStreamPublisher(bus.js).publish(
        letter.subject, body, msg_id=f"replay:{seq}:{uuid.uuid4().hex[:12]}", headers=headers
    )
    await bus.js.delete_msg(DLQ_STREAM, seq)
    await _forget_body(bus, letter)
    return letter.subject


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
    for record in targets:
        done.append({"id": record.id, "subject": await replay(bus, record)})
        if on_each is not None:
            on_each(len(done), len(targets))
    return done


async def purge(bus: Bus, refs: list[str] | None) -> int:
    """Delete the dead letters `refs` name (ids or request ids; every one when None), with any
    bodies they stored."""
    removed = 0
    for record in await dead_letters_named(bus, refs):
        try:
            await bus.js.delete_msg(DLQ_STREAM, record.id)
        except NotFoundError:  # gone since it was read (replayed or purged meanwhile)
            continue
        await _forget_body(bus, record.letter)
        removed += 1
    return removed


# ---- backup and restore ----------------------------------------------------------------------
REDACTED = "REDACTED (pressroom backup --include-secrets keeps it)"


def redacted_config(text: str) -> str:
    """The YAML config without secrets: credential tokens and headers, secret settings."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        return text
    for field in SECRET_FIELDS & set(data):
        data[field] = REDACTED
    for entry in (data.get("source_credentials") or {}).values():
        if isinstance(entry, dict):
            for key in ("token", "headers"):
                if key in entry:
                    entry[key] = REDACTED
    for spec in (data.get("sources") or {}).values():
        if isinstance(spec, dict) and isinstance(spec.get("headers"), dict):
            spec["headers"] = dict.fromkeys(spec["headers"], REDACTED)
    return str(yaml.safe_dump(data, sort_keys=False))


_SECRET_KEY = re.compile(
    r"auth(?!or)|token|passw|pwd|secret|api[-_]?key|cookie|credential|private[-_]?key|signature",
    re.I,
)
NOT_KEPT = "not JSON: left out (pressroom backup --include-secrets keeps it)"


def redacted_json(value: Any) -> Any:
    """A JSON value with every secret-looking field (token, password, Authorization …) and
    every request header replaced: what a tenant put in a request stays out of backups."""
    if isinstance(value, dict):
        return {
            k: (
                REDACTED
                if _SECRET_KEY.search(str(k)) or (k == "headers" and isinstance(v, dict) and v)
                else redacted_json(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redacted_json(v) for v in value]
    return mask_url_secrets(value) if isinstance(value, str) else value


def redacted_letter(letter: DeadLetter) -> DeadLetter:
    headers = {
        k: mask_url_secrets(v) for k, v in letter.headers.items() if not _SECRET_KEY.search(k)
    }
    # Not (sane) JSON — cut short, a preview of a big body, not UTF-8: nothing to redact by key.
    update: dict[str, Any] = {"headers": headers, "payload": NOT_KEPT, "payload_encoding": "utf-8"}
    if letter.payload_encoding == "utf-8":
        with suppress(ValueError, RecursionError):
            update["payload"] = json.dumps(redacted_json(json.loads(letter.payload)))
    return letter.model_copy(update=update)


async def backup(
    bus: Bus,
    target: Path,
    templates_dir: Path,
    config: Path | None,
    *,
    include_secrets: bool = False,
) -> dict[str, int]:
    """Templates, config, ledger entries and dead letters in one tar.gz, readable only by its
    owner (0600); the config's secrets are redacted unless asked for."""
    entries = await ledger_entries(bus)
    letters = await dead_letters(bus)
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "ledger_entries": len(entries),
        "dead_letters": len(letters),
        "secrets": "included" if include_secrets else "redacted",
    }

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o600
        info.mtime = int(datetime.now(UTC).timestamp())
        tar.addfile(info, io.BytesIO(data))

    def visible(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        # Hidden files (.git, .env …) are not templates and may hold credentials.
        hidden = any(part.startswith(".") for part in Path(info.name).parts)
        return None if hidden or info.issym() else info

    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when the file existed with wider permissions
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        add(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
        add(tar, "ledger.jsonl", "".join(e.model_dump_json() + "\n" for e in entries).encode())
        kept = [r.letter if include_secrets else redacted_letter(r.letter) for r in letters]
        add(tar, "dead-letters.jsonl", "".join(k.model_dump_json() + "\n" for k in kept).encode())
        if templates_dir.is_dir():
            tar.add(templates_dir, arcname="templates", filter=visible)
        if config is not None and config.is_file():
            text = config.read_text(encoding="utf-8")
            add(tar, "config.yaml", (text if include_secrets else redacted_config(text)).encode())
    return {"ledger_entries": len(entries), "dead_letters": len(letters)}


async def restore(bus: Bus, source: Path) -> dict[str, int]:
    """Put back ledger entries and dead letters that are missing; nothing is overwritten."""
    from nats.js.errors import KeyWrongLastSequenceError

    try:
        with tarfile.open(source, "r:gz") as tar:

            def read(name: str) -> list[str]:
                member = tar.extractfile(name)
                return member.read().decode().splitlines() if member else []

            ledger_lines, letter_lines = read("ledger.jsonl"), read("dead-letters.jsonl")
        entries = [LedgerEntry.model_validate_json(line) for line in ledger_lines]
        parsed = [DeadLetter.model_validate_json(line) for line in letter_lines]
    except (tarfile.TarError, KeyError, ValueError) as error:
        raise PressroomError(f"'{source}' is not a pressroom backup: {error}") from None
    kv = await bus.js.key_value(LEDGER_BUCKET)
    restored = 0
    for line, entry in zip(ledger_lines, entries, strict=True):
        try:
            await kv.create(entry.request_id, line.encode())
            restored += 1
        except KeyWrongLastSequenceError:
            continue  # already there: the live ledger wins
    present = {(r.letter.subject, r.letter.payload) for r in await dead_letters(bus)}
    letters = 0
    for line, letter in zip(letter_lines, parsed, strict=True):
        if (letter.subject, letter.payload) in present:
            continue
        await JetStreamPublisher(bus.js).publish(
            f"{DLQ_PREFIX}{letter.subject}", line.encode(), msg_id=f"restore:{uuid.uuid4().hex}"
        )
        letters += 1
    return {"ledger_entries": restored, "dead_letters": letters}


# ---- delivering again ------------------------------------------------------------------------
async def deliver_again(
    bus: Bus, request_id: str, deliveries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Deliver an already rendered report through the distributor's channels, now."""
    from services.distributor.channels import Parcel, default_channels
    from shared.events import Delivery, ReportRendered

    entry = await (await bus.ledger()).get(request_id)
    if entry is None or not entry.artefacts:
        raise PressroomError(f"request '{request_id}' has no rendered artefacts to deliver")
    request = ReportRequested(
        request_id=request_id,
        template=entry.template or "unknown.html",
        requested_by=entry.requested_by,
        requested_at=entry.requested_at or entry.updated_at,
    )
    event = ReportRendered(
        request=request,
        artefacts=entry.artefacts,
        template_version=entry.template_version or "",
        render_seconds=entry.render_seconds or 0.0,
    )
    # A new delivery (new webhook-id / Message-ID): a receiver must not drop it as a retry.
    parcel = Parcel(event=event, store=await bus.store(), occasion=uuid.uuid4().hex)
    channels = default_channels(bus.settings)
    results = []
    for raw in deliveries:
        delivery = Delivery.model_validate({k: v for k, v in raw.items() if v is not None})
        try:
            result = await channels[delivery.channel].deliver(delivery, parcel)
            results.append(result.model_dump(mode="json"))
        except PressroomError as error:
            results.append(
                {"channel": delivery.channel, "ok": False, "target": "", "detail": error.reason}
            )
    return results


async def clean_artefacts(bus: Bus, age: timedelta, *, dry_run: bool) -> list[Any]:
    """Artefacts older than `age` removed (or only listed, with `dry_run`)."""
    from shared.store import remove_older_than

    return list(await remove_older_than(await bus.store(), age, dry_run=dry_run))


@dataclass(frozen=True)
class OldFile:
    path: Path
    size: int


def clean_out_dir(folder: Path, age: timedelta, *, dry_run: bool) -> list[OldFile]:
    """Files the `file` channel delivered under `folder` (PRESSROOM_OUT_DIR) older than `age`,
    removed (or only listed, with `dry_run`), with the folders they leave empty. Only what
    the channel writes goes (reports `*.pdf` / `*.html`, and `.*.part` files a crash left
    half-written): anything else an operator keeps there stays. Symbolic links are neither
    followed nor removed."""
    import stat
    import time

    if not folder.is_dir():
        return []
    cutoff = time.time() - age.total_seconds()
    found: list[OldFile] = []
    for root, _dirs, files in os.walk(folder, topdown=False, followlinks=False):
        here = Path(root)
        for name in sorted(files):
            path = here / name
            info = path.lstat()
            ours = path.suffix in (".pdf", ".html") or (
                name.startswith(".") and name.endswith(".part")
            )
            if ours and stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                found.append(OldFile(path, info.st_size))
                if not dry_run:
                    path.unlink(missing_ok=True)
        if not dry_run and here != folder and not any(here.iterdir()):
            with suppress(OSError):  # something was delivered into it meanwhile
                here.rmdir()
    return sorted(found, key=lambda f: f.path)


async def channel_outcomes(bus: Bus, request_id: str) -> list[Any]:
    """What the distributor recorded per channel for a request (each outcome, delivered or
    not): the channels of a partly delivered report, which its ledger entry does not hold."""
    from shared.bus import DELIVERIES_BUCKET
    from shared.events import ChannelResult

    kv = await bus.js.key_value(DELIVERIES_BUCKET)
    own = re.compile(re.escape(request_id) + r"\.(\d+)-[0-9a-f]{10}")
    results: list[tuple[int, Any]] = []
    watcher = await kv.watch(f"{request_id}.>", ignore_deletes=True)  # filtered by the server
    try:
        async for entry in watcher:
            if entry is None:  # no more current values
                break
            match = own.fullmatch(entry.key)
            if match is None or not entry.value:
                continue  # another request whose id starts with this one and a dot
            with suppress(ValueError):
                data = json.loads(entry.value)
                if "channel" in data:  # not an intent still being sent
                    results.append((int(match.group(1)), ChannelResult.model_validate(data)))
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return [result for _, result in sorted(results, key=lambda r: r[0])]
