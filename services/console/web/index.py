"""The reports list: a live index of the ledger, kept by watching its bucket.

The console reads every entry once at start (parsed by the ledger's own `parse_entry`) and
then each change as it is written, so a page of the newest reports, filtered, is a walk over
an in-memory list — fast at 100,000 entries — and each change is pushed to the pages that
listen (server-sent events). Only a summary per report is kept; a report's page reads its
entry from the ledger itself.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.console.busaccess import Bus
from shared.adapters.ledger import LedgerEntry, parse_entry
from shared.bus.names import LEDGER_BUCKET
from shared.events import CHILD_SEPARATOR
from shared.observe.logging import get_logger
from shared.templatename import canonical_template

log = get_logger("pressroom.console")
SCHEDULER_PREFIX = "scheduler:"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Row:
    request_id: str
    status: str
    template: str
    requested_by: str
    requested_at: datetime
    updated_at: datetime
    error: str
    total_seconds: float | None

    @property
    def schedule(self) -> str:
        by = self.requested_by
        return by.removeprefix(SCHEDULER_PREFIX) if by.startswith(SCHEDULER_PREFIX) else ""

    @property
    def order(self) -> tuple[str, str]:
        return (self.requested_at.isoformat(), self.request_id)

    @classmethod
    def of(cls, entry: LedgerEntry) -> Row:
        return cls(
            request_id=entry.request_id,
            status=entry.status,
            template=canonical_template(entry.template or "") if entry.template else "",
            requested_by=entry.requested_by or "",
            requested_at=entry.requested_at or entry.updated_at or _EPOCH,
            updated_at=entry.updated_at,
            error=entry.last_error or "",
            total_seconds=entry.total_seconds,
        )


@dataclass(frozen=True)
class Filters:
    status: str = ""
    template: str = ""
    requester: str = ""
    schedule: str = ""
    since: datetime | None = None
    until: datetime | None = None
    q: str = ""
    parent: str = ""  # a burst's parent id: its children (`<parent>/<key>`) only
    _template: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Spelled as the index spells it, once per page rather than once per row.
        wanted = canonical_template(self.template) if self.template else ""
        object.__setattr__(self, "_template", wanted)

    def matches(self, row: Row) -> bool:
        return (
            (not self.status or row.status == self.status)
            and (not self.template or row.template == self._template)
            and (not self.requester or self.requester.lower() in row.requested_by.lower())
            and (not self.schedule or row.schedule == self.schedule)
            and (self.since is None or row.requested_at >= self.since)
            and (self.until is None or row.requested_at < self.until)
            and (not self.q or self.q in row.request_id)
            and (not self.parent or row.request_id.startswith(self.parent + CHILD_SEPARATOR))
        )

    def query(self) -> dict[str, str]:
        """As URL parameters (only those set)."""
        values = {
            "status": self.status,
            "template": self.template,
            "requester": self.requester,
            "schedule": self.schedule,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "q": self.q,
        }
        return {k: v for k, v in values.items() if v}


@dataclass
class Page:
    rows: list[Row]
    next_cursor: str | None  # the cursor of the next (older) page, None on the last one


class LedgerIndex:
    """Newest-first pages over the ledger, and a feed of changed rows."""

    def __init__(self) -> None:
        self._rows: dict[str, Row] = {}
        self._order: list[tuple[str, str]] = []  # ascending (requested_at, request_id)
        self._listeners: set[asyncio.Queue[Row]] = set()
        self.loaded = asyncio.Event()
        self._unsorted = False  # while the first read goes on: sorted once, not per row
        self.read = 0
        self.templates: set[str] = set()
        self.schedules: set[str] = set()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, request_id: str) -> Row | None:
        return self._rows.get(request_id)

    def put(self, entry: LedgerEntry) -> Row:
        row = Row.of(entry)
        old = self._rows.get(row.request_id)
        if old is not None and old.order != row.order:
            self._sorted()
            at = bisect.bisect_left(self._order, old.order)
            if at < len(self._order) and self._order[at] == old.order:
                del self._order[at]
        if old is None or old.order != row.order:
            if self.loaded.is_set():
                self._sorted()
                bisect.insort(self._order, row.order)
            else:
                self._order.append(row.order)
                self._unsorted = True
        self._rows[row.request_id] = row
        if row.template:
            self.templates.add(row.template)
        if row.schedule:
            self.schedules.add(row.schedule)
        for queue in list(self._listeners):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(row)
        return row

    def _sorted(self) -> None:
        if self._unsorted:
            self._order.sort()
            self._unsorted = False

    def remove(self, request_id: str) -> None:
        self._sorted()
        old = self._rows.pop(request_id, None)
        if old is not None:
            at = bisect.bisect_left(self._order, old.order)
            if at < len(self._order) and self._order[at] == old.order:
                del self._order[at]

    def page(self, filters: Filters, cursor: str | None = None, size: int = 50) -> Page:
        """`size` rows older than `cursor` (the newest without one) that match `filters`."""
        self._sorted()
        end = len(self._order)
        if cursor:
            at, _, rid = cursor.partition("|")
            end = bisect.bisect_left(self._order, (at, rid))
        rows: list[Row] = []
        position = end
        for position in range(end - 1, -1, -1):
            row = self._rows[self._order[position][1]]
            if filters.matches(row):
                rows.append(row)
                if len(rows) == size:
                    break
        more = bool(rows) and len(rows) == size and position > 0
        return Page(rows, "|".join(rows[-1].order) if more else None)

    def counts(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for row in self._rows.values():
            counted[row.status] = counted.get(row.status, 0) + 1
        return counted

    @contextlib.contextmanager
    def listen(self) -> Iterator[asyncio.Queue[Row]]:
        queue: asyncio.Queue[Row] = asyncio.Queue(maxsize=1000)
        self._listeners.add(queue)
        try:
            yield queue
        finally:
            self._listeners.discard(queue)

    async def follow(self, bus: Bus) -> None:
        """Read the ledger and keep up with it until cancelled. A broken watch starts over, and
        so does one the bus was away from: a restarted server forgets the watch's consumer,
        which would leave the index as it was, quietly, for good."""
        while True:
            bus.reconnected.clear()
            watch = asyncio.create_task(self._watch(bus))
            back = asyncio.create_task(bus.reconnected.wait())
            try:
                await asyncio.wait({watch, back}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (watch, back):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if back.done() and not back.cancelled():
                log.info("bus back; reading the ledger again")
                continue
            error = watch.exception() if not watch.cancelled() else None
            log.warning("ledger watch broken; starting over", error=repr(error))
            await asyncio.sleep(1)

    async def _watch(self, bus: Bus) -> None:
        kv = await bus.js.key_value(LEDGER_BUCKET)
        watcher = await kv.watchall()
        current: set[str] | None = set()  # the keys of the first read (None: live from here)
        try:
            while True:
                update: Any = await watcher.updates(timeout=None)  # type: ignore[no-untyped-call]
                if update is None:  # every current value read: from here on, live
                    if current is not None:  # read again: what went meanwhile goes too
                        for gone in set(self._rows) - current:
                            self.remove(gone)
                        current = None
                    self.loaded.set()
                    continue
                if update.operation in ("DEL", "PURGE") or not update.value:
                    self.remove(update.key)
                    continue
                if current is not None:
                    current.add(update.key)
                self.read += 1
                self.put(parse_entry(update.key, update.value))
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]
