"""Schedules: deterministic request ids, catch-up after downtime, replicas that never double up."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.scheduler.app import tick
from shared.adapters.memory import MemoryKeyValue, MemoryPublisher
from shared.errors import PermanentError
from shared.schedules import Schedule, load_schedules, missed_fires
from shared.settings import Settings

WEEKLY = {
    "name": "weekly",
    "cron": "0 8 * * 1",
    "timezone": "Europe/Berlin",
    "request": {"template": "weekly.html", "deliver": [{"channel": "file"}]},
}
MINUTELY = {"name": "minutely", "cron": "* * * * *", "request": {"template": "daily.html"}}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_fire_has_a_deterministic_request_id_and_the_configured_body() -> None:
    schedule = Schedule.model_validate(WEEKLY)
    fire = schedule.next_fire(at("2026-11-22T12:00:00"))
    assert fire == at("2026-11-23T07:00:00")  # 08:00 in Berlin
    request = schedule.request_for(fire)
    assert request.request_id == "weekly-20261123T0700Z"
    assert request.requested_by == "scheduler:weekly" and request.template == "weekly.html"
    assert schedule.request_for(fire) == request


def test_missed_fires_within_the_grace_window_are_caught_up() -> None:
    schedule = Schedule.model_validate(MINUTELY)
    fires = missed_fires(
        schedule, at("2026-11-22T10:00:30"), at("2026-11-22T10:03:10"), timedelta(hours=1)
    )
    assert fires == [
        at("2026-11-22T10:01:00"),
        at("2026-11-22T10:02:00"),
        at("2026-11-22T10:03:00"),
    ]
    old = missed_fires(
        schedule, at("2026-11-20T10:00:00"), at("2026-11-22T10:00:30"), timedelta(minutes=5)
    )
    assert len(old) == 5  # only the last five minutes, not two days of minutes


async def test_two_replicas_ticking_publish_one_request_per_fire() -> None:
    schedules = load_schedules([MINUTELY])
    publisher, kv_a, kv_b = MemoryPublisher(), MemoryKeyValue(), MemoryKeyValue()
    settings = Settings(schedule_grace=3600)
    now = at("2026-11-22T10:05:00")
    for kv in (kv_a, kv_b):
        await kv.put("minutely", at("2026-11-22T10:02:30").isoformat().encode())
        await tick(publisher, kv, schedules, settings, now)  # type: ignore[arg-type]
    ids = [json.loads(m.body)["request_id"] for m in publisher.messages]
    assert ids == ["minutely-20261122T1003Z", "minutely-20261122T1004Z", "minutely-20261122T1005Z"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({**MINUTELY, "cron": "61 * * * *"}, "cron"),
        ({**MINUTELY, "cron": "* * * * * *"}, "cron"),
        ({**MINUTELY, "timezone": "Mars/Olympus"}, "timezone"),
        ({**MINUTELY, "request": {"formats": ["pdf"]}}, "template"),
    ],
)
def test_bad_schedules_are_one_line_errors_naming_the_schedule(
    entry: dict[str, object], message: str
) -> None:
    with pytest.raises(PermanentError, match=f"schedule 'minutely' is invalid: .*{message}"):
        load_schedules([entry])
