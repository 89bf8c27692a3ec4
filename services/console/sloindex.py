"""The SLO index: per-hour tallies of what the SLO table counts, kept in a KV bucket as the
ledger changes, so `pressroom slo` and the console's /slo page read one small value per hour
of the window instead of every report.

Bucket `pressroom_slo` (history 1):

- `state`: `{"version", "stream", "gen", "seq", "journal"}`: the ledger stream (its creation
  time), the index's generation, the sequence of the ledger indexed so far; `journal`, a batch
  being applied.
- `h.<gen>.<epoch hour>`: the `Tally` of the reports requested in that hour, and the `seq` of
  the last batch it took.
- `d.<gen>.<epoch day>`: the same for a day (UTC), so that a long window reads a value per day.
- `e.<gen>.<ledger key>`: what that report adds to its hour (its hour and its own `Tally`), and
  the sequence of the ledger change it was computed from.

Whoever reads it first brings it up to date (`catch_up`): the console all the time,
`pressroom slo` for what the console has not yet seen. Each ledger change counts as its
report's new share minus its previous one. A batch is written into `state` first (compare-and-
set), then applied to the hours (each skips a batch it already took) and to the reports (each
skips an older change), then `state` moves on: a crash leaves the journal for the next
catch-up to apply again, and two processes catching up at once cannot count a change twice.
The first catch-up over an existing ledger is the backfill; it is done once (the state says
how far it got), and a new ledger stream (a restore into a new stack) or VERSION starts a new
generation (a late writer of the old one can only write keys no one reads any more).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from nats.js import api
from nats.js.errors import (
    BucketNotFoundError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from services.console.busaccess import Bus
from services.console.slo import Tally, entry_hour, window_hours
from shared.adapters.ledger import parse_entry
from shared.bus.names import LEDGER_BUCKET, SLO_BUCKET
from shared.errors import PressroomError
from shared.events import utcnow
from shared.observe.logging import get_logger

log = get_logger("pressroom.console")
VERSION = 1  # what a tally counts; another version rebuilds the index
BATCH = 500  # ledger changes per committed batch (the journal stays well under 1 MB)
STATE = "state"
_LEDGER_STREAM = f"KV_{LEDGER_BUCKET}"
_LEDGER_PREFIX = f"$KV.{LEDGER_BUCKET}."

Progress = Callable[[int, int], None]  # (ledger sequence indexed, ledger's last sequence)


@dataclass(frozen=True)
class Indexed:
    """The tallies of a window, and how current the index was when they were read."""

    first: int  # the window's first and last hour (epoch hours)
    end: int
    hours: dict[int, Tally]  # every hour of the window, or only those not in `days`
    days: dict[int, Tally]  # whole days of the window (when read by day)
    seq: int  # ledger sequence indexed
    last: int  # the ledger's last sequence when read

    def between(self, first: int, end: int) -> Tally:
        """The tally of hours `first` to `end` (both included) within the window; a day read
        whole is counted whole (asked for in part, it is an error)."""
        summed = Tally()
        hour, end = max(first, self.first), min(end, self.end)
        while hour <= end:
            day = hour // 24
            if day not in self.days:
                summed.add(self.hours.get(hour, Tally()))
                hour += 1
            elif hour % 24 == 0 and hour + 23 <= end:
                summed.add(self.days[day])
                hour += 24
            else:
                raise ValueError(f"day {day} was read whole; hours {first}-{end} split it")
        return summed

    @property
    def total(self) -> Tally:
        return self.between(self.first, self.end)


async def bucket(bus: Bus) -> KeyValue:
    try:
        return await bus.js.key_value(SLO_BUCKET)
    except (BucketNotFoundError, NotFoundError):
        return await bus.js.create_key_value(
            api.KeyValueConfig(
                bucket=SLO_BUCKET,
                history=1,
                storage=api.StorageType.FILE,
                replicas=bus.settings.stream_replicas,
            )
        )


async def _get(kv: KeyValue, key: str) -> tuple[dict[str, Any] | None, int]:
    """A value as JSON and its revision (0: none)."""
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None, 0
    if not entry.value:
        return None, entry.revision or 0
    return json.loads(entry.value), entry.revision or 0


async def _put(kv: KeyValue, key: str, value: dict[str, Any], revision: int) -> int:
    """Compare-and-set: the new revision, or 0 when someone else wrote first."""
    data = json.dumps(value, separators=(",", ":")).encode()
    try:
        if revision:
            return await kv.update(key, data, last=revision)
        return await kv.create(key, data)
    except KeyWrongLastSequenceError:
        return 0


def _share(value: bytes | None) -> tuple[int, Tally] | None:
    """A ledger value's share of the SLO table: its hour and tally (None: nothing to count)."""
    if not value:
        return None
    entry = parse_entry("-", value)
    tally = Tally.of(entry)
    return (entry_hour(entry), tally) if tally else None


