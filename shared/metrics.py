"""Pressroom's metrics: the instruments of DESIGN.md "Metrics and alerts" and where they are fed.

Recorded with the OpenTelemetry API on the process's MeterProvider (shared/observe/telemetry.py), so
they reach /metrics (shared/observe/exposition.py) and, when OTEL_* asks, OTLP. Names as Prometheus
shows them are in the comments; rules, dashboards and tests depend on them, never rename.

Labels stay bounded: stages, outcomes and failure kinds are fixed sets; template, source and
schedule names come from configuration or requests, so each label keeps at most
MAX_LABEL_VALUES distinct values per process and files the rest under "other". A label whose
values the operator lists (templates: what `pressroom templates ls` lists, refreshed by every
stage, `operator_labels`) takes exactly those, so no run of made-up names in requests can use
up the budget and push a real template into "other".
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from nats.js.errors import NotFoundError
from opentelemetry import metrics

from shared.bus.names import DLQ_STREAM, STREAM, StageSpec
from shared.errors import (
    InvalidPayload,
    PermanentError,
    RenderTimeout,
    ResourceBlocked,
    TemplateError,
    TransientError,
)
from shared.events import Event, ReportRendered
from shared.observe.telemetry import processing_failed, prometheus_reader
from shared.settings import SOURCE_KINDS
from shared.templatefiles import template_names
from shared.templatename import canonical_template

if TYPE_CHECKING:
    from shared.adapters.ledger import LedgerEntry
    from shared.settings import Settings

# Histogram buckets: each SLO threshold (10, 30, 60, 120 s; 15 min on time; 5 MiB) is a bound,
# so ratios against it are exact and quantiles resolve it.
REPORT_SECONDS: tuple[float, ...] = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120)
REPORT_SECONDS += (180, 300, 600, 900, 1800, 3600)
STAGE_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300)
SOURCE_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60)
MIB = 1024 * 1024
SIZE_BYTES: tuple[float, ...] = (16 * 1024, 64 * 1024, 256 * 1024, MIB, 2 * MIB, 5 * MIB)
SIZE_BYTES += (10 * MIB, 25 * MIB, 50 * MIB)

MAX_LABEL_VALUES = 200
FAILURE_KINDS = (
    "invalid_payload",
    "template_error",
    "resource_blocked",
    "render_timeout",
    "permanent_error",
    "retries_exhausted",
    "worker_crashed",
)

_lock = threading.Lock()
_instruments: dict[str, Any] = {}
_seen: dict[str, set[str]] = {}
_listed: dict[str, frozenset[str]] = {}


def operator_labels(label: str, values: Iterable[str]) -> None:
    """The operator's own values for `label`, replacing the previous list: from now on these
    keep their names and anything else is "other" (first come no longer counts)."""
    listed = set()
    for value in values:
        listed.add(value)
        listed.add(value.rsplit(".", 1)[0])  # a request may name "weekly" for weekly.html
    with _lock:
        _listed[label] = frozenset(listed)


def bounded(label: str, value: str | None) -> str:
    """`value` for `label`: one of the operator's values (when listed), else "other"; for an
    unlisted label, "other" once it has MAX_LABEL_VALUES distinct values."""
    if label == "template" and value:  # one name per template: `weekly` is `weekly.html`
        value = canonical_template(value)
    value = value or "unknown"
    with _lock:
        listed = _listed.get(label)
        if listed is not None:
            return value if value in listed or value == "unknown" else "other"
        seen = _seen.setdefault(label, set())
        if value in seen:
            return value
        if len(seen) >= MAX_LABEL_VALUES or len(value) > 128:
            return "other"
        seen.add(value)
        return value


def failure_kind(error: BaseException | None) -> str:
    """A fixed, small vocabulary for why a message was dead-lettered."""
    for kind, cls in (
        ("invalid_payload", InvalidPayload),
        ("template_error", TemplateError),
        ("resource_blocked", ResourceBlocked),
        ("render_timeout", RenderTimeout),
        ("permanent_error", PermanentError),
        ("retries_exhausted", TransientError),
    ):
        if isinstance(error, cls):
            return kind
    return "retries_exhausted"


def _meter() -> metrics.Meter:
    return metrics.get_meter("pressroom")


def _instrument(key: str, make: Callable[[metrics.Meter], Any]) -> Any:
    with _lock:
        if key not in _instruments:
            _instruments[key] = make(_meter())
        return _instruments[key]


def _histogram(name: str, unit: str, description: str, bounds: Iterable[float] | None) -> Any:
    return _instrument(
        name,
        lambda m: m.create_histogram(
            name,
            unit=unit,
            description=description,
            explicit_bucket_boundaries_advisory=[float(b) for b in bounds or ()],
        ),
    )


def _counter(name: str, unit: str, description: str, bounds: object = None) -> Any:
    return _instrument(name, lambda m: m.create_counter(name, unit=unit, description=description))


# The counters and histograms: (name, unit, description, bucket bounds; None for a counter).
Instrument = tuple[str, str, str, tuple[float, ...] | None]
STAGE_DURATION: Instrument = (
    "pressroom.stage.duration",
    "s",
    "Time a stage spent on a message",
    STAGE_SECONDS,
)
STAGE_OUTCOMES: Instrument = (
    "pressroom.stage.outcomes",
    "",
    "Messages a stage finished, by outcome",
    None,
)
REPORT_SIZE: Instrument = ("pressroom.report.size", "By", "Size of a rendered artefact", SIZE_BYTES)
FAILURES: Instrument = (
    "pressroom.failures",
    "",
    "Messages dead-lettered, by stage, failure kind and template",
    None,
)
RENDERS: Instrument = (
    "pressroom.renders",
    "",
    "Renders finished or given up, by template and outcome",
    None,
)
REPORT_DURATION: Instrument = (
    "pressroom.report.duration",
    "s",
    "Request to final outcome of a report, recorded once per report",
    REPORT_SECONDS,
)
SOURCE_FETCH_DURATION: Instrument = (
    "pressroom.source.fetch.duration",
    "s",
    "Time to fetch one data source",
    SOURCE_SECONDS,
)


# ---- gauges: the latest value per label set, read when metrics are collected ---------------
_gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}


def _gauge(name: str, unit: str, description: str) -> None:
    def make(meter: metrics.Meter) -> Any:
        def read(options: Any) -> list[metrics.Observation]:
            with _lock:
                current = dict(_gauges.get(name, {}))
            return [metrics.Observation(v, dict(k)) for k, v in current.items()]

        return meter.create_observable_gauge(
            name, callbacks=[read], unit=unit, description=description
        )

    _instrument(name, make)


def set_gauge(
    name: str, value: float, unit: str = "", description: str = "", **labels: str
) -> None:
    """Set an observable gauge's value for these labels (created on first use)."""
    _gauge(name, unit, description)
    with _lock:
        _gauges.setdefault(name, {})[tuple(sorted(labels.items()))] = float(value)


