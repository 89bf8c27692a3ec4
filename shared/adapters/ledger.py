"""Per-request state in JetStream KV: what each stage finished, when, and how it ended.

The ledger is both the idempotency record (a stage finished for a request_id is not redone) and
the source of `pressroom status / ls / stats / slo`.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from pydantic import BaseModel, Field, model_validator

from shared.burst import BurstTally
from shared.bus.names import LEDGER_BUCKET
from shared.bus.topology import kv_snapshot
from shared.events import (
    Artefact,
    ChannelResult,
    DataReady,
    Event,
    ReportDelivered,
    ReportRendered,
    ReportRequested,
    request_fingerprint,
    utcnow,
)
from shared.observe.logging import get_logger
from shared.templatename import canonical_template
from shared.urls import mask_url_secrets

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

log = get_logger("pressroom.ledger")

StageState = Literal["running", "done", "failed"]
Status = Literal[
    "requested", "fetched", "rendered", "delivered", "failed", "conflict", "cancelled", "skipped"
]
ClaimResult = Literal["proceed", "done", "busy", "conflict", "cancelled"]

PIPELINE = ("fetcher", "renderer", "distributor")
_STATUS_AFTER: dict[str, Status] = {
    "fetcher": "fetched",
    "renderer": "rendered",
    "distributor": "delivered",
}
# Within one message (one generation), an outcome beats any attempt still running, and a
# stage that finished beats a failure recorded for the same message (its output went out).
_RANK: dict[str, int] = {"running": 0, "failed": 1, "done": 2}


class StageRecord(BaseModel):
    state: StageState
    seq: int = Field(
        description="Stream sequence of the message that claimed the stage: the generation. "
        "A replay or a new publish is a new message, so a later generation."
    )
    attempts: int = 1
    worker: str | None = Field(
        default=None, description="host:pid of the worker process that claimed the stage."
    )
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    seconds: float | None = None
    error: str | None = Field(
        default=None,
        description="Failed: why. Running: the last error of a retried attempt (retries go on).",
    )
    error_attempt: int | None = Field(
        default=None, description="The attempt whose error `error` is."
    )


def _key(record: StageRecord) -> tuple[int, int, int, int]:
    """The order of a stage's records: generation, outcome over attempts, attempt, rank."""
    terminal = int(record.state != "running")
    return (record.seq, terminal, record.attempts, _RANK[record.state])


def merge_records(old: StageRecord | None, new: StageRecord) -> StageRecord:
    """Two records of one stage as one, whatever order they arrived in (commutative,
    associative, idempotent): the greatest record by `_key` wins; a running one keeps the
    latest error of its own generation's earlier attempts; a finished stage has no error."""
    if old is None:
        win, lose = new, None
    else:
        win, lose = (new, old) if _key(new) > _key(old) else (old, new)
    if (
        win.state == "running"
        and lose is not None
        and lose.state == "running"
        and lose.seq == win.seq
        and lose.error is not None
        and (lose.error_attempt or 0) > (win.error_attempt or 0)
    ):
        win = win.model_copy(update={"error": lose.error, "error_attempt": lose.error_attempt})
    if win.state == "done" and win.error is not None:
        win = win.model_copy(update={"error": None, "error_attempt": None})
    return win


