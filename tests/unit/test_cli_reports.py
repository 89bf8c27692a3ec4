"""What `pressroom status`, `ls`, `request` and their kin print at 80 columns, with the bus
replaced by the ledger entry it would answer."""

from __future__ import annotations

import getpass
import io
import json
import os
import pwd
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console

from services.console import audit
from services.console.cli import _audit, _common
from services.console.cli import requests as cli
from services.console.requests import Outcome
from shared.adapters.ledger import LedgerEntry, StageRecord
from shared.events import REPORT_DELIVERED, Artefact, ChannelResult

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@dataclass
class Screen:
    out: io.StringIO
    err: io.StringIO
    bus_calls: list[Any]

    def text(self) -> str:
        return self.out.getvalue()

    def error(self) -> str:
        return self.err.getvalue()


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> Iterator[Screen]:
    """The CLI's consoles at 80 columns, into buffers; the bus answers with what a test sets."""
    shown = Screen(io.StringIO(), io.StringIO(), [])
    out = Console(file=shown.out, width=80, color_system=None, emoji=False)
    err = Console(file=shown.err, width=80, color_system=None, emoji=False, soft_wrap=True)
    monkeypatch.setattr(cli, "out", out)
    monkeypatch.setattr(_common, "err", err)
    monkeypatch.setattr(cli, "settings", lambda: None)
    yield shown


def answering(monkeypatch: pytest.MonkeyPatch, screen: Screen, value: Any) -> None:
    def on_bus(cfg: Any, operation: Any, **options: Any) -> Any:
        screen.bus_calls.append(operation)
        return value

    monkeypatch.setattr(cli, "on_bus", on_bus)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def done(seq: int, begun: float, seconds: float, *, claimed: float | None = None, **kw: Any) -> Any:
    """A finished stage whose worker began at `begun` and timed `seconds`; its claim was
    written at `claimed` (a renderer writes it CLAIM_AFTER into its work, or with its finish)."""
    return StageRecord(
        state="done",
        seq=seq,
        started_at=at(begun if claimed is None else claimed),
        finished_at=at(begun + seconds),
        seconds=seconds,
        **kw,
    )


def delivered(stages: dict[str, StageRecord], **fields: Any) -> LedgerEntry:
    return LedgerEntry(
        request_id="sample-portfolio-20261207T090000",
        template="portfolio.html",
        requested_at=T0,
        stages=stages,
        **fields,
    )


def rows(text: str) -> dict[str, float]:
    """Stage name → the seconds its row shows."""
    found = re.findall(r"^  (\w+) +done +([\d.]+)s  attempts", text, flags=re.MULTILINE)
    return {stage: float(secs) for stage, secs in found}


def total_parts(text: str) -> tuple[float, dict[str, float]]:
    match = re.search(r"total ([\d.]+)s: (.*)", text)
    assert match, text
    parts = {what: float(n) for n, what in re.findall(r"([\d.]+)s ([a-z ]+?)(?:,|$)", match[2])}
    return float(match[1]), parts


# ---- status: timings that agree -----------------------------------------------------------
def test_status_stage_rows_add_up_to_the_time_in_stages_and_the_total(
    monkeypatch: pytest.MonkeyPatch, screen: Screen
) -> None:
    # What `make run` showed: the renderer worked 2.45 s but wrote its claim 1 s into it,
    # so the ledger's own timestamps say 1.45 s; the total said "1.60s in stages".
    entry = delivered(
        {
            "fetcher": done(1, 0.02, 0.10),
            "renderer": done(2, 0.13, 2.45, claimed=1.13),
            "distributor": done(3, 2.60, 0.05),
        }
    )
    answering(monkeypatch, screen, entry)
    cli.status(entry.request_id, as_json=False)
    text = screen.text()
    assert rows(text) == {"fetcher": 0.10, "renderer": 2.45, "distributor": 0.05}, text
    total, parts = total_parts(text)
    assert total == 2.65, text
    assert parts["in stages"] == 2.60, text  # the rows above, added up
    assert parts["queued"] == 0.05, text
    assert set(parts) == {"in stages", "queued"}, text  # nothing left unexplained
    queued = re.findall(r"\(queued\) +waiting +([\d.]+)s  before (\w+)", text)
    assert queued == [("0.02", "fetcher"), ("0.01", "renderer"), ("0.02", "distributor")], text


def test_a_burst_childs_queue_time_before_the_renderer_is_shown(
    monkeypatch: pytest.MonkeyPatch, screen: Screen, capsys: pytest.CaptureFixture[str]
) -> None:
    # A child starts at the renderer (no fetcher): it waited 100 s in the bulk lane.
    entry = delivered(
        {"renderer": done(7, 100.0, 1.30, claimed=101.0), "distributor": done(8, 101.32, 0.05)}
    )
    answering(monkeypatch, screen, entry)
    cli.status(entry.request_id, as_json=False)
    text = screen.text()
    assert re.search(r"\(queued\) +waiting +100.00s  before renderer\n", text), text
    total, parts = total_parts(text)
    assert (total, parts) == (101.37, {"in stages": 1.35, "queued": 100.02}), text
    assert "retrying" not in text, text

    capsys.readouterr()
    cli.status(entry.request_id, as_json=True)  # JSON goes straight to stdout
    assert json.loads(capsys.readouterr().out)["waits"] == {"renderer": 100.0, "distributor": 0.02}