def forget_gauges(name: str) -> None:
    """Drop every label set of a gauge (e.g. schedules removed from the config)."""
    with _lock:
        _gauges.pop(name, None)


# ---- stage work ---------------------------------------------------------------------------
def stage_finished(stage: str, outcome: str, seconds: float) -> None:
    """pressroom_stage_duration_seconds{stage,outcome}, pressroom_stage_outcomes_total."""
    labels = {"stage": stage, "outcome": outcome}
    if outcome == "retry":  # the message's span says so too (a dead letter already has)
        processing_failed("transient", "retried later")
    _histogram(*STAGE_DURATION).record(seconds, labels)
    _counter(*STAGE_OUTCOMES).add(1, labels)


def stage_done(event: Event, settled: LedgerEntry | None) -> None:
    """A stage finished its work for a report for the first time (the ledger said so)."""
    if isinstance(event, ReportRendered):
        template = template_label(event.request.template)
        _renders().add(1, {"template": template, "outcome": "ok"})
        sizes = _histogram(*REPORT_SIZE)
        for artefact in event.artefacts:
            sizes.record(artefact.size, {"format": artefact.format})
    if settled is not None:
        report_settled(settled)


def stage_failed(stage: str, kind: str, template: str | None, settled: LedgerEntry | None) -> None:
    """A message was dead-lettered: pressroom_failures_total, renders, the report's outcome."""
    name = template_label((settled.template if settled else None) or template)
    processing_failed(kind, f"dead-lettered at {stage}")  # error.type of the message's span
    _counter(*FAILURES).add(1, {"stage": stage, "reason": kind, "template": name})
    if stage == "renderer":
        _renders().add(1, {"template": name, "outcome": "failed"})
    if settled is not None:
        report_settled(settled)


