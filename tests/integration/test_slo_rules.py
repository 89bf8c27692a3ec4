"""The shipped recording rules, evaluated by a real Prometheus scraping real workers, agree with
`pressroom slo` on the same traffic — failures at every stage included, the first of each kind
too (issue 28, item 1) — and request-chosen names cannot grow the series count (item 2)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.console.monitoring import write_config
from tests.helpers import REPO, Outcomes, Stack, eventually, unique
from tests.servers import PrometheusServer

pytestmark = pytest.mark.integration
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
SOURCE = {"name": "portfolio", "kind": "file", "path": "portfolio.json", "merge": True}
DELIVERED = 4
SERVICES = {"fetcher", "renderer", "distributor"}


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, PrometheusServer]]:
    root = tmp_path_factory.mktemp("slo-rules")
    config = root / "pressroom.yaml"
    config.write_text(
        json.dumps({"sources": {"portfolio": {"kind": "file", "path": "portfolio.json"}}})
    )
    stack = Stack(root, env_extra={"PRESSROOM_CONFIG": str(config)}).start()
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


def value(result: list[dict[str, Any]]) -> float | None:
    return float(result[0]["value"][1]) if len(result) == 1 else None


async def publish_all(
    stack: Stack, delivered: list[dict[str, Any]], failed: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Publish them all; wait for each outcome; the report.failed events."""
    nc = await stack.connect()
    outcomes = await Outcomes().start(nc)
    for body in [*delivered, *failed]:
        await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    for body in delivered:
        await outcomes.delivered_event(body["request_id"])
    failures = [await outcomes.failed_event(body["request_id"]) for body in failed]
    await nc.close()
    return failures


async def test_recording_rules_and_pressroom_slo_agree_on_failures_at_every_stage(
    watched: tuple[Stack, PrometheusServer],
) -> None:
    stack, prometheus = watched

    # Before any report: every worker already shows its failure series, at 0.
    async def zeros_scraped() -> bool:
        found = prometheus.query(
            'count by (service) (pressroom_report_duration_seconds_count{outcome="failed"} == 0)'
        )
        renders = prometheus.query('pressroom_renders_total{outcome="failed"} == 0')
        return {r["metric"]["service"] for r in found} == SERVICES and bool(renders)

    await eventually(zeros_scraped, timeout=90, every=0.5)

    delivered = [
        {"request_id": unique("ok"), "template": "weekly.html", "sources": [SOURCE]}
        for _ in range(DELIVERED)
    ]
    failed = [
        # at render: the template's variables are undefined without data
        {"request_id": unique("render"), "template": "weekly.html"},
        # at fetch: the data file does not exist
        {
            "request_id": unique("fetch"),
            "template": "weekly.html",
            "sources": [{**SOURCE, "path": "missing.json"}],
        },
        # at delivery: the webhook target is refused (not a public address)
        {
            "request_id": unique("deliver"),
            "template": "weekly.html",
            "params": SAMPLE,
            "deliver": [{"channel": "webhook", "url": "http://169.254.169.254/hook"}],
        },
    ]
    failures = await publish_all(stack, delivered, failed)
    assert [f["stage"] for f in failures] == ["renderer", "fetcher", "distributor"]

    slo = json.loads(stack.cli("slo", "--window", "1d", "--json").stdout)
    rows = {r["sli"]: r for r in slo["objectives"]}
    success = rows["Report generation success rate"]["value"] / 100
    renders = rows["PDF rendering success rate"]["value"] / 100
    assert success == pytest.approx(DELIVERED / (DELIVERED + 3))
    assert renders == pytest.approx((DELIVERED + 1) / (DELIVERED + 2))

    # rate() extrapolates each worker's series to the window's end from its own scrape times,
    # so the ratios agree to within a scrape interval's share of the test's duration.
    recorded: dict[str, float | None] = {}

    async def rules_agree() -> bool:
        recorded["success"] = value(prometheus.query("pressroom:report_success:ratio_rate1d"))
        recorded["renders"] = value(prometheus.query("pressroom:renders_ok:ratio_rate1d"))
        return all(v is not None for v in recorded.values()) and (
            recorded["success"] == pytest.approx(success, abs=0.03)
            and recorded["renders"] == pytest.approx(renders, abs=0.03)
        )

    try:
        await eventually(rules_agree, timeout=60, every=1)
    except AssertionError:
        raise AssertionError(
            f"Prometheus {recorded} vs pressroom slo success={success} renders={renders}"
        ) from None


def series_count(stack: Stack) -> int:
    """`pressroom_*` series the workers expose right now (every sample line)."""
    total = 0
    for health in stack.health.values():
        text = httpx.get(health + "/metrics", timeout=10).text
        total += sum(1 for line in text.splitlines() if line.startswith("pressroom_"))
    return total


async def test_request_chosen_names_do_not_grow_the_series_count(
    watched: tuple[Stack, PrometheusServer],
) -> None:
    stack, _ = watched
    before = series_count(stack)
    random = 12
    failed = [
        {"request_id": unique("junk"), "template": unique("junk") + ".html", "params": SAMPLE}
        for _ in range(random)
    ] + [
        {
            "request_id": unique("junk"),
            "template": "weekly.html",
            "sources": [{"name": unique("src").replace("-", "_"), "kind": "file", "path": "x"}],
        }
        for _ in range(random)
    ]
    await publish_all(stack, [], failed)
    after = series_count(stack)
    assert before > 100  # the declared series are there
    assert after == before, (before, after)
