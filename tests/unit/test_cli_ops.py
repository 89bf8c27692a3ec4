"""What the CLI's commands stand on, called directly: ages, scale, readiness, requests, tables."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from nats.js.errors import NotFoundError
from rich.console import Console

from services.console.cli._output import Col, print_table
from services.console.requests import build_request, parse_age, parse_since, whereabouts
from services.console.supervisor import parse_scale
from shared.adapters.ledger import LedgerEntry, StageRecord
from shared.bus.names import RENDERER
from shared.errors import PressroomError
from shared.stage.readiness import consumer_readiness, lanes_together, stage_readiness


def test_every_duration_option_takes_the_same_ages() -> None:
    assert parse_age("90s") == timedelta(seconds=90)
    assert parse_age("2w") == timedelta(weeks=2)
    with pytest.raises(PressroomError, match="--older-than expects an age like"):
        parse_age("30 days", "--older-than")
    since = parse_since("2h")
    assert timedelta(hours=2) <= datetime.now(UTC) - since < timedelta(hours=2, minutes=1)
    assert parse_since("2026-11-24T01:00:00") == datetime(2026, 11, 24, 1, tzinfo=UTC)
    with pytest.raises(PressroomError, match="--since expects an ISO time"):
        parse_since("yesterday")


def test_scale_names_the_services_it_knows() -> None:
    assert parse_scale(["renderer=3"])["renderer"] == 3
    with pytest.raises(PressroomError, match="scheduler, fetcher, renderer, distributor"):
        parse_scale(["painter=2"])


def info(pending: int, in_progress: int, pulls: int) -> SimpleNamespace:
    return SimpleNamespace(num_pending=pending, num_ack_pending=in_progress, num_waiting=pulls)


def test_one_readiness_rule_seen_from_the_worker_and_from_outside() -> None:
    idle = info(0, 0, 0)
    assert consumer_readiness(idle, 10, seen_by_worker=True).status == "healthy"
    outside = consumer_readiness(idle, 10, seen_by_worker=False)
    assert outside.status == "unhealthy" and "no worker is running" in outside.detail
    busy = consumer_readiness(info(0, 1, 0), 10, seen_by_worker=False)
    assert busy.status == "healthy"  # its only worker is rendering, not pulling
    for worker in (True, False):
        behind = consumer_readiness(info(11, 1, 1), 10, seen_by_worker=worker)
        assert behind.status == "degraded" and "11 waiting (over 10)" in behind.detail


class Consumers:
    """JetStream's consumer info for these durables (what `consumer_info` answers)."""

    def __init__(self, infos: dict[str, SimpleNamespace]) -> None:
        self.infos = infos

    async def consumer_info(self, stream: str, durable: str) -> SimpleNamespace:
        if durable not in self.infos:
            raise NotFoundError  # as JetStream answers for a consumer that is not there
        return self.infos[durable]


async def test_a_missing_lane_consumer_is_its_own_row_not_the_whole_bus() -> None:
    js: Any = Consumers({"renderer": info(0, 0, 1), "renderer-interactive": info(0, 0, 1)})
    rows = await stage_readiness(js, RENDERER, 1000, seen_by_worker=False)
    assert rows["renderer"].status == "healthy"
    assert rows["renderer-bulk"].status == "unhealthy"
    assert "pressroom bus setup" in rows["renderer-bulk"].detail


async def test_every_lane_of_a_stage_is_checked_and_the_one_behind_is_named() -> None:
    # a burst of bulk children waits, and no worker pulls the bulk lane (its worker is gone)
    js: Any = Consumers(
        {
            "renderer": info(0, 0, 1),
            "renderer-interactive": info(2, 1, 1),
            "renderer-bulk": info(10_000, 0, 0),
        }
    )
    outside = await stage_readiness(js, RENDERER, 1000, seen_by_worker=False)
    assert list(outside) == ["renderer", "renderer-interactive", "renderer-bulk"]
    assert outside["renderer"].status == outside["renderer-interactive"].status == "healthy"
    assert outside["renderer-bulk"].status == "unhealthy"
    assert "10000 waiting (over 1000)" in outside["renderer-bulk"].detail

    own = lanes_together(await stage_readiness(js, RENDERER, 1000, seen_by_worker=True))
    assert own.status == "degraded"
    assert own.detail == "renderer-bulk: 10000 waiting (over 1000), 0 in progress"
    assert own.data["pending"] == 10_002 and own.data["in_progress"] == 1
    assert own.data["consumers"]["renderer-bulk"] == {
        "status": "degraded",
        "pending": 10_000,
        "in_progress": 0,
    }

    js.infos["renderer-bulk"] = info(0, 3, 0)
    calm = lanes_together(await stage_readiness(js, RENDERER, 1000, seen_by_worker=True))
    assert calm.status == "healthy"
    assert calm.detail == (
        "2 waiting, 4 in progress (renderer, renderer-interactive, renderer-bulk)"
    )