def _renders() -> Any:
    return _counter(*RENDERS)


def report_settled(entry: LedgerEntry) -> None:
    """pressroom_report_duration_seconds: requested_at → the report's first final outcome."""
    if entry.settled is None or entry.requested_at is None or entry.settled_at is None:
        return
    seconds = max((entry.settled_at - entry.requested_at).total_seconds(), 0.0)
    trigger = "schedule" if (entry.requested_by or "").startswith("scheduler:") else "request"
    labels = {
        "template": template_label(entry.template),
        "outcome": entry.settled,
        "trigger": trigger,
    }
    _histogram(*REPORT_DURATION).record(seconds, labels)


def source_fetched(source: str, kind: str, outcome: str, seconds: float) -> None:
    """pressroom_source_fetch_duration_seconds{source,kind,outcome}.

    outcome: ok | timeout | unreachable (transient) | error (permanent).
    """
    _histogram(*SOURCE_FETCH_DURATION).record(
        seconds,
        {"source": bounded("source", source), "kind": bounded("kind", kind), "outcome": outcome},
    )


def fetch_outcome(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, TimeoutError | asyncio.CancelledError) or "timed out" in str(error):
        return "timeout"
    if isinstance(error, TransientError):
        return "unreachable"
    return "error"


# ---- state, observed ----------------------------------------------------------------------
def consumer_pending(stage: str, pending: int, consumer: str | None = None) -> None:
    """pressroom_consumer_pending{stage,consumer}: messages waiting in one of a stage's durable
    consumers (`renderer`, `renderer-interactive`, `renderer-bulk`: one per lane)."""
    set_gauge(
        "pressroom.consumer.pending",
        pending,
        description="Messages waiting in a stage's durable consumer (one per lane)",
        stage=stage,
        consumer=consumer or stage,
    )


def dead_letters(count: int) -> None:
    """pressroom_dead_letters: messages waiting in the dead-letter stream."""
    set_gauge("pressroom.dead_letters", count, description="Messages in the dead-letter stream")


def storage(volume: str, used: float, capacity: float | None) -> None:
    """pressroom_storage_used_bytes / pressroom_storage_capacity_bytes{volume}."""
    set_gauge(
        "pressroom.storage.used", used, "By", "Bytes used where reports are kept", volume=volume
    )
    if capacity:
        set_gauge(
            "pressroom.storage.capacity",
            capacity,
            "By",
            "Bytes available in total where reports are kept",
            volume=volume,
        )


def template_problems(problems: dict[str, int]) -> None:
    """pressroom_template_problems{template}: what `pressroom templates validate` finds.

    Replaces every template's value at once, so a removed template stops being reported.
    """
    name = "pressroom.template.problems"
    _gauge(name, "", "Validation problems of a template (0: valid)")
    values: dict[tuple[tuple[str, str], ...], float] = {
        (("template", bounded("template", t)),): float(n) for t, n in problems.items()
    }
    with _lock:
        _gauges[name] = values


