"""Requests as an operator makes and follows them: build, submit, watch the outcome, read the
ledger and the artefacts, deliver again, clean up."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nats.errors import Error as NatsError
from pydantic import ValidationError

from services.console.busaccess import Bus, BusUnavailable
from services.distributor.parcel import Parcel
from shared.adapters.ledger import PIPELINE, LedgerEntry, StageRecord
from shared.adapters.store import read_verified, remove_older_than
from shared.bus.failover import LEADERLESS, describe_error
from shared.bus.names import DELIVERIES_BUCKET, STREAM, msg_id
from shared.bus.topology import JetStreamPublisher
from shared.downloadlinks import download_link, local_console
from shared.errors import PressroomError
from shared.events import (
    CHILD_SEPARATOR,
    REPORT_DELIVERED,
    REPORT_FAILED,
    REPORT_REQUESTED,
    Artefact,
    ChannelResult,
    Delivery,
    ReportRendered,
    ReportRequested,
    request_fingerprint,
    tenant_of_subject,
)
from shared.templatename import canonical_template


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
            from services.scheduler.app import fire  # start-up time of every other command

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
    ledger = await bus.ledger()
    entry = await ledger.get(request_id)
    if entry is None:
        parent_id, child, _ = request_id.partition(CHILD_SEPARATOR)
        parent = await ledger.get(parent_id) if child else None
        if parent is not None and parent.burst is not None:
            # A burst's child has an entry once a renderer takes it: until then it waits in
            # the bulk lane (a burst of 10,000 has thousands waiting).
            raise PressroomError(
                f"'{request_id}' has not started yet: a child of burst '{parent_id}' "
                f"({parent.burst.summary()}); `pressroom cancel {request_id}` stops it first"
            )
        raise PressroomError(f"no request '{request_id}' in the ledger")
    return entry


def work_started(record: StageRecord) -> datetime:
    """When the stage's worker began its last attempt: its finish less the seconds it timed
    itself. Not `started_at`, when the claim was written: a stage writes it up to CLAIM_AFTER
    into its work, or with its finish (shared/stage/runner.py)."""
    if record.finished_at is not None and record.seconds is not None:
        return record.finished_at - timedelta(seconds=record.seconds)
    return record.started_at


def queue_waits(entry: LedgerEntry) -> dict[str, float]:
    """Seconds before each stage the report went through (a burst's child starts at the
    renderer): from the request, or the previous stage's finish, to when the stage's worker
    began its last attempt (for a retried stage, earlier attempts and backoff are in it)."""
    waits: dict[str, float] = {}
    previous = entry.requested_at
    for stage in PIPELINE:
        record = entry.stages.get(stage)
        if record is None:
            continue  # a stage this report skips (a burst's child has no fetcher)
        if previous is not None:
            waits[stage] = max((work_started(record) - previous).total_seconds(), 0.0)
        previous = record.finished_at
    return {k: round(v, 3) for k, v in waits.items()}


# ---- artefacts -----------------------------------------------------------------------------
async def _artefact(bus: Bus, request_id: str, fmt: str) -> Artefact:
    entry = await (await bus.ledger()).get(request_id)
    if entry is None:
        raise PressroomError(f"no request '{request_id}' in the ledger")
    # `csv` is the first table's CSV; `orders.csv` names one.
    matches = [a for a in entry.artefacts if fmt in (a.format, a.ext)]
    if not matches:
        have = ", ".join(a.ext for a in entry.artefacts) or "none yet"
        raise PressroomError(f"request '{request_id}' has no {fmt} artefact (has: {have})")
    return matches[0]


async def artefact_bytes(bus: Bus, request_id: str, fmt: str) -> bytes:
    """The artefact's bytes, refused if they no longer match the recorded sha256."""
    artefact = await _artefact(bus, request_id, fmt)
    return await read_verified(await bus.store(), artefact)


S3_LINK_MAX = timedelta(days=7)  # S3's longest presigned link