class LedgerEntry(BaseModel):
    request_id: str
    status: Status = Field(
        default="requested",
        description="Derived from the stage records (`derive`), never set on its own.",
    )
    template: str | None = None
    template_version: str | None = None
    requested_by: str | None = None
    requested_at: datetime | None = None
    fingerprint: str | None = Field(
        default=None, description="Content the request_id is bound to (request_fingerprint)."
    )
    updated_at: datetime = Field(default_factory=utcnow)
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    fetch_seconds: float | None = None
    cache_hits: int = 0
    cache_misses: int = 0
    render_seconds: float | None = None
    artefacts: list[Artefact] = Field(default_factory=list)
    channels: list[ChannelResult] = Field(default_factory=list)
    outputs: dict[str, tuple[int, int]] = Field(
        default_factory=dict,
        description="Per stage, the (seq, attempt) of the finished record whose output "
        "(timings, artefacts, channels) the entry shows: the latest generation's.",
    )
    error: str | None = None
    failed_stage: str | None = None
    settled: Literal["delivered", "failed"] | None = Field(
        default=None,
        description="The report's first final outcome, the one metrics counted: a replay that "
        "ends differently changes `status`, never this.",
    )
    settled_at: datetime | None = None
    burst: BurstTally | None = Field(
        default=None, description="A burst's parent: its children's outcomes (shared/burst.py)."
    )
    cancelled_at: datetime | None = Field(
        default=None, description="When `pressroom cancel` stopped the request (shared/cancel.py)."
    )
    cancelled_by: str | None = None
    skipped: str | None = Field(
        default=None, description="Why the run sent nothing (a schedule's `skip_if_empty`)."
    )

    @model_validator(mode="after")
    def _derived(self) -> LedgerEntry:
        derive(self)
        return self

    @property
    def total_seconds(self) -> float | None:
        """Publish of the request to delivery: the legacy 'generation time'."""
        end = self.stages.get("distributor")
        if self.status != "delivered" or not end or not end.finished_at or not self.requested_at:
            return None
        return (end.finished_at - self.requested_at).total_seconds()

    @property
    def last_error(self) -> str | None:
        """The failure, or while retries go on the latest error of the stage retrying."""
        if self.error:
            return self.error
        for stage in reversed(PIPELINE):
            record = self.stages.get(stage)
            if record is not None and record.state == "running" and record.error:
                return f"{stage} attempt {record.error_attempt}: {record.error}"
        return None


def derive(entry: LedgerEntry) -> LedgerEntry:
    """The entry's status, error and failed stage as a function of its stage records alone.

    A delivered report is delivered; else a stage whose latest generation failed makes the
    report failed (a late "fetcher done" cannot undo it; a replay is a later generation that
    replaces the failed record); else the furthest finished stage says how far it got.
    An entry without stage records (restored from an old backup) keeps what it says.
    """
    marked = entry.burst is not None or entry.cancelled_at or entry.skipped
    if entry.status == "conflict" or not (entry.stages or marked):
        return entry
    records = entry.stages
    done = [s for s in PIPELINE if (r := records.get(s)) and r.state == "done"]
    failed = [s for s in PIPELINE if (r := records.get(s)) and r.state == "failed"]
    tally = entry.burst
    if "distributor" in done:
        status: Status = "delivered"
    elif entry.cancelled_at is not None:
        status = "cancelled"
    elif tally is not None and tally.complete and not failed:
        status = "failed" if tally.failed else "cancelled" if tally.cancelled else "delivered"
    elif entry.skipped is not None and not failed:
        status = "skipped"
    elif failed:
        status = "failed"
    elif done:
        status = _STATUS_AFTER[done[-1]]
    else:
        status = "requested"
    if status == "failed" and not failed and tally is not None:
        entry.error, entry.failed_stage = f"burst: {tally.summary()}", "burst"
    elif status == "failed":
        stage = failed[-1]
        own = records[stage].error
        keep = entry.error if entry.failed_stage == stage else None
        entry.error, entry.failed_stage = own or keep, stage
    else:
        entry.error, entry.failed_stage = None, None
    entry.status = status
    return entry


class Ledger(Protocol):
    async def get(self, request_id: str) -> LedgerEntry | None: ...

    async def claim(
        self,
        request_id: str,
        stage: str,
        *,
        seq: int,
        attempt: int,
        request: ReportRequested,
        worker: str | None = None,
        record: bool = True,
        fresh: bool = False,
    ) -> ClaimResult:
        """Whether this message may do the stage's work; `record=False` only decides (a
        read), the claim being written with the finish or later (`StageRunner`); `fresh`: the
        entry is most likely not there yet, so it is created without a read first."""
        ...

    async def finish(
        self,
        request_id: str,
        stage: str,
        *,
        seconds: float,
        event: Event,
        seq: int | None = None,
        attempt: int | None = None,
        worker: str | None = None,
    ) -> LedgerEntry | None:
        """Record the stage done; the entry when this gave the report its first outcome."""
        ...

    async def fail(
        self,
        request_id: str,
        stage: str,
        *,
        reason: str,
        seq: int | None = None,
        attempt: int | None = None,
    ) -> LedgerEntry | None:
        """Record the stage failed; the entry when this gave the report its first outcome."""
        ...

    async def retrying(
        self, request_id: str, stage: str, *, reason: str, seq: int, attempt: int
    ) -> None:
        """Record the error of an attempt that will be retried (shown while retries go on)."""
        ...

    async def entries(self) -> list[LedgerEntry]: ...

    async def update(
        self,
        request_id: str,
        change: Callable[[LedgerEntry], tuple[LedgerEntry | None, Any]],
        request: ReportRequested | None = None,
    ) -> Any: ...


