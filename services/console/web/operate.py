"""The pages that watch the service: schedules (run, pause, resume), SLOs with their charts,
health, the audit trail."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    Response,
)

from services.console import audit, requests, sloindex
from services.console import slo as sli
from services.console.health import stack_health
from services.console.monitoring import active_alerts, monitor_url
from services.console.schedules import stack_view
from services.console.web import charts
from services.console.web.index import Filters
from services.console.web.kit import (
    Console,
    audit_action,
    current_user,
    finish_action,
    page,
    render_page,
    wants_json,
)
from services.console.web.reports import row_dict
from services.scheduler.state import pause, resume
from shared.bus.names import SCHEDULES_BUCKET
from shared.errors import PressroomError

SLO_WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
SLO_STEP_HOURS = {"24h": 1, "7d": 6, "30d": 24}  # the charts' points


# ---- schedules -----------------------------------------------------------------------------
async def _schedule_view(console: Console) -> Any:
    return await asyncio.to_thread(stack_view, console.settings)


@page()
async def schedules(request: Request) -> Response:
    console: Console = request.app.state.console
    view = await _schedule_view(console)
    now = datetime.now(UTC)
    rows = []
    for schedule in view.schedules:
        last = console.index.page(Filters(schedule=schedule.name), None, 1).rows
        delivered = console.index.page(
            Filters(schedule=schedule.name, status="delivered"), None, 1
        ).rows
        rows.append(
            {
                "name": schedule.name,
                "cron": schedule.cron,
                "timezone": schedule.timezone,
                "template": schedule.request.get("template"),
                "enabled": schedule.enabled,
                "paused": schedule.name in view.paused,
                "next_fire": schedule.next_fire(now),
                "last": last[0] if last else None,
                "last_delivered": delivered[0] if delivered else None,
            }
        )
    if wants_json(request):
        return JSONResponse(
            {
                "note": view.note,
                "schedules": [
                    {
                        **{k: v for k, v in r.items() if k not in ("last", "last_delivered")},
                        "next_fire": r["next_fire"].isoformat(),
                        "last": row_dict(r["last"]) if r["last"] else None,
                        "last_delivered": (
                            r["last_delivered"].requested_at.isoformat()
                            if r["last_delivered"]
                            else None
                        ),
                    }
                    for r in rows
                ],
            }
        )
    return render_page(
        request,
        "schedules.html",
        {"rows": rows, "note": view.note, "flash": request.session.pop("flash", None)},
    )


async def _schedule(console: Console, name: str) -> Any:
    view = await _schedule_view(console)
    if view.mismatch:
        raise PressroomError(view.mismatch)
    for schedule in view.schedules:
        if schedule.name == name:
            return schedule, view
    raise PressroomError(f"no schedule '{name}' in the stack's config")


@page("ops", action=True)
async def schedule_action(request: Request) -> Response:
    console: Console = request.app.state.console
    bus = console.ready_bus()
    name, verb = request.path_params["name"], request.path_params["verb"]
    schedule, _view = await _schedule(console, name)
    user = current_user(request)
    assert user is not None
    kv = await bus.js.key_value(SCHEDULES_BUCKET)
    if verb == "run":
        fire = datetime.now(UTC).replace(second=0, microsecond=0)
        request_ = schedule.request_for(fire)
        await requests.submit(bus, request_, wait=False, timeout=0, schedule=schedule)
        message = f"fired {name} as {request_.request_id}"
    elif verb == "pause":
        await pause(kv, name, f"console {user.name}")
        message = f"paused {name}"
    elif verb == "resume":
        message = f"resumed {name}" if await resume(kv, name) else f"{name} was not paused"
    else:
        raise PressroomError(f"unknown action '{verb}' (run, pause, resume)")
    await audit_action(request, f"schedule {verb}", name, message)
    return finish_action(request, message, "/schedules")


# ---- SLOs, health, audit -------------------------------------------------------------------
async def slo_view(console: Console, window: str) -> dict[str, Any]:
    """The SLO table, burn rate and charts from the SLO index (services/console/sloindex.py),
    brought up to date first unless the background keeper is busy (the one-time backfill)."""
    bus = console.ready_bus()
    current = await console.slo.current(bus)
    now = datetime.now(UTC)
    indexed = await sloindex.read(bus, SLO_WINDOWS[window], now)
    total = indexed.total
    rows = sli.table(
        total,
        templates_valid=await console.templates_valid(),
        on_time_seconds=console.settings.schedule_on_time,
    )
    # Burn rate: how fast the error budget goes (1 = exactly on budget over the window).
    failed = total.finished - total.delivered
    burn = (failed / total.finished) / 0.01 if total.finished else None
    first, end = indexed.first, indexed.end
    step = SLO_STEP_HOURS[window]
    spelling = {"24h": "%H:%M", "7d": "%a %Hh"}.get(window, "%m-%d")
    labels: list[str] = []
    success: list[float | None] = []
    p95: list[float | None] = []
    # Points on whole multiples of the step (whole days for 30d, as the index keeps them).
    for start in range(first - first % step, end + 1, step):
        slot = indexed.between(start, start + step - 1)
        labels.append(datetime.fromtimestamp(max(start, first) * 3600, UTC).strftime(spelling))
        success.append(slot.delivered / slot.finished * 100 if slot.finished else None)
        p95.append(sli.histogram_percentile(slot.total, 95))
    return {
        "window": window,
        "from": datetime.fromtimestamp(first * 3600, UTC).isoformat(),
        "objectives": [r.as_dict() for r in rows],
        "burn_rate": burn,
        "computed_at": now.isoformat(),
        "index": {"seq": indexed.seq, "ledger_seq": indexed.last, "current": current},
        "series": {"labels": labels, "success": success, "p95": p95},
    }


@page()
async def slo(request: Request) -> Response:
    console: Console = request.app.state.console
    window = request.query_params.get("window", "7d")
    window = window if window in SLO_WINDOWS else "7d"
    view = await slo_view(console, window)
    if wants_json(request):
        return JSONResponse(view)
    series = view["series"]
    return render_page(
        request,
        "slo.html",
        {
            "view": view,
            "windows": list(SLO_WINDOWS),
            "success_chart": charts.line(
                series["labels"], series["success"], "Success rate (%)", unit="%"
            ),
            "p95_chart": charts.line(
                series["labels"], series["p95"], "p95 generation time (s)", unit="s"
            ),
        },
    )


async def _health_view(console: Console) -> dict[str, Any]:
    registry = Path(console.settings.data_dir) / "workers.json"
    workers: dict[str, str] = {}
    if registry.is_file():
        with contextlib.suppress(ValueError, OSError):
            workers.update(json.loads(registry.read_text()))
    report_ = await stack_health(console.settings, workers)
    alerts: list[dict[str, Any]] | None = None
    alerts_note = ""
    try:
        url = monitor_url(None, console.settings.monitor_url, Path(console.settings.data_dir))
        alerts = [a.__dict__ for a in await active_alerts(url)]
    except PressroomError as error:
        alerts_note = error.reason
    return {**report_, "alerts": alerts, "alerts_note": alerts_note}


@page()
async def health(request: Request) -> Response:
    console: Console = request.app.state.console
    view = await console.cached("health", 5, lambda: _health_view(console))
    if wants_json(request):
        return JSONResponse(json.loads(json.dumps(view, default=str)))
    return render_page(request, "health.html", {"view": view})


@page()
async def audit_page(request: Request) -> Response:
    console: Console = request.app.state.console
    records = await audit.trail(console.ready_bus(), limit=500)
    if wants_json(request):
        return JSONResponse({"audit": [r.as_dict() for r in records]})
    return render_page(request, "audit.html", {"records": records})
