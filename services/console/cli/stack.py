"""Commands that run and look after the stack: up, worker, health, bus, config, backup."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.live import Live

from services.console import backup as backups
from services.console import requests
from services.console.busaccess import set_up
from services.console.cli._audit import audited
from services.console.cli._common import (
    checked,
    emit_json,
    err,
    fail,
    library,
    on_bus,
    out,
    run,
    schedules,
    settings,
)
from services.console.cli._output import Col, literal, print_table, styled
from services.console.health import stack_health
from services.console.identities import generate, tenants_in
from services.console.requests import publish_request
from services.console.supervisor import Supervisor, parse_scale, sample_request
from services.console.worker import run_worker
from shared.bus.identity import DEFAULT_TENANT, SERVICE_ROLES, tenant_role
from shared.errors import PressroomError
from shared.filenames import folder_filename
from shared.schedules import load_schedules
from shared.settings import load_settings, masked, parse_email_allows

bus_app = typer.Typer(help="NATS identities, permissions, TLS and topology.", no_args_is_help=True)
config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)


def worker(
    name: str = typer.Argument(..., help="fetcher | renderer | distributor | scheduler"),
) -> None:
    """Run one service process (what a container runs)."""

    run_worker(name)  # `pressroom worker NAME` itself starts there without this module


def up(
    scale: list[str] = typer.Option([], help="Replicas, e.g. --scale renderer=2"),
    sample: bool = typer.Option(False, help="Publish the bundled sample request once started."),
    prometheus: bool = typer.Option(
        False, "--prometheus", help="Also run Debian's prometheus with the shipped alert rules."
    ),
    prometheus_port: int = typer.Option(9090, help="Its port (taken: a free one)."),
    console: bool = typer.Option(
        True, "--console/--no-console", help="Also serve the web console (PRESSROOM_CONSOLE_PORT)."
    ),
) -> None:
    """Run the whole pipeline: an embedded nats-server (unless PRESSROOM_NATS_URL) and services."""

    cfg = settings()
    samples = cfg.templates_dir / "samples"
    if sample and cfg.config is None and (samples / "pressroom.yaml").is_file():
        # `make run`: the sample schedule too (a folder delivery every five minutes)
        cfg = _with_sample_config(cfg, samples)
    # A broken schedule would crash-loop the fetcher and scheduler: say it now, in one line.
    for warning in schedule_warnings(cfg, schedules(cfg)):
        err.print(f"[yellow]note:[/] {warning}", highlight=False)
    supervisor = Supervisor(cfg, checked(lambda: parse_scale(scale)))
    if cfg.config is not None:
        supervisor.env["PRESSROOM_CONFIG"] = str(cfg.config.resolve())
    if sample and "PRESSROOM_DATA_FILES_DIR" not in supervisor.env:
        supervisor.env["PRESSROOM_DATA_FILES_DIR"] = str(cfg.data_files_dir.resolve())
    stopping: list[int] = []
    try:
        checked(supervisor.start_bus)  # the data folder is ours from here on
        _say_moved(*on_bus(cfg, set_up))
        supervisor.start_workers()
        _prometheus(supervisor, prometheus_port if prometheus else None)
        if console:
            out.print(
                f"console on [cyan]{literal(supervisor.start_console())}[/] · "
                "`pressroom console user add` adds users",
                soft_wrap=True,
            )
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, frame: stopping.append(signum))
        out.print(
            f"[bold]Pressroom[/] on {literal(cfg.bus_url_public)} · logs in "
            f"{literal(supervisor.log_dir)} · Ctrl-C to stop",
            soft_wrap=True,
        )
        if sample:
            req = sample_request(cfg.templates_dir / "samples" / "portfolio-request.json")
            on_bus(cfg, lambda bus: publish_request(bus, req), setup=False)
            out.print(
                f"published sample request [cyan]{literal(req.request_id)}[/] → "
                f"{literal(cfg.out_dir.resolve())}/{folder_filename(req, 'pdf')}",
                soft_wrap=True,
            )
        with Live(console=out, refresh_per_second=2, transient=True) as live:
            while not stopping:
                for event in supervisor.tend():  # restarts and crash loops, above the line
                    live.console.print(event, markup=False, highlight=False)
                live.update(supervisor.line())
                time.sleep(0.5)
        out.print("stopping …")
    finally:
        supervisor.stop()
    out.print("stopped.")


def _with_sample_config(cfg: Any, samples: Path) -> Any:
    """The settings `up --sample` runs with when PRESSROOM_CONFIG is unset: the sample config
    (its schedule) and, unless set, `file` sources read from the samples folder."""

    saved = {k: os.environ.get(k) for k in ("PRESSROOM_CONFIG", "PRESSROOM_DATA_FILES_DIR")}
    os.environ["PRESSROOM_CONFIG"] = str((samples / "pressroom.yaml").resolve())
    os.environ.setdefault("PRESSROOM_DATA_FILES_DIR", str(samples.resolve()))
    try:
        return checked(load_settings)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def schedule_warnings(cfg: Any, found: list[Any]) -> list[str]:
    """What would make a schedule fail however often it fires: email with no SMTP server."""
    return [
        f"schedule '{s.name}' delivers by email but PRESSROOM_SMTP_HOST is unset: "
        "its fires will fail (set it, or drop the email delivery)"
        for s in found
        if s.enabled
        and cfg.smtp_host is None
        and any(d.get("channel") == "email" for d in s.request.get("deliver") or [])
    ]


def tenant_warnings(cfg: Any) -> list[str]:
    """Credentials and named sources no calling system may use, once there are calling systems
    (the publisher seeds in PRESSROOM_NATS_CREDENTIALS_DIR) or anything is bound."""
    # Imported here: the fetcher's modules cost every other command its start-up time.
    from services.fetcher.access import binding_warnings

    seeds = cfg.nats_credentials_dir
    tenants = tenants_in(seeds) if seeds is not None and Path(seeds).is_dir() else []
    return binding_warnings(cfg, tenants) + email_warnings(cfg, tenants)


def email_warnings(cfg: Any, tenants: list[str]) -> list[str]:
    """Named calling systems that share the operator's email allow-list."""
    named = [t for t in tenants if t != DEFAULT_TENANT]
    own = parse_email_allows(cfg.email_allows)
    shared = [t for t in named if t not in own]
    if not shared or not cfg.email_allow_list:
        return []
    return [
        f"{', '.join(shared)} may mail every recipient of PRESSROOM_EMAIL_ALLOW, which "
        f"{'they share' if len(shared) > 1 else 'it shares'} with the operator's requests "
        "(give each calling system its own in PRESSROOM_EMAIL_ALLOWS)"
    ]


