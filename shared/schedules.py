"""Cron schedules from the config file, and the deterministic request of each fire."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import PermanentError
from shared.events import ReportRequested, request_fingerprint
from shared.firing import jitter_seconds

SCHEDULER_PREFIX = "scheduler:"
CLOCK_SKEW = timedelta(minutes=2)  # replicas' clocks may disagree this much
_SCHEDULED_ID = re.compile(r"^(?P<name>.+)-(?P<stamp>\d{8}T\d{4}Z)$")


# The five fields, in order, with the values each takes (croniter also allows 7 for Sunday).
CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)


def cron_problem(value: str) -> str:
    """What is wrong with a cron expression, naming the field: "day-of-week 8 is out of
    range 0-7" rather than "not a cron expression"."""
    fields = value.split()
    order = " ".join(name for name, _, _ in CRON_FIELDS)
    if len(fields) != len(CRON_FIELDS):
        return f"'{value}' has {len(fields)} field(s); a cron expression has 5: {order}"
    problems = []
    for text, (name, low, high) in zip(fields, CRON_FIELDS, strict=True):
        # Step values (*/90) are not values of the field: only the numbers before a '/'.
        numbers = [
            int(n) for part in text.split(",") for n in re.findall(r"\d+", part.split("/")[0])
        ]
        wrong = [n for n in numbers if not low <= n <= high]
        if wrong:
            problems.append(f"{name} {wrong[0]} is out of range {low}-{high}")
            continue
        probe = ["*"] * len(CRON_FIELDS)
        probe[[f[0] for f in CRON_FIELDS].index(name)] = text
        if not croniter.is_valid(" ".join(probe)):
            problems.append(f"{name} '{text}' is not understood")
    if not problems:
        return f"'{value}' is not a valid cron expression ({order})"
    return f"'{value}': " + "; ".join(problems)


class Schedule(BaseModel):
    """One entry of `schedules:` in the YAML config."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    cron: str = Field(description="Five fields: minute hour day-of-month month day-of-week.")
    timezone: str = "UTC"
    request: dict[str, Any] = Field(description="The report.requested body to emit.")
    enabled: bool = True
    jitter: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        description="Publish each fire up to this many seconds late — the same delay in every "
        "replica (a function of the name), so schedules sharing a minute do not all start at "
        "once. The fire keeps its cron time as its id.",
    )
    skip_if_empty: str | None = Field(
        default=None,
        pattern=r"^\w+(\.\w+)*$",
        description="A source name or dotted path into the fetched data: empty → the run is "
        "recorded as skipped, nothing is sent.",
    )

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(cron_problem(value))
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone '{value}'") from None
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def next_fire(self, after: datetime) -> datetime:
        it = croniter(self.cron, after.astimezone(self.zone))
        result: datetime = it.get_next(datetime)
        return result.astimezone(UTC)

    def fires_between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Fire times in (start, end]."""
        it = croniter(self.cron, start.astimezone(self.zone))
        while True:
            fire: datetime = it.get_next(datetime)
            if fire > end:
                return
            yield fire.astimezone(UTC)

    def fires_before(self, end: datetime) -> Iterator[datetime]:
        """Fire times at or before `end`, newest first (endless: stop when you have enough)."""
        it = croniter(self.cron, end.astimezone(self.zone) + timedelta(microseconds=1))
        while True:
            fire: datetime = it.get_prev(datetime)
            yield fire.astimezone(UTC)

    def request_id_for(self, fire: datetime) -> str:
        return f"{self.name}-{fire.astimezone(UTC):%Y%m%dT%H%MZ}"

    def request_for(self, fire: datetime) -> ReportRequested:
        """The same fire always yields the same request_id, whichever replica publishes it."""
        body = dict(self.request)
        body["request_id"] = self.request_id_for(fire)
        body["requested_by"] = f"{SCHEDULER_PREFIX}{self.name}"
        body["requested_at"] = fire.astimezone(UTC).isoformat()
        if self.skip_if_empty is not None:
            body["skip_if_empty"] = self.skip_if_empty
        return ReportRequested.model_validate(body)

    def publish_time(self, now: datetime) -> datetime:
        """What `now` is for this schedule's fires: earlier by its jitter, so a fire is due
        its jitter after its cron time (the same in every replica)."""
        return now - timedelta(seconds=jitter_seconds(self.name, self.jitter))