def schedule_state(
    schedule: str, next_fire: float, last_fire: float | None, last_delivered: float
) -> None:
    """pressroom_schedule_{next_fire,last_fire,last_delivered}_timestamp_seconds{schedule}."""
    name = bounded("schedule", schedule)
    set_gauge(
        "pressroom.schedule.next_fire_timestamp",
        next_fire,
        "s",
        "When the schedule fires next (Unix time)",
        schedule=name,
    )
    set_gauge(
        "pressroom.schedule.last_delivered_timestamp",
        last_delivered,
        "s",
        "When a report of the schedule was last delivered (Unix time; 0: never)",
        schedule=name,
    )
    if last_fire is not None:
        set_gauge(
            "pressroom.schedule.last_fire_timestamp",
            last_fire,
            "s",
            "The schedule's most recent fire since it was first seen (Unix time)",
            schedule=name,
        )


def bus_connected(connected: bool) -> None:
    """pressroom_bus_connected: 1 while the worker is connected to NATS, 0 while it is not
    (PressroomBusUnreachable: nothing moves then, and no failure counter says so)."""
    set_gauge(
        "pressroom.bus.connected",
        1.0 if connected else 0.0,
        "",
        "1 while this worker is connected to NATS, else 0",
    )


def schedule_missed(schedule: str, fire: float) -> None:
    """pressroom_schedule_missed_fire_timestamp_seconds{schedule}: the newest fire due by now
    and not delivered (0: none) — PressroomScheduledReportMissed."""
    set_gauge(
        "pressroom.schedule.missed_fire_timestamp",
        fire,
        "s",
        "The newest fire that should be delivered by now and is not (Unix time; 0: none)",
        schedule=bounded("schedule", schedule),
    )


async def observe_bus(js: Any, stage: StageSpec, callers: Sequence[StageSpec] = ()) -> None:
    """Refresh the gauges read from JetStream: the backlog of each of the stage's consumers
    (every lane's, and the calling systems' own the fetcher reads), dead letters, storage."""

    for lane in [*stage.lanes, *callers]:
        try:
            info = await js.consumer_info(STREAM, lane.durable)
        except NotFoundError:  # one consumer gone (health says so): the other gauges go on
            continue
        consumer_pending(stage.name, int(info.num_pending or 0), lane.durable)
    dlq = await js.stream_info(DLQ_STREAM)
    dead_letters(int(dlq.state.messages or 0))
    account = await js.account_info()
    limit = account.limits.max_storage if account.limits else None
    storage("jetstream", float(account.storage or 0), float(limit) if limit and limit > 0 else None)


def scrape_handler(
    refresh: Callable[[], Awaitable[None]] | None = None, timeout: float = 3.0
) -> Callable[[str], Awaitable[tuple[bytes, str]]]:
    """What a worker's /metrics answers: fresh gauges (best effort), then every instrument."""

    async def scrape(accept: str) -> tuple[bytes, str]:
        if refresh is not None:
            with suppress(Exception):  # a slow bus must not fail the scrape: last values stay
                await asyncio.wait_for(refresh(), timeout)
        reader = prometheus_reader()
        if reader is None:
            return b"# metrics are not set up in this process\n", "text/plain; charset=utf-8"
        return reader.render(accept, zeros=expected_series())

    return scrape


# ---- every series a worker can emit exists at 0 before its first event ---------------------
# A counter or histogram series born at its first event starts at 1, and Prometheus's rate()
# and increase() never see that step: the SLO rules would miss exactly the rare failures they
# are for. So each worker declares at start what it can emit for the operator's templates,
# sources and the fixed outcomes, and /metrics shows each declared series at 0 until it moves.
STAGE_RESULTS = ("done", "retry", "dead_letter", "handed_back")
SETTLED = ("delivered", "failed")
TRIGGERS = ("request", "schedule")
FETCH_OUTCOMES = ("ok", "timeout", "unreachable", "error")
FORMATS = ("pdf", "html", "csv", "xlsx")  # shared.events.Format
OTHER = "other"

