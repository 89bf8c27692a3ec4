"""Pressroom's metrics: the instruments of DESIGN.md "Metrics and alerts" and where they are fed.

Recorded with the OpenTelemetry API on the process's MeterProvider (shared/telemetry.py), so
they reach /metrics (shared/exposition.py) and, when OTEL_* asks, OTLP. Names as Prometheus
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
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics

from shared.errors import (
    InvalidPayload,
    PermanentError,
    RenderTimeout,
    ResourceBlocked,
    TemplateError,
    TransientError,
)
from shared.events import Event, ReportRendered

if TYPE_CHECKING:
    from shared.ledger import LedgerEntry

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


def _histogram(name: str, unit: str, description: str, bounds: Iterable[float]) -> Any:
    return _instrument(
        name,
        lambda m: m.create_histogram(
            name,
            unit=unit,
            description=description,
            explicit_bucket_boundaries_advisory=[float(b) for b in bounds],
        ),
    )


def _counter(name: str, description: str) -> Any:
    return _instrument(name, lambda m: m.create_counter(name, description=description))


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
    _histogram(
        "pressroom.stage.duration", "s", "Time a stage spent on a message", STAGE_SECONDS
    ).record(seconds, labels)
    _counter("pressroom.stage.outcomes", "Messages a stage finished, by outcome").add(1, labels)


def stage_done(event: Event, settled: LedgerEntry | None) -> None:
    """A stage finished its work for a report for the first time (the ledger said so)."""
    if isinstance(event, ReportRendered):
        template = bounded("template", event.request.template)
        _renders().add(1, {"template": template, "outcome": "ok"})
        sizes = _histogram("pressroom.report.size", "By", "Size of a rendered artefact", SIZE_BYTES)
        for artefact in event.artefacts:
            sizes.record(artefact.size, {"format": artefact.format})
    if settled is not None:
        report_settled(settled)


def stage_failed(stage: str, kind: str, template: str | None, settled: LedgerEntry | None) -> None:
    """A message was dead-lettered: pressroom_failures_total, renders, the report's outcome."""
    name = bounded("template", (settled.template if settled else None) or template)
    _counter(
        "pressroom.failures", "Messages dead-lettered, by stage, failure kind and template"
    ).add(1, {"stage": stage, "reason": kind, "template": name})
    if stage == "renderer":
        _renders().add(1, {"template": name, "outcome": "failed"})
    if settled is not None:
        report_settled(settled)


def _renders() -> Any:
    return _counter("pressroom.renders", "Renders finished or given up, by template and outcome")


def report_settled(entry: LedgerEntry) -> None:
    """pressroom_report_duration_seconds: requested_at → the report's first final outcome."""
    if entry.settled is None or entry.requested_at is None or entry.settled_at is None:
        return
    seconds = max((entry.settled_at - entry.requested_at).total_seconds(), 0.0)
    trigger = "schedule" if (entry.requested_by or "").startswith("scheduler:") else "request"
    labels = {
        "template": bounded("template", entry.template),
        "outcome": entry.settled,
        "trigger": trigger,
    }
    _histogram(
        "pressroom.report.duration",
        "s",
        "Request to final outcome of a report, recorded once per report",
        REPORT_SECONDS,
    ).record(seconds, labels)


def source_fetched(source: str, kind: str, outcome: str, seconds: float) -> None:
    """pressroom_source_fetch_duration_seconds{source,kind,outcome}.

    outcome: ok | timeout | unreachable (transient) | error (permanent).
    """
    _histogram(
        "pressroom.source.fetch.duration", "s", "Time to fetch one data source", SOURCE_SECONDS
    ).record(
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
def consumer_pending(stage: str, pending: int) -> None:
    """pressroom_consumer_pending{stage}: messages waiting in a stage's durable consumer."""
    set_gauge(
        "pressroom.consumer.pending",
        pending,
        description="Messages waiting in a stage's durable consumer",
        stage=stage,
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


async def observe_bus(js: Any, durable: str) -> None:
    """Refresh the gauges read from JetStream: a consumer's backlog, dead letters, storage."""
    from shared.bus import DLQ_STREAM, STREAM

    info = await js.consumer_info(STREAM, durable)
    consumer_pending(durable, int(info.num_pending or 0))
    dlq = await js.stream_info(DLQ_STREAM)
    dead_letters(int(dlq.state.messages or 0))
    account = await js.account_info()
    limit = account.limits.max_storage if account.limits else None
    storage("jetstream", float(account.storage or 0), float(limit) if limit and limit > 0 else None)


def scrape_handler(
    refresh: Callable[[], Awaitable[None]] | None = None, timeout: float = 3.0
) -> Callable[[str], Awaitable[tuple[bytes, str]]]:
    """What a worker's /metrics answers: fresh gauges (best effort), then every instrument."""
    from shared.telemetry import prometheus_reader

    async def scrape(accept: str) -> tuple[bytes, str]:
        if refresh is not None:
            with suppress(Exception):  # a slow bus must not fail the scrape: last values stay
                await asyncio.wait_for(refresh(), timeout)
        reader = prometheus_reader()
        if reader is None:
            return b"# metrics are not set up in this process\n", "text/plain; charset=utf-8"
        return reader.render(accept)

    return scrape
