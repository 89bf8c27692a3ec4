"""`pressroom console` (the web console and its users) and `pressroom audit`."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import typer

from services.console.audit import trail
from services.console.cli._audit import audited, flush
from services.console.cli._common import checked, emit_json, on_bus, out, settings
from services.console.cli._output import Col, literal, print_table
from services.console.requests import parse_since
from services.console.web.auth import add_user, load_users, remove_user, users_file
from shared.downloadlinks import (
    console_address,
    forget_console_address,
    record_console_address,
)
from shared.observe.logging import configure_logging, get_logger

console_app = typer.Typer(
    help="The web console: serve it (no sub-command), manage its users.",
    invoke_without_command=True,
)
user_app = typer.Typer(help="Console users (argon2-hashed passwords).", no_args_is_help=True)
console_app.add_typer(user_app, name="user")


@console_app.callback()
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Default: PRESSROOM_CONSOLE_HOST (127.0.0.1)."),
    port: int | None = typer.Option(None, help="Default: PRESSROOM_CONSOLE_PORT (8480)."),
) -> None:
    """Serve the console until Ctrl-C (as the ops bus identity)."""
    if ctx.invoked_subcommand is not None:
        return
    # Imported here: the web app and its server cost `pressroom audit` and `console user`
    # their start-up time.
    import uvicorn

    from services.console.web.app import create_app

    cfg = settings()
    bind, where = host or cfg.console_host, port if port is not None else cfg.console_port
    # On a terminal, lines for a person; elsewhere (under `pressroom up`, in a container) JSON
    # lines like every worker's, uvicorn's own messages included.
    interactive = sys.stdout.isatty()
    if not interactive:
        configure_logging("pressroom-console", level=cfg.log_level)
        for handler in logging.getLogger().handlers:
            handler.setFormatter(_JsonLines())
    log = get_logger("pressroom.console")

    def say(text: str) -> None:
        if interactive:
            out.print(text, highlight=False, markup=False)
        else:
            log.info(text)

    if not checked(lambda: load_users(users_file(cfg))) and not cfg.oidc_issuer:
        say(
            "note: no console users yet, so nobody can sign in: "
            "`pressroom console user add NAME --role ops`"
        )
    say(f"console on http://{bind}:{where} · Ctrl-C to stop")
    # What `get --url` links to when PRESSROOM_PUBLIC_URL is unset, while this console runs
    # (forgotten when it stops, a failed bind included).
    address = console_address(cfg, bind, where) if where else None
    if address:
        record_console_address(cfg, address)
    try:
        uvicorn.run(
            create_app(cfg),
            host=bind,
            port=where,
            log_level="warning",
            log_config=None if not interactive else uvicorn.config.LOGGING_CONFIG,
            access_log=False,
            proxy_headers=True,
        )
    finally:
        if address:
            forget_console_address(cfg, address)


class _JsonLines(logging.Formatter):
    """Standard-library log records (uvicorn, nats-py) as the JSON lines structlog writes."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "service": "pressroom-console",
            "logger": record.name,
            "event": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


@user_app.command("add")
@audited("console user add")
def user_add(
    name: str,
    role: str = typer.Option(..., "--role", help="viewer | author | ops"),
) -> None:
    """Add a user (or set their password and role); the password is read from stdin or a
    prompt, never from the command line."""
    cfg = settings()
    if sys.stdin.isatty():
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    path = users_file(cfg)
    checked(lambda: add_user(path, name, role, password))
    out.print(f"user {literal(name)} ({role}) saved in {literal(path)}", soft_wrap=True)


@user_app.command("ls")
def user_ls(as_json: bool = typer.Option(False, "--json")) -> None:
    """Console users and their roles."""
    users = checked(lambda: load_users(users_file(settings())))
    if as_json:
        emit_json([{"name": n, "role": r} for n, (r, _) in sorted(users.items())])
        return
    if not users:
        out.print("no console users")
        return
    print_table(out, [Col("name"), Col("role")], [[n, r] for n, (r, _) in sorted(users.items())])


@user_app.command("rm")
@audited("console user rm")
def user_rm(name: str) -> None:
    """Remove a user (their sessions end at their next request)."""
    path = users_file(settings())
    checked(lambda: remove_user(path, name))
    out.print(f"removed {literal(name)}")


def audit(
    since: str = typer.Option("7d", help="How far back: 24h, 7d, 4w …"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Who did what in the console and the CLI (when, from where), newest first."""
    cfg = settings()
    moment = checked(lambda: parse_since(since))

    async def read(bus: Any) -> Any:
        await flush(bus)  # what was kept on disk while the bus was out of reach
        return await trail(bus, since=moment)

    records = on_bus(cfg, read, setup=False)
    if as_json:
        emit_json([r.as_dict() for r in records])
        return
    if not records:
        out.print(f"nothing recorded since {literal(since)}")
        return
    print_table(
        out,
        [Col("when (UTC)"), Col("who"), Col("what"), Col("target", long=True), Col("outcome")],
        [[f"{r.at:%Y-%m-%d %H:%M:%S}", r.who, r.action, r.target, r.outcome] for r in records],
    )


def register(app: typer.Typer) -> None:
    app.add_typer(console_app, name="console")
    app.command()(audit)