def _prometheus(supervisor: Any, port: int | None) -> None:
    try:
        url = supervisor.start_prometheus(port)
    except PressroomError as error:
        err.print(f"[yellow]note:[/] {literal(error.reason)}", highlight=False)
        return
    if url:
        out.print(
            f"Prometheus on [cyan]{literal(url)}[/] · `pressroom alerts` shows what fires",
            soft_wrap=True,
        )


def health(
    url: list[str] = typer.Option([], "--url", help="A worker's health URL (repeatable)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The whole stack: NATS, streams and consumers, dead letters, store, and each worker."""

    cfg = settings()
    registry_file = cfg.data_dir / "workers.json"
    workers: dict[str, str] = {}
    if registry_file.is_file():
        workers.update(json.loads(registry_file.read_text()))
    workers.update({u: u for u in url})
    report = run(stack_health(cfg, workers))
    if as_json:
        emit_json(report)
    else:
        colour = {"healthy": "green", "degraded": "yellow", "unhealthy": "red"}
        out.print(f"[bold {colour[report['status']]}]{report['status']}[/]")
        print_table(
            out,
            [Col("component"), Col("status"), Col("detail", long=True)],
            [
                [name, styled(item["status"], colour[item["status"]]), item["detail"]]
                for name, item in report["components"].items()
            ],
        )
    if report["status"] == "unhealthy":
        raise typer.Exit(1)


@bus_app.command("auth")
@audited("bus auth")
def bus_auth(
    out_dir: Path = typer.Option(..., "--out", help="Folder for auth.conf and the role seeds."),
    tls: bool = typer.Option(False, "--tls", help="Also a CA and a server certificate."),
    host: str = typer.Option("localhost,127.0.0.1", "--host", help="Server names for TLS."),
    rotate: bool = typer.Option(False, "--rotate", help="New keys (and certificates)."),
    publisher: list[str] = typer.Option(
        [], "--publisher", help="A calling system's own identity (repeat; kept on later runs)."
    ),
) -> None:
    """Write a nats-server include with one least-privilege nkey user per role, one account per
    calling system, and the seeds."""

    hosts = [h.strip() for h in host.split(",") if h.strip()]
    if not hosts:
        fail("--host needs at least one name")
    try:
        result = generate(out_dir, tls=tls, hosts=hosts, rotate=rotate, publishers=publisher)
    except PressroomError as error:
        fail(error.reason)
    out.print(
        f"wrote {literal(result.folder)}/auth.conf — include it from nats-server.conf",
        soft_wrap=True,
    )
    out.print(
        f"seeds (0600): {', '.join(f'{r}.nk' for r in SERVICE_ROLES)}"
        + (f" · kept: {', '.join(result.kept)}" if result.kept else "")
    )
    out.print(
        "calling systems (each its own account): "
        + ", ".join(f"{tenant_role(t)}.nk" for t in result.tenants)
    )
    for seed in result.retired:
        err.print(
            f"note: {seed} is no longer in auth.conf: calling systems are named now, so the one "
            "that used it needs a name of its own (--publisher NAME)",
            highlight=False,
            soft_wrap=True,
        )
    if tls:
        out.print("TLS: ca.pem, server-cert.pem, server-key.pem (clients: PRESSROOM_NATS_TLS_CA)")
    out.print(
        "workers: each its own role's seed (PRESSROOM_NATS_NKEY); other systems: their "
        "publisher seed"
    )


@bus_app.command("setup")
@audited("bus setup")
def bus_setup() -> None:
    """Create or update every stream, consumer and bucket (needs the ops identity)."""

    cfg = settings()
    _say_moved(*on_bus(cfg, set_up))
    out.print(
        "ok: Pressroom's streams, consumers and buckets are ready on "
        f"{literal(cfg.bus_url_public)}",
        soft_wrap=True,
    )


def _say_moved(moved: int, problems: list[str]) -> None:
    """What the setup's move of studio records did, when it did anything."""
    if moved:
        out.print(f"moved {moved} studio record(s) from the artefacts' bucket to pressroom_studio")
    for problem in problems:
        err.print(f"[yellow]note:[/] {literal(problem)}", highlight=False)


@config_app.command("check")
def config_check(as_json: bool = typer.Option(False, "--json")) -> None:
    """Validate the configuration and print it, secrets masked (exit 1 on any problem)."""

    cfg = settings()
    problems: list[str] = []  # every one at once, not the first only
    try:
        found = load_schedules(cfg.schedules)
    except PressroomError as error:
        found, problems = [], [error.reason]
    if not cfg.templates_dir.is_dir():
        problems.append(f"PRESSROOM_TEMPLATES_DIR '{cfg.templates_dir}' is not a folder")
    else:
        lib = library(cfg)
        for schedule in found:
            try:
                lib.resolve(str(schedule.request.get("template", "")))
            except PressroomError as error:
                problems.append(f"schedule '{schedule.name}': {error.reason}")
    try:  # what the distributor checks at start (the calling systems' webhook secrets)
        from services.distributor.signing import tenant_secrets

        tenant_secrets(cfg)
    except PressroomError as error:
        problems.append(error.reason)
    if problems:
        fail("; ".join(problems))
    for warning in [*schedule_warnings(cfg, found), *tenant_warnings(cfg)]:
        err.print(f"[yellow]note:[/] {literal(warning)}", highlight=False)
    effective = masked(cfg)
    if as_json:
        emit_json(effective)
        return
    out.print(yaml.safe_dump(effective, sort_keys=True).rstrip(), markup=False, highlight=False)
    where = f"PRESSROOM_CONFIG={cfg.config}" if cfg.config else "no PRESSROOM_CONFIG file"
    out.print(
        f"ok: configuration valid ({where}; {len(found)} schedule(s), "
        f"{len(cfg.sources)} named source(s), {len(cfg.source_credentials)} credential(s))"
    )


@audited("backup")
def backup(
    output: Path = typer.Argument(..., help="FILE.tar.gz"),
    include_secrets: bool = typer.Option(
        False, "--include-secrets", help="Keep credentials in the archived config and records."
    ),
    artefacts: bool = typer.Option(
        False, "--artefacts", help="Also the reports in the artefact store."
    ),
    since: str | None = typer.Option(
        None, help="With --artefacts: only reports stored since (7d, 24h or an ISO time)."
    ),
) -> None:
    """Templates, config, ledger and dead letters in one archive (0600, secrets redacted)."""

    cfg = settings()
    if since is not None and not artefacts:
        fail("--since needs --artefacts (it picks which reports go into the archive)")
    cutoff = checked(lambda: requests.parse_since(since)) if since else None
    counts = on_bus(
        cfg,
        lambda bus: backups.backup(
            bus,
            output,
            cfg.templates_dir,
            cfg.config,
            include_secrets=include_secrets,
            artefacts=artefacts,
            since=cutoff,
        ),
    )
    secrets = "with secrets" if include_secrets else "secrets redacted"
    reports = f"{counts['artefacts']} reports, " if artefacts else ""
    out.print(
        f"wrote {literal(output)} (0600): {counts['ledger_entries']} ledger entries, "
        f"{counts['dead_letters']} dead letters, {reports}templates, config ({secrets})",
        soft_wrap=True,
    )
    if counts.get("ledger_conflicts"):
        err.print(
            f"warning: {counts['ledger_conflicts']} unreadable ledger value(s) left out "
            "(`pressroom ls --status conflict` lists them)",
            highlight=False,
        )


@audited("restore")
def restore(
    archive: Path = typer.Argument(..., help="FILE.tar.gz from pressroom backup"),
    force: bool = typer.Option(
        False, "--force", "--overwrite", help="Overwrite templates and config that differ here."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="Where the archived config goes (default: PRESSROOM_CONFIG)."
    ),
) -> None:
    """Put back what is missing: ledger entries, dead letters, reports, templates, config."""

    if not archive.is_file():
        fail(f"no backup at '{archive}'")
    cfg = settings()
    done = on_bus(
        cfg,
        lambda bus: backups.restore(
            bus, archive, templates_dir=cfg.templates_dir, config=config or cfg.config, force=force
        ),
    )
    out.print(
        f"restored {done.ledger_entries} ledger entries and {done.dead_letters} dead letters",
        highlight=False,
    )
    said = [
        f"ledger: {done.ledger_present} already there"
        + "".join(f", {n} refused ({why})" for why, n in (done.ledger_refused or {}).items()),
        f"dead letters: {done.dead_letters_present} already there",
    ]
    if done.artefacts or done.artefacts_present:
        said.append(f"reports: {done.artefacts} put back, {done.artefacts_present} already there")
    kept, unwritten = done.templates_kept or [], done.unwritten or []
    said.append(
        f"templates: {done.templates_written} written, {done.templates_unchanged} unchanged, "
        f"{len(kept)} kept"
        + (" (they differ here; --force overwrites)" if kept else "")
        + (f", {len(unwritten)} not written" if unwritten else "")
    )
    for label, paths in (("kept", kept), ("not written", unwritten)):
        said += [f"  {label}: {path}" for path in paths[:10]]
        if len(paths) > 10:
            said.append(f"  … and {len(paths) - 10} more")
    if done.config:
        said.append(f"config: {done.config}")
    for line in said:
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    if unwritten or done.config.startswith("not written"):
        fail(
            "some files could not be written here (listed above); on a read-only templates "
            "mount, put them where it is made from (the image, the ConfigMap)"
        )


def register(app: typer.Typer) -> None:
    commands: list[tuple[str, Callable[..., None]]] = [
        ("worker", worker),
        ("up", up),
        ("health", health),
        ("backup", backup),
        ("restore", restore),
    ]
    for name, command in commands:
        app.command(name)(command)
    app.add_typer(bus_app, name="bus")
    app.add_typer(config_app, name="config")
