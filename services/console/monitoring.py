"""Watching a running Pressroom: scrape targets for Prometheus, the embedded Prometheus, alerts.

`pressroom up` writes `<data folder>/prometheus/targets.json` (Prometheus file_sd format);
`pressroom up --prometheus` runs Debian's `prometheus` there with the shipped scrape config
and rules (deploy/prometheus/); `pressroom alerts` asks a Prometheus what is firing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import yaml

from shared.errors import PressroomError
from shared.urls import public_url

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
SEVERITIES = ("P0", "P1", "P2", "P3")


class MonitoringUnavailable(PressroomError):
    """No Prometheus can be started or asked."""


def write_targets(folder: Path, workers: dict[str, str]) -> Path:
    """`folder/targets.json`: every worker's metrics address, labelled with its service.

    `workers` maps labels like `renderer-2` to the worker's health URL (its /metrics port).
    Written atomically: Prometheus re-reads the file whenever it changes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    groups = [
        {
            "targets": [urlparse(url).netloc],
            "labels": {"service": label.rsplit("-", 1)[0], "worker": label},
        }
        for label, url in sorted(workers.items())
    ]
    target = folder / "targets.json"
    partial = folder / "targets.json.tmp"
    partial.write_text(json.dumps(groups, indent=2) + "\n")
    os.replace(partial, target)
    return target


def write_config(folder: Path, *, interval: str = "15s", deploy: Path = DEPLOY) -> Path:
    """The shipped prometheus.yml and rules.yml in `folder`, beside targets.json."""
    config, rules = deploy / "prometheus.yml", deploy / "rules.yml"
    if not config.is_file() or not rules.is_file():
        raise MonitoringUnavailable(
            f"the Prometheus config is not at {deploy} (run from a Pressroom checkout)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load(config.read_text())
    data["global"] = {**data.get("global", {}), "scrape_interval": interval}
    data["global"]["evaluation_interval"] = interval
    (folder / "prometheus.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copy(rules, folder / "rules.yml")
    return folder / "prometheus.yml"


@dataclass
class EmbeddedPrometheus:
    process: subprocess.Popen[bytes]
    url: str
    folder: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        (self.folder / "url").unlink(missing_ok=True)


def start_prometheus(
    folder: Path, port: int, *, interval: str = "5s", timeout: float = 60.0
) -> EmbeddedPrometheus:
    """Debian's prometheus on 127.0.0.1:`port`, scraping targets.json with the shipped rules."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise MonitoringUnavailable(
            "prometheus is not on PATH: install it (Debian: apt-get install prometheus) "
            "to watch the stack; running without it"
        )
    config = write_config(folder, interval=interval)
    url = f"http://127.0.0.1:{port}"
    with (folder / "prometheus.log").open("ab") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--enable-feature=exemplar-storage",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    embedded = EmbeddedPrometheus(process, url, folder)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as answer:
                if answer.status == 200:
                    (folder / "url").write_text(url + "\n")
                    return embedded
        except OSError:
            time.sleep(0.2)
    embedded.stop()
    raise MonitoringUnavailable(
        f"prometheus did not start on {url}; see {folder / 'prometheus.log'}"
    )


def monitor_url(explicit: str | None, configured: str | None, data_dir: Path) -> str:
    """--prometheus URL, else PRESSROOM_MONITOR_URL, else what `pressroom up --prometheus` ran."""
    if explicit or configured:
        return (explicit or configured or "").rstrip("/")
    recorded = data_dir / "prometheus" / "url"
    if recorded.is_file():
        return recorded.read_text().strip()
    raise MonitoringUnavailable(
        "no Prometheus to ask: run `pressroom up --prometheus`, or pass --prometheus URL "
        "(or set PRESSROOM_MONITOR_URL)"
    )


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str
    state: str
    summary: str
    command: str
    runbook: str
    active_since: str
    labels: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "severity": self.severity,
            "state": self.state,
            "summary": self.summary,
            "command": self.command,
            "runbook": self.runbook,
            "active_since": self.active_since,
            "labels": self.labels,
        }


def parse_alerts(answer: dict[str, Any], *, include_pending: bool = False) -> list[Alert]:
    """Prometheus's /api/v1/alerts answer → Pressroom's alerts, most severe first."""
    found = []
    for item in answer.get("data", {}).get("alerts", []):
        labels = dict(item.get("labels", {}))
        name = labels.pop("alertname", "?")
        severity = labels.pop("severity", "?")
        state = item.get("state", "")
        if not name.startswith("Pressroom") or (state != "firing" and not include_pending):
            continue
        notes = item.get("annotations", {})
        found.append(
            Alert(
                name=name,
                severity=severity,
                state=state,
                summary=notes.get("summary", ""),
                command=notes.get("command", ""),
                runbook=notes.get("runbook", ""),
                active_since=str(item.get("activeAt", ""))[:19],
                labels=labels,
            )
        )
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(found, key=lambda a: (rank.get(a.severity, 9), a.name, sorted(a.labels.items())))


async def active_alerts(url: str, *, include_pending: bool = False) -> list[Alert]:
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{url}/api/v1/alerts")
            response.raise_for_status()
            answer = response.json()
    except httpx.HTTPStatusError as error:
        raise MonitoringUnavailable(
            f"cannot ask Prometheus at {public_url(url)}: it answered {error.response.status_code}"
        ) from None
    except (httpx.HTTPError, ValueError) as error:
        raise MonitoringUnavailable(
            f"cannot ask Prometheus at {public_url(url)}: {error or type(error).__name__}"
        ) from None
    return parse_alerts(answer, include_pending=include_pending)
