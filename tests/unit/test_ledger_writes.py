"""Ledger writes per stage, retry reasons, one template name, unreadable values (no broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.fetcher.cache import SourceCache, cache_key
from shared import metrics
from shared.adapters.ledger import KvLedger
from shared.adapters.memory import MemoryKeyValue, MemoryMessage, MemoryPublisher
from shared.bus.names import FETCHER, RENDERER
from shared.errors import TransientError
from shared.events import DataReady, Event, ReportRequested, Source
from shared.settings import Settings
from shared.stage import runner as stage
from shared.stage.runner import StageRunner
from shared.templatename import canonical_template
from tests.unit.test_metrics import rendered_event


class CountingKV(MemoryKeyValue):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def put(self, key: str, value: bytes) -> int:
        self.writes += 1
        return await super().put(key, value)


REQUEST = ReportRequested(request_id="r-w", template="weekly")


def data_ready() -> bytes:
    return DataReady(request=REQUEST, context={}).model_dump_json().encode()


async def render_quickly(event: Event) -> Event:
    return rendered_event("r-w", "weekly")


async def test_quick_work_writes_its_claim_and_finish_at_once() -> None:
    kv = CountingKV()
    ledger = KvLedger(kv)  # type: ignore[arg-type]
    await ledger.claim("r-w", "fetcher", seq=1, attempt=1, request=REQUEST)  # the fetcher's
    before = kv.writes
    runner = StageRunner(RENDERER, Settings(), ledger, MemoryPublisher())
    await runner.handle(MemoryMessage(data_ready(), stream_seq=2), DataReady, render_quickly)
    assert kv.writes - before == 1
    entry = await ledger.get("r-w")
    assert entry is not None and entry.status == "rendered"
    assert entry.stages["renderer"].worker == stage.WORKER_ID


async def test_long_work_is_claimed_while_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage, "CLAIM_AFTER", 0.01)
    ledger = KvLedger(MemoryKeyValue())  # type: ignore[arg-type]
    await ledger.claim("r-w", "fetcher", seq=1, attempt=1, request=REQUEST)
    claimed = asyncio.Event()

    async def render_slowly(event: Event) -> Event:
        while True:
            entry = await ledger.get("r-w")
            if entry and "renderer" in entry.stages:
                claimed.set()
                return rendered_event("r-w", "weekly")
            await asyncio.sleep(0.01)

    runner = StageRunner(RENDERER, Settings(), ledger, MemoryPublisher())
    message = MemoryMessage(data_ready(), stream_seq=2)
    await asyncio.wait_for(runner.handle(message, DataReady, render_slowly), 30)
    assert claimed.is_set() and message.settled[-1] == ("ack", None)


async def test_a_retried_attempt_records_its_reason_until_the_next_outcome() -> None:
    ledger = KvLedger(MemoryKeyValue())  # type: ignore[arg-type]
    runner = StageRunner(FETCHER, Settings(max_attempts=3), ledger, MemoryPublisher())
    body = REQUEST.model_dump_json().encode()

    async def refused(event: Event) -> Event:
        raise TransientError("source 'sales': cannot reach 127.0.0.1:9: connection refused")

    await runner.handle(MemoryMessage(body, attempt=1), ReportRequested, refused)
    entry = await ledger.get("r-w")
    assert entry is not None and entry.status == "requested"
    assert entry.last_error == (
        "fetcher attempt 1: source 'sales': cannot reach 127.0.0.1:9: connection refused"
    )

    async def fine(event: Event) -> Event:
        return DataReady(request=REQUEST, context={})

    await runner.handle(MemoryMessage(body, attempt=2), ReportRequested, fine)
    entry = await ledger.get("r-w")
    assert entry is not None and entry.status == "fetched" and entry.last_error is None


def test_one_name_per_template() -> None:
    assert canonical_template("weekly") == "weekly.html"
    assert canonical_template("weekly.html") == "weekly.html"
    assert canonical_template("./reports\\q1") == "reports/q1.html"
    assert canonical_template("old.htm") == "old.htm"
    name = f"tpl-{id(object())}"
    assert metrics.bounded("template", name) == metrics.bounded("template", f"{name}.html")


async def test_the_ledger_lists_an_unreadable_value_as_a_conflict() -> None:
    kv = MemoryKeyValue()
    ledger = KvLedger(kv)  # type: ignore[arg-type]
    await kv.put("r-bad", b'{"stream":"PRESSROOM","seq":3}')
    [entry] = await ledger.entries()
    assert entry.status == "conflict" and "unreadable" in (entry.error or "")
    # a stage meeting it starts the request's entry afresh
    request = REQUEST.model_copy(update={"request_id": "r-bad"})
    claim = await ledger.claim("r-bad", "fetcher", seq=1, attempt=1, request=request)
    assert claim == "proceed"
    fresh = await ledger.get("r-bad")
    assert fresh is not None and fresh.status == "requested" and fresh.template == "weekly.html"


async def test_an_unreadable_fetch_cache_value_is_a_miss() -> None:
    kv = MemoryKeyValue()
    source = Source.model_validate({"name": "s", "kind": "http", "url": "http://x/"})
    await kv.put(cache_key(source), b"\x00 not json")
    assert await SourceCache(kv).get(source, 60) == (False, None)  # type: ignore[arg-type]


class CountingReadsKV(CountingKV):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, key: str) -> Any:
        self.reads += 1
        return await super().get(key)


async def test_quick_work_reads_its_entry_once() -> None:
    """The finish compare-and-sets on what the claim read: one read, one write per stage."""
    kv = CountingReadsKV()
    ledger = KvLedger(kv)  # type: ignore[arg-type]
    await KvLedger(kv).claim("r-w", "fetcher", seq=1, attempt=1, request=REQUEST)  # another's
    reads, writes = kv.reads, kv.writes
    runner = StageRunner(RENDERER, Settings(), ledger, MemoryPublisher())
    await runner.handle(MemoryMessage(data_ready(), stream_seq=2), DataReady, render_quickly)
    assert (kv.reads - reads, kv.writes - writes) == (1, 1)
    entry = await ledger.get("r-w")
    assert entry is not None and entry.status == "rendered"


async def test_a_change_made_elsewhere_between_claim_and_finish_is_kept() -> None:
    """What another process wrote after this one's claim read the entry (here a cancel) is
    not overwritten: the remembered revision fails its compare-and-set, the entry is read
    again and the finish applied to what is there."""
    kv = MemoryKeyValue()
    ledger, elsewhere = KvLedger(kv), KvLedger(kv)  # type: ignore[arg-type]
    await elsewhere.claim("r-w", "fetcher", seq=1, attempt=1, request=REQUEST)
    claim = await ledger.claim("r-w", "renderer", seq=2, attempt=1, request=REQUEST, record=False)
    assert claim == "proceed"

    def cancel(entry: Any) -> tuple[Any, None]:
        entry.cancelled_at = entry.updated_at
        return entry, None

    await elsewhere.update("r-w", cancel)
    await ledger.finish(
        "r-w", "renderer", seconds=0.1, event=rendered_event("r-w", "weekly"), seq=2, attempt=1
    )
    entry = await ledger.get("r-w")
    assert entry is not None and entry.cancelled_at is not None
    assert entry.stages["renderer"].finished_at is not None
