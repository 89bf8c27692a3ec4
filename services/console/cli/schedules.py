"""`pressroom schedule` and `pressroom sources`: what the config file schedules and fetches."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import typer

from services.console.cli._audit import audited
from services.console.cli._common import (
    checked,
    config_says,
    emit_json,
    err,
    fail,
    on_bus,
    out,
    run,
    settings,
)
from services.console.cli._output import Col, literal, print_table, styled
from services.console.cli.requests import submit
from services.console.schedules import last_runs, stack_view
from services.scheduler.state import pause, resume
from shared.bus.names import SCHEDULES_BUCKET
from shared.errors import PressroomError
from shared.settings import Settings

schedule_app = typer.Typer(help="Cron schedules from the config file.", no_args_is_help=True)
sources_app = typer.Typer(help="Configured data sources: list and test.", no_args_is_help=True)


@schedule_app.command("ls")
def schedule_ls(as_json: bool = typer.Option(False, "--json")) -> None:
    """Schedules with their next fire times (paused ones say so)."""
    cfg = settings()
    view = checked(lambda: stack_view(cfg))
    now = datetime.now(UTC)
    runs = last_runs(cfg, view.schedules, now) if view.schedules and view.seen else {}
    rows = [
        {
            "name": s.name,
            "cron": s.cron,
            "timezone": s.timezone,
            "enabled": s.enabled,
            "paused": s.name in view.paused,
            "template": s.request.get("template"),
            "next_fire": s.next_fire(now).isoformat(),
            "last_fire": runs[s.name][0] if s.name in runs else None,
            "last_run": runs[s.name][1] if s.name in runs else None,
        }
        for s in view.schedules
    ]
    if view.note:
        err.print(view.note, markup=False, highlight=False)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        out.print(f"no schedules: {config_says(cfg, 'schedules')}")
        return
    columns = [Col("name"), Col("cron"), Col("timezone"), Col("template")]
    cells = ("name", "cron", "timezone", "template")

    def when(row: dict[str, Any]) -> str:
        if not row["enabled"]:
            return "disabled"
        return "paused" if row["paused"] else str(row["next_fire"])[:16]

    def last(row: dict[str, Any]) -> str:
        if row["last_fire"] is None:
            return "?"
        return f"{str(row['last_fire'])[11:16]} {row['last_run']}"

    table = [[str(row[c]) for c in cells] + [last(row), when(row)] for row in rows]
    print_table(out, [*columns, Col("last fire"), Col("next fire (UTC)")], table)


def _known(cfg: Settings, name: str) -> Any:
    """The stack's schedule NAME, or a one-line error (also when the stack runs others)."""
    view = checked(lambda: stack_view(cfg))
    if view.mismatch:
        fail(view.mismatch)
    matches = [s for s in view.schedules if s.name == name]
    if not matches:
        known = ", ".join(s.name for s in view.schedules) or "none"
        fail(f"no schedule '{name}' in the stack's config (known: {known})")
    if view.note:
        err.print(view.note, markup=False, highlight=False)
    return matches[0], view


@schedule_app.command("run")
@audited("schedule run")
def schedule_run(
    name: str, wait: bool = typer.Option(False, "--wait"), timeout: float = typer.Option(120.0)
) -> None:
    """Fire a schedule now (its request_id carries the current minute), also when paused."""

    cfg = settings()
    schedule, _ = _known(cfg, name)
    request = schedule.request_for(datetime.now(UTC).replace(second=0, microsecond=0))
    outcome = submit(cfg, request, wait, timeout, schedule=schedule)
    out.print(f"fired {literal(name)} as [cyan]{literal(request.request_id)}[/]")
    if outcome is not None and not outcome.delivered:
        fail(f"{request.request_id}: {outcome.payload.get('reason')}")


