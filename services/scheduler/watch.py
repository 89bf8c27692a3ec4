"""What the scheduler tells Prometheus about each schedule: next fire, last fire, last delivery.

A schedule "missed" when its most recent fire has not been delivered some time after firing
(the rule `PressroomScheduledReportMissed`). Fires have deterministic request ids, so the
ledger says whether each was delivered, whichever replica fired it and across restarts.
Fires from before a schedule was first seen by any scheduler are nobody's debt: that moment
is kept in the schedules bucket (`<name>.since`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from services.scheduler.state import is_paused
from shared.adapters.ledger import Ledger
from shared.metrics import schedule_missed, schedule_state
from shared.schedules import Schedule

LOOKBACK_FIRES = 5


@dataclass
class ScheduleWatch:
    kv: Any  # the schedules KV bucket
    ledger: Ledger
    schedules: list[Schedule]
    conflicts: Any = None  # app.Conflicts: unreadable values are reported there
    on_time: float = 900.0  # PRESSROOM_SCHEDULE_ON_TIME
    _since: dict[str, datetime] = field(default_factory=dict)
    _delivered: dict[str, tuple[datetime, float]] = field(default_factory=dict)

    async def since(self, schedule: Schedule, now: datetime) -> datetime:
        if schedule.name not in self._since:
            key = f"{schedule.name}.since"
            try:
                await self.kv.create(key, now.isoformat().encode())
                self._since[schedule.name] = now
            except KeyWrongLastSequenceError:
                entry = await self.kv.get(key)
                try:
                    self._since[schedule.name] = datetime.fromisoformat(entry.value.decode())
                except (UnicodeDecodeError, ValueError, AttributeError) as error:
                    # Not a time (something else wrote it): start counting from now.
                    if self.conflicts is not None:
                        self.conflicts.record(key, f"not a time ({type(error).__name__})")
                    await self.kv.put(key, now.isoformat().encode())
                    self._since[schedule.name] = now
        return self._since[schedule.name]

    async def last_delivered(self, schedule: Schedule, now: datetime, since: datetime) -> float:
        """Unix time the newest delivered fire (of the last few) finished; 0 for never."""
        known = self._delivered.get(schedule.name)
        for count, fire in enumerate(schedule.fires_before(now)):
            if count >= LOOKBACK_FIRES or fire < since or (known and fire <= known[0]):
                break
            try:
                entry = await self.ledger.get(schedule.request_id_for(fire))
            except KeyNotFoundError:
                entry = None
            # A run skipped on purpose (`skip_if_empty`) is on time: it had nothing to send.
            skipped = entry is not None and entry.status == "skipped"
            end = entry.stages.get("fetcher" if skipped else "distributor") if entry else None
            if entry and entry.status in ("delivered", "skipped") and end and end.finished_at:
                known = (fire, end.finished_at.timestamp())
                self._delivered[schedule.name] = known
                break
        return known[1] if known else 0.0

    async def refresh(self, now: datetime) -> None:
        for schedule in self.schedules:
            if not schedule.enabled or await is_paused(self.kv, schedule.name):
                schedule_missed(schedule.name, 0.0)  # a paused schedule owes nothing
                continue
            since = await self.since(schedule, now)
            last_fire = next(schedule.fires_before(now))
            schedule_state(
                schedule.name,
                next_fire=schedule.next_fire(now).timestamp(),
                last_fire=last_fire.timestamp() if last_fire >= since else None,
                last_delivered=await self.last_delivered(schedule, now, since),
            )
            schedule_missed(schedule.name, await self.missed(schedule, now, since))

    async def missed(self, schedule: Schedule, now: datetime, since: datetime) -> float:
        """The newest fire that should be delivered by now (PRESSROOM_SCHEDULE_ON_TIME ago or
        more) and is not, as Unix time; 0 when it is (or was skipped on purpose, or came
        before the schedule was first seen). A schedule that fires every 5 minutes has a fire
        newer than that at any moment, so the newest fire alone never looked late."""
        due = next(schedule.fires_before(now - timedelta(seconds=self.on_time)))
        known = self._delivered.get(schedule.name)
        if due < since or (known is not None and known[0] >= due):
            return 0.0
        try:
            entry = await self.ledger.get(schedule.request_id_for(due))
        except KeyNotFoundError:
            entry = None
        if entry is not None and entry.status in ("delivered", "skipped"):
            return 0.0
        return due.timestamp()
