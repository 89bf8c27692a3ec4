"""Commands that measure and keep the service: stats, slo, alerts, clean (retention), cache."""

from __future__ import annotations

import shutil
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from services.console import sloindex
from services.console.cli._audit import audited, outcome
from services.console.cli._common import (
    age,
    checked,
    emit_json,
    err,
    fail,
    library,
    on_bus,
    out,
    run,
    settings,
    validate_capped,
)
from services.console.cli._output import Col, literal, print_table, styled, visible
from services.console.monitoring import active_alerts, monitor_url
from services.console.requests import clean_artefacts, clean_out_dir, ledger_entries
from services.console.slo import in_window, table, window_hours
from services.console.slo import stats as measure


def _in_window(cfg: Any, window: str) -> list[Any]:
    span = age(window, "--window")
    return list(in_window(on_bus(cfg, ledger_entries), span))


def _measured(row: Any) -> str:
    return "—" if row.value is None else f"{row.value:.2f} {row.unit}"


def _secs(value: Any, unit: str = "s") -> str:
    return "—" if value is None else f"{value:.2f}{unit}"


def stats(
    window: str = typer.Option("7d", help="How far back: 24h, 7d, 4w …"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Success rate, latency percentiles per stage, template usage, report sizes."""

    data = measure(_in_window(settings(), window))
    if as_json:
        emit_json({"window": window, **data})
        return
    out.print(
        f"[bold]{data['total']}[/] requests in {literal(window)}: {data['delivered']} delivered, "
        f"{data['failed']} failed, "
        + "".join(f"{data[k]} {k}, " for k in ("cancelled", "skipped") if data[k])
        + f"{data['in_flight']} in flight · success rate {_secs(data['success_rate'], '%')}",
        soft_wrap=True,
    )
    rows = [("end to end", data["end_to_end_seconds"])]
    rows += [(stage, pcts) for stage, pcts in data["stage_seconds"].items()]
    rows += [("data aggregation", data["fetch_seconds"]), ("render", data["render_seconds"])]
    print_table(
        out,
        [Col("latency"), *(Col(p, justify="right") for p in ("p50", "p95", "p99"))],
        [[label, *(_secs(pcts[p]) for p in ("p50", "p95", "p99"))] for label, pcts in rows],
    )
    sizes = [data["report_bytes"][p] for p in ("p50", "p95")]
    kib = " / ".join("—" if v is None else f"{v / 1024:.0f} KiB" for v in sizes)
    out.print(f"report size p50/p95: {kib}")
    used = ", ".join(f"{k} ({v})" for k, v in data["templates"].items())
    out.print(f"templates: {visible(used)}", highlight=False, markup=False)
    if data["conflicts"]:
        err.print(
            f"warning: {data['conflicts']} unreadable ledger value(s) not counted "
            "(`pressroom ls --status conflict` lists them)",
            highlight=False,
        )
    if data["cache_hit_rate"] is not None:
        out.print(f"fetch cache hit rate: {data['cache_hit_rate']:.1f}%")


def slo(
    window: str = typer.Option("30d", help="How far back: 24h, 7d, 30d … (whole hours)"),
    as_json: bool = typer.Option(False, "--json"),
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Count the SLO index again from every ledger entry."
    ),
) -> None:
    """Each SLI of the legacy runbook against its target (exit 1 when any is missed).

    Read from the SLO index the console keeps (brought up to date first), as the console's
    /slo page is: the same numbers. The window counts the reports requested since the start
    of the hour WINDOW ago."""

    cfg = settings()
    span = age(window, "--window")

    def building(seq: int, last: int) -> None:
        if last - seq > 5000 and not shown:
            shown.append(True)
            err.print(
                f"indexing {last - seq} ledger changes for the SLO index (once) …",
                highlight=False,
            )

    shown: list[bool] = []

    async def measure_window(bus: Any) -> sloindex.Indexed:
        if rebuild:
            await sloindex.rebuild(bus)
        await sloindex.catch_up(bus, building)
        return await sloindex.read(bus, span)

    indexed = on_bus(cfg, measure_window)
    lib = library(cfg)
    checked_ = validate_capped(cfg, lib.folder, None)
    valid = sum(1 for problems in checked_.values() if not problems)
    rows = table(
        indexed.total,
        templates_valid=(valid, len(lib.names())),
        on_time_seconds=cfg.schedule_on_time,
    )
    if as_json:
        first, _ = window_hours(span)
        emit_json(
            {
                "window": window,
                "from": datetime.fromtimestamp(first * 3600, UTC).isoformat(),
                "objectives": [r.as_dict() for r in rows],
            }
        )
    else:
        marks = {
            True: styled("met", "green"),
            False: styled("MISSED", "red"),
            None: styled("no data", "dim"),
        }
        print_table(
            out,
            [Col("SLI"), Col("target"), Col("measured"), Col("samples"), Col("")],
            [[r.name, r.target, _measured(r), str(r.measured_over), marks[r.met]] for r in rows],
        )
    if any(r.met is False for r in rows):
        raise typer.Exit(1)


def alerts(
    prometheus: str | None = typer.Option(
        None, "--prometheus", help="Prometheus URL (default: PRESSROOM_MONITOR_URL, or up's)"
    ),
    pending: bool = typer.Option(False, "--pending", help="Also alerts still waiting on `for:`."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """What is firing, most severe first, with the command to start with (exit 1 if any)."""

    cfg = settings()
    if not (prometheus or cfg.monitor_url or (cfg.data_dir / "prometheus" / "url").is_file()):
        fail(_no_prometheus(cfg))
    url = checked(lambda: monitor_url(prometheus, cfg.monitor_url, cfg.data_dir))
    found = run(active_alerts(url, include_pending=pending))
    if as_json:
        emit_json({"prometheus": url, "alerts": [a.as_dict() for a in found]})
    elif not found:
        out.print(f"[green]nothing firing[/] ({literal(url)})", soft_wrap=True)

    def block(text: str) -> str:
        return textwrap.fill(
            text, max(out.width, 40), initial_indent="    ", subsequent_indent="    "
        )

    for alert in [] if as_json else found:
        state = "" if alert.state == "firing" else f" ({alert.state})"
        out.print(f"[bold red]{literal(alert.severity)}[/] [bold]{literal(alert.name)}[/]{state}")
        labels = " ".join(f"{k}={v}" for k, v in sorted(alert.labels.items()))
        for line in filter(None, (labels, alert.summary, f"start with: {alert.command}")):
            out.print(block(visible(line)), highlight=False, markup=False)
        out.print(block(visible(f"runbook: {alert.runbook}")), highlight=False, markup=False)
    if any(a.state == "firing" for a in found):
        raise typer.Exit(1)


def _no_prometheus(cfg: Any) -> str:
    """How to get a Prometheus to ask, in one line: what runs here decides the advice."""

    missing = (
        ""
        if shutil.which("prometheus")
        else " (it runs Debian's prometheus: `sudo apt-get install prometheus`)"
    )
    if (cfg.data_dir / "workers.json").is_file():
        return (
            "no Prometheus to ask: the stack running here (`make run` / `pressroom up`) was "
            "started without one; stop it (Ctrl-C) and start `.venv/bin/pressroom up --sample "
            f"--prometheus`{missing}, or pass --prometheus URL (or set PRESSROOM_MONITOR_URL)"
        )
    return (
        "no Prometheus to ask: start the stack with `.venv/bin/pressroom up --prometheus`"
        f"{missing}, or pass --prometheus URL (or set PRESSROOM_MONITOR_URL)"
    )


@audited("clean")
def clean(
    older_than: str | None = typer.Option(None, help="Age like 30d (default: retention setting)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would go, delete nothing."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Remove artefacts, and files delivered into PRESSROOM_OUT_DIR, older than the retention
    age (PRESSROOM_ARTEFACT_RETENTION_DAYS)."""

    cfg = settings()
    # `0m` (everything) is a real age: only a missing option falls back to the retention.
    older = (
        age(older_than, "--older-than")
        if older_than is not None
        else timedelta(days=cfg.artefact_retention_days)
    )
    removed = on_bus(cfg, lambda bus: clean_artefacts(bus, older, dry_run=dry_run))
    files = checked(lambda: clean_out_dir(cfg.out_dir, older, dry_run=dry_run))
    if as_json:
        emit_json(
            {
                "dry_run": dry_run,
                "objects": [{"key": o.key, "size": o.size} for o in removed],
                "files": [{"path": str(f.path), "size": f.size} for f in files],
            }
        )
        return
    verb = "would remove" if dry_run else "removed"
    if dry_run:
        for where, name, size in [
            *(("store", o.key, o.size) for o in removed),
            *(("out", _under(f.path, cfg.out_dir), f.size) for f in files),
        ]:
            shown = visible(name)  # a delivered file's name comes from its request
            # A name is never broken across lines: it is what the operator copies.
            line = f"  {_size(size):>9}  {where:5}  {shown}"
            out.print(line, highlight=False, markup=False, soft_wrap=True)
    total = sum(o.size for o in removed)
    out.print(f"{verb} {len(removed)} object(s), {total / 1024 / 1024:.1f} MiB")
    gone = sum(f.size for f in files)
    out.print(
        f"{verb} {len(files)} delivered file(s) in {cfg.out_dir}, {gone / 1024 / 1024:.1f} MiB",
        highlight=False,
        soft_wrap=True,
    )


def _under(path: Path, root: Path) -> str:
    """A delivered file as the out folder's listing shows it: relative to that folder."""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MiB"


cache_app = typer.Typer(
    help="The fetch cache (sources' answers) and the render cache.", no_args_is_help=True
)


@cache_app.command("ls")
def cache_ls(as_json: bool = typer.Option(False, "--json")) -> None:
    """What the caches keep: each cached source's answer, and the render cache's size."""
    from services.console.caches import cached_sources, rendered_entries

    async def both(bus: Any) -> tuple[list[Any], int]:
        return await cached_sources(bus), await rendered_entries(bus)

    sources, renders = on_bus(settings(), both)
    if as_json:
        rows = [
            {
                "source": r.source,
                "config_source": r.config_source or None,
                "age_seconds": None if r.age_seconds is None else round(r.age_seconds, 1),
                "bytes": r.size,
                "key": r.key,
            }
            for r in sources
        ]
        emit_json({"sources": rows, "renders": renders})
        return
    if sources:
        print_table(
            out,
            [Col("source"), Col("config source"), Col("age", justify="right"),
             Col("size", justify="right")],
            [
                [r.source, r.config_source, _age(r.age_seconds), _size(r.size)]
                for r in sources
            ],
        )  # fmt: skip
    out.print(f"{len(sources)} cached source answer(s); {renders} report(s) in the render cache")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@cache_app.command("clear")
@audited("cache clear")
def cache_clear(
    names: list[str] = typer.Argument(
        None, metavar="[SOURCE]...", help="A source's name in requests, or a config source's."
    ),
    all_: bool = typer.Option(False, "--all", help="Every cached source answer."),
    renders: bool = typer.Option(False, "--renders", help="Empty the render cache too."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Drop cached answers: the next request fetches (with --renders: renders) afresh.

    The caches otherwise expire by themselves (PRESSROOM_CACHE_TTL, a source's `cache:`)."""
    from services.console.caches import clear_renders, clear_sources

    if bool(names) == all_ and not renders:
        fail("give source names or --all (and/or --renders)")
    if names and all_:
        fail("give source names or --all, not both")
    wanted = None if all_ else list(names or [])

    async def clear(bus: Any) -> tuple[list[Any], list[str], int]:
        cleared, missing = await clear_sources(bus, wanted) if all_ or names else ([], [])
        return cleared, missing, await clear_renders(bus) if renders else 0

    cleared, missing, rendered = on_bus(settings(), clear)
    outcome(f"{len(cleared)} source answer(s), {rendered} render(s)")
    if as_json:
        emit_json({"sources": len(cleared), "renders": rendered, "not_cached": missing})
        return
    out.print(f"cleared {len(cleared)} cached source answer(s), {rendered} cached render(s)")
    if missing:
        out.print(f"nothing cached for: {literal(', '.join(missing))}")


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
    app.command("slo")(slo)
    app.command("alerts")(alerts)
    app.command("clean")(clean)
    app.add_typer(cache_app, name="cache")
