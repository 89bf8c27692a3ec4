"""The schedules the running stack has: what `pressroom schedule` and the console's schedules
page show and act on (the scheduler's own record on the bus against this process's config)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from nats.errors import Error as NatsError

from services.console.busaccess import open_bus
from services.scheduler.state import is_paused, recorded_config, schedules_hash
from shared.bus.names import SCHEDULES_BUCKET
from shared.errors import PressroomError
from shared.schedules import load_schedules
from shared.settings import Settings


@dataclass
class StackView:
    """The schedules the running stack has (as far as the CLI can see them) and which of them
    are paused; `note` says when what is shown is not known to be the stack's."""

    schedules: list[Any]
    paused: set[str]
    note: str | None = None
    mismatch: str | None = None  # the stack runs other schedules and the CLI cannot read them
    seen: bool = True  # False: the bus could not be read (nothing more to ask it)


def last_runs(cfg: Settings, schedules: list[Any], now: datetime) -> dict[str, tuple[str, str]]:
    """Each schedule's latest fire and what became of it, from the ledger: `delivered`,
    `failed`, `skipped` … or `not run` when no run of it was recorded (the scheduler down, or
    paused then) and `due` within PRESSROOM_SCHEDULE_GRACE. {} when the bus cannot be read."""

    async def look() -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        async with open_bus(cfg, setup=False) as bus:
            ledger = await bus.ledger()
            for schedule in schedules:
                fire = next(schedule.fires_before(now))
                entry = await ledger.get(schedule.request_id_for(fire))
                late = (now - fire).total_seconds() > cfg.schedule_grace
                status = entry.status if entry else ("not run" if late else "due")
                found[schedule.name] = (fire.isoformat(), status)
        return found

    try:
        return asyncio.run(look())
    except (PressroomError, NatsError, OSError, TimeoutError):
        return {}


def stack_view(cfg: Settings) -> StackView:
    """The CLI and the stack use the same schedules: the scheduler records the hash (and file)
    of its schedules on the bus at start; when they differ from this CLI's PRESSROOM_CONFIG,
    the stack's file is used if it can be read here, and otherwise that is said."""

    mine = load_schedules(cfg.schedules)

    async def look() -> tuple[dict[str, Any] | None, set[str]]:
        async with open_bus(cfg, setup=False) as bus:
            kv = await bus.js.key_value(SCHEDULES_BUCKET)
            record = await recorded_config(kv)
            names = {s.name for s in mine} | set(record.get("schedules", []) if record else [])
            return record, {n for n in names if await is_paused(kv, n)}

    try:
        record, paused = asyncio.run(look())
    except (PressroomError, NatsError, OSError, TimeoutError) as error:
        reason = error.reason if isinstance(error, PressroomError) else repr(error)
        return StackView(
            mine, set(), f"note: the running stack cannot be seen ({reason})", seen=False
        )
    if record is None:
        return StackView(
            mine,
            paused,
            "note: no scheduler has said what it schedules on this bus (none running?): "
            "these are this CLI's PRESSROOM_CONFIG schedules",
        )
    if record["hash"] == schedules_hash(cfg.schedules):
        return StackView(mine, paused)
    path = record.get("config")
    if isinstance(path, str) and Path(path).is_file():
        try:
            raw = (yaml.safe_load(Path(path).read_text()) or {}).get("schedules") or []
        except (OSError, yaml.YAMLError, AttributeError):
            raw = None
        if raw is not None and schedules_hash(raw) == record["hash"]:
            theirs = load_schedules(raw)
            return StackView(theirs, paused, f"note: the running stack's schedules, from {path}")
    listed = record.get("schedules") or []
    theirs_said = f"schedules {', '.join(listed)}" if listed else "no schedules"
    if path and cfg.config is not None and Path(path) == cfg.config.resolve():
        mismatch = (
            f"{path} changed since the stack started (it runs {theirs_said}): restart the "
            "stack to use the new schedules"
        )
    else:
        mismatch = (
            f"the running stack has {theirs_said} ({path or 'no config file'}), not this "
            f"CLI's ({cfg.config or 'no PRESSROOM_CONFIG'}): use the stack's config"
        )
    return StackView(mine, paused, f"warning: {mismatch}", mismatch)
