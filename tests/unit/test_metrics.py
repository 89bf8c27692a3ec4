"""Metrics: recorded once per report, bounded labels, Prometheus names, exemplars with trace ids."""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import TracerProvider

from shared import metrics
from shared.adapters.ledger import KvLedger
from shared.adapters.memory import MemoryKeyValue, MemoryMessage, MemoryPublisher
from shared.bus.names import DISTRIBUTOR, RENDERER
from shared.events import (
    Artefact,
    DataReady,
    Event,
    ReportDelivered,
    ReportRendered,
    ReportRequested,
    utcnow,
)
from shared.observe.telemetry import prometheus_reader, setup_telemetry
from shared.settings import Settings
from shared.stage.runner import StageRunner
from tests.helpers import unique

OPENMETRICS = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


@pytest.fixture(autouse=True)
def meter_provider() -> None:
    """The process's MeterProvider, as every worker sets it up before recording (idempotent)."""
    setup_telemetry("pressroom-test")


@pytest.fixture(autouse=True)
def no_template_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests make up their template names: no operator's list applies (a stage started
    earlier in this process lists its templates folder, shared/stage/app.py)."""
    monkeypatch.setattr(metrics, "_listed", {})


def scrape(accept: str = "") -> str:
    reader = prometheus_reader()
    assert reader is not None
    body, _ = reader.render(accept)
    return body.decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample of `name` whose labels include `labels` (0 if none)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.split("}")[1].split()[0])
    return 0.0


def rendered_event(rid: str, template: str, requested_by: str = "cli:me") -> ReportRendered:
    request = ReportRequested(
        request_id=rid,
        template=template,
        requested_by=requested_by,
        requested_at=utcnow() - timedelta(seconds=42),
    )
    pdf = Artefact(format="pdf", key=f"{rid}.pdf", size=300_000, sha256="0" * 64, content_type="x")
    return ReportRendered(request=request, artefacts=[pdf], template_version="v", render_seconds=1)


async def test_a_redelivered_final_stage_records_the_report_once() -> None:
    template = unique("tpl") + ".html"
    ledger = KvLedger(MemoryKeyValue())  # type: ignore[arg-type]
    runner = StageRunner(DISTRIBUTOR, Settings(), ledger, MemoryPublisher())
    event = rendered_event("r-once", template, requested_by="scheduler:daily")

    async def deliver(incoming: Event) -> Event:
        return ReportDelivered(request_id="r-once", template=template, artefacts=[], channels=[])

    body = event.model_dump_json().encode()
    await runner.handle(MemoryMessage(body, subject="report.rendered"), ReportRendered, deliver)
    await runner.handle(
        MemoryMessage(body, subject="report.rendered", attempt=2), ReportRendered, deliver
    )
    text = scrape()
    name = "pressroom_report_duration_seconds"
    wanted = {"template": template, "outcome": "delivered", "trigger": "schedule"}
    assert sample(text, name + "_count", **wanted) == 1
    # requested 42 s before: in the (30, 45] bucket, resolving the 30 s threshold
    assert sample(text, name + "_bucket", le="30.0", **wanted) == 0
    assert sample(text, name + "_bucket", le="45.0", **wanted) == 1


async def test_a_failure_then_a_replay_counts_the_first_outcome_only() -> None:
    template = unique("tpl") + ".html"
    ledger = KvLedger(MemoryKeyValue())  # type: ignore[arg-type]
    publisher = MemoryPublisher()
    runner = StageRunner(RENDERER, Settings(), ledger, publisher)
    request = ReportRequested(request_id="r-replayed", template=template)
    body = DataReady(request=request, context={}).model_dump_json().encode()

    async def broken(incoming: Event) -> Event:
        from shared.errors import TemplateError

        raise TemplateError("undefined variable in x.html:1")

    async def fixed(incoming: Event) -> Event:
        return rendered_event("r-replayed", template)

    await runner.handle(MemoryMessage(body, subject="data.ready"), DataReady, broken)
    await runner.handle(MemoryMessage(body, subject="data.ready", stream_seq=99), DataReady, fixed)
    text = scrape()
    duration = "pressroom_report_duration_seconds_count"
    assert sample(text, duration, template=template, outcome="failed") == 1
    assert sample(text, duration, template=template, outcome="delivered") == 0
    renders = "pressroom_renders_total"
    assert sample(text, renders, template=template, outcome="failed") == 1
    assert sample(text, renders, template=template, outcome="ok") == 1  # the render itself
    failures = "pressroom_failures_total"
    assert sample(text, failures, template=template, stage="renderer", reason="template_error") == 1
    entry = await ledger.get("r-replayed")
    assert entry is not None and entry.status == "rendered" and entry.settled == "failed"


async def test_ledger_finish_and_fail_say_when_they_settle_a_report() -> None:
    ledger = KvLedger(MemoryKeyValue())  # type: ignore[arg-type]
    request = ReportRequested(request_id="r-l", template="weekly.html")
    await ledger.claim("r-l", "distributor", seq=1, attempt=1, request=request)
    delivered = ReportDelivered(request_id="r-l", template="weekly.html", artefacts=[], channels=[])
    first = await ledger.finish("r-l", "distributor", seconds=1.0, event=delivered)
    again = await ledger.finish("r-l", "distributor", seconds=1.0, event=delivered)
    assert first is not None and first.settled == "delivered" and first.settled_at is not None
    assert again is None
    failing = await ledger.fail("r-l", "distributor", reason="late failure")
    assert failing is None  # already settled as delivered
    fetched = await ledger.finish(
        "r-x", "fetcher", seconds=1.0, event=DataReady(request=request, context={})
    )
    assert fetched is None  # an intermediate stage settles nothing


def test_names_follow_the_prometheus_conventions_of_the_design() -> None:
    metrics.source_fetched("uptime", "prometheus", "ok", 0.2)
    metrics.dead_letters(3)
    metrics.consumer_pending("renderer", 4)
    metrics.storage("out", 80, 100)
    metrics.template_problems({"weekly.html": 0, "broken.html": 2})
    now = utcnow().timestamp()
    metrics.schedule_state("daily", next_fire=now + 60, last_fire=now - 60, last_delivered=0)
    text = scrape()
    assert sample(text, "pressroom_source_fetch_duration_seconds_count", source="uptime") >= 1
    assert "pressroom_dead_letters 3.0" in text
    assert sample(text, "pressroom_consumer_pending", stage="renderer", consumer="renderer") == 4
    assert sample(text, "pressroom_storage_used_bytes", volume="out") == 80
    assert sample(text, "pressroom_storage_capacity_bytes", volume="out") == 100
    assert sample(text, "pressroom_template_problems", template="broken.html") == 2
    assert sample(text, "pressroom_schedule_next_fire_timestamp_seconds", schedule="daily") > now
    assert sample(text, "pressroom_schedule_last_fire_timestamp_seconds", schedule="daily") < now
    assert 'pressroom_schedule_last_delivered_timestamp_seconds{schedule="daily"} 0.0' in text
    # replacing the template set drops templates that are gone
    metrics.template_problems({"weekly.html": 0})
    assert sample(scrape(), "pressroom_template_problems", template="broken.html") == 0


class Consumers:
    """JetStream as `observe_bus` reads it: each consumer's backlog, dead letters, storage."""

    def __init__(self, pending: dict[str, int]) -> None:
        self.pending = pending

    async def consumer_info(self, stream: str, durable: str) -> SimpleNamespace:
        return SimpleNamespace(num_pending=self.pending[durable])

    async def stream_info(self, stream: str) -> SimpleNamespace:
        return SimpleNamespace(state=SimpleNamespace(messages=0))

    async def account_info(self) -> SimpleNamespace:
        return SimpleNamespace(storage=0, limits=None)