def _apply_claim(
    entry: LedgerEntry,
    stage: str,
    seq: int,
    attempt: int,
    worker: str | None = None,
    fingerprint: str | None = None,
) -> tuple[LedgerEntry | None, ClaimResult]:
    if entry.fingerprint and fingerprint and entry.fingerprint != fingerprint:
        return None, "conflict"  # the id was used for other content: never mix the two
    if entry.cancelled_at is not None:
        return None, "cancelled"  # `pressroom cancel`: no stage starts it any more
    entry.fingerprint = entry.fingerprint or fingerprint
    record = entry.stages.get(stage)
    if record is not None and record.state == "done":
        return None, "done"
    if record is not None and record.seq > seq:
        # A later message for the same request (a duplicate, a replay) holds or held it.
        return None, "busy"
    if record is not None and record.state == "failed" and record.seq == seq:
        return None, "done"  # this very message was dead-lettered: its outcome is recorded
    if record is not None and record.state == "running" and record.seq != seq:
        # Another message for the same request (a duplicate publish) holds the stage.
        return None, "busy"
    if record is not None and record.seq == seq and record.attempts == attempt:
        return None, "proceed"  # already claimed by this delivery: nothing new to write
    claimed = StageRecord(state="running", seq=seq, attempts=attempt, worker=worker)
    entry.stages[stage] = merge_records(record, claimed)
    derive(entry)
    return entry, "proceed"


def _output_key(entry: LedgerEntry, stage: str, seq: int, attempt: int) -> bool:
    """Whether a finished record of (seq, attempt) is the latest output of the stage."""
    known = entry.outputs.get(stage)
    if known is not None and tuple(known) >= (seq, attempt):
        return tuple(known) == (seq, attempt)
    entry.outputs[stage] = (seq, attempt)
    return True


def _apply_finish(
    entry: LedgerEntry,
    stage: str,
    seconds: float,
    event: Event,
    seq: int | None = None,
    attempt: int | None = None,
    worker: str | None = None,
) -> LedgerEntry:
    now = utcnow()
    current = entry.stages.get(stage)
    seq = seq if seq is not None else (current.seq if current else 0)
    attempt = attempt if attempt is not None else (current.attempts if current else 1)
    started = (
        current.started_at if current and current.seq == seq else now - timedelta(seconds=seconds)
    )
    worker = current.worker if current and current.seq == seq and current.worker else worker
    finished = StageRecord(
        state="done",
        seq=seq,
        attempts=attempt,
        worker=worker,
        started_at=started,
        finished_at=now,
        seconds=seconds,
    )
    entry.stages[stage] = merge_records(current, finished)
    if _output_key(entry, stage, seq, attempt):
        if isinstance(event, DataReady):
            entry.fetch_seconds = event.fetch_seconds
            entry.cache_hits, entry.cache_misses = event.cache_hits, event.cache_misses
        elif isinstance(event, ReportRendered):
            entry.render_seconds = event.render_seconds
            entry.template_version = event.template_version
            entry.artefacts = list(event.artefacts)
        elif isinstance(event, ReportDelivered):
            entry.channels = list(event.channels)
    derive(entry)
    if entry.status == "delivered":
        _settle(entry, "delivered", now)
    return entry


def _settle(entry: LedgerEntry, outcome: Literal["delivered", "failed"], when: datetime) -> None:
    if entry.settled is None:
        entry.settled, entry.settled_at = outcome, when


def _apply_fail(
    entry: LedgerEntry,
    stage: str,
    reason: str,
    seq: int | None = None,
    attempt: int | None = None,
) -> LedgerEntry:
    now = utcnow()
    current = entry.stages.get(stage)
    seq = seq if seq is not None else (current.seq if current else 0)
    attempt = attempt if attempt is not None else (current.attempts if current else 1)
    same = current is not None and current.seq == seq
    failed = StageRecord(
        state="failed",
        seq=seq,
        attempts=attempt,
        worker=current.worker if current and same else None,
        started_at=current.started_at if current and same else now,
        finished_at=now,
        error=mask_url_secrets(reason),
        error_attempt=attempt,
    )
    entry.stages[stage] = merge_records(current, failed)
    derive(entry)
    if entry.status == "failed":
        _settle(entry, "failed", now)
    return entry


