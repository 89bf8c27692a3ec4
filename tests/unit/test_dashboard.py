"""deploy/grafana: the dashboard is generated from code, and the checked-in JSON is current."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

import yaml

from tests.helpers import REPO

GRAFANA = REPO / "deploy/grafana"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dashboard", GRAFANA / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def panel_queries(board: dict[str, Any]) -> dict[str, list[str]]:
    return {
        panel["title"]: [t["expr"] for t in panel.get("targets", [])]
        for panel in board["panels"]
        if panel["type"] != "row"
    }


def test_regenerating_the_dashboard_changes_nothing() -> None:
    checked_in = (GRAFANA / "dashboards/pressroom.json").read_text()
    assert generator().render() == checked_in, "run: python deploy/grafana/dashboard.py"


def test_the_dashboard_shows_what_the_runbook_watches() -> None:
    board = json.loads((GRAFANA / "dashboards/pressroom.json").read_text())
    queries = " ".join(q for qs in panel_queries(board).values() for q in qs)
    for needle in (
        "pressroom:report_errors:ratio_rate1h / 0.01",  # error-budget burn
        "pressroom:report_slow:ratio_rate1h / 0.05",
        "sum by (le, template) (rate(pressroom_report_duration_seconds_bucket",  # p95/template
        "sum by (stage, reason) (pressroom:failures:increase15m)",  # failures
        "pressroom_stage_duration_seconds_bucket",  # stage latency
        "pressroom_dead_letters",
        "pressroom_consumer_pending",
        "pressroom_storage_used_bytes / pressroom_storage_capacity_bytes",
        "pressroom_template_problems",
    ):
        assert needle in queries, needle
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert {"Service health", "Report generation", "Template health"} <= set(rows)
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}
            refs = [t["refId"] for t in panel["targets"]]
            assert len(set(refs)) == len(refs) and all(refs), panel["title"]
    exemplars = [t for p in board["panels"] for t in p.get("targets", []) if t.get("exemplar")]
    assert exemplars  # slow buckets lead to their traces


def test_provisioning_names_the_prometheus_and_jaeger_sources_the_dashboard_uses() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/pressroom.yml").read_text())
    by_uid = {s["uid"]: s for s in sources["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["jaeger"]["type"] == "jaeger"
    [link] = by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert link == {"name": "trace_id", "datasourceUid": "jaeger"}
    boards = yaml.safe_load((GRAFANA / "provisioning/dashboards/pressroom.yml").read_text())
    assert boards["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
