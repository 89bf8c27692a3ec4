"""Per-requester admission: a requester over its limit of queued reports is refused at once.

Each requester (the publisher identity, or `requested_by` for the services' own requests) has
a count of reports it has queued and not yet settled, kept in a KV bucket with compare-and-set
so every fetcher replica sees the same number. The fetcher counts a request in when it first
claims it and the stage that settles the report (delivered or failed, once: the ledger's
`settled`) counts it out. Over `PRESSROOM_REQUESTER_MAX_QUEUED` (or the requester's own limit
in `PRESSROOM_REQUESTER_LIMITS`), a new request is refused with `report.failed`: "requester X
is over its limit of N queued reports" — never silently dropped, never queued behind itself.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from shared.errors import PermanentError

ANONYMOUS = "anonymous"
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")


class OverLimit(PermanentError):
    """The requester has too many reports queued: refused at once."""


def parse_limits(text: str) -> dict[str, int]:
    """`billing=500,batch=5000` → limits by requester; a ValueError naming the bad part."""
    limits: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise ValueError(f"'{part}' is not NAME=NUMBER")
        limits[name.strip()] = int(value)
    return limits


def requester_key(requester: str | None) -> str:
    """A KV key for a requester (`scheduler:weekly` → `scheduler_weekly`)."""
    return _KEY_CHARS.sub("_", requester or ANONYMOUS)[:120] or ANONYMOUS


def limit_for(requester: str | None, limits: Mapping[str, int], default: int) -> int:
    """The requester's limit of queued reports; 0 means none."""
    return limits.get(requester or ANONYMOUS, default)


def over_limit_reason(requester: str | None, limit: int) -> str:
    return f"requester {requester or ANONYMOUS} is over its limit of {limit} queued reports"


class QueuedCounts:
    """Reports each requester has queued and not settled, in a KV bucket (compare-and-set)."""

    def __init__(self, kv: Any) -> None:
        self._kv = kv

    async def queued(self, requester: str | None) -> int:
        try:
            entry = await self._kv.get(requester_key(requester))
        except KeyNotFoundError:
            return 0
        return _number(entry.value)

    async def add(self, requester: str | None, change: int, *, limit: int = 0) -> int:
        """Count `change` in (or out, negative) and return the new count; counting in past a
        `limit` (> 0) raises OverLimit and counts nothing."""
        key = requester_key(requester)
        for _ in range(100):
            try:
                entry = await self._kv.get(key)
                current, revision = _number(entry.value), entry.revision
            except KeyNotFoundError:
                current, revision = 0, None
            new = max(current + change, 0)
            if change > 0 and limit and new > limit:
                raise OverLimit(over_limit_reason(requester, limit))
            try:
                if revision is None:
                    await self._kv.create(key, str(new).encode())
                else:
                    await self._kv.update(key, str(new).encode(), last=revision)
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.005)
                continue
            return new
        raise RuntimeError(f"queued count of {requester} is too contended to update")


def _number(value: bytes | None) -> int:
    try:
        return max(int(value or b"0"), 0)
    except ValueError:
        return 0
