"""Pressroom's alert rules as the tests read them: where they are, and the alerts they define."""

from __future__ import annotations

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
