"""Per-request state in JetStream KV: what each stage finished, when, and how it ended.

The ledger is both the idempotency record (a stage finished for a request_id is not redone) and
the source of `pressroom status / ls / stats / slo`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from pydantic import BaseModel, Field

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

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue

StageState = Literal["running", "done", "failed"]
Status = Literal["requested", "fetched", "rendered", "delivered", "failed"]
ClaimResult = Literal["proceed", "done", "busy", "conflict"]

_STATUS_AFTER: dict[str, Status] = {
    "fetcher": "fetched",
    "renderer": "rendered",
    "distributor": "delivered",
}
_PROGRESS: dict[str, int] = {"requested": 0, "fetched": 1, "rendered": 2, "delivered": 3}


class StageRecord(BaseModel):
    state: StageState
    seq: int = Field(description="Stream sequence of the message that claimed the stage.")
    attempts: int = 1
    worker: str | None = Field(
        default=None, description="host:pid of the worker process that claimed the stage."
    )
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    seconds: float | None = None
    error: str | None = None


class LedgerEntry(BaseModel):
    request_id: str
    status: Status = "requested"
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
    error: str | None = None
    failed_stage: str | None = None
    settled: Literal["delivered", "failed"] | None = Field(
        default=None,
        description="The report's first final outcome, the one metrics counted: a replay that "
        "ends differently changes `status`, never this.",
    )
    settled_at: datetime | None = None

    @property
    def total_seconds(self) -> float | None:
        """Publish of the request to delivery: the legacy 'generation time'."""
        end = self.stages.get("distributor")
        if self.status != "delivered" or not end or not end.finished_at or not self.requested_at:
            return None
        return (end.finished_at - self.requested_at).total_seconds()


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
    ) -> ClaimResult: ...

    async def finish(
        self, request_id: str, stage: str, *, seconds: float, event: Event
    ) -> LedgerEntry | None:
        """Record the stage done; the entry when this gave the report its first outcome."""
        ...

    async def fail(self, request_id: str, stage: str, *, reason: str) -> LedgerEntry | None:
        """Record the stage failed; the entry when this gave the report its first outcome."""
        ...

    async def entries(self) -> list[LedgerEntry]: ...


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
    entry.fingerprint = entry.fingerprint or fingerprint
    record = entry.stages.get(stage)
    if record is not None and record.state == "done":
        return None, "done"
    if record is not None and record.state == "running" and record.seq != seq:
        # Another message for the same request (a duplicate publish) holds the stage.
        return None, "busy"
    entry.stages[stage] = StageRecord(state="running", seq=seq, attempts=attempt, worker=worker)
    if entry.status == "failed":
        entry.status = "requested"
        entry.error = None
        entry.failed_stage = None
    return entry, "proceed"


def _apply_finish(entry: LedgerEntry, stage: str, seconds: float, event: Event) -> LedgerEntry:
    now = utcnow()
    record = entry.stages.get(stage) or StageRecord(state="running", seq=0)
    record.state, record.finished_at, record.seconds = "done", now, seconds
    entry.stages[stage] = record
    # Stages finish in any order in the ledger: the renderer's own record can land after the
    # distributor's (a slow KV write, a leader election). Status only moves forward.
    after = _STATUS_AFTER.get(stage)
    if after is not None and _PROGRESS.get(entry.status, -1) < _PROGRESS[after]:
        entry.status = after
    if isinstance(event, DataReady):
        entry.fetch_seconds = event.fetch_seconds
        entry.cache_hits, entry.cache_misses = event.cache_hits, event.cache_misses
    elif isinstance(event, ReportRendered):
        entry.render_seconds = event.render_seconds
        entry.template_version = event.template_version
        entry.artefacts = list(event.artefacts)
    elif isinstance(event, ReportDelivered):
        entry.channels = list(event.channels)
    if entry.status == "delivered":
        _settle(entry, "delivered", now)
    return entry


def _settle(entry: LedgerEntry, outcome: Literal["delivered", "failed"], when: datetime) -> None:
    if entry.settled is None:
        entry.settled, entry.settled_at = outcome, when


def _apply_fail(entry: LedgerEntry, stage: str, reason: str) -> LedgerEntry:
    record = entry.stages.get(stage) or StageRecord(state="failed", seq=0)
    now = utcnow()
    record.state, record.finished_at, record.error = "failed", now, reason
    entry.stages[stage] = record
    entry.status, entry.error, entry.failed_stage = "failed", reason, stage
    _settle(entry, "failed", now)
    return entry


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
        entry.template = request.template
        entry.requested_by = request.requested_by
        entry.requested_at = request.requested_at
    return entry


class KvLedger:
    """The ledger in a JetStream KV bucket, updated with compare-and-set."""

    def __init__(self, kv: KeyValue, *, js: JetStreamContext | None = None) -> None:
        self._kv = kv
        self._js = js  # for complete listings (kv_snapshot); without it, kv.keys()

    async def get(self, request_id: str) -> LedgerEntry | None:
        try:
            entry = await self._kv.get(request_id)
        except KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return LedgerEntry.model_validate_json(entry.value)

    async def _update(
        self,
        request_id: str,
        change: Callable[[LedgerEntry], tuple[LedgerEntry | None, Any]],
        request: ReportRequested | None = None,
    ) -> Any:
        for _ in range(50):
            try:
                current = await self._kv.get(request_id)
            except KeyNotFoundError:
                current = None
            if current is None or not current.value:
                entry = _seed(request_id, request)
            else:
                entry = LedgerEntry.model_validate_json(current.value)
            changed, result = change(entry)
            if changed is None:
                return result
            changed.updated_at = utcnow()
            data = changed.model_dump_json().encode()
            try:
                if current is None:
                    await self._kv.create(request_id, data)
                else:
                    await self._kv.update(request_id, data, last=current.revision)
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.01)
                continue
            return result
        raise RuntimeError(f"ledger entry {request_id} is too contended to update")

    async def claim(
        self,
        request_id: str,
        stage: str,
        *,
        seq: int,
        attempt: int,
        request: ReportRequested,
        worker: str | None = None,
    ) -> ClaimResult:
        fingerprint = request_fingerprint(request)
        result: ClaimResult = await self._update(
            request_id, lambda e: _apply_claim(e, stage, seq, attempt, worker, fingerprint), request
        )
        return result

    async def finish(
        self, request_id: str, stage: str, *, seconds: float, event: Event
    ) -> LedgerEntry | None:
        settled: LedgerEntry | None = await self._update(
            request_id, _settling(lambda e: _apply_finish(e, stage, seconds, event))
        )
        return settled

    async def fail(self, request_id: str, stage: str, *, reason: str) -> LedgerEntry | None:
        settled: LedgerEntry | None = await self._update(
            request_id, _settling(lambda e: _apply_fail(e, stage, reason))
        )
        return settled

    async def entries(self) -> list[LedgerEntry]:
        if self._js is not None:
            from shared.bus import LEDGER_BUCKET, kv_snapshot

            values = await kv_snapshot(self._js, LEDGER_BUCKET)
            return [LedgerEntry.model_validate_json(v) for v in values.values() if v]
        try:
            keys = await self._kv.keys()
        except NoKeysError:
            return []
        found = await asyncio.gather(*(self.get(k) for k in keys))
        return [e for e in found if e is not None]


def entry_as_dict(entry: LedgerEntry) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(entry.model_dump_json())
    result["total_seconds"] = entry.total_seconds
    return result
