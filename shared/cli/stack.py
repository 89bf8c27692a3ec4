"""Commands that run and look after the stack: up, worker, health, bus, config, backup."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.live import Live

from shared.cli._common import (
    checked,
    emit_json,
    err,
    fail,
    library,
    on_bus,
    out,
    settings,
)
from shared.cli._output import Col, literal, print_table, styled
from shared.errors import PressroomError

bus_app = typer.Typer(help="NATS identities, permissions, TLS and topology.", no_args_is_help=True)
config_app = typer.Typer(help="The effective configuration.", no_args_is_help=True)


def worker(name: str = typer.Argument(..., help="fetcher | renderer | distributor")) -> None:
    """Run one service process (what a container runs)."""
    import importlib

    from shared.supervisor import SERVICES

    if name not in SERVICES:
        fail(f"unknown worker '{name}' (known: {', '.join(SERVICES)})")
    from shared.secretenv import scrub

    scrub(role=name)  # the other roles' secrets are nothing this process (or a child) may use
    settings()
    try:
        faststream_app = importlib.import_module(f"services.{name}.app").create_app()
        asyncio.run(faststream_app.run())
    except KeyboardInterrupt:
        return
    except PressroomError as error:
        fail(f"{name}: {error.reason}")


def up(
    scale: list[str] = typer.Option([], help="Replicas, e.g. --scale renderer=2"),
    sample: bool = typer.Option(False, help="Publish the bundled sample request once started."),
    prometheus: bool = typer.Option(
        False, "--prometheus", help="Also run Debian's prometheus with the shipped alert rules."
    ),
    prometheus_port: int = typer.Option(9090, help="Its port (taken: a free one)."),
) -> None:
    """Run the whole pipeline: an embedded nats-server (unless PRESSROOM_NATS_URL) and services."""
    from shared.ops import publish_request, ready
    from shared.supervisor import Supervisor, parse_scale, sample_request

    cfg = settings()
    supervisor = Supervisor(cfg, checked(lambda: parse_scale(scale)))
    stopping: list[int] = []
    try:
        checked(supervisor.start_bus)  # the data folder is ours from here on
        on_bus(cfg, ready)
        supervisor.start_workers()
        _prometheus(supervisor, prometheus_port if prometheus else None)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, frame: stopping.append(signum))
        out.print(
            f"[bold]Pressroom[/] on {cfg.bus_url_public} · logs in {supervisor.log_dir} · "
            "Ctrl-C to stop"
        )
        if sample:
            req = sample_request(cfg.templates_dir / "samples" / "portfolio-request.json")
            on_bus(cfg, lambda bus: publish_request(bus, req), setup=False)
            out.print(
                f"published sample request [cyan]{req.request_id}[/] → "
                f"{cfg.out_dir.resolve()}/{req.request_id}.pdf"
            )
        with Live(console=out, refresh_per_second=2, transient=True) as live:
            while not stopping:
                live.update(supervisor.line())
                time.sleep(0.5)
        out.print("stopping …")
    finally:
        supervisor.stop()
    out.print("stopped.")


def _prometheus(supervisor: Any, port: int | None) -> None:
    try:
        url = supervisor.start_prometheus(port)
    except PressroomError as error:
        err.print(f"[yellow]note:[/] {literal(error.reason)}", highlight=False)
        return
    if url:
        out.print(f"Prometheus on [cyan]{url}[/] · `pressroom alerts` shows what fires")


def health(
    url: list[str] = typer.Option([], "--url", help="A worker's health URL (repeatable)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """The whole stack: NATS, streams and consumers, dead letters, store, and each worker."""
    from shared.cli._common import run
    from shared.readiness import stack_health

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
    from shared.busauth import SERVICE_ROLES, generate, tenant_role

    hosts = [h.strip() for h in host.split(",") if h.strip()]
    if not hosts:
        fail("--host needs at least one name")
    try:
        result = generate(out_dir, tls=tls, hosts=hosts, rotate=rotate, publishers=publisher)
    except PressroomError as error:
        fail(error.reason)
    out.print(f"wrote {result.folder}/auth.conf — include it from nats-server.conf")
    out.print(
        f"seeds (0600): {', '.join(f'{r}.nk' for r in SERVICE_ROLES)}"
        + (f" · kept: {', '.join(result.kept)}" if result.kept else "")
    )
    out.print(
        "calling systems (each its own account): "
        + ", ".join(f"{tenant_role(t)}.nk" for t in result.tenants)
    )
    if tls:
        out.print("TLS: ca.pem, server-cert.pem, server-key.pem (clients: PRESSROOM_NATS_TLS_CA)")
    out.print(
        "workers: each its own role's seed (PRESSROOM_NATS_NKEY); other systems: their "
        "publisher seed"
    )


@bus_app.command("setup")
def bus_setup() -> None:
    """Create or update every stream, consumer and bucket (needs the ops identity)."""
    from shared.ops import ready

    cfg = settings()
    on_bus(cfg, ready)
    out.print(f"ok: Pressroom's streams, consumers and buckets are ready on {cfg.bus_url_public}")


@config_app.command("check")
def config_check(as_json: bool = typer.Option(False, "--json")) -> None:
    """Validate the configuration and print it, secrets masked (exit 1 on any problem)."""
    from services.scheduler.cron import load_schedules
    from shared.settings import masked

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
    if problems:
        fail("; ".join(problems))
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


def backup(
    output: Path = typer.Argument(..., help="FILE.tar.gz"),
    include_secrets: bool = typer.Option(
        False, "--include-secrets", help="Keep credentials in the archived config."
    ),
) -> None:
    """Templates, config, ledger and dead letters in one archive (0600, secrets redacted)."""
    from shared import ops

    cfg = settings()
    counts = on_bus(
        cfg,
        lambda bus: ops.backup(
            bus, output, cfg.templates_dir, cfg.config, include_secrets=include_secrets
        ),
    )
    secrets = "with secrets" if include_secrets else "secrets redacted"
    out.print(
        f"wrote {output} (0600): {counts['ledger_entries']} ledger entries, "
        f"{counts['dead_letters']} dead letters, templates, config ({secrets})"
    )


def restore(
    archive: Path = typer.Argument(..., help="FILE.tar.gz from pressroom backup"),
) -> None:
    """Put back missing ledger entries and dead letters (templates/config: extract by hand)."""
    from shared import ops

    if not archive.is_file():
        fail(f"no backup at '{archive}'")
    counts = on_bus(settings(), lambda bus: ops.restore(bus, archive))
    out.print(
        f"restored {counts['ledger_entries']} ledger entries and "
        f"{counts['dead_letters']} dead letters"
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
