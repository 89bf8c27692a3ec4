"""Statistics and the legacy runbook's SLOs, computed from ledger entries."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from shared.adapters.ledger import LedgerEntry
from shared.bus.names import STAGES as BUS_STAGES
from shared.events import utcnow
from shared.settings import Settings
from shared.templatename import canonical_template

STAGES = tuple(BUS_STAGES)
MIB = 1024 * 1024


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def _pcts(values: list[float]) -> dict[str, float | None]:
    return {f"p{q}": percentile(values, q) for q in (50, 95, 99)}


def in_window(
    entries: list[LedgerEntry], window: timedelta, now: datetime | None = None
) -> list[LedgerEntry]:
    cutoff = (now or utcnow()) - window
    return [e for e in entries if (e.requested_at or e.updated_at) >= cutoff]


def report_size(entry: LedgerEntry) -> int | None:
    sizes = [a.size for a in entry.artefacts if a.format == "pdf"] or [
        a.size for a in entry.artefacts
    ]
    return max(sizes) if sizes else None


def reports(entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """The entries that are reports: not the unreadable values listed as `conflict`."""
    return [e for e in entries if e.status != "conflict"]


def stats(entries: list[LedgerEntry]) -> dict[str, Any]:
    """Counts by the ledger's own status (the one `ls --status` filters on): in flight is
    every report not yet delivered, failed, cancelled or skipped; the success rate is of the
    delivered and failed ones (a cancel or a skipped run is neither)."""
    conflicts = len(entries) - len(entries := reports(entries))
    delivered = [e for e in entries if e.status == "delivered"]
    failed = [e for e in entries if e.status == "failed"]
    cancelled = sum(1 for e in entries if e.status == "cancelled")
    skipped = sum(1 for e in entries if e.status == "skipped")
    finished = len(delivered) + len(failed)
    stage_times = {
        stage: [
            r.seconds
            for e in entries
            if (r := e.stages.get(stage)) and r.seconds is not None and r.state == "done"
        ]
        for stage in STAGES
    }
    hits = sum(e.cache_hits for e in entries)
    misses = sum(e.cache_misses for e in entries)
    return {
        "total": len(entries),
        "delivered": len(delivered),
        "failed": len(failed),
        "cancelled": cancelled,
        "skipped": skipped,
        "in_flight": len(entries) - finished - cancelled - skipped,
        "conflicts": conflicts,
        "success_rate": (len(delivered) / finished * 100) if finished else None,
        "end_to_end_seconds": _pcts([t for e in delivered if (t := e.total_seconds) is not None]),
        "stage_seconds": {stage: _pcts(times) for stage, times in stage_times.items()},
        "fetch_seconds": _pcts([e.fetch_seconds for e in entries if e.fetch_seconds is not None]),
        "render_seconds": _pcts(
            [e.render_seconds for e in entries if e.render_seconds is not None]
        ),
        "report_bytes": _pcts([float(s) for e in entries if (s := report_size(e)) is not None]),
        "templates": dict(
            Counter(
                canonical_template(e.template) if e.template else "?" for e in entries
            ).most_common()
        ),
        "failures_by_stage": dict(Counter(e.failed_stage or "?" for e in failed)),
        "cache_hit_rate": (hits / (hits + misses) * 100) if hits + misses else None,
    }


@dataclass(frozen=True)
class Objective:
    name: str
    target: str
    value: float | None
    unit: str
    met: bool | None
    measured_over: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "sli": self.name,
            "target": self.target,
            "value": self.value,
            "unit": self.unit,
            "met": self.met,
            "samples": self.measured_over,
        }


def _at_least(value: float | None, target: float) -> bool | None:
    return None if value is None else value >= target


def _below(value: float | None, target: float) -> bool | None:
    return None if value is None else value < target


def quantize(value: float) -> float:
    """A measurement as the SLO index keeps it: rounded up to three significant digits (at
    most 1% more, never less, so `< target` is never flattered). Round targets such as the
    on-time limit's 900 s sit on the grid, so `<= 900` decides as on the exact value."""
    if value <= 0:
        return 0.0
    step = 10.0 ** (math.floor(math.log10(value)) - 2)
    return float(f"{math.ceil(value / step - 1e-9) * step:.3g}")


