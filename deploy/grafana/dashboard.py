"""The Pressroom Grafana dashboard, as code: `python deploy/grafana/dashboard.py` writes
deploy/grafana/dashboards/pressroom.json (checked in; a test fails when it is stale).

The legacy runbook's three dashboards in one: service health, report generation, template
health. Queries read the metrics of DESIGN.md and the recording rules of
deploy/prometheus/rules.yml; slow buckets carry exemplars that open their trace in Jaeger.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "pressroom.json"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid="prometheus")
SERVICES = 'service=~"fetcher|renderer|distributor|scheduler"'


def query(expr: str, legend: str = "", *, exemplar: bool = False) -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto")
    return target.exemplar(True) if exemplar else target


def series(title: str, unit: str, *targets: prometheus.Dataquery, width: int = 12) -> Any:
    panel = (
        timeseries.Panel()
        .title(title)
        .datasource(PROMETHEUS)
        .unit(unit)
        .height(8)
        .span(width)
        .fill_opacity(10)
    )
    for ref, target in zip("ABCDEFGH", targets, strict=False):
        panel = panel.with_target(target.ref_id(ref))
    return panel


def single(title: str, unit: str, target: prometheus.Dataquery, *, width: int = 6) -> Any:
    return (
        stat.Panel()
        .title(title)
        .datasource(PROMETHEUS)
        .unit(unit)
        .height(5)
        .span(width)
        .with_target(target.instant().ref_id("A"))
    )


def build() -> dict[str, Any]:
    board = (
        dashboard.Dashboard("Pressroom")
        .uid("pressroom")
        .tags(["pressroom", "slo"])
        .description("SLOs, report generation, template health and the pipeline's workers.")
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        # -- SLOs and error budget ----------------------------------------------------------
        .with_row(dashboard.Row("SLOs and error budget"))
        .with_panel(
            single(
                "Report success (1d, SLO 99 %)",
                "percentunit",
                query("pressroom:report_success:ratio_rate1d"),
            )
        )
        .with_panel(
            single(
                "Report time p95 (1h, SLO < 60 s)",
                "s",
                query("pressroom:report_duration_seconds:p95_1h"),
            )
        )
        .with_panel(
            single(
                "PDF rendering success (1d, SLO 98 %)",
                "percentunit",
                query("pressroom:renders_ok:ratio_rate1d"),
            )
        )
        .with_panel(
            single(
                "Templates valid (SLO 100 %)",
                "percentunit",
                query("pressroom:templates_valid:ratio"),
            )
        )
        .with_panel(
            series(
                "Error budget burn rate (1 = budget lasts 30 days)",
                "none",
                query("pressroom:report_errors:ratio_rate5m / 0.01", "success 5m"),
                query("pressroom:report_errors:ratio_rate1h / 0.01", "success 1h"),
                query("pressroom:report_errors:ratio_rate6h / 0.01", "success 6h"),
                query("pressroom:report_slow:ratio_rate1h / 0.05", "latency 1h"),
                query("pressroom:report_slow:ratio_rate6h / 0.05", "latency 6h"),
            )
        )
        .with_panel(
            series(
                "Reports by outcome",
                "reqps",
                query(
                    "sum by (outcome, trigger) "
                    "(rate(pressroom_report_duration_seconds_count[$__rate_interval]))",
                    "{{outcome}} ({{trigger}})",
                ),
            )
        )
        # -- report generation --------------------------------------------------------------
        .with_row(dashboard.Row("Report generation"))
        .with_panel(
            series(
                "Report time p95 per template (request → outcome)",
                "s",
                query(
                    "histogram_quantile(0.95, sum by (le, template) (rate("
                    'pressroom_report_duration_seconds_bucket{outcome="delivered"}'
                    "[$__rate_interval])))",
                    "{{template}}",
                    exemplar=True,
                ),
            )
        )
        .with_panel(
            series(
                "Stage time p95",
                "s",
                query(
                    "histogram_quantile(0.95, sum by (le, stage) "
                    "(rate(pressroom_stage_duration_seconds_bucket[$__rate_interval])))",
                    "{{stage}}",
                    exemplar=True,
                ),
            )
        )
        .with_panel(
            series(
                "Failures by stage and reason (15 min)",
                "short",
                query(
                    "sum by (stage, reason) (pressroom:failures:increase15m)",
                    "{{stage}}: {{reason}}",
                ),
            )
        )
        .with_panel(
            series(
                "Data aggregation p95 per source (SLO < 30 s)",
                "s",
                query("pressroom_source:source_fetch_duration_seconds:p95_1h", "{{source}}"),
            )
        )
        .with_panel(
            series(
                "Report size p95 (SLO < 5 MB)",
                "bytes",
                query("pressroom_format:report_size_bytes:p95_1d", "{{format}}"),
                width=8,
            )
        )
        .with_panel(
            series(
                "Schedules: next fire and last delivery",
                "dateTimeFromNow",
                query(
                    "max by (schedule) (pressroom_schedule_next_fire_timestamp_seconds) * 1000",
                    "{{schedule}} next",
                ),
                query(
                    "max by (schedule) "
                    "(pressroom_schedule_last_delivered_timestamp_seconds) * 1000",
                    "{{schedule}} delivered",
                ),
                width=16,
            )
        )
        # -- template health ----------------------------------------------------------------
        .with_row(dashboard.Row("Template health"))
        .with_panel(
            series(
                "Validation problems per template",
                "short",
                query("max by (template) (pressroom_template_problems)", "{{template}}"),
                width=8,
            )
        )
        .with_panel(
            series(
                "Reports per template (1d)",
                "short",
                query("sum by (template) (pressroom:report_outcomes:increase1d)", "{{template}}"),
                width=8,
            )
        )
        .with_panel(
            series(
                "Renders per template and outcome (1h)",
                "short",
                query(
                    "sum by (template, outcome) (pressroom:renders:increase1h)",
                    "{{template}} {{outcome}}",
                ),
                width=8,
            )
        )
        # -- service health -----------------------------------------------------------------
        .with_row(dashboard.Row("Service health"))
        .with_panel(
            series(
                "Workers up",
                "short",
                query(f"sum by (service) (up{{{SERVICES}}})", "{{service}}"),
                width=6,
            )
        )
        .with_panel(
            series(
                "Consumer lag (messages waiting, per lane)",
                "short",
                query("max by (consumer) (pressroom_consumer_pending)", "{{consumer}}"),
                width=6,
            )
        )
        .with_panel(
            series(
                "Dead letters waiting",
                "short",
                query("max(pressroom_dead_letters)", "dead letters"),
                width=6,
            )
        )
        .with_panel(
            series(
                "Report storage used",
                "percentunit",
                query(
                    "max by (volume) "
                    "(pressroom_storage_used_bytes / pressroom_storage_capacity_bytes)",
                    "{{volume}}",
                ),
                width=6,
            )
        )
    )
    rendered: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return rendered


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    sys.stdout.write(f"wrote {OUTPUT}\n")


if __name__ == "__main__":
    main()