async def test_the_backlog_of_every_lane_is_a_series_of_its_own() -> None:
    js = Consumers({"distributor": 1, "distributor-interactive": 0, "distributor-bulk": 7_000})
    await metrics.observe_bus(js, DISTRIBUTOR)
    text = scrape()
    for consumer, pending in js.pending.items():
        assert (
            sample(text, "pressroom_consumer_pending", stage="distributor", consumer=consumer)
            == pending
        )


def test_labels_stay_bounded() -> None:
    label = unique("label")
    kept = {metrics.bounded(label, f"v{n}") for n in range(metrics.MAX_LABEL_VALUES + 50)}
    assert len(kept) == metrics.MAX_LABEL_VALUES + 1 and "other" in kept
    assert metrics.bounded(label, "v1") == "v1"  # values already seen keep their name
    assert metrics.bounded(unique("label"), None) == "unknown"


def test_openmetrics_scrapes_carry_the_trace_id_of_a_slow_bucket_as_exemplar() -> None:
    template = unique("traced") + ".html"
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("distributor") as span:
        trace_id = f"{span.get_span_context().trace_id:032x}"
        event = rendered_event("r-traced", template)
        entry_template = event.request.template
        from shared.adapters.ledger import LedgerEntry

        entry = LedgerEntry(
            request_id="r-traced",
            template=entry_template,
            requested_at=event.request.requested_at,
            settled="delivered",
            settled_at=event.request.requested_at + timedelta(seconds=95),
        )
        metrics.report_settled(entry)
    openmetrics = scrape(OPENMETRICS)
    [line] = [
        row
        for row in openmetrics.splitlines()
        if row.startswith("pressroom_report_duration_seconds_bucket")
        and template in row
        and 'le="120.0"' in row
    ]
    assert f'trace_id="{trace_id}"' in line and "# {" in line  # the (90, 120] bucket's exemplar
    assert openmetrics.rstrip().endswith("# EOF")
    classic = scrape("text/plain")
    assert template in classic and trace_id not in classic  # the classic format has none