@dataclass
class Tally:
    """What the SLO table counts, over any set of reports; tallies of hours add up.

    Latencies and sizes are histograms of `quantize`d values, so a percentile over a window
    is the same whether it is read from the index or counted from the entries."""

    finished: int = 0
    delivered: int = 0
    scheduled: int = 0  # finished reports a schedule asked for
    rendered: int = 0
    render_failed: int = 0
    total: Counter[float] = field(default_factory=Counter)  # delivered, end to end (s)
    scheduled_total: Counter[float] = field(default_factory=Counter)  # the scheduled ones
    fetch: Counter[float] = field(default_factory=Counter)  # data aggregation (s)
    size: Counter[float] = field(default_factory=Counter)  # the report's bytes

    COUNTS: ClassVar[tuple[str, ...]] = (
        "finished",
        "delivered",
        "scheduled",
        "rendered",
        "render_failed",
    )
    HISTOGRAMS: ClassVar[tuple[str, ...]] = ("total", "scheduled_total", "fetch", "size")

    def add(self, other: Tally, sign: int = 1) -> Tally:
        for name in self.COUNTS:
            setattr(self, name, getattr(self, name) + sign * getattr(other, name))
        for name in self.HISTOGRAMS:
            mine: Counter[float] = getattr(self, name)
            for value, count in getattr(other, name).items():
                mine[value] += sign * count
                if not mine[value]:
                    del mine[value]
        return self

    def __bool__(self) -> bool:
        return any(getattr(self, n) for n in (*self.COUNTS, *self.HISTOGRAMS))

    def as_dict(self) -> dict[str, Any]:
        """Compact (what is zero is left out): one per report is kept in the SLO index."""
        data: dict[str, Any] = {n: count for n in self.COUNTS if (count := getattr(self, n))}
        for name in self.HISTOGRAMS:
            if histogram := getattr(self, name):
                data[name] = {repr(v): c for v, c in sorted(histogram.items())}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tally:
        tally = cls()
        for name in cls.COUNTS:
            setattr(tally, name, int(data.get(name, 0)))
        for name in cls.HISTOGRAMS:
            found = data.get(name) or {}
            setattr(tally, name, Counter({float(v): int(c) for v, c in found.items()}))
        return tally

    @classmethod
    def of(cls, entry: LedgerEntry) -> Tally:
        """One report's share (nothing for an unreadable value)."""
        tally = cls()
        if entry.status == "conflict":
            return tally
        finished = entry.status in ("delivered", "failed")
        scheduled = finished and (entry.requested_by or "").startswith("scheduler:")
        tally.finished = int(finished)
        tally.delivered = int(entry.status == "delivered")
        tally.scheduled = int(scheduled)
        renderer = entry.stages.get("renderer")
        tally.rendered = int(renderer is not None and renderer.state == "done")
        tally.render_failed = int(entry.status == "failed" and entry.failed_stage == "renderer")
        if entry.status == "delivered" and (seconds := entry.total_seconds) is not None:
            tally.total[quantize(seconds)] += 1
            if scheduled:
                tally.scheduled_total[quantize(seconds)] += 1
        if entry.fetch_seconds is not None:
            tally.fetch[quantize(entry.fetch_seconds)] += 1
        if (size := report_size(entry)) is not None:
            tally.size[quantize(float(size))] += 1
        return tally

    @classmethod
    def of_entries(cls, entries: list[LedgerEntry]) -> Tally:
        tally = cls()
        for entry in entries:
            tally.add(cls.of(entry))
        return tally