Labels = tuple[tuple[str, str], ...]
_expected: dict[str, tuple[Instrument, set[Labels]]] = {}
_file_names: dict[str, str] = {}  # "weekly" → "weekly.html": one label value per template


def template_label(name: str | None) -> str:
    """The template label of a report: its file name (a request may leave off the suffix),
    bounded to the operator's templates."""
    with _lock:
        name = _file_names.get(name or "", name)
    return bounded("template", name)


def _expect(instrument: Instrument, *label_sets: dict[str, str]) -> None:
    with _lock:
        _, known = _expected.setdefault(instrument[0], (instrument, set()))
        known.update(tuple(sorted(labels.items())) for labels in label_sets)


def expected_series() -> list[tuple[Instrument, list[Labels]]]:
    """What /metrics shows at 0 when nothing was recorded for it yet
    (shared/observe/exposition.py)."""
    with _lock:
        return [(instrument, sorted(known)) for instrument, known in _expected.values()]


def prepare_worker(
    stage: str,
    templates: Iterable[str],
    sources: Iterable[tuple[str, str]] = (),
    schedules: Iterable[str] = (),
) -> None:
    """At a worker's start: bound the request-chosen labels to what the operator configured
    (`sources`: (name, kind) pairs; anything else is "other") and declare, at 0, every series
    this stage can emit for them: its stage outcomes, its failures, and the report outcomes,
    renders, sizes and fetches that only this stage records."""

    templates = sorted(set(templates))
    if templates:
        operator_labels("template", templates)
    with _lock:
        _file_names.update({t.rsplit(".", 1)[0]: t for t in templates})
    sources = sorted(set(sources))
    operator_labels("source", [name for name, _ in sources])
    operator_labels("kind", sorted(SOURCE_KINDS))
    operator_labels("schedule", schedules)
    names = [bounded("template", t) for t in templates] + [OTHER]
    for result in STAGE_RESULTS:
        labels = {"stage": stage, "outcome": result}
        _expect(STAGE_OUTCOMES, labels)
        _expect(STAGE_DURATION, labels)
    _expect(
        FAILURES,
        *(
            {"stage": stage, "reason": kind, "template": name}
            for kind in FAILURE_KINDS
            for name in names
        ),
    )
    settles = SETTLED if stage == "distributor" else ("failed",)
    _expect(
        REPORT_DURATION,
        *(
            {"template": name, "outcome": outcome, "trigger": trigger}
            for name in names
            for outcome in settles
            for trigger in TRIGGERS
        ),
    )
    if stage == "renderer":
        _expect(RENDERS, *({"template": n, "outcome": o} for n in names for o in ("ok", "failed")))
        _expect(REPORT_SIZE, *({"format": f} for f in FORMATS))
    if stage == "fetcher":
        kinds = sorted(SOURCE_KINDS)
        pairs = [(bounded("source", n), bounded("kind", k)) for n, k in sources]
        pairs += [(OTHER, kind) for kind in kinds]
        _expect(
            SOURCE_FETCH_DURATION,
            *(
                {"source": name, "kind": kind, "outcome": outcome}
                for name, kind in pairs
                for outcome in FETCH_OUTCOMES
            ),
        )


def prepare_from_settings(stage: str, settings: Settings) -> None:
    """`prepare_worker` with what the operator configured: the templates folder, the named
    sources and the sources and names of the schedules in the config file."""

    sources = [(name, str(spec.get("kind", ""))) for name, spec in settings.sources.items()]
    schedules = []
    for schedule in settings.schedules:
        schedules.append(str(schedule.get("name", "")))
        for source in (schedule.get("request") or {}).get("sources") or ():
            # One naming a config-file source is labelled by that name (declared above).
            if isinstance(source, dict) and source.get("name") and not source.get("source"):
                sources.append((str(source["name"]), str(source.get("kind", ""))))
    prepare_worker(stage, template_names(settings.templates_dir), sources, schedules)
