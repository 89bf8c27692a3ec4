"""The scheduler service: cron schedules → report.requested, safe to run as several replicas.

Every replica computes the same fires and publishes each with a request_id derived from the
schedule name and fire time, under a matching `Nats-Msg-Id`: JetStream keeps one copy, and the
ledger skips any later duplicate. The last time each schedule was checked lives in JetStream KV,
so fires missed while no scheduler ran are caught up (within the grace window) once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from faststream import FastStream
from nats.js.errors import KeyNotFoundError

from services.scheduler.state import is_paused, record_config
from services.scheduler.watch import ScheduleWatch
from shared.adapters.ledger import KvLedger
from shared.bus.identity import secret_of
from shared.bus.names import LEDGER_BUCKET, SCHEDULES_BUCKET, STREAM, msg_id
from shared.bus.topology import JetStreamPublisher, Publisher, encode
from shared.events import REPORT_REQUESTED, ReportRequested, request_fingerprint
from shared.metrics import scrape_handler
from shared.observe.health import CheckResult, HealthServer
from shared.observe.logging import configure_logging, get_logger
from shared.observe.telemetry import setup_telemetry, shutdown_telemetry
from shared.schedules import Schedule, load_schedules, missed_fires
from shared.settings import Settings, load_settings
from shared.stage.app import BUS_PING_TIMEOUT, Deps, connect_with_patience, worker_broker
from shared.stage.readiness import config_check

log = get_logger("pressroom.scheduler")


def fire_message_id(request: ReportRequested, key: bytes = b"") -> str:
    """The message id of a fire: the same in every replica, and — keyed with the scheduler's
    own secret (its seed) — one nobody without that secret can compute and take first."""
    fingerprint = request_fingerprint(request)
    if key:
        mac = hmac.new(key, f"{request.request_id}:{fingerprint}".encode(), hashlib.sha256)
        fingerprint = mac.hexdigest()[:32]
    return f"{msg_id(request.request_id, 'schedule')}:{fingerprint}"


async def fire(
    publisher: Publisher,
    schedule: Schedule,
    when: datetime,
    js: Any = None,
    key: bytes = b"",
) -> str:
    """Publish one fire; replicas publish the same message id, so JetStream keeps one.

    If the id was taken first by a message that is not this schedule's request (someone
    imitating the schedule, possible only on a bus without identities: with them the id is
    keyed), publish again under a fresh id: the fetcher refuses the imitation and runs the
    real one.
    """
    request = schedule.request_for(when)
    body = encode(request)
    ack = await publisher.publish(REPORT_REQUESTED, body, msg_id=fire_message_id(request, key))
    if ack.duplicate and js is not None and not await _stored_is(js, ack.seq, request):
        log.warning("scheduled id was taken by another message", request_id=request.request_id)
        ack = await publisher.publish(
            REPORT_REQUESTED, body, msg_id=f"{request.request_id}:schedule:{uuid.uuid4().hex}"
        )
    log.info(
        "fired",
        schedule=schedule.name,
        request_id=request.request_id,
        fire_time=when.isoformat(),
        duplicate=ack.duplicate,
    )
    return request.request_id


async def _stored_is(js: Any, seq: int, request: ReportRequested) -> bool:
    try:
        stored = await js.get_msg(STREAM, seq)
        other = ReportRequested.model_validate_json(stored.data or b"")
    except Exception:  # gone or unreadable: not ours
        return False
    return other.request_id == request.request_id and request_fingerprint(
        other
    ) == request_fingerprint(request)


@dataclass
class Conflicts:
    """Unreadable values found in the schedules bucket (something else wrote them): each
    schedule's latest, kept an hour for `health` after the value was overwritten."""

    found: dict[str, tuple[float, str]] = field(default_factory=dict)
    keep: float = 3600.0

    def record(self, key: str, why: str) -> None:
        self.found[key] = (time.monotonic(), why)
        log.warning("unreadable schedules value overwritten", key=key, why=why)

    def recent(self) -> dict[str, str]:
        cutoff = time.monotonic() - self.keep
        return {k: why for k, (when, why) in self.found.items() if when >= cutoff}


def _last_checked(key: str, value: bytes | None, conflicts: Conflicts | None) -> datetime | None:
    if not value:
        return None
    try:
        last = datetime.fromisoformat(value.decode())
    except (UnicodeDecodeError, ValueError) as error:
        if conflicts is not None:
            conflicts.record(key, f"not a time ({len(value)} bytes, {type(error).__name__})")
        return None  # as for a schedule never checked: fires due now go out
    return last if last.tzinfo else last.replace(tzinfo=UTC)


async def tick(
    publisher: Publisher,
    kv: Any,
    schedules: list[Schedule],
    settings: Settings,
    now: datetime,
    js: Any = None,
    key: bytes = b"",
    conflicts: Conflicts | None = None,
) -> list[str]:
    """Fire what is due. One schedule that cannot be handled (its stored value unreadable,
    a failed publish) never stops the others: the failure is logged and retried next tick."""
    fired = []
    failures = []
    # A grace shorter than a few ticks would drop ordinary fires, not only stale ones.
    grace = timedelta(seconds=max(settings.schedule_grace, settings.schedule_tick * 5, 5.0))
    for schedule in schedules:
        if not schedule.enabled:
            continue
        if await is_paused(kv, schedule.name):  # `pressroom schedule pause`: its fires are skipped
            await kv.put(schedule.name, now.isoformat().encode())  # and not caught up later
            continue
        try:
            try:
                entry = await kv.get(schedule.name)
                last = _last_checked(schedule.name, entry.value, conflicts)
            except KeyNotFoundError:
                last = None
            # A schedule with jitter sees its fires that much later (every replica alike).
            due = schedule.publish_time(now)
            for when in missed_fires(schedule, last, due, grace):
                fired.append(await fire(publisher, schedule, when, js, key))
            await kv.put(schedule.name, due.isoformat().encode())
        except Exception as error:  # the next tick catches up within grace
            log.warning("schedule tick failed", schedule=schedule.name, error=repr(error))
            failures.append(error)
    if failures and len(failures) == sum(1 for s in schedules if s.enabled):
        raise failures[0]  # nothing worked: the bus itself, most likely
    return fired


