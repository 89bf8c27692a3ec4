"""A real Prometheus scraping real workers through the targets the stack writes, with the shipped
scrape config and rules: it sees what `pressroom slo` sees, and every metric DESIGN.md names."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from services.console.monitoring import write_config
from shared.metrics import REPORT_SECONDS
from tests.helpers import REPO, Outcomes, Stack, eventually, unique
from tests.servers import PrometheusServer

pytestmark = pytest.mark.integration
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
# DESIGN.md "Metrics and alerts", as Prometheus shows them, with their labels.
DESIGN_METRICS = {
    "pressroom_report_duration_seconds_bucket": {"template", "outcome", "trigger", "le"},
    "pressroom_stage_duration_seconds_bucket": {"stage", "outcome", "le"},
    "pressroom_renders_total": {"template", "outcome"},
    "pressroom_source_fetch_duration_seconds_bucket": {"source", "kind", "outcome", "le"},
    "pressroom_report_size_bytes_bucket": {"format", "le"},
    "pressroom_schedule_last_delivered_timestamp_seconds": {"schedule"},
    "pressroom_schedule_next_fire_timestamp_seconds": {"schedule"},
    "pressroom_dead_letters": set(),
    "pressroom_consumer_pending": {"stage", "consumer"},
}
DELIVERED, FAILED = 5, 2


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, PrometheusServer]]:
    root = tmp_path_factory.mktemp("watched")
    config = root / "pressroom.yaml"
    config.write_text(
        json.dumps(
            {
                "schedules": [
                    {
                        "name": "new-year",
                        "cron": "0 0 1 1 *",
                        "request": {"template": "daily.html"},
                    }
                ]
            }
        )
    )
    stack = Stack(
        root,
        env_extra={"PRESSROOM_CONFIG": str(config)},
        workers={"fetcher": 1, "renderer": 1, "distributor": 1, "scheduler": 1},
    ).start()
    (root / "data").mkdir(exist_ok=True)
    shutil.copy(REPO / "templates/samples/portfolio.json", root / "data" / "portfolio.json")
    folder = root / "prometheus"
    stack.write_prometheus_targets(folder)
    prometheus = PrometheusServer(folder, config=write_config(folder, interval="1s")).start()
    try:
        yield stack, prometheus
    finally:
        prometheus.stop()
        stack.stop()


@pytest.fixture(scope="module")
async def reports(watched: tuple[Stack, PrometheusServer]) -> dict[str, list[str]]:
    """A known mix: reports delivered and reports failed (unknown template, missing data)."""
    stack, _ = watched
    nc = await stack.connect()
    outcomes = await Outcomes().start(nc)
    ids: dict[str, list[str]] = {"delivered": [], "failed": []}
    source = {"name": "portfolio", "kind": "file", "path": "portfolio.json", "merge": True}
    bodies = [
        {"request_id": unique("ok"), "template": "weekly.html", "sources": [source]}
        for _ in range(DELIVERED)
    ]
    bodies += [
        {"request_id": unique("bad"), "template": "quarterly.html", "params": SAMPLE},
        {"request_id": unique("bad"), "template": "weekly.html"},  # undefined variables
    ]
    for body in bodies:
        await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    for body in bodies[:DELIVERED]:
        await outcomes.delivered_event(body["request_id"])
        ids["delivered"].append(body["request_id"])
    for body in bodies[DELIVERED:]:
        await outcomes.failed_event(body["request_id"])
        ids["failed"].append(body["request_id"])
    await nc.close()
    return ids


def value(result: list[dict[str, Any]]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def bucket_of(seconds: float) -> tuple[float, float]:
    lower = 0.0
    for upper in (*REPORT_SECONDS, float("inf")):
        if seconds <= upper:
            return lower, upper
        lower = upper
    raise AssertionError(seconds)


async def test_prometheus_computes_the_success_rate_and_p95_that_pressroom_slo_shows(
    watched: tuple[Stack, PrometheusServer], reports: dict[str, list[str]]
) -> None:
    stack, prometheus = watched

    async def all_seen() -> bool:
        seen = prometheus.query("sum(pressroom_report_duration_seconds_count)")
        return bool(seen) and value(seen) == DELIVERED + FAILED

    await eventually(all_seen, timeout=60, every=0.5)
    slo = json.loads(stack.cli("slo", "--json").stdout)
    rows = {r["sli"]: r for r in slo["objectives"]}
    success = rows["Report generation success rate"]
    assert success["samples"] == DELIVERED + FAILED
    ratio = value(
        prometheus.query(
            'sum(pressroom_report_duration_seconds_count{outcome="delivered"})'
            " / sum(pressroom_report_duration_seconds_count)"
        )
    )
    assert ratio == pytest.approx(success["value"] / 100)
    assert ratio == pytest.approx(DELIVERED / (DELIVERED + FAILED))

    ledger_p95 = rows["Report generation time (p95)"]["value"]
    prometheus_p95 = value(
        prometheus.query(
            "histogram_quantile(0.95, sum by (le) "
            '(pressroom_report_duration_seconds_bucket{outcome="delivered"}))'
        )
    )
    # the ledger's exact nearest-rank p95 and Prometheus's estimate share a histogram bucket
    lower, upper = bucket_of(ledger_p95)
    assert lower < prometheus_p95 <= upper, (ledger_p95, prometheus_p95)

    pdf = rows["PDF rendering success rate"]
    renders = value(
        prometheus.query(
            'sum(pressroom_renders_total{outcome="ok"}) / sum(pressroom_renders_total)'
        )
    )
    assert renders == pytest.approx(pdf["value"] / 100)

    # the shipped recording rules count the same reports, the first of each series included
    async def recorded() -> dict[str, float] | None:
        counted = {
            r["metric"]["outcome"]: float(r["value"][1])
            for r in prometheus.query("sum by (outcome) (pressroom:report_outcomes:increase1h)")
        }
        return counted if counted.get("failed") else None

    assert await eventually(recorded, timeout=30, every=0.5) == {
        "delivered": DELIVERED,
        "failed": FAILED,
    }


async def test_every_metric_of_the_design_is_scraped_with_its_labels(
    watched: tuple[Stack, PrometheusServer], reports: dict[str, list[str]]
) -> None:
    _, prometheus = watched

    async def names() -> dict[str, set[str]] | None:
        found: dict[str, set[str]] = {}
        for series in prometheus.query('{__name__=~"pressroom_.+"}'):
            labels = series["metric"]
            found.setdefault(labels["__name__"], set()).update(labels)
        return found if set(DESIGN_METRICS) <= set(found) else None

    found = await eventually(names, timeout=60, every=0.5)
    for name, labels in DESIGN_METRICS.items():
        assert labels <= found[name], (name, found[name])
        assert {"service", "worker", "instance"} <= found[name]  # from targets.json
    assert value(prometheus.query("max(pressroom_dead_letters)")) >= FAILED
    # every failure kind's series exists (at 0 until its first event): only one moved
    failures = prometheus.query('sum by (reason) (pressroom_failures_total{stage="renderer"}) > 0')
    assert {r["metric"]["reason"] for r in failures} == {"template_error"}
    fetches = prometheus.query("sum(pressroom_source_fetch_duration_seconds_count)")
    assert value(fetches) == DELIVERED
    next_fire = prometheus.query(
        'pressroom_schedule_next_fire_timestamp_seconds{schedule="new-year"} - time()'
    )
    assert value(next_fire) > 0
    up = prometheus.query('sum(up{job="pressroom"})')
    assert value(up) == 4


async def test_every_dashboard_query_parses_and_returns_data(
    watched: tuple[Stack, PrometheusServer], reports: dict[str, list[str]]
) -> None:
    stack, prometheus = watched
    board = json.loads((REPO / "deploy/grafana/dashboards/pressroom.json").read_text())
    queries = {
        f"{panel['title']} [{target['refId']}]": target["expr"].replace("$__rate_interval", "1m")
        for panel in board["panels"]
        for target in panel.get("targets", [])
    }
    # Rates need a series to move while Prometheus watches it: one more report of each kind.
    nc = await stack.connect()
    outcomes = await Outcomes().start(nc)
    source = {"name": "portfolio", "kind": "file", "path": "portfolio.json", "merge": True}
    again = [
        {"request_id": unique("again"), "template": "weekly.html", "sources": [source]},
        {"request_id": unique("again"), "template": "weekly.html"},
    ]
    for body in again:
        await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await outcomes.delivered_event(again[0]["request_id"])
    await outcomes.failed_event(again[1]["request_id"])
    await nc.close()

    def finite(result: list[dict[str, Any]]) -> bool:
        return any(r["value"][1] not in ("NaN", "+Inf", "-Inf") for r in result)

    async def all_answer() -> bool:
        return all(finite(prometheus.query(expr)) for expr in queries.values())

    try:
        await eventually(all_answer, timeout=60, every=1)
    except AssertionError:
        empty = [title for title, expr in queries.items() if not finite(prometheus.query(expr))]
        raise AssertionError(f"panels without data: {empty}") from None