async def _changes(bus: Bus, start: int, last: int) -> list[tuple[int, str, bytes | None]]:
    """Up to BATCH ledger changes from sequence `start`: (sequence, key, value or None)."""
    sub = await bus.js.subscribe(
        f"{_LEDGER_PREFIX}>",
        ordered_consumer=True,
        config=api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
        ),
    )
    found: list[tuple[int, str, bytes | None]] = []
    try:
        while len(found) < BATCH:
            try:
                msg = await sub.next_msg(timeout=30)
            except Exception as error:  # nats' TimeoutError: the read stalled
                raise PressroomError(
                    f"reading the ledger for the SLO index stalled at {start} ({error!r}); "
                    "try again"
                ) from None
            seq = msg.metadata.sequence.stream
            gone = (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE")
            found.append((seq, msg.subject[len(_LEDGER_PREFIX) :], None if gone else msg.data))
            if seq >= last or msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return found


async def _batch(
    kv: KeyValue, gen: str, changes: list[tuple[int, str, bytes | None]], *, fresh: bool
) -> dict[str, Any]:
    """The journal of a batch: each hour's change of tally, each report's new share."""
    keys = sorted({key for _, key, _ in changes})
    known: dict[str, tuple[int, Tally] | None] = {}
    revisions: dict[str, int] = {}
    if not fresh:  # a fresh index has no shares yet: nothing to look up
        docs = await asyncio.gather(*(_get(kv, f"e.{gen}.{key}") for key in keys))
        for key, (doc, revision) in zip(keys, docs, strict=True):
            revisions[key] = revision
            if doc and doc.get("hour") is not None:
                known[key] = (int(doc["hour"]), Tally.from_dict(doc["tally"]))
    hours: dict[int, Tally] = {}
    shares: dict[str, dict[str, Any]] = {}
    for seq, key, value in changes:
        old = known.get(key)
        new = _share(value)
        if old == new:
            continue
        if old is not None:
            hours.setdefault(old[0], Tally()).add(old[1], -1)
        if new is not None:
            hours.setdefault(new[0], Tally()).add(new[1])
        known[key] = new
        share: dict[str, Any] = {"seq": seq, "hour": None if new is None else new[0]}
        share["tally"] = {} if new is None else new[1].as_dict()
        shares[key] = {"share": share, "revision": revisions.get(key, 0)}
    days: dict[int, Tally] = {}
    for hour, tally in hours.items():
        days.setdefault(hour // 24, Tally()).add(tally)
    return {
        "gen": gen,
        "to": changes[-1][0],
        "hours": {str(h): t.as_dict() for h, t in hours.items() if t},
        "days": {str(d): t.as_dict() for d, t in days.items() if t},
        "shares": shares,
    }


async def _take_hour(kv: KeyValue, key: str, change: Tally, to: int) -> None:
    while True:
        doc, revision = await _get(kv, key)
        if doc is not None and int(doc["seq"]) >= to:
            return  # this batch is in it already
        tally = Tally.from_dict(doc["tally"]) if doc else Tally()
        if await _put(kv, key, {"seq": to, "tally": tally.add(change).as_dict()}, revision):
            return


async def _take_share(kv: KeyValue, key: str, share: dict[str, Any], revision: int) -> None:
    """The report's new share, written over the one the batch was computed from (one round
    trip); when that one changed meanwhile, only over an older one."""
    while not await _put(kv, key, share, revision):
        doc, revision = await _get(kv, key)
        if doc is not None and int(doc["seq"]) >= int(share["seq"]):
            return  # this change, or a later one of this report, is recorded already


async def _apply(kv: KeyValue, journal: dict[str, Any]) -> None:
    to, gen = int(journal["to"]), journal["gen"]
    await asyncio.gather(
        *(
            _take_hour(kv, f"{kind[0]}.{gen}.{n}", Tally.from_dict(t), to)
            for kind in ("hours", "days")
            for n, t in journal[kind].items()
        )
    )
    await asyncio.gather(
        *(
            _take_share(kv, f"e.{gen}.{k}", s["share"], s["revision"])
            for k, s in journal["shares"].items()
        )
    )


async def catch_up(bus: Bus, progress: Progress | None = None) -> tuple[int, int]:
    """Index every ledger change written so far; (sequence indexed, ledger's last)."""
    kv = await bucket(bus)
    info = await bus.js.stream_info(_LEDGER_STREAM)
    stream = f"{info.created}"
    last = int(info.state.last_seq)
    while True:
        state, revision = await _get(kv, STATE)
        if state is not None and state.get("journal"):
            await _apply(kv, state["journal"])
            done = {**state, "seq": int(state["journal"]["to"]), "journal": None}
            await _put(kv, STATE, done, revision)  # lost: another process committed it
            continue
        if state is None or (state.get("version"), state.get("stream")) != (VERSION, stream):
            await _restart(bus, kv, stream, revision, state)
            continue
        seq = int(state["seq"])
        if progress is not None:
            progress(seq, last)
        if seq > last:  # another process indexed changes newer than we knew of
            last = int((await bus.js.stream_info(_LEDGER_STREAM)).state.last_seq)
            if seq > last:  # more changes indexed than the ledger holds: not the same one
                await _restart(bus, kv, stream, revision, state)
            continue
        if seq == last:
            return seq, last
        changes = await _changes(bus, seq + 1, last)
        journal = await _batch(kv, state["gen"], changes, fresh=seq == 0)
        revision = await _put(kv, STATE, {**state, "journal": journal}, revision)
        if not revision:
            continue  # another process took this batch: read what it did
        await _apply(kv, journal)
        await _put(kv, STATE, {**state, "seq": journal["to"], "journal": None}, revision)


async def _restart(
    bus: Bus, kv: KeyValue, stream: str, revision: int, state: dict[str, Any] | None
) -> None:
    """A new generation of the index: for a ledger it has never seen (a new stack) or a new
    VERSION; the old generation's values are removed."""
    gen = secrets.token_hex(4)
    fresh = {"version": VERSION, "stream": stream, "gen": gen, "seq": 0, "journal": None}
    if not await _put(kv, STATE, fresh, revision):
        return  # another process did it first
    if state is not None:
        log.warning("SLO index started afresh", was=state.get("stream"), now=stream)
        for kind in ("h", "e"):
            subject = f"$KV.{SLO_BUCKET}.{kind}.{state.get('gen', '_')}.>"
            await bus.js.purge_stream(f"KV_{SLO_BUCKET}", subject=subject)


async def rebuild(bus: Bus) -> None:
    """Start a new generation now (`pressroom slo --rebuild`); the next catch-up fills it."""
    kv = await bucket(bus)
    state, revision = await _get(kv, STATE)
    stream = f"{(await bus.js.stream_info(_LEDGER_STREAM)).created}"
    await _restart(bus, kv, stream, revision, state)


async def read(
    bus: Bus, window: timedelta, now: datetime | None = None, *, by_day: bool | None = None
) -> Indexed:
    """The window as the index holds it (call `catch_up` first to be current): every hour, or
    (`by_day`, the default beyond a week) whole days by day and the hours at either end."""
    kv = await bucket(bus)
    first, end = window_hours(window, now or utcnow())
    by_day = window > timedelta(days=7) if by_day is None else by_day
    days = list(range(-(-first // 24), (end + 1) // 24)) if by_day else []
    inside = {h for d in days for h in range(d * 24, d * 24 + 24)}
    hours = [h for h in range(first, end + 1) if h not in inside]
    state, _ = await _get(kv, STATE)
    gen = state["gen"] if state else "_"
    keys = [f"h.{gen}.{h}" for h in hours] + [f"d.{gen}.{d}" for d in days]
    docs = [doc for doc, _ in await asyncio.gather(*(_get(kv, key) for key in keys))]
    info = await bus.js.stream_info(_LEDGER_STREAM)
    tallies = [Tally.from_dict(doc["tally"]) if doc else Tally() for doc in docs]
    return Indexed(
        first=first,
        end=end,
        hours=dict(zip(hours, tallies[: len(hours)], strict=True)),
        days=dict(zip(days, tallies[len(hours) :], strict=True)),
        seq=int(state["seq"]) if state else 0,
        last=int(info.state.last_seq),
    )


async def measured(bus: Bus, window: timedelta, now: datetime | None = None) -> Indexed:
    """The window's tallies with every ledger change so far counted."""
    await catch_up(bus)
    return await read(bus, window, now)


class Keeper:
    """The console's side: keeps the index current in the background, and lets a page
    catch up first unless a long catch-up (the backfill) is under way."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.seq = 0
        self.last = 0

    def _progress(self, seq: int, last: int) -> None:
        self.seq, self.last = seq, last

    async def keep(self, bus: Bus, every: float = 2.0) -> None:
        while True:
            try:
                async with self.lock:
                    await catch_up(bus, self._progress)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("SLO index not brought up to date", error=repr(error))
            await asyncio.sleep(every)

    async def current(self, bus: Bus) -> bool:
        """Catch up now unless the background one is busy; whether the index is current."""
        if self.lock.locked():
            return False
        async with self.lock:
            self.seq, self.last = await catch_up(bus, self._progress)
        return True