def histogram_percentile(histogram: Counter[float], q: float) -> float | None:
    """Nearest-rank percentile of a histogram (`percentile` of the values it counts)."""
    count = sum(histogram.values())
    if count <= 0:
        return None
    rank = max(1, -(-count * q // 100))
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return None


def window_hours(window: timedelta, now: datetime | None = None) -> tuple[int, int]:
    """An SLO window in whole hours (epoch hours, both included): from the hour `window` ago
    to the current one. `pressroom slo` and the console both count this span."""
    end = int((now or utcnow()).timestamp() // 3600)
    return int(((now or utcnow()) - window).timestamp() // 3600), end


def entry_hour(entry: LedgerEntry) -> int:
    return int((entry.requested_at or entry.updated_at).timestamp() // 3600)


def objectives(
    entries: list[LedgerEntry],
    *,
    templates_valid: tuple[int, int] | None = None,
    on_time_seconds: float = 900.0,
) -> list[Objective]:
    """The SLO table of the legacy runbook, counted from the entries themselves."""
    return table(
        Tally.of_entries(entries),
        templates_valid=templates_valid,
        on_time_seconds=on_time_seconds,
    )


def table(
    tally: Tally,
    *,
    templates_valid: tuple[int, int] | None = None,
    on_time_seconds: float = 900.0,
) -> list[Objective]:
    """The SLO table of the legacy runbook, each SLI against its target: the one table
    `pressroom slo` prints and the console's /slo page shows, row for row.

    `templates_valid` is (valid, listed) from `templates_checked`; None (not checked, or the
    folder could not be read) still shows the row, with no data."""
    success = _rate(tally.delivered, tally.finished)
    p95 = histogram_percentile(tally.total, 95)
    rows = [
        Objective(
            "Report generation success rate",
            "≥ 99%",
            success,
            "%",
            _at_least(success, 99.0),
            tally.finished,
        ),
        Objective(
            "Report generation time (p95)",
            "< 60 s",
            p95,
            "s",
            _below(p95, 60.0),
            sum(tally.total.values()),
        ),
    ]
    rows.append(_templates_valid(templates_valid))
    on_time = sum(c for v, c in tally.scheduled_total.items() if v <= on_time_seconds)
    scheduled = _rate(on_time, tally.scheduled)
    pdf = _rate(tally.rendered, tally.rendered + tally.render_failed)
    fetch = histogram_percentile(tally.fetch, 95)
    size = histogram_percentile(tally.size, 95)
    rows += [
        Objective(
            "Scheduled report delivery (on time)",
            "≥ 99.5%",
            scheduled,
            "%",
            _at_least(scheduled, 99.5),
            tally.scheduled,
        ),
        Objective(
            "PDF rendering success rate",
            "≥ 98%",
            pdf,
            "%",
            _at_least(pdf, 98.0),
            tally.rendered + tally.render_failed,
        ),
        Objective(
            "Data aggregation latency (p95)",
            "< 30 s",
            fetch,
            "s",
            _below(fetch, 30.0),
            sum(tally.fetch.values()),
        ),
        Objective(
            "Report file size (p95)",
            "< 5 MiB",
            None if size is None else size / MIB,
            "MiB",
            _below(size, 5 * MIB),
            sum(tally.size.values()),
        ),
    ]
    return rows


def _rate(part: int, whole: int) -> float | None:
    return part / whole * 100 if whole else None


def _templates_valid(counted: tuple[int, int] | None) -> Objective:
    valid, total = counted or (0, 0)
    rate = _rate(valid, total)
    return Objective(
        "Template validation success",
        "100%",
        rate,
        "%",
        None if rate is None else rate == 100.0,
        total,
    )


def templates_checked(problems: Mapping[str, list[str]]) -> tuple[int, int]:
    """(valid, listed) for the "Template validation success" SLI, from the problems per
    listed template that `services.renderer.templating.validate_in_folder` answers."""
    return sum(1 for found in problems.values() if not found), len(problems)


def templates_fingerprint(folder: Path) -> str:
    """What the templates' validation depends on, by name, size and change time: the same
    fingerprint, the same answer (the console validates again only when it changes)."""
    digest = hashlib.sha256()
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            try:
                stat = path.stat()
            except OSError:
                continue
            digest.update(
                f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()
            )
    return digest.hexdigest()


async def validate_templates(settings: Settings) -> tuple[int, int]:
    """`templates_checked` of the templates folder, validated in one capped process (the
    template code is never compiled in the caller's process): what `pressroom slo` counts."""
    # Imported here: the render pool and Jinja cost the CLI's start-up time elsewhere.
    from services.renderer.pool import run_once
    from services.renderer.templating import validate_in_folder

    problems = await run_once(
        validate_in_folder, str(settings.templates_dir), None, label="validation", settings=settings
    )
    return templates_checked(problems)
