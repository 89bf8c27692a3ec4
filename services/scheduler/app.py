"""The scheduler service: cron schedules → report.requested, safe to run as several replicas.

Every replica computes the same fires and publishes each with a request_id derived from the
schedule name and fire time, under a matching `Nats-Msg-Id`: JetStream keeps one copy, and the
ledger skips any later duplicate. The last time each schedule was checked lives in JetStream KV,
so fires missed while no scheduler ran are caught up (within the grace window) once.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

from faststream import FastStream
from faststream.nats import NatsBroker
from nats.js.errors import KeyNotFoundError

from services.scheduler.cron import Schedule, load_schedules, missed_fires
from shared.bus import (
    SCHEDULES_BUCKET,
    JetStreamPublisher,
    encode,
    log_bus_error,
    msg_id,
)
from shared.events import REPORT_REQUESTED
from shared.failover import ConnectionEvents
from shared.health import CheckResult, HealthServer
from shared.logging import configure_logging, get_logger
from shared.service import connect_with_patience
from shared.settings import Settings

log = get_logger("pressroom.scheduler")


async def fire(publisher: JetStreamPublisher, schedule: Schedule, when: datetime) -> str:
    request = schedule.request_for(when)
    ack = await publisher.publish(
        REPORT_REQUESTED, encode(request), msg_id=msg_id(request.request_id, "request")
    )
    log.info(
        "fired",
        schedule=schedule.name,
        request_id=request.request_id,
        fire_time=when.isoformat(),
        duplicate=ack.duplicate,
    )
    return request.request_id


async def tick(
    publisher: JetStreamPublisher,
    kv: Any,
    schedules: list[Schedule],
    settings: Settings,
    now: datetime,
) -> list[str]:
    fired = []
    # A grace shorter than a few ticks would drop ordinary fires, not only stale ones.
    grace = timedelta(seconds=max(settings.schedule_grace, settings.schedule_tick * 5, 5.0))
    for schedule in schedules:
        if not schedule.enabled:
            continue
        try:
            entry = await kv.get(schedule.name)
            last = datetime.fromisoformat(entry.value.decode()) if entry.value else None
        except KeyNotFoundError:
            last = None
        for when in missed_fires(schedule, last, now, grace):
            fired.append(await fire(publisher, schedule, when))
        await kv.put(schedule.name, now.isoformat().encode())
    return fired


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    schedules = load_schedules(settings.schedules)
    events = ConnectionEvents("pressroom-scheduler", lambda: broker._connection, log_bus_error)
    broker = NatsBroker(
        settings.nats_servers,
        name="pressroom-scheduler",
        max_reconnect_attempts=-1,
        logger=None,
        error_cb=events.error,
        disconnected_cb=events.disconnected,
        reconnected_cb=events.reconnected,
    )
    app = FastStream(broker)
    state: dict[str, Any] = {}

    async def loop() -> None:
        js = await connect_with_patience(broker, settings)
        kv = await js.key_value(SCHEDULES_BUCKET)
        publisher = JetStreamPublisher(js)
        log.info("scheduler ready", schedules=[s.name for s in schedules])
        while True:
            try:
                await tick(publisher, kv, schedules, settings, datetime.now(UTC))
            except Exception as error:  # keep ticking; the next tick catches up within grace
                log.warning("tick failed", error=repr(error))
            await asyncio.sleep(settings.schedule_tick)

    @app.after_startup
    async def start() -> None:
        configure_logging("pressroom-scheduler")
        state["task"] = asyncio.create_task(loop())
        if settings.health_port is not None:

            async def bus() -> CheckResult:
                connection = broker._connection
                ok = connection is not None and connection.is_connected
                return CheckResult("healthy" if ok else "unhealthy", settings.bus_display)

            async def ticking() -> CheckResult:
                task = state["task"]
                return CheckResult(
                    "unhealthy" if task.done() else "healthy", f"{len(schedules)} schedule(s)"
                )

            server = HealthServer(
                "pressroom-scheduler",
                {"bus": bus, "scheduler": ticking},
                settings.health_host,
                settings.health_port,
            )
            state["health"] = server
            await server.start()

    @app.on_shutdown
    async def stop() -> None:
        if "health" in state:
            await state["health"].stop()
        task = state.get("task")
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return app
