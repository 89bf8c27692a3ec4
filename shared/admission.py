"""Per-requester admission: a limit of queued reports, a rate, and a share of the pipeline.

Each requester (the publisher identity, or `requested_by` for the services' own requests) has
the reports it has queued and not yet settled, kept in a KV bucket as the *set* of their request
ids (a short hash each, in the order they came in), updated with compare-and-set so every fetcher
replica sees the same. Counting a request in or out is idempotent: a fetcher that dies between
counting a request and handing it on counts it once when the request is redelivered, and a
report settled twice (a replay, a cancel and a failure) is counted out once. The fetcher counts a
request in when it first arrives; whatever settles it counts it out: delivered or failed (once:
the ledger's `settled`), dead-lettered, cancelled, or a burst whose last child landed.

- Over `PRESSROOM_REQUESTER_MAX_QUEUED` (or its own `PRESSROOM_REQUESTER_LIMITS`), a new request
  is refused at once with `report.failed`: "requester X is over its limit of N queued reports".
- Over `PRESSROOM_REQUESTER_RATE` (or its own `PRESSROOM_REQUESTER_RATES`), e.g. `600/min`, a
  new request is refused at once too: "requester X is over its rate of 600 requests per
  minute" (a sliding window of the ids it sent, in the same bucket, so a redelivery is not
  counted twice).
- `PRESSROOM_REQUESTER_SHARE` (or `PRESSROOM_REQUESTER_SHARES`): the reports a requester may
  have in the pipeline at once while others' work waits; its next ones wait at intake
  (shared/stage/intake.py `Holding`), in the order they came, and go on as its earlier ones
  settle — or while a renderer waits for work with none queued (idle capacity is used).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from shared.errors import PermanentError

ANONYMOUS = "anonymous"
_KEY_CHARS = re.compile(r"[^A-Za-z0-9_-]")
RATE_SUFFIX = ".rate"  # a requester's recent arrivals, beside its queued set
PERIODS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}
PERIOD_WORDS = {1.0: "second", 60.0: "minute", 3600.0: "hour"}


class OverLimit(PermanentError):
    """The requester has too many reports queued, or sent too many lately: refused at once."""


@dataclass(frozen=True)
class Rate:
    """At most `count` requests per `period` seconds."""

    count: int
    period: float

    def describe(self) -> str:
        word = PERIOD_WORDS.get(self.period, f"{self.period:g} s")
        return f"{self.count} requests per {word}"


def _pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"'{part}' is not NAME=VALUE")
        pairs.append((name.strip(), value.strip()))
    return pairs


def parse_limits(text: str) -> dict[str, int]:
    """`billing=500,batch=5000` → numbers by requester; a ValueError naming the bad part."""
    limits: dict[str, int] = {}
    for name, value in _pairs(text):
        if not value.isdigit():
            raise ValueError(f"'{name}={value}' is not NAME=NUMBER")
        limits[name] = int(value)
    return limits


def parse_rate(text: str) -> Rate | None:
    """`600/min`, `10/s`, `5000/h` → a Rate; '' or `0/…` → None; a ValueError otherwise."""
    text = text.strip()
    if not text:
        return None
    count, sep, unit = text.partition("/")
    period = PERIODS.get(unit.strip().lower())
    if not sep or not count.strip().isdigit() or period is None:
        raise ValueError(f"'{text}' is not a rate like 600/min (per s, min or h)")
    return Rate(int(count), period) if int(count) > 0 else None


def parse_rates(text: str) -> dict[str, Rate | None]:
    """`billing=600/min,batch=10/s` → rates by requester (`x=0/min`: none for x)."""
    return {name: parse_rate(value) for name, value in _pairs(text)}


def requester_key(requester: str | None) -> str:
    """A KV key for a requester (`scheduler:weekly` → `scheduler_weekly`)."""
    return _KEY_CHARS.sub("_", requester or ANONYMOUS)[:120] or ANONYMOUS


def limit_for(requester: str | None, limits: Mapping[str, int], default: int) -> int:
    """The requester's limit (of queued reports, or its share); 0 means none."""
    return limits.get(requester or ANONYMOUS, default)


def over_limit_reason(requester: str | None, limit: int) -> str:
    return f"requester {requester or ANONYMOUS} is over its limit of {limit} queued reports"


