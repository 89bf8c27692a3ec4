"""Statistics and the legacy runbook's SLOs, computed from ledger entries."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.adapters.ledger import LedgerEntry
from shared.bus.names import STAGES as BUS_STAGES
from shared.events import utcnow
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
    every report neither delivered nor failed."""
    conflicts = len(entries) - len(entries := reports(entries))
    delivered = [e for e in entries if e.status == "delivered"]
    failed = [e for e in entries if e.status == "failed"]
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
        "in_flight": len(entries) - finished,
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


def objectives(
    entries: list[LedgerEntry],
    *,
    templates_valid: tuple[int, int] | None = None,
    on_time_seconds: float = 900.0,
) -> list[Objective]:
    """The SLO table of the legacy runbook, each SLI against its target."""
    entries = reports(entries)
    delivered = [e for e in entries if e.status == "delivered"]
    failed = [e for e in entries if e.status == "failed"]
    finished = delivered + failed
    success = len(delivered) / len(finished) * 100 if finished else None
    totals = [t for e in delivered if (t := e.total_seconds) is not None]
    rendered = [e for e in entries if (r := e.stages.get("renderer")) and r.state == "done"]
    render_failed = [e for e in failed if e.failed_stage == "renderer"]
    render_total = len(rendered) + len(render_failed)
    pdf_rate = len(rendered) / render_total * 100 if render_total else None
    fetches = [e.fetch_seconds for e in entries if e.fetch_seconds is not None]
    sizes = [float(s) for e in entries if (s := report_size(e)) is not None]
    scheduled = [e for e in finished if (e.requested_by or "").startswith("scheduler:")]
    on_time = [
        e
        for e in scheduled
        if e.status == "delivered" and (t := e.total_seconds) is not None and t <= on_time_seconds
    ]
    scheduled_rate = len(on_time) / len(scheduled) * 100 if scheduled else None
    p95_total = percentile(totals, 95)
    p95_fetch = percentile(fetches, 95)
    p95_size = percentile(sizes, 95)
    rows = [
        Objective(
            "Report generation success rate",
            "≥ 99%",
            success,
            "%",
            _at_least(success, 99.0),
            len(finished),
        ),
        Objective(
            "Report generation time (p95)",
            "< 60 s",
            p95_total,
            "s",
            _below(p95_total, 60.0),
            len(totals),
        ),
    ]
    if templates_valid is not None:
        valid, total = templates_valid
        rate = valid / total * 100 if total else None
        rows.append(
            Objective(
                "Template validation success",
                "100%",
                rate,
                "%",
                None if rate is None else rate == 100.0,
                total,
            )
        )
    rows += [
        Objective(
            "Scheduled report delivery (on time)",
            "≥ 99.5%",
            scheduled_rate,
            "%",
            _at_least(scheduled_rate, 99.5),
            len(scheduled),
        ),
        Objective(
            "PDF rendering success rate",
            "≥ 98%",
            pdf_rate,
            "%",
            _at_least(pdf_rate, 98.0),
            render_total,
        ),
        Objective(
            "Data aggregation latency (p95)",
            "< 30 s",
            p95_fetch,
            "s",
            _below(p95_fetch, 30.0),
            len(fetches),
        ),
        Objective(
            "Report file size (p95)",
            "< 5 MiB",
            None if p95_size is None else p95_size / MIB,
            "MiB",
            _below(p95_size, 5 * MIB),
            len(sizes),
        ),
    ]
    return rows