async def test_a_hung_report_folder_does_not_stall_the_distributor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """statvfs on a hung network mount blocks: the distributor's storage gauge looks in a
    thread, one look at a time, and its event loop goes on meanwhile."""
    from services.distributor import app as distributor

    release, calls = threading.Event(), []

    def hung(folder: Path) -> tuple[int, int]:
        calls.append(folder)
        release.wait(60)
        return 7, 10

    monkeypatch.setattr(distributor, "_usage", hung)
    monkeypatch.setattr(distributor, "STORAGE_ANSWER", 0.05)
    observe = distributor.storage_gauge(tmp_path)
    ticks = 0

    async def loop_alive() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    beating = asyncio.create_task(loop_alive())
    await observe(None)  # gives up waiting; the look goes on in its thread
    await observe(None)  # a look is still hanging: no second thread
    assert ticks > 0 and calls == [tmp_path]
    assert sample(scrape(), "pressroom_storage_used_bytes", volume="out") != 7
    release.set()
    # The folder answers again: a later look's answer is the gauge's.
    while sample(scrape(), "pressroom_storage_used_bytes", volume="out") != 7:
        await asyncio.sleep(0.01)
        await observe(None)
    beating.cancel()
    assert sample(scrape(), "pressroom_storage_capacity_bytes", volume="out") == 10


async def test_a_fire_not_delivered_on_time_is_missed_however_often_the_schedule_fires() -> None:
    """PressroomScheduledReportMissed's gauge: the newest fire at least on-time old, unless
    delivered or skipped — for a schedule of every 5 minutes, whose newest fire is never late."""
    from datetime import UTC, datetime

    from services.scheduler.watch import ScheduleWatch
    from shared.schedules import Schedule

    every5 = Schedule(name="every5", cron="*/5 * * * *", request={"template": "t.html"})
    kv, ledger = MemoryKeyValue(), KvLedger(MemoryKeyValue())
    watch = ScheduleWatch(kv, ledger, [every5], on_time=900)
    first = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    await watch.refresh(first)  # first seen: nothing owed from before
    now = datetime(2026, 12, 7, 9, 22, tzinfo=UTC)
    await watch.refresh(now)
    due = datetime(2026, 12, 7, 9, 5, tzinfo=UTC)  # the newest fire 15 minutes old at 9:22
    gauge = "pressroom_schedule_missed_fire_timestamp_seconds"
    assert sample(scrape(), gauge, schedule="every5") == due.timestamp()
    rid = every5.request_id_for(due)
    asked = ReportRequested(request_id=rid, template="t.html")
    await ledger.claim(rid, "distributor", seq=1, attempt=1, request=asked)
    done = ReportDelivered(request_id=rid, template="t.html", artefacts=[], channels=[])
    await ledger.finish(rid, "distributor", seconds=0.1, event=done, seq=1, attempt=1)
    await watch.refresh(now)
    assert sample(scrape(), gauge, schedule="every5") == 0
