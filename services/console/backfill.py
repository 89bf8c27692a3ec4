"""`pressroom schedule backfill NAME --from … --to …`: each missed fire of a range, once.

Each fire is published exactly as the scheduler publishes it (services/scheduler/app.py `fire`:
the same request id, `requested_at` and body), so the fetcher's ledger runs a fire once however
many times it is published: a backfill next to a running scheduler, or run twice, sends once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.console.busaccess import Bus
from services.scheduler.app import fire
from shared.bus.topology import JetStreamPublisher
from shared.errors import PressroomError
from shared.firing import backfill_fires
from shared.schedules import Schedule


@dataclass(frozen=True)
class Backfilled:
    request_id: str
    fire: datetime
    state: str  # "published", or the ledger's status of a fire that already ran


def parse_when(text: str, flag: str) -> datetime:
    """`2026-12-01` or `2026-12-01T08:00` (UTC unless it says otherwise)."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise PressroomError(
            f"{flag} '{text}' is not a date or time (e.g. 2026-12-01 or 2026-12-01T08:00)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def backfill(
    bus: Bus, schedule: Schedule, start: datetime, end: datetime
) -> list[Backfilled]:
    """Publish every fire in [start, end] not already in the ledger (those are named)."""
    fires = backfill_fires(
        schedule.fires_between(start - timedelta(microseconds=1), end), start, end
    )
    ledger = await bus.ledger()
    publisher = JetStreamPublisher(bus.js)
    done = []
    for when in fires:
        rid = schedule.request_id_for(when)
        entry = await ledger.get(rid)
        if entry is not None:
            done.append(Backfilled(rid, when, entry.status))
            continue
        await fire(publisher, schedule, when, bus.js)
        done.append(Backfilled(rid, when, "published"))
    return done
