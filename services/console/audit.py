"""The audit trail: who did what, when and from where, in the console and the CLI.

One JetStream KV bucket (`pressroom_audit`), one key per action, ordered by time; kept 90
days. `pressroom audit` prints it and the console's /audit page shows it.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from nats.js import api
from nats.js.errors import BucketNotFoundError, NotFoundError

from services.console.busaccess import Bus
from shared.bus.topology import kv_snapshot

AUDIT_BUCKET = "pressroom_audit"
KEEP = timedelta(days=90)


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    who: str
    action: str
    target: str
    outcome: str
    source: str  # where from: the client address in the console, "cli@host" for the CLI

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "at": self.at.isoformat()}


async def _bucket(bus: Bus) -> Any:
    try:
        return await bus.js.key_value(AUDIT_BUCKET)
    except (BucketNotFoundError, NotFoundError):
        return await bus.js.create_key_value(
            api.KeyValueConfig(
                bucket=AUDIT_BUCKET,
                history=1,
                ttl=KEEP.total_seconds(),
                storage=api.StorageType.FILE,
                replicas=bus.settings.stream_replicas,
            )
        )


async def record(
    bus: Bus,
    *,
    who: str,
    action: str,
    target: str = "",
    outcome: str = "ok",
    source: str = "",
    at: datetime | None = None,
) -> AuditRecord:
    """One action into the trail (`at`: when it happened, if not now: a CLI action kept on
    disk while the bus was out of reach)."""
    at = at or datetime.now(UTC)
    entry = AuditRecord(at, who, action, target[:500], outcome[:500], source)
    key = f"{int(at.timestamp() * 1e6) * 1000:020d}-{secrets.token_hex(4)}"
    await (await _bucket(bus)).put(key, json.dumps(entry.as_dict()).encode())
    return entry


async def trail(
    bus: Bus, *, since: datetime | None = None, limit: int | None = None
) -> list[AuditRecord]:
    """The audit trail, newest first (only what happened since `since`)."""
    await _bucket(bus)
    values = await kv_snapshot(bus.js, AUDIT_BUCKET)
    floor = f"{int(since.timestamp() * 1e9):020d}" if since else ""
    found: list[AuditRecord] = []
    for key in sorted(values, reverse=True):
        if key < floor:
            break
        try:
            data = json.loads(values[key])
            data["at"] = datetime.fromisoformat(data["at"])
            found.append(AuditRecord(**data))
        except (ValueError, TypeError, KeyError):
            continue  # not one of ours: skipped, never a crash
        if limit is not None and len(found) >= limit:
            break
    return found


def cli_identity() -> tuple[str, str]:
    """Who runs the CLI and where: the login name, and `cli@<host>` (services/console/cli/
    _audit.py adds the bus identity it acts as)."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container): its number
        import os

        user = f"uid {os.getuid()}"
    return user, f"cli@{socket.gethostname()}"
