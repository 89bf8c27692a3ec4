"""Stats and SLOs computed from a known set of ledger entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.console.slo import objectives, percentile, stats
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