def create_app(settings: Settings | None = None, *, deps: Deps | None = None) -> FastStream:
    """`deps` as for the stages (shared/stage/app.py): what it leaves None (the publisher, the
    ledger, the SCHEDULES_BUCKET in `kv`, the bus itself) is opened from settings at start-up."""
    settings = settings or load_settings()
    deps = deps or Deps()
    schedules = load_schedules(settings.schedules)
    setup_telemetry("pressroom-scheduler")
    broker, who = worker_broker(settings, "scheduler", "pressroom-scheduler")
    conflicts = Conflicts()

    @contextlib.asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        configure_logging("pressroom-scheduler")
        if deps.js is None:  # given one, the bus is already open (see Deps.js)
            deps.js = await connect_with_patience(broker, settings, who=who)
        js = deps.js
        kv = deps.kv.get(SCHEDULES_BUCKET) or await js.key_value(SCHEDULES_BUCKET)
        ledger = deps.ledger or KvLedger(await js.key_value(LEDGER_BUCKET))
        publisher = deps.publisher or JetStreamPublisher(js, verify_duplicates=not secret_of(who))
        # What this stack schedules, for the CLI: `schedule run` fires only what it knows.
        where = str(settings.config.resolve()) if settings.config else None
        try:
            await record_config(kv, settings.schedules, where)
        except Exception as error:  # the CLI then says it cannot see the stack's schedules
            log.warning("schedules not recorded on the bus", error=repr(error))
        schedule_watch = ScheduleWatch(
            kv, ledger, schedules, conflicts=conflicts, on_time=settings.schedule_on_time
        )
        # With identities the scheduler may not read the main stream (other tenants' data):
        # its keyed message ids stand in for reading back what holds them.
        key = secret_of(who)
        firing = Firing(publisher, kv, None if key else js, key, schedules, settings, conflicts)
        tasks = [
            asyncio.create_task(firing.run()),
            asyncio.create_task(_watch(schedule_watch)),
        ]
        health = await _serve_health(settings, broker, tasks[0], firing, schedule_watch)
        log.info("scheduler ready", schedules=[s.name for s in schedules])
        try:
            yield
        finally:
            if health is not None:
                await health.stop()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            shutdown_telemetry()

    # Our own JSON lines say "ready"; the lifespan opens and closes everything.
    return FastStream(broker, logger=None, lifespan=lifespan)


@dataclass
class Firing:
    """The scheduler's loop: a tick every PRESSROOM_SCHEDULE_TICK seconds, for ever."""

    publisher: Publisher
    kv: Any
    readable: Any  # the bus to read fires back from (None with identities: keyed ids instead)
    key: bytes
    schedules: list[Schedule]
    settings: Settings
    conflicts: Conflicts

    async def run(self) -> None:
        while True:
            try:
                await tick(
                    self.publisher,
                    self.kv,
                    self.schedules,
                    self.settings,
                    datetime.now(UTC),
                    self.readable,
                    self.key,
                    conflicts=self.conflicts,
                )
            except Exception as error:  # keep ticking; the next tick catches up within grace
                log.warning("tick failed", error=repr(error))
            await asyncio.sleep(self.settings.schedule_tick)


async def _watch(schedule_watch: ScheduleWatch) -> None:
    # Between scrapes too: OTLP exports what the gauges last saw.
    while True:
        try:
            await schedule_watch.refresh(datetime.now(UTC))
        except Exception as error:  # the bus may be briefly away; the next look will do
            log.debug("schedule gauges not refreshed", error=repr(error))
        await asyncio.sleep(15)


async def _serve_health(
    settings: Settings,
    broker: Any,
    loop: asyncio.Task[None],
    firing: Firing,
    schedule_watch: ScheduleWatch,
) -> HealthServer | None:
    """/livez, /readyz (the bus, the loop, conflicts, the config) and /metrics."""
    if settings.health_port is None:
        return None
    count = len(firing.schedules)

    async def bus() -> CheckResult:
        ok = await broker.ping(timeout=BUS_PING_TIMEOUT)
        return CheckResult("healthy" if ok else "unhealthy", settings.bus_url_public)

    async def ticking() -> CheckResult:
        if loop.done():
            return CheckResult("unhealthy", f"{count} schedule(s), not ticking")
        found = firing.conflicts.recent()
        if found:
            named = "; ".join(f"'{k}': {why}" for k, why in sorted(found.items()))
            return CheckResult(
                "degraded",
                f"conflict: unreadable value(s) in the schedules bucket, overwritten "
                f"({named}); still firing every schedule",
            )
        return CheckResult("healthy", f"{count} schedule(s)")

    async def refresh() -> None:
        await schedule_watch.refresh(datetime.now(UTC))

    health = HealthServer(
        "pressroom-scheduler",
        {"bus": bus, "scheduler": ticking, "config": config_check(settings)},
        settings.health_host,
        settings.health_port,
        metrics=scrape_handler(refresh),
    )
    await health.start()
    return health