def test_a_retried_stage_says_its_wait_holds_the_earlier_attempts(
    monkeypatch: pytest.MonkeyPatch, screen: Screen
) -> None:
    entry = delivered(
        {
            "fetcher": done(1, 0.0, 0.10),
            "renderer": done(2, 30.10, 2.0, attempts=3),  # two failed attempts and backoff
            "distributor": done(3, 32.10, 0.05),
        }
    )
    answering(monkeypatch, screen, entry)
    cli.status(entry.request_id, as_json=False)
    text = screen.text()
    assert re.search(r"\(retrying\) +waiting +30.00s  before renderer attempt 3\n", text), text
    total, parts = total_parts(text)
    assert total == 32.15 and parts == {"in stages": 2.15, "queued": 0.0, "retrying": 30.0}


def test_status_prints_paths_whole_for_the_terminal_to_wrap(
    monkeypatch: pytest.MonkeyPatch, screen: Screen
) -> None:
    folder = "PRESSROOM_OUT_DIR/portfolio/weekly/finance-and-operations-review"
    target = f"{folder}/portfolio-status-report-2026-12-07-5deecc00.projects.csv"
    key = "reports/sample-portfolio-20261207T090000/5deecc00/portfolio.projects.csv"
    entry = delivered(
        {
            "fetcher": done(1, 0.0, 0.1),
            "renderer": done(2, 0.1, 1.0),
            "distributor": done(3, 1.1, 0.1),
        },
        artefacts=[
            Artefact(
                format="csv",
                name="projects",
                key=key,
                size=1234,
                sha256="0" * 64,
                content_type="text/csv",
            )
        ],
        channels=[ChannelResult(channel="file", ok=True, target=target)],
    )
    answering(monkeypatch, screen, entry)
    cli.status(entry.request_id, as_json=False)
    lines = screen.text().splitlines()
    assert any(key in line for line in lines), screen.text()
    assert any(target in line for line in lines), screen.text()


def test_request_wait_prints_delivered_paths_whole(screen: Screen) -> None:
    target = (
        "PRESSROOM_OUT_DIR/portfolio/weekly/finance-and-operations-review/"
        "portfolio-status-report-2026-12-07-5deecc00.projects.csv"
    )
    outcome = Outcome(
        REPORT_DELIVERED, {"request_id": "r", "channels": [{"channel": "file", "target": target}]}
    )
    cli.show_outcome("r", outcome, wait=True, as_json=False)
    assert f"  file: {target}" in screen.text().splitlines(), screen.text()


# ---- ls: what it can filter on ----------------------------------------------------------------
def test_ls_refuses_an_unknown_status_naming_the_known_ones(
    monkeypatch: pytest.MonkeyPatch, screen: Screen
) -> None:
    answering(monkeypatch, screen, [])
    with pytest.raises(typer.Exit) as stopped:
        cli.list_requests(limit=20, status_="bogus", template=None, as_json=False)
    assert stopped.value.exit_code == 1
    [line] = screen.error().splitlines()
    assert "unknown status 'bogus'" in line, line
    for status in ("requested", "delivered", "failed", "cancelled", "skipped"):
        assert status in line, line
    assert screen.text() == "" and screen.bus_calls == []  # not "no requests match"

    with pytest.raises(typer.Exit):
        cli.list_requests(limit=0, status_=None, template=None, as_json=False)
    assert "--limit" in screen.error().splitlines()[-1]

    cli.list_requests(limit=20, status_="delivered", template=None, as_json=False)
    assert screen.text() == "no requests match --status delivered\n"


# ---- request: the template it names, who asks -------------------------------------------------
def test_an_unknown_template_is_only_matched_to_a_close_name(
    monkeypatch: pytest.MonkeyPatch, screen: Screen, tmp_path: Path
) -> None:
    for name in ("monthly.html", "weekly.html", "daily.html", "_base.html"):
        (tmp_path / name).write_text("<p>{{ x }}</p>")
    cfg: Any = type("Cfg", (), {"templates_dir": tmp_path})()

    def refused(name: str) -> str:
        with pytest.raises(typer.Exit):
            cli.check_template(cfg, name)
        return screen.error().splitlines()[-1]

    line = refused("nosuch.html")
    assert "did you mean" not in line, line
    assert "known: daily.html, monthly.html, weekly.html" in line, line
    assert "nothing was published" in line
    assert "did you mean weekly.html?" in refused("weely")
    assert "did you mean monthly.html?" in refused("montly.html")
    assert "cannot be requested" in refused("_base.html")  # a partial: said as before


def test_the_cli_asks_as_the_login_name_without_a_user_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("USER", "LOGNAME", "LNAME", "USERNAME"):  # a container, cron
        monkeypatch.delenv(name, raising=False)
    name = pwd.getpwuid(os.getuid()).pw_name
    assert getpass.getuser() == name
    assert _audit.requester() == f"cli:{name}"
    assert audit.cli_identity()[0] == name  # what `pressroom audit` records for the command