async def artefact_url(bus: Bus, request_id: str, fmt: str, expires: timedelta) -> str:
    """A download link minted now (never stored anywhere): the console's signed link when
    PRESSROOM_PUBLIC_URL is set (every store, up to 30 days); else S3's own (at most 7 days);
    else, on the JetStream object store, a link to the console on this machine
    (`local_console`: where `pressroom console` or `pressroom up` serves it)."""
    artefact = await _artefact(bus, request_id, fmt)
    if bus.settings.public_url:
        return download_link(bus.settings, artefact, expires)
    link = await (await bus.store()).presign(artefact.key, min(expires, S3_LINK_MAX))
    if link is None:
        here = local_console(bus.settings)
        if here is None:
            raise PressroomError(
                "the JetStream object store has no links of its own: set PRESSROOM_PUBLIC_URL "
                "to the console's address (`pressroom console` serves the links), or configure S3"
            )
        return download_link(bus.settings, artefact, expires, base=here)
    if expires > S3_LINK_MAX:
        raise PressroomError(
            "an S3 download link can last at most 7 days (S3's limit); set "
            "PRESSROOM_PUBLIC_URL for the console's links (up to 30 days)"
        )
    return link


# ---- delivering again ------------------------------------------------------------------------
async def deliver_again(
    bus: Bus, request_id: str, deliveries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Deliver an already rendered report through the distributor's channels, now."""

    entry = await (await bus.ledger()).get(request_id)
    if entry is None or not entry.artefacts:
        raise PressroomError(f"request '{request_id}' has no rendered artefacts to deliver")
    request = await original_request(bus, entry) or ReportRequested(
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
    # Imported here: the channels' libraries (S3, SMTP) cost every other command 0.1 s to start.
    from services.distributor.channels import default_channels

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


async def original_request(bus: Bus, entry: LedgerEntry) -> ReportRequested | None:
    """The request as the stages saw it (params, `filename`, tenant, `requested_at`: what
    names the files and fills the email), from the message the furthest stage took — for a
    burst's child, which no fetcher took, its own request — while the stream still holds it
    (30 days); else None."""
    for stage in reversed(PIPELINE):
        record = entry.stages.get(stage)
        if record is None:
            continue
        try:
            raw = await bus.js.get_msg(STREAM, record.seq)
            body = json.loads(raw.data or b"{}")
        except (NatsError, TimeoutError, ValueError):
            continue  # aged out of the stream (or not ours): an earlier stage's may be there
        found = body.get("request", body) if isinstance(body, dict) else None
        try:
            request = ReportRequested.model_validate(found)
        except ValidationError:
            continue
        if request.request_id != entry.request_id:
            continue
        subject = raw.subject or ""
        if subject.startswith(REPORT_REQUESTED):
            # As published, before the fetcher stamped it (shared/stage/intake.py): who asked
            # and for which calling system is what the subject and the ledger say, never the
            # body (a tenant's body naming another tenant must not reach that one's folder).
            request = request.model_copy(
                update={
                    "tenant": tenant_of_subject(subject),
                    "requested_by": entry.requested_by,
                    "requested_at": entry.requested_at or request.requested_at,
                }
            )
        return request
    return None


async def clean_artefacts(bus: Bus, age: timedelta, *, dry_run: bool) -> list[Any]:
    """Artefacts older than `age` removed (or only listed, with `dry_run`)."""

    return list(await remove_older_than(await bus.store(), age, dry_run=dry_run))


@dataclass(frozen=True)
class OldFile:
    path: Path
    size: int


def clean_out_dir(folder: Path, age: timedelta, *, dry_run: bool) -> list[OldFile]:
    """Files the `file` channel delivered under `folder` (PRESSROOM_OUT_DIR) older than `age`,
    removed (or only listed, with `dry_run`), with the folders they leave empty. Only what
    the channel writes goes (reports `*.pdf` / `*.html`, their `*.csv` / `*.xlsx` exports, and
    `.*.part` files a crash left
    half-written): anything else an operator keeps there stays. Symbolic links are neither
    followed nor removed."""

    if not folder.is_dir():
        return []
    cutoff = time.time() - age.total_seconds()
    found: list[OldFile] = []
    for root, _dirs, files in os.walk(folder, topdown=False, followlinks=False):
        here = Path(root)
        for name in sorted(files):
            path = here / name
            info = path.lstat()
            ours = path.suffix in (".pdf", ".html", ".csv", ".xlsx") or (
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