@schedule_app.command("backfill")
@audited("schedule backfill")
def schedule_backfill(
    name: str,
    start: str = typer.Option(..., "--from", help="First fire time to take (UTC): 2026-12-01"),
    end: str = typer.Option(..., "--to", help="Last fire time to take (UTC): 2026-12-07T23:59"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Publish each fire of NAME in the range once, with the ids the scheduler gives them
    (a fire that already ran is named, not sent again)."""
    # Imported here: the scheduler's app (FastStream) costs the other commands' start-up time.
    from services.console.backfill import backfill, parse_when

    cfg = settings()
    schedule, _ = _known(cfg, name)
    try:
        first, last = parse_when(start, "--from"), parse_when(end, "--to")
    except PressroomError as error:
        fail(error.reason)
    done = on_bus(cfg, lambda bus: backfill(bus, schedule, first, last))
    if as_json:
        emit_json(
            [
                {"request_id": d.request_id, "fire": d.fire.isoformat(), "state": d.state}
                for d in done
            ]
        )
        return
    if not done:
        out.print(f"no fires of {literal(name)} between {literal(start)} and {literal(end)}")
    for d in done:
        shown = "published" if d.state == "published" else f"already ran ({d.state})"
        out.print(f"{literal(d.request_id)}: {literal(shown)}")


@schedule_app.command("pause")
@audited("schedule pause")
def schedule_pause(name: str) -> None:
    """Skip a schedule's fires (none are caught up later) until `schedule resume NAME`."""

    cfg = settings()
    _, view = _known(cfg, name)
    if name in view.paused:
        out.print(f"{name} was already paused")
        return

    async def act(bus: Any) -> None:
        kv = await bus.js.key_value(SCHEDULES_BUCKET)
        await pause(kv, name, "pressroom schedule pause")

    on_bus(cfg, act, setup=False)
    out.print(f"paused {name}: its fires are skipped until `pressroom schedule resume {name}`")


@schedule_app.command("resume")
@audited("schedule resume")
def schedule_resume(name: str) -> None:
    """Fire a paused schedule again from its next fire time (what was skipped stays skipped)."""

    cfg = settings()
    schedule, _ = _known(cfg, name)

    async def act(bus: Any) -> bool:
        kv = await bus.js.key_value(SCHEDULES_BUCKET)
        return bool(await resume(kv, name))

    if not on_bus(cfg, act, setup=False):
        out.print(f"{name} was not paused")
        return
    upcoming = schedule.next_fire(datetime.now(UTC))
    out.print(f"resumed {name}: next fire {upcoming:%Y-%m-%d %H:%M} UTC")


@sources_app.command("ls")
def sources_ls(as_json: bool = typer.Option(False, "--json")) -> None:
    """Data sources named in the config file."""
    cfg = settings()
    rows = [{"name": n, "kind": s.get("kind", "?")} for n, s in sorted(cfg.sources.items())]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        out.print(f"no data sources: {config_says(cfg, 'sources')}")
        return
    print_table(out, [Col("name"), Col("kind")], [[r["name"], r["kind"]] for r in rows])


@sources_app.command("test")
@audited("sources test")
def sources_test(
    name: str | None = typer.Argument(
        None, help="A source of the config file, or one a schedule's request names."
    ),
    every: bool = typer.Option(
        False, "--all", help="Test every source (and PRESSROOM_PROMETHEUS_URL)."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Fetch one source now and show what came back (the legacy test_data_source); with
    --all, every source, one row each (exit 1 if any fails)."""
    # Imported here: the fetcher's and the channels' libraries cost the other commands'
    # start-up time.
    from services.console.probes import fetch_source, matching_sources, testable_sources

    cfg = settings()
    if every:
        if name is not None:
            fail("give a source name or --all, not both")
        _test_rows(cfg, testable_sources(cfg), as_json)
        return
    if name is None:
        fail("give a source name (see `pressroom sources ls`) or --all")
    matches = checked(lambda: matching_sources(cfg, name))
    if len(matches) > 1:  # one name, several sources (a config source and a schedule's own)
        _test_rows(cfg, matches, as_json)
        return
    [(shown, (kind, source))] = matches.items()
    data, seconds = run(fetch_source(cfg, source))
    size = len(json.dumps(data, default=str))
    summary = {
        "source": shown,
        "kind": kind,
        "seconds": round(seconds, 3),
        "bytes": size,
        "items": len(data) if isinstance(data, list | dict) else None,
    }
    if as_json:
        emit_json({**summary, "data": data})
        return
    out.print(
        f"ok: {literal(shown)} ({literal(kind)}) answered in {seconds:.2f}s, "
        f"{size:,} bytes" + (f", {summary['items']} items" if summary["items"] is not None else "")
    )


def _test_rows(cfg: Any, sources: dict[str, tuple[str, Any]], as_json: bool) -> None:
    """Sources tested at once, one row each (`testable_sources`' names); exit 1 if any fails."""
    from services.console.probes import fetch_source  # start-up time

    async def one(name: str) -> dict[str, Any]:
        started = time.monotonic()
        kind, source = sources[name]
        row: dict[str, Any] = {"source": name, "kind": kind}
        try:
            data, seconds = await fetch_source(cfg, source)
        except PressroomError as error:
            seconds = time.monotonic() - started
            return {**row, "ok": False, "seconds": round(seconds, 3), "detail": error.reason}
        size = len(json.dumps(data, default=str))
        return {**row, "ok": True, "seconds": round(seconds, 3), "detail": f"{size:,} bytes"}

    async def every() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(one(n) for n in sorted(sources))))

    if not sources:
        fail(f"no data sources to test: {config_says(cfg, 'sources')}")
    rows = run(every())
    if as_json:
        emit_json(rows)
    else:
        print_table(
            out,
            [
                Col("source"),
                Col("kind"),
                Col("result"),
                Col("s", justify="right"),
                Col("detail", long=True),
            ],
            [
                [
                    r["source"],
                    r["kind"],
                    styled("ok", "green") if r["ok"] else styled("FAILED", "red"),
                    f"{r['seconds']:.2f}",
                    r["detail"],
                ]
                for r in rows
            ],
        )
    failed = [r["source"] for r in rows if not r["ok"]]
    if failed:
        if not as_json:
            names = literal(", ".join(failed))
            out.print(f"{len(failed)} of {len(rows)} source(s) failed: {names}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(sources_app, name="sources")
    app.add_typer(schedule_app, name="schedule")
