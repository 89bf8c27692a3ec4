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

from shared.adapters.ledger import PIPELINE, KvLedger, LedgerEntry
from shared.adapters.store import ArtefactStore, open_store, read_verified
from shared.bus.failover import LEADERLESS, describe_error
from shared.bus.identity import REFUSALS, BusRefused, identity
from shared.bus.topology import (
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
from shared.errors import PressroomError
from shared.events import (
    CHILD_SEPARATOR,
    DLQ_PREFIX,
    REPORT_DELIVERED,
    REPORT_FAILED,
    REPORT_REQUESTED,
    REQUEST_ID_PATTERN,
    Artefact,
    DeadLetter,
    ReportRequested,
    request_fingerprint,
    tenant_of_subject,
)
from shared.settings import SECRET_FIELDS, Settings
from shared.stage.runner import DEAD_LETTER_PREFIX
from shared.templatename import canonical_template


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
    """Where a request in flight is, in words, from its ledger entry (its furthest stage),
    with the last error while a stage's retries go on."""
    if entry is None:
        return "published; no fetcher has picked it up yet"
    if entry.status == "conflict":
        return f"conflict: {entry.error}"
    for stage in reversed(PIPELINE):
        record = entry.stages.get(stage)
        if record is None:
            continue
        if record.state == "running":
            again = f", attempt {record.attempts}" if record.attempts > 1 else ""
            why = f"; last error: {record.error}" if record.error else ""
            return f"{stage} working on it{again}{why}"
        break
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
    """Ledger entries, newest first; only those with the given status / template (either
    spelling of a template name). An unreadable value is an entry whose status is
    `conflict`: listed with its reason, never a crash."""
    entries = await (await bus.ledger()).entries()
    wanted = canonical_template(template) if template else None
    return sorted(
        (
            e
            for e in entries
            if (not status or e.status == status)
            and (not wanted or canonical_template(e.template or "") == wanted)
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
    # When it failed (a restored letter's stream time is when it was restored).
    when = letter.last_failure if letter.stage != "?" else getattr(raw, "time", None)
    return DeadLetterRecord(seq, when if isinstance(when, datetime) else None, letter)


DEAD_LETTER_STAGES = tuple(STAGES)


async def find_dead_letters(
    bus: Bus, ref: str, listing: list[DeadLetterRecord] | None = None
) -> list[DeadLetterRecord]:
    """Dead letters by id (the DLQ stream sequence) or by the request_id they carry, oldest
    first: what an operator has at hand is usually the request id. A request id is looked up
    in `listing` when the caller has already read every dead letter. A burst's request id
    names its failed children's letters too: replaying the parent re-runs only those."""
    if ref.isdigit():
        record = await dead_letter(bus, int(ref))
        return [record] if record is not None else []
    if listing is None:
        listing = await dead_letters(bus)
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


# Field and header names that hold secrets (a JSON key, a header name).
_SECRET_KEY = re.compile(
    r"authori[sz]ation|token|passw(or)?d|pwd|secret|api[-_]?key|apikey|cookie|credential|"
    r"signature|(^|[-_])sig($|[-_])|private[-_]?key|access[-_]?key|session",
    re.I,
)
# In text, a name that says its value is secret (a URL query key, a JSON key, `k=v`).
_SECRET_NAME = re.compile(
    r"authori[sz]ation|token|passw(or)?d|pwd|secret|api[-_]?key|apikey|cookie|credential|"
    r"signature|^sig$|key$|^auth$|^code$|session",
    re.I,
)
# Every pattern is linear in its input (possessive runs, names anchored at a separator): a
# backup reads what tenants sent, and a crafted string must not stall it.
_JSON_PAIR = re.compile(r'"([\w-]{1,100}+)"(\s*+:\s*+")((?:[^"\\]|\\.)*+)("?)')
_HEADERS = re.compile(r'("headers"\s*+:\s*+)\{[^{}]*+\}?', re.I)
_NAME_VALUE = re.compile(r"(?:^|(?<=[?&;\s,]))([\w-]++)=([^&#\s\"',;]*+)")
_USERINFO = re.compile(r"(?<![\w+.-])([A-Za-z][\w+.-]*+://[^/\s:@\"']++:)[^@\s/\"']++@")
_SCHEME_TOKEN = re.compile(r"\b(Bearer|Basic|Token)\s++[A-Za-z0-9._~+/=-]{6,}+", re.I)


def _secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def redacted_text(text: str) -> str:
    """Secrets out of text that is not (whole) JSON: a dead letter's preview of a large body,
    a reason quoting a URL, a header value."""
    text = _JSON_PAIR.sub(
        lambda m: f'"{m[1]}"{m[2]}REDACTED{m[4]}' if _secret_name(m[1]) else m[0], text
    )
    text = _HEADERS.sub(r'\1"REDACTED"', text)
    text = _NAME_VALUE.sub(lambda m: f"{m[1]}=REDACTED" if _secret_name(m[1]) else m[0], text)
    text = _USERINFO.sub(r"\1REDACTED@", text)
    return _SCHEME_TOKEN.sub(r"\1 REDACTED", text)


def redacted_json(value: Any) -> Any:
    """A JSON value with every secret-looking field (token, password, Authorization …), every
    request header and every secret in a URL replaced: what a tenant put in a request stays
    out of backups."""
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
    if isinstance(value, str):
        return redacted_text(value)
    return value


def redacted_letter(letter: DeadLetter) -> DeadLetter:
    """A dead letter as a default backup keeps it: secret headers dropped, secrets out of the
    payload (JSON or not, whole or a preview) and out of the reason."""
    # Any header name may carry a secret (`X-Auth`): only trace context keeps its value.
    headers = {
        k: redacted_text(v) if k.lower() in ("traceparent", "tracestate") else REDACTED
        for k, v in letter.headers.items()
        if not _SECRET_KEY.search(k)
    }
    if letter.payload_encoding == "base64":  # not UTF-8: kept as text, secrets out
        text = base64.b64decode(letter.payload).decode("utf-8", errors="replace")
    else:
        text = letter.payload
    try:
        payload = json.dumps(redacted_json(json.loads(text)))
    except (ValueError, RecursionError):  # a preview of a big body, or not JSON at all
        payload = redacted_text(text)
    return letter.model_copy(
        update={
            "headers": headers,
            "payload": payload,
            "payload_encoding": "utf-8",
            "reason": redacted_text(letter.reason),
        }
    )


def redacted_entry(entry: LedgerEntry) -> LedgerEntry:
    """A ledger entry without secrets in its delivery targets and errors (URLs with tokens)."""
    try:
        return LedgerEntry.model_validate(redacted_json(entry.model_dump(mode="json")))
    except ValueError:  # a field redaction made invalid: its delivery targets and errors go
        return entry.model_copy(update={"channels": [], "error": REDACTED if entry.error else None})


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


def _identity_id(letter: DeadLetter) -> str:
    import hashlib

    subject, stage, rid, first, last = letter_identity(letter)
    text = f"{subject}|{stage}|{rid}|{first.isoformat()}|{last.isoformat()}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


_CONTENT_TYPES = {".pdf": "application/pdf", ".html": "text/html; charset=utf-8"}


async def backup(
    bus: Bus,
    target: Path,
    templates_dir: Path,
    config: Path | None,
    *,
    include_secrets: bool = False,
    artefacts: bool = False,
    since: datetime | None = None,
) -> dict[str, int]:
    """Templates, config, ledger entries and dead letters in one tar.gz, readable only by its
    owner (0600); secrets are redacted unless asked for. With `artefacts`, the reports in the
    artefact store too (those stored since `since`), one at a time into the archive."""
    listed = await ledger_entries(bus)
    # An unreadable ledger value is not an entry: counted and named, never archived as one.
    conflicts = [e.request_id for e in listed if e.status == "conflict"]
    entries = [e for e in listed if e.status != "conflict"]
    letters = await dead_letters(bus)
    store = await bus.store() if artefacts else None
    objects = []
    if store is not None:
        objects = [
            o
            for o in await store.list("reports/")
            if since is None or o.modified is None or o.modified >= since
        ]
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "ledger_entries": len(entries),
        "ledger_conflicts": conflicts,
        "dead_letters": len(letters),
        "artefacts": len(objects),
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
    saved = 0
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        add(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
        kept_entries = entries if include_secrets else [redacted_entry(e) for e in entries]
        add(tar, "ledger.jsonl", "".join(e.model_dump_json() + "\n" for e in kept_entries).encode())
        kept = [r.letter if include_secrets else redacted_letter(r.letter) for r in letters]
        add(tar, "dead-letters.jsonl", "".join(k.model_dump_json() + "\n" for k in kept).encode())
        if templates_dir.is_dir():
            tar.add(templates_dir, arcname="templates", filter=visible)
        if config is not None and config.is_file():
            text = config.read_text(encoding="utf-8")
            add(tar, "config.yaml", (text if include_secrets else redacted_config(text)).encode())
        for obj in objects:  # one report in memory at a time, straight into the gzip stream
            assert store is not None
            try:
                data = await store.get(obj.key)
            except PressroomError:
                continue  # removed since the listing (retention)
            add(tar, f"artefacts/{obj.key}", data)
            saved += 1
    return {
        "ledger_entries": len(entries),
        "dead_letters": len(letters),
        "artefacts": saved,
        "ledger_conflicts": len(conflicts),
    }


# What a restore reads, at most: each member's size is checked (from its header) before any of
# it is read, the records are read a line at a time, and the whole archive is capped.
RESTORE_MAX_TOTAL = 16 * 1024**3
RESTORE_MAX_MEMBERS = 1_000_000
RESTORE_MAX_LINE = 8 * 1024**2
_RESTORE_MAX_MEMBER = {
    "manifest.json": 64 * 1024,
    "ledger.jsonl": 2 * 1024**3,
    "dead-letters.jsonl": 2 * 1024**3,
    "config.yaml": 4 * 1024**2,
    "templates/": 64 * 1024**2,
}


@dataclass
class RestoreReport:
    """What `restore` did, counted, for the CLI to say."""

    ledger_entries: int = 0
    ledger_present: int = 0
    ledger_refused: dict[str, int] | None = None
    dead_letters: int = 0
    dead_letters_present: int = 0
    artefacts: int = 0
    artefacts_present: int = 0
    templates_written: int = 0
    templates_unchanged: int = 0
    templates_kept: list[str] | None = None
    config: str = ""  # what happened to config.yaml, in words ("" when the archive had none)
    secrets_redacted: bool = True

    def refuse(self, why: str) -> None:
        self.ledger_refused = self.ledger_refused or {}
        self.ledger_refused[why] = self.ledger_refused.get(why, 0) + 1


def _restorable(entry: LedgerEntry, now: datetime) -> str | None:
    """Why a ledger entry from an archive may not go back (None: it may). Only settled
    reports go back, and nothing that would stand in for a future request: a crafted entry
    for a scheduled fire that is not due would make that fire a "duplicate" and skip it."""
    from shared.schedules import CLOCK_SKEW, scheduled_fire

    if not re.fullmatch(REQUEST_ID_PATTERN, entry.request_id) or len(entry.request_id) > 128:
        return "not a request id"
    if entry.status not in ("delivered", "failed"):
        return "still in flight when backed up"
    latest = now + CLOCK_SKEW
    stamps = [entry.updated_at, entry.requested_at, entry.settled_at]
    if any(t is not None and t > latest for t in stamps):
        return "dated in the future"
    fire = scheduled_fire(entry.request_id)
    if fire is not None and fire > now:  # a backup holds no fire from the future
        return "a scheduled fire that is not due"
    return None


def _member_limit(name: str, artefact_limit: int) -> int | None:
    if name.startswith("artefacts/"):
        return artefact_limit
    if name.startswith("templates/"):
        return _RESTORE_MAX_MEMBER["templates/"]
    return _RESTORE_MAX_MEMBER.get(name)


def _safe_relative(name: str, prefix: str) -> Path | None:
    """`templates/a/b.html` → `a/b.html`; None for anything that could leave the folder."""
    rel = name.removeprefix(prefix)
    parts = Path(rel).parts
    if (
        not rel
        or rel.startswith("/")
        or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
    ):
        return None
    return Path(*parts)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.restore-{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


async def restore(
    bus: Bus,
    source: Path,
    *,
    templates_dir: Path | None = None,
    config: Path | None = None,
    force: bool = False,
) -> RestoreReport:
    """Put back what an archive holds and the stack lacks: settled ledger entries, dead letters
    (the same one is never put back twice: compared by `letter_identity`), reports' artefacts,
    and — when given where — templates and the config file (a file that differs here is kept
    unless `force`). The archive is read as a stream, every member checked before it is read."""
    from nats.js.errors import KeyWrongLastSequenceError

    report = RestoreReport()
    now = datetime.now(UTC)
    kv = await bus.js.key_value(LEDGER_BUCKET)
    present = {letter_identity(r.letter) for r in await dead_letters(bus)}
    store: ArtefactStore | None = None
    stored: set[str] = set()
    artefact_limit = bus.settings.max_output_bytes
    total = members = 0

    def bad(why: str) -> PressroomError:
        return PressroomError(f"'{source}' is not a pressroom backup: {why}")

    def lines(handle: Any, name: str) -> Any:
        while line := handle.readline(RESTORE_MAX_LINE + 1):
            if len(line) > RESTORE_MAX_LINE and not line.endswith(b"\n"):
                raise bad(f"{name} has a line over {RESTORE_MAX_LINE // 1024**2} MiB")
            if line.strip():
                yield line

    try:
        with tarfile.open(source, mode="r|gz") as tar:
            for member in tar:
                members += 1
                total += member.size
                if members > RESTORE_MAX_MEMBERS or total > RESTORE_MAX_TOTAL:
                    raise bad(
                        f"more than {RESTORE_MAX_MEMBERS:,} members or "
                        f"{RESTORE_MAX_TOTAL // 1024**3} GiB in all: refused"
                    )
                if not member.isfile():
                    continue
                limit = _member_limit(member.name, artefact_limit)
                if limit is None:
                    continue  # not ours: skipped unread
                if member.size > limit:
                    raise bad(
                        f"{member.name} is {member.size:,} bytes, over the {limit:,} a "
                        "backup holds: refused"
                    )
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                name = member.name
                if name == "manifest.json":
                    manifest = json.loads(handle.read(limit))
                    report.secrets_redacted = manifest.get("secrets") != "included"
                elif name == "ledger.jsonl":
                    for line in lines(handle, name):
                        entry = LedgerEntry.model_validate_json(line)
                        why = _restorable(entry, now)
                        if why:
                            report.refuse(why)
                            continue
                        try:
                            await kv.create(entry.request_id, entry.model_dump_json().encode())
                            report.ledger_entries += 1
                        except KeyWrongLastSequenceError:
                            report.ledger_present += 1  # the live ledger wins
                elif name == "dead-letters.jsonl":
                    for line in lines(handle, name):
                        letter = DeadLetter.model_validate_json(line)
                        if letter_identity(letter) in present:
                            report.dead_letters_present += 1
                            continue
                        await JetStreamPublisher(bus.js).publish(
                            f"{DLQ_PREFIX}{letter.subject}",
                            letter.model_dump_json().encode(),
                            msg_id=f"restore:{_identity_id(letter)}",
                        )
                        present.add(letter_identity(letter))
                        report.dead_letters += 1
                elif name.startswith("artefacts/"):
                    key = name.removeprefix("artefacts/")
                    if not key.startswith("reports/") or _safe_relative(key, "reports/") is None:
                        continue
                    if store is None:
                        store = await bus.store()
                        stored = {o.key for o in await store.list("reports/")}
                    if key in stored:
                        report.artefacts_present += 1
                        continue
                    content_type = _CONTENT_TYPES.get(Path(key).suffix, "application/octet-stream")
                    await store.put(key, handle.read(limit), content_type=content_type)
                    report.artefacts += 1
                elif name.startswith("templates/") and templates_dir is not None:
                    rel = _safe_relative(name, "templates/")
                    if rel is not None:
                        _restore_file(report, templates_dir / rel, handle.read(limit), force)
                elif name == "config.yaml":
                    report.config = _restore_config(
                        config, handle.read(limit), force, report.secrets_redacted
                    )
    except PressroomError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError) as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise bad(text) from None
    return report


def _restore_file(report: RestoreReport, path: Path, data: bytes, force: bool) -> None:
    if path.is_file() and path.read_bytes() == data:
        report.templates_unchanged += 1
    elif path.exists() and not force:
        report.templates_kept = [*(report.templates_kept or []), str(path)]
    else:
        _write_private(path, data, 0o644)
        report.templates_written += 1


def _restore_config(config: Path | None, data: bytes, force: bool, redacted: bool) -> str:
    if config is None:
        return "not restored: name where with --config (or set PRESSROOM_CONFIG)"
    if config.is_file() and config.read_bytes() == data:
        return f"{config} unchanged"
    if config.exists() and redacted:
        return f"{config} differs and was kept (the archive's copy has its secrets redacted)"
    if config.exists() and not force:
        return f"{config} differs and was kept (--force overwrites it)"
    _write_private(config, data, 0o600)
    note = " (fill in the REDACTED secrets)" if redacted else ""
    return f"written to {config}{note}; PRESSROOM_CONFIG={config} uses it"


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
    from shared.adapters.store import remove_older_than

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
    from shared.bus.topology import DELIVERIES_BUCKET
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
