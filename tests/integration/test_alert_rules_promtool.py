"""deploy/prometheus/rules.yml through Debian's promtool: valid, every alert proven to fire
and to stay silent."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.alertrules import PROMETHEUS, RULES, TESTS, alerts

pytestmark = pytest.mark.integration


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: `make test-deps` installs Debian's prometheus")
    return found


def test_promtool_accepts_the_rules_and_the_scrape_config(tmp_path: Path) -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # check config resolves rule_files relative to the config: check the shipped pair as shipped
    for config in ("prometheus.yml", "prometheus-compose.yml"):
        shutil.copy(PROMETHEUS / config, tmp_path / config)
    shutil.copy(RULES, tmp_path / "rules.yml")
    for config in ("prometheus.yml", "prometheus-compose.yml"):
        result = subprocess.run(
            [promtool(), "check", "config", str(tmp_path / config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_silent_in_promtool_unit_tests() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", *[str(t.relative_to(PROMETHEUS)) for t in TESTS]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=PROMETHEUS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    fires: set[str] = set()
    silent: set[str] = set()
    for path in TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - fires == set(), "alerts without a test where they fire"
    assert names - silent == set(), "alerts without a test where they stay silent"