def over_rate_reason(requester: str | None, rate: Rate) -> str:
    return f"requester {requester or ANONYMOUS} is over its rate of {rate.describe()}"


def request_tag(request_id: str) -> str:
    """What the sets hold of a request id: short, and the same in every process."""
    return hashlib.sha256(request_id.encode()).hexdigest()[:16]


class QueuedCounts:
    """The reports each requester has queued and not settled, as a set of request ids per
    requester in a KV bucket (compare-and-set): counting in and out is idempotent."""

    def __init__(self, kv: Any) -> None:
        self._kv = kv

    async def _read(self, key: str) -> tuple[Any, int | None]:
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None, None
        if entry is None or entry.value is None:
            return None, entry.revision if entry is not None else None
        try:
            return json.loads(entry.value), entry.revision
        except ValueError:  # a count of the former kind: the ids are not known, start over
            return None, entry.revision

    async def _change(self, key: str, change: Callable[[Any], tuple[Any, Any]]) -> Any:
        """Compare-and-set: `change(value)` → (new value or None to leave it, answer)."""
        for _ in range(200):
            value, revision = await self._read(key)
            new, answer = change(value)
            if new is None:
                return answer
            try:
                if revision is None:
                    await self._kv.create(key, json.dumps(new).encode())
                else:
                    await self._kv.update(key, json.dumps(new).encode(), last=revision)
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.005)
                continue
            except Exception as error:
                if "wrong last sequence" in str(error).lower() or "key exists" in str(error):
                    await asyncio.sleep(0.005)
                    continue
                raise
            return answer
        raise RuntimeError(f"admission entry {key} is too contended to update")

    async def tags(self, requester: str | None) -> list[str]:
        value, _ = await self._read(requester_key(requester))
        return [t for t in value if isinstance(t, str)] if isinstance(value, list) else []

    async def queued(self, requester: str | None) -> int:
        return len(await self.tags(requester))

    async def position(self, requester: str | None, request_id: str) -> int | None:
        """How many of the requester's queued reports came in before this one (None: not
        counted in, or settled)."""
        tags = await self.tags(requester)
        tag = request_tag(request_id)
        return tags.index(tag) if tag in tags else None

    async def add(self, requester: str | None, request_id: str, *, limit: int = 0) -> int:
        """Count the request in (once, however often it is asked) and return the count;
        counting in past `limit` (> 0) raises OverLimit and counts nothing."""
        tag = request_tag(request_id)

        def change(value: Any) -> tuple[Any, int]:
            tags = [t for t in value if isinstance(t, str)] if isinstance(value, list) else []
            if tag in tags:
                return None, len(tags)
            if limit and len(tags) + 1 > limit:
                raise OverLimit(over_limit_reason(requester, limit))
            return [*tags, tag], len(tags) + 1

        count: int = await self._change(requester_key(requester), change)
        return count

    async def remove(self, requester: str | None, request_id: str) -> int:
        """Count the request out (once: a request not counted in changes nothing)."""
        tag = request_tag(request_id)

        def change(value: Any) -> tuple[Any, int]:
            tags = [t for t in value if isinstance(t, str)] if isinstance(value, list) else []
            if tag not in tags:
                return None, len(tags)
            tags.remove(tag)
            return tags, len(tags)

        count: int = await self._change(requester_key(requester), change)
        return count

    async def arrived(
        self, requester: str | None, request_id: str, rate: Rate, now: float | None = None
    ) -> None:
        """Count an arrival into the requester's sliding window (once per request id);
        OverLimit when it already holds `rate.count` arrivals of the last `rate.period`."""
        tag, at = request_tag(request_id), time.time() if now is None else now

        def change(value: Any) -> tuple[Any, None]:
            seen = value if isinstance(value, list) else []
            recent = [
                (t, w)
                for t, w in (tuple(x) for x in seen if isinstance(x, list) and len(x) == 2)
                if isinstance(w, int | float) and at - w < rate.period
            ]
            if any(t == tag for t, _ in recent):
                return None, None
            if len(recent) >= rate.count:
                raise OverLimit(over_rate_reason(requester, rate))
            return [[t, w] for t, w in recent] + [[tag, round(at, 3)]], None

        await self._change(requester_key(requester) + RATE_SUFFIX, change)
