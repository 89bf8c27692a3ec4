"""Stats and SLOs computed from a known set of ledger entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.console.slo import Tally, objectives, percentile, quantize, stats, table
from services.console.sloindex import Indexed
from shared.adapters.ledger import LedgerEntry, StageRecord
from shared.events import Artefact

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def entry(
    n: int,
    *,
    status: str = "delivered",
    total: float = 10.0,
    fetch: float = 1.0,
    size: int = 100_000,
    failed_stage: str | None = None,
    by: str = "billing",
) -> LedgerEntry:
    stages = {
        "fetcher": StageRecord(state="done", seq=n, seconds=fetch),
        "renderer": StageRecord(
            state="done" if failed_stage != "renderer" else "failed", seq=n, seconds=total / 2
        ),
    }
    if status == "delivered":
        stages["distributor"] = StageRecord(
            state="done", seq=n, seconds=0.1, finished_at=T0 + timedelta(seconds=total)
        )
    return LedgerEntry(
        request_id=f"r{n}",
        status=status,
        template="weekly.html" if n % 2 else "daily.html",
        requested_by=by,
        requested_at=T0,
        stages=stages,
        fetch_seconds=fetch,
        artefacts=[
            Artefact(format="pdf", key="k", size=size, sha256="x", content_type="application/pdf")
        ]
        if status == "delivered"
        else [],
        failed_stage=failed_stage,
        error="boom" if failed_stage else None,
    )


def test_percentiles_use_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50 and percentile(values, 95) == 95
    assert percentile(values, 99) == 99 and percentile([], 95) is None


def test_stats_count_outcomes_latencies_templates_and_sizes() -> None:
    entries = [entry(n, total=float(n)) for n in range(1, 21)]
    entries.append(entry(99, status="failed", failed_stage="renderer"))
    data = stats(entries)
    assert (data["total"], data["delivered"], data["failed"]) == (21, 20, 1)
    assert round(data["success_rate"], 2) == round(20 / 21 * 100, 2)
    assert data["end_to_end_seconds"] == {"p50": 10.0, "p95": 19.0, "p99": 20.0}
    assert data["templates"] == {"weekly.html": 11, "daily.html": 10}
    assert data["failures_by_stage"] == {"renderer": 1}
    # A cancelled report and a skipped run are neither in flight nor in the success rate.
    stopped = entry(100, status="requested")
    stopped.cancelled_at = T0
    skipped = entry(101, status="requested")
    skipped.skipped = "skipped: 'orders' is empty (skip_if_empty)"
    data = stats(
        [
            *entries,
            LedgerEntry.model_validate(stopped.model_dump()),
            LedgerEntry.model_validate(skipped.model_dump()),
        ]
    )
    assert (data["cancelled"], data["skipped"], data["in_flight"]) == (1, 1, 0)
    assert round(data["success_rate"], 2) == round(20 / 21 * 100, 2)


def test_slo_table_matches_the_legacy_targets() -> None:
    good = [entry(n, total=5.0) for n in range(1, 100)]
    slow = [entry(100, total=90.0)]
    scheduled = [entry(200 + n, by="scheduler:daily", total=30.0) for n in range(5)]
    failed = [entry(300, status="failed", failed_stage="renderer")]
    rows = {
        r.name: r
        for r in objectives(
            good + slow + scheduled + failed, templates_valid=(6, 6), on_time_seconds=60
        )
    }

    success = rows["Report generation success rate"]
    assert success.measured_over == 106 and round(success.value or 0, 2) == 99.06 and success.met
    assert rows["Report generation time (p95)"].value == 30.0
    assert rows["Report generation time (p95)"].met is True
    assert rows["Template validation success"].met is True
    assert rows["Scheduled report delivery (on time)"].value == 100.0
    pdf = rows["PDF rendering success rate"]
    assert pdf.measured_over == 106 and pdf.met is True
    assert rows["Data aggregation latency (p95)"].value == 1.0
    assert rows["Report file size (p95)"].met is True


def test_missed_objectives_are_reported_as_missed() -> None:
    entries = [entry(n, total=120.0, fetch=45.0, size=8 * 1024 * 1024) for n in range(10)]
    entries += [entry(50 + n, status="failed", failed_stage="renderer") for n in range(2)]
    rows = {r.name: r.met for r in objectives(entries, templates_valid=(5, 6))}
    assert rows == {
        "Report generation success rate": False,
        "Report generation time (p95)": False,
        "Template validation success": False,
        "Scheduled report delivery (on time)": None,
        "PDF rendering success rate": False,
        "Data aggregation latency (p95)": False,
        "Report file size (p95)": False,
    }


def test_a_kept_measurement_is_never_below_and_at_most_one_percent_above() -> None:
    for value in (0.0123456, 0.999, 1.0, 1.001, 59.42, 60.0, 100.04, 899.99, 900.0, 5_242_880.0):
        kept = quantize(value)
        assert value <= kept <= value * 1.01 + 1e-12, (value, kept)
    assert (quantize(59.42), quantize(900.0), quantize(900.05)) == (59.5, 900.0, 901.0)


def test_tallies_add_up_to_the_count_of_their_reports_and_take_a_report_back() -> None:
    entries = [entry(n, total=float(n)) for n in range(1, 41)]
    entries.append(entry(99, status="failed", failed_stage="renderer"))
    whole = Tally.of_entries(entries)
    split = Tally.of_entries(entries[:20]).add(Tally.of_entries(entries[20:]))
    assert split == whole
    rows = {r.name: r for r in table(whole)}
    assert rows["Report generation time (p95)"].value == percentile(
        [float(n) for n in range(1, 41)], 95
    )
    assert Tally.from_dict(whole.as_dict()) == whole
    assert whole.add(Tally.of(entries[-1]), -1) == Tally.of_entries(entries[:-1])


def test_a_window_read_by_day_sums_whole_days_and_the_hours_at_its_ends() -> None:
    one = Tally(finished=1, delivered=1)
    hours = {h: one for h in range(24 * 10 + 20, 24 * 10 + 24)}  # the last 4 hours of day 10
    hours.update({h: one for h in range(24 * 13, 24 * 13 + 3)})  # the first 3 of day 13
    days = {11: Tally(finished=5, delivered=5), 12: Tally(finished=7, delivered=6)}
    read = Indexed(first=24 * 10 + 20, end=24 * 13 + 2, hours=hours, days=days, seq=0, last=0)
    assert read.total.finished == 4 + 5 + 7 + 3 and read.total.delivered == 4 + 5 + 6 + 3
    assert read.between(24 * 12, 24 * 12 + 23).finished == 7
    with pytest.raises(ValueError, match="read whole"):
        read.between(24 * 12, 24 * 12 + 5)
