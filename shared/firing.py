"""Schedules that do not stampede: per-schedule jitter, `skip_if_empty`, and backfill.

Jitter is a function of the schedule's name alone (a hash, not a random draw), so every
scheduler replica delays the same fire by the same amount and still publishes one message.
The fire keeps its cron time as its identity (request id, `requested_at`): only when it is
published moves. A backfill publishes each fire in a range with the ids the scheduler itself
gives them, so one next to a running scheduler still sends each fire once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from shared.errors import PermanentError

MAX_BACKFILL_FIRES = 1000


def jitter_seconds(name: str, max_jitter: float) -> float:
    """The schedule's own delay in [0, max_jitter): the same in every replica, spread evenly
    over the window across schedules."""
    if max_jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"pressroom-jitter:{name}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return fraction * max_jitter


def due(fire: datetime, name: str, max_jitter: float, now: datetime) -> bool:
    """Whether a fire is to be published now: its cron time plus the schedule's jitter."""
    return fire + timedelta(seconds=jitter_seconds(name, max_jitter)) <= now


def empty_reason(context: Mapping[str, Any], path: str) -> str | None:
    """Why a run is skipped under `skip_if_empty: PATH` (a source name or a dotted path into
    the fetched data), or None when there is something there."""
    value: Any = context
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return f"skipped: '{path}' is not in the fetched data (skip_if_empty)"
    if value is None or (isinstance(value, list | dict | str) and not value):
        return f"skipped: '{path}' is empty (skip_if_empty)"
    return None


def backfill_fires(fires: Iterator[datetime], start: datetime, end: datetime) -> list[datetime]:
    """The fires in [start, end] (from a schedule's `fires_between`), refused past
    MAX_BACKFILL_FIRES or with the range the wrong way round."""
    if end < start:
        raise PermanentError(f"--to {end:%Y-%m-%d %H:%M} is before --from {start:%Y-%m-%d %H:%M}")
    found = []
    for fire in fires:
        if fire > end:
            break
        found.append(fire)
        if len(found) > MAX_BACKFILL_FIRES:
            raise PermanentError(
                f"the range holds more than {MAX_BACKFILL_FIRES} fires: backfill a shorter one"
            )
    return found
