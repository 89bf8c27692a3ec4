"""What the running scheduler shares on the bus (the schedules KV bucket) besides its clock:
the config it runs (so the CLI fires only what the stack knows) and which schedules are paused.

Keys: `_config` (JSON: hash, path and names of the schedules the scheduler loaded) and
`<name>.paused` (JSON: when and by whom). Schedule names start with a letter or digit, so
`_config` never collides with one.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from nats.js.errors import KeyNotFoundError

from shared.observe.logging import get_logger

log = get_logger("pressroom.scheduler")

CONFIG_KEY = "_config"


def paused_key(name: str) -> str:
    return f"{name}.paused"


def schedules_hash(raw: list[dict[str, Any]]) -> str:
    """The identity of a `schedules:` list, whatever its YAML spelling."""
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


async def record_config(kv: Any, raw: list[dict[str, Any]], config: str | None) -> None:
    """Said at start: which schedules this stack runs, from which file."""
    names = [str(item.get("name")) for item in raw if isinstance(item, dict)]
    value = {
        "hash": schedules_hash(raw),
        "config": config,
        "schedules": names,
        "at": datetime.now(UTC).isoformat(),
    }
    await kv.put(CONFIG_KEY, json.dumps(value).encode())


async def recorded_config(kv: Any) -> dict[str, Any] | None:
    """What the running scheduler recorded; None when none has (or it is unreadable)."""
    try:
        entry = await kv.get(CONFIG_KEY)
    except KeyNotFoundError:
        return None
    try:
        value = json.loads(entry.value or b"")
    except ValueError:
        log.warning("unreadable schedules record", key=CONFIG_KEY)
        return None
    return value if isinstance(value, dict) and isinstance(value.get("hash"), str) else None


async def is_paused(kv: Any, name: str) -> bool:
    try:
        entry = await kv.get(paused_key(name))
    except KeyNotFoundError:
        return False
    return bool(entry.value)


async def pause(kv: Any, name: str, by: str) -> None:
    value = {"paused_at": datetime.now(UTC).isoformat(), "by": by}
    await kv.put(paused_key(name), json.dumps(value).encode())


async def resume(kv: Any, name: str) -> bool:
    """Resume a paused schedule; False when it was not paused."""
    if not await is_paused(kv, name):
        return False
    await kv.delete(paused_key(name))
    return True