def test_a_request_from_flags_merges_over_its_file() -> None:
    body = {"template": "daily", "params": {"a": 1, "b": 2}, "deliver": [{"channel": "file"}]}
    req = build_request(
        body,
        params={"b": 3},
        deliver=[{"channel": "email", "to": ["x@example.com"]}],
        requested_by="cli:me",
        template=None,
        formats=[],
    )
    assert req.template == "daily" and req.params == {"a": 1, "b": 3}
    assert [d.channel for d in req.deliver] == ["file", "email"]
    with pytest.raises(PressroomError, match="invalid request: formats"):
        build_request(body, params={}, deliver=[], requested_by="me", formats=["docx"])


def test_whereabouts_name_the_last_stage() -> None:
    assert "no fetcher has picked it up" in whereabouts(None)
    entry = LedgerEntry(request_id="r", status="fetched")
    entry.stages["fetcher"] = StageRecord(state="done", seq=1)
    assert whereabouts(entry) == "fetched; waiting for a renderer"
    entry.stages["renderer"] = StageRecord(state="running", seq=2, attempts=2)
    assert whereabouts(entry) == "renderer working on it, attempt 2"


def printed(width: int, rows: list[list[str]]) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    print_table(console, [Col("request_id"), Col("status"), Col("reason", long=True)], rows)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_tables_never_cut_an_id_and_wrap_long_text_between_words() -> None:
    rid = "sample-portfolio-20261124T014500-and-then-some-more"
    reason = "template 'portfolo' not found (known: daily.html, weekly.html); did you mean it? " * 2
    for width in (60, 80, 200):
        shown = printed(width, [[rid, "failed", reason]])
        assert rid in shown
        assert " ".join(reason.split()) in " ".join(shown.replace("│", " ").split())
    narrow = printed(80, [[rid, "failed", reason]])
    assert "reason: template 'portfolo'" in narrow  # under its row, readable as one text


async def test_the_fetchers_consumers_share_its_slots_so_no_worker_means_none_pulls_anywhere() -> (
    None
):
    from shared.bus.names import FETCHER

    alpha = FETCHER.of_tenant("alpha")
    # alpha's consumer waits for a slot the fetcher's other consumers' work holds: no pull of
    # its own, and its fetcher is running.
    js: Any = Consumers(
        {
            "fetcher": info(0, 8, 0),
            "fetcher-interactive": info(0, 0, 1),
            "fetcher-bulk": info(0, 0, 1),
            alpha.durable: info(3, 0, 0),
        }
    )
    rows = await stage_readiness(js, FETCHER, 1000, seen_by_worker=False, callers=[alpha])
    assert rows[alpha.durable].status == "healthy", rows[alpha.durable]
    assert "3 waiting, 0 in progress, 0 worker pull(s)" in rows[alpha.durable].detail
    # No fetcher at all: every one of them says so.
    js = Consumers({d: info(0, 0, 0) for d in ("fetcher", "fetcher-interactive", "fetcher-bulk")})
    js.infos[alpha.durable] = info(3, 0, 0)
    rows = await stage_readiness(js, FETCHER, 1000, seen_by_worker=False, callers=[alpha])
    assert all(r.status == "unhealthy" for r in rows.values())
    # A calling system publishing with no consumer: no fetcher may read it (bus auth).
    del js.infos[alpha.durable]
    rows = await stage_readiness(js, FETCHER, 1000, seen_by_worker=False, callers=[alpha])
    assert "is it named in `pressroom bus auth --publisher`?" in rows[alpha.durable].detail
