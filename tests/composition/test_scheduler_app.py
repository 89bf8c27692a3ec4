"""The scheduler as `services/scheduler/app.py` `create_app` builds it, run in process on
TestNatsBroker with the in-memory fakes (tests/composition/kit.py): the fires due since the last
mark become report.requested, once each, and the mark moves on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from faststream import TestApp
from faststream.nats import TestNatsBroker

from services.scheduler.app import create_app
from shared.bus.names import SCHEDULES_BUCKET
from shared.events import REPORT_REQUESTED
from shared.schedules import Schedule
from shared.stage.app import Deps
from tests.composition.kit import Fakes, settings_in
from tests.helpers import eventually

EVERY_MINUTE = {
    "name": "pulse",
    "cron": "* * * * *",
    "request": {"template": "weekly.html", "params": {"title": "Pulse"}},
}


def scheduler(tmp_path: Path, fakes: Fakes) -> Any:
    settings = settings_in(
        tmp_path, schedules=[EVERY_MINUTE], schedule_grace=600.0, schedule_tick=0.2
    )
    return create_app(settings, deps=fakes.deps(Deps))


async def test_each_fire_since_the_last_mark_is_published_once_with_the_schedules_request(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    started = datetime.now(UTC)
    # The last check was 3 minutes ago: the fires since then are due, the latest at the
    # last minute boundary before start.
    await fakes.bucket(SCHEDULES_BUCKET).put(
        "pulse", (started - timedelta(minutes=3)).isoformat().encode()
    )
    latest = Schedule.model_validate(EVERY_MINUTE).request_for(
        started.replace(second=0, microsecond=0)
    )
    app = scheduler(tmp_path, fakes)

    async with TestNatsBroker(app.broker, connect_only=True), TestApp(app):

        async def fired() -> list[Any]:
            ids = [r["request_id"] for r in fakes.next_events(REPORT_REQUESTED)]
            return ids if latest.request_id in ids else []

        await eventually(fired)

    requests = fakes.next_events(REPORT_REQUESTED)
    ids = [r["request_id"] for r in requests]
    assert len(ids) == len(set(ids)) >= 3  # one per minute since the mark, none twice
    assert all(i.startswith("pulse-") for i in ids)
    assert {r["requested_by"] for r in requests} == {"scheduler:pulse"}
    assert {r["params"]["title"] for r in requests} == {"Pulse"}
    mark = await fakes.bucket(SCHEDULES_BUCKET).get("pulse")
    assert mark.value is not None and datetime.fromisoformat(mark.value.decode()) >= started