def scheduled_fire(request_id: str) -> datetime | None:
    """The fire time a scheduled request id names (`NAME-20261123T0800Z`), or None."""
    match = _SCHEDULED_ID.match(request_id)
    if match is None:
        return None
    return datetime.strptime(match.group("stamp"), "%Y%m%dT%H%MZ").replace(tzinfo=UTC)


def load_schedules(raw: list[dict[str, Any]]) -> list[Schedule]:
    """Parse `schedules:`; bad entries are one configuration error naming every problem of
    every entry (not the first only)."""
    schedules, problems = [], []
    for index, item in enumerate(raw):
        try:
            schedule = Schedule.model_validate(item)
            schedule.request_for(datetime.now(UTC))  # the body must be a valid request too
        except ValidationError as error:
            name = item.get("name", f"#{index + 1}") if isinstance(item, dict) else f"#{index + 1}"
            for found in error.errors():
                where = ".".join(str(p) for p in found["loc"])
                message = str(found["msg"]).removeprefix("Value error, ")
                problems.append(f"schedule '{name}' is invalid: {where}: {message}")
            continue
        schedules.append(schedule)
    names = [s.name for s in schedules]
    if len(set(names)) != len(names):
        problems.append(f"schedule names must be unique: {names}")
    if problems:
        raise PermanentError("; ".join(problems))
    return schedules


def missed_fires(
    schedule: Schedule, last_checked: datetime | None, now: datetime, grace: timedelta
) -> list[datetime]:
    """Fires since the last check (at most `grace` ago): caught up once after downtime."""
    start = max(last_checked or now - timedelta(seconds=1), now - grace)
    return list(schedule.fires_between(start, now))


def check_not_forged(
    request: ReportRequested, schedules: list[Schedule], now: datetime | None = None
) -> None:
    """Ids and `requested_by` of schedules are reserved: only the schedule's own request,
    exactly as this process computes it from the config, may use them.

    Without this, anyone able to publish could take a future scheduled id first and the real
    run would be skipped as a duplicate. A PermanentError says which schedule was imitated.
    """
    by_name = {s.name: s for s in schedules}
    by = request.requested_by or ""
    claims_scheduler = by.startswith(SCHEDULER_PREFIX)
    match = _SCHEDULED_ID.match(request.request_id)
    id_of = match.group("name") if match and match.group("name") in by_name else None
    if not claims_scheduler and id_of is None:
        return  # an ordinary request
    named = by.removeprefix(SCHEDULER_PREFIX) if claims_scheduler else id_of
    schedule = by_name.get(named or "")
    if schedule is None:
        raise PermanentError(
            f"request '{request.request_id}' says it comes from schedule '{named}', which is "
            "not in this fetcher's config (services must share the scheduler's PRESSROOM_CONFIG;"
            " requested_by 'scheduler:…' is reserved for the scheduler)"
        )
    else:
        try:
            expected = schedule.request_for(request.requested_at)
        except ValidationError:
            expected = None
        if (
            expected is not None
            and expected.request_id == request.request_id
            and expected.requested_at == request.requested_at
            and request_fingerprint(expected) == request_fingerprint(request)
        ):
            # Even an exact copy may not run a future fire early: it would take the real run's
            # id. (A manual `schedule run` is the current minute, not a cron time: allowed.)
            due = now or datetime.now(UTC)
            if request.requested_at > due + CLOCK_SKEW:
                raise PermanentError(
                    f"request '{request.request_id}' is schedule '{named}'s fire of "
                    f"{request.requested_at:%Y-%m-%d %H:%M} UTC, which is not due: refused"
                )
            return
    raise PermanentError(
        f"request '{request.request_id}' (requested_by '{by}') imitates schedule "
        f"'{named}' but is not its request: scheduled ids "
        "and requested_by 'scheduler:…' are reserved for the scheduler"
    )
