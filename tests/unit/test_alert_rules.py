"""deploy/prometheus/rules.yml: valid, every alert proven to fire and to stay silent, annotated."""

from __future__ import annotations

import re

from tests.alertrules import LEGACY_ROWS, alerts
from tests.helpers import REPO


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