def _apply_retrying(
    entry: LedgerEntry, stage: str, reason: str, seq: int, attempt: int
) -> tuple[LedgerEntry | None, None]:
    current = entry.stages.get(stage)
    retried = StageRecord(
        state="running",
        seq=seq,
        attempts=attempt,
        worker=current.worker if current and current.seq == seq else None,
        started_at=current.started_at if current and current.seq == seq else utcnow(),
        error=mask_url_secrets(reason),
        error_attempt=attempt,
    )
    merged = merge_records(current, retried)
    if current is not None and merged == current:
        return None, None  # nothing new (a later attempt or an outcome is already recorded)
    entry.stages[stage] = merged
    derive(entry)
    return entry, None


def _settling(
    apply: Callable[[LedgerEntry], LedgerEntry],
) -> Callable[[LedgerEntry], tuple[LedgerEntry, LedgerEntry | None]]:
    """Wrap a change so the update returns the entry only if the change settled the report."""

    def change(entry: LedgerEntry) -> tuple[LedgerEntry, LedgerEntry | None]:
        before = entry.settled
        changed = apply(entry)
        return changed, (changed if before is None and changed.settled is not None else None)

    return change


def _seed(request_id: str, request: ReportRequested | None) -> LedgerEntry:
    entry = LedgerEntry(request_id=request_id)
    if request is not None:
        entry.fingerprint = request_fingerprint(request)
        entry.template = canonical_template(request.template)
        entry.requested_by = request.requested_by
        entry.requested_at = request.requested_at
    return entry


def parse_entry(request_id: str, value: bytes) -> LedgerEntry:
    """A stored value as an entry; an unreadable one as an entry whose status is `conflict`
    with the reason, so every reader can show it and go on."""
    try:
        return LedgerEntry.model_validate_json(value)
    except ValueError as error:
        first = str(error).splitlines()[0][:200]
        return LedgerEntry(
            request_id=request_id,
            status="conflict",
            error=f"the ledger holds an unreadable value for this key ({len(value)} bytes: "
            f"{first}); not a Pressroom entry",
        )


SEEN_MAX = 512  # entries whose last seen value a process keeps (KvLedger._seen)


@dataclass(frozen=True)
class _Seen:
    """An entry's value as this process last read or wrote it, and its revision."""

    revision: int
    value: bytes


