"""Every example we ship runs as shipped: the example config's schedules and sources, with the
allow-lists of .env.example, and the README's "publish from another system" snippet."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.filenames import request_tag
from tests.helpers import REPO, Outcomes, Stack
from tests.servers import PrometheusServer, S3Server, SmtpServer

pytestmark = pytest.mark.integration


def env_example() -> dict[str, str]:
    pairs = [
        line.split("=", 1)
        for line in (REPO / ".env.example").read_text().splitlines()
        if line.startswith("PRESSROOM_") and "=" in line
    ]
    return {k: v for k, v in pairs}


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, SmtpServer]]:
    s3, smtp = S3Server().start(), SmtpServer().start()
    s3.client().make_bucket("company-reports")  # what compose's minio-init creates
    allow = {k: v for k, v in env_example().items() if k.endswith("_ALLOW")}
    stack = Stack(
        tmp_path_factory.mktemp("examples"),
        env_extra={
            **s3.env(),
            **smtp.env(),
            **allow,
            "PRESSROOM_CONFIG": str(REPO / "deploy/pressroom.yaml"),
        },
        unset=("PRESSROOM_DATA_FILES_DIR",),  # the config file's data folder applies
    )
    stack.root.mkdir(parents=True, exist_ok=True)
    stack.start()
    yield stack, smtp
    stack.stop()
    smtp.stop()
    s3.stop()


def schedules() -> list[str]:
    config = yaml.safe_load((REPO / "deploy/pressroom.yaml").read_text())
    return [s["name"] for s in config["schedules"]]


@pytest.mark.parametrize("name", schedules())
def test_every_shipped_schedule_delivers(shipped: tuple[Stack, SmtpServer], name: str) -> None:
    stack, smtp = shipped
    result = stack.cli("schedule", "run", name, "--wait", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load((REPO / "deploy/pressroom.yaml").read_text())
    [schedule] = [s for s in config["schedules"] if s["name"] == name]
    for delivery in schedule["request"]["deliver"]:
        if delivery["channel"] == "email":
            assert all(smtp.to(address) for address in delivery["to"])


def test_the_shipped_named_sources_can_be_tested(
    shipped: tuple[Stack, SmtpServer], tmp_path: Path
) -> None:
    stack, _ = shipped
    prometheus = PrometheusServer(tmp_path).start()
    try:
        url = {"PRESSROOM_PROMETHEUS_URL": prometheus.url}
        ok = stack.cli("sources", "test", "uptime", env=url)
        assert ok.returncode == 0 and ok.stdout.startswith("ok: uptime (prometheus)"), ok.stderr
    finally:
        prometheus.stop()
    # The GitHub source is unreachable from here: one line saying so, not a stack trace.
    github = stack.cli("sources", "test", "portfolio-prs")
    assert github.returncode == 1
    assert len(github.stderr.strip().splitlines()) == 1
    # Named as the config file (and the user) spell it, not as the variable made of it.
    assert "source 'portfolio-prs'" in github.stderr and "portfolio_prs" not in github.stderr


def readme_snippet() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Publishing a request from another system") :]
    return section[section.index("```python") + len("```python") : section.index("```\n", 10)]


async def test_the_readme_publishing_example_runs_as_a_publisher(
    shipped: tuple[Stack, SmtpServer], tmp_path: Path
) -> None:
    stack, _ = shipped
    code = readme_snippet().replace("127.0.0.1:4222", f"127.0.0.1:{stack.port}")
    assert "publisher.nk" in code  # it connects as the publisher identity
    (tmp_path / ".pressroom").mkdir()
    (tmp_path / ".pressroom" / "auth").symlink_to(stack.auth_dir)
    (tmp_path / "templates").symlink_to(REPO / "templates")
    nc = await stack.connect()
    outcomes = await Outcomes().start(nc)
    await nc.flush()  # subscribed before the script runs (it blocks this loop, and waits for
    # its own outcome, so the report is delivered while it runs)
    script = tmp_path / "publish.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("stored as")
    rid = re.search(r'"request_id": "([^"]+)"', code)
    assert rid is not None
    delivered: dict[str, Any] = await outcomes.delivered_event(rid.group(1))
    # The publisher is a calling system: its files go into its own folder.
    target = delivered["channels"][0]["target"]
    assert target.startswith("PRESSROOM_OUT_DIR/publisher/portfolio/weekly/"), target
    assert target.endswith(f"-{request_tag(rid.group(1))}.pdf"), target
    await nc.close()
    assert json.dumps(delivered)