class KvLedger:
    """The ledger in a JetStream KV bucket, updated with compare-and-set."""

    def __init__(self, kv: KeyValue, *, js: JetStreamContext | None = None) -> None:
        self._kv = kv
        self._js = js  # for complete listings (kv_snapshot); without it, kv.keys()
        # The value and revision this process last read or wrote per entry: a stage's finish
        # tries its compare-and-set on what its claim saw instead of reading the entry again
        # (one read fewer per stage). A stale one only fails the compare-and-set, and the
        # entry is read afresh; each is used once.
        self._seen: OrderedDict[str, _Seen] = OrderedDict()

    async def get(self, request_id: str) -> LedgerEntry | None:
        try:
            entry = await self._kv.get(request_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return parse_entry(request_id, entry.value)

    async def _update(
        self,
        request_id: str,
        change: Callable[[LedgerEntry], tuple[LedgerEntry | None, Any]],
        request: ReportRequested | None = None,
        *,
        fresh: bool = False,
    ) -> Any:
        if fresh and request_id not in self._seen:
            # Most likely no entry yet (a request's first delivery): write it straight away,
            # one round trip; an entry already there fails the create and is read below.
            changed, result = change(_seed(request_id, request))
            if changed is not None:
                changed.updated_at = utcnow()
                data = changed.model_dump_json().encode()
                try:
                    revision = await self._kv.create(request_id, data)
                except KeyWrongLastSequenceError:
                    pass
                else:
                    self._remember(request_id, _Seen(revision, data))
                    return result
        for _ in range(50):
            current: _Seen | KeyValue.Entry | None = self._seen.pop(request_id, None)
            remembered = current is not None
            if current is None:
                try:
                    current = await self._kv.get(request_id)
                except KeyNotFoundError:
                    current = None
            if current is None or not current.value:
                entry = _seed(request_id, request)
            else:
                entry = parse_entry(request_id, current.value)
                if entry.status == "conflict":
                    # Not a ledger entry (something else wrote the key): start the request's
                    # entry afresh. Safe: a stage done again publishes under the same message
                    # id, and the distributor's own records never send a delivery twice.
                    log.warning(
                        "unreadable ledger entry replaced", request_id=request_id, why=entry.error
                    )
                    entry = _seed(request_id, request)
            changed, result = change(entry)
            if changed is None:
                if remembered:
                    continue  # a remembered value is trusted only through a compare-and-set
                if current is not None and current.value and current.revision is not None:
                    self._remember(request_id, _Seen(current.revision, current.value))
                return result
            changed.updated_at = utcnow()
            data = changed.model_dump_json().encode()
            try:
                if current is None:
                    revision = await self._kv.create(request_id, data)
                else:
                    revision = await self._kv.update(request_id, data, last=current.revision)
            except KeyWrongLastSequenceError:
                if not remembered:  # another writer got there first: give it a moment
                    await asyncio.sleep(0.01)
                continue
            self._remember(request_id, _Seen(revision, data))
            return result
        raise RuntimeError(f"ledger entry {request_id} is too contended to update")

    def _remember(self, request_id: str, seen: _Seen) -> None:
        self._seen[request_id] = seen
        self._seen.move_to_end(request_id)
        while len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)

    async def claim(
        self,
        request_id: str,
        stage: str,
        *,
        seq: int,
        attempt: int,
        request: ReportRequested,
        worker: str | None = None,
        record: bool = True,
        fresh: bool = False,
    ) -> ClaimResult:
        """`fresh`: the entry is most likely not there yet (written without reading first)."""
        fingerprint = request_fingerprint(request)

        def decide(entry: LedgerEntry) -> tuple[LedgerEntry | None, ClaimResult]:
            new = not entry.stages  # no entry yet: writing it binds the id to the content
            changed, result = _apply_claim(entry, stage, seq, attempt, worker, fingerprint)
            return (changed if record or new else None), result

        result: ClaimResult = await self._update(request_id, decide, request, fresh=fresh)
        return result

    async def finish(
        self,
        request_id: str,
        stage: str,
        *,
        seconds: float,
        event: Event,
        seq: int | None = None,
        attempt: int | None = None,
        worker: str | None = None,
    ) -> LedgerEntry | None:
        settled: LedgerEntry | None = await self._update(
            request_id,
            _settling(lambda e: _apply_finish(e, stage, seconds, event, seq, attempt, worker)),
        )
        return settled

    async def fail(
        self,
        request_id: str,
        stage: str,
        *,
        reason: str,
        seq: int | None = None,
        attempt: int | None = None,
    ) -> LedgerEntry | None:
        settled: LedgerEntry | None = await self._update(
            request_id, _settling(lambda e: _apply_fail(e, stage, reason, seq, attempt))
        )
        return settled

    async def retrying(
        self, request_id: str, stage: str, *, reason: str, seq: int, attempt: int
    ) -> None:
        await self._update(request_id, lambda e: _apply_retrying(e, stage, reason, seq, attempt))

    async def update(
        self,
        request_id: str,
        change: Callable[[LedgerEntry], tuple[LedgerEntry | None, Any]],
        request: ReportRequested | None = None,
    ) -> Any:
        """Any other change (a burst's tally, a cancel, a skip), with compare-and-set:
        `change` returns the entry to write (None: nothing) and the result to return."""
        return await self._update(request_id, change, request)

    async def entries(self) -> list[LedgerEntry]:
        """Every entry; a value that is not an entry is listed as a `conflict` entry."""
        if self._js is not None:
            values = await kv_snapshot(self._js, LEDGER_BUCKET)
            return [parse_entry(k, v) for k, v in values.items() if v]
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            return []
        found = await asyncio.gather(*(self.get(k) for k in keys))
        return [e for e in found if e is not None]


def entry_as_dict(entry: LedgerEntry) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(entry.model_dump_json())
    result["total_seconds"] = entry.total_seconds
    result["last_error"] = entry.last_error
    return result
