"""The `pressroom` command: run the stack, request and render reports, inspect and repair.

Presentation only — arguments, tables, exit codes — over services/console/requests.py and its
neighbours
(supervisor, readiness, probes, adhoc), which tests call directly. One module per group:
stack (up, worker, health, bus, config, backup), requests, templates, schedules, dlq, reports.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

# Which module brings each command: a call imports that module only (start-up time: importing
# every command's dependencies — the web console, the services, S3 and PDF libraries — cost
# about a second of CPU on every `pressroom` call). Help and unknown commands import them all.
COMMANDS: dict[str, str] = {
    "sources": "schedules",
    "schedule": "schedules",
    "templates": "templates",
    "dlq": "dlq",
    "pdf": "pdf",
    **dict.fromkeys(("worker", "up", "health", "backup", "restore", "bus", "config"), "stack"),
    **dict.fromkeys(
        ("request", "render", "fonts", "status", "ls", "get", "deliver", "check"), "requests"
    ),
    **dict.fromkeys(("stats", "slo", "alerts", "clean", "cache"), "reports"),
    "logs": "logs",
    **dict.fromkeys(("console", "audit"), "console"),
    "cancel": "cancel",
}


def build(modules: Iterable[str] | None = None) -> typer.Typer:
    """The `pressroom` command with the commands of `modules` (default: all of them)."""
    import typer

    app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

    @app.callback()  # a group even when a call builds one module with one command
    def pressroom() -> None:
        """Pressroom: event-driven report pipeline (NATS JetStream · FastStream · WeasyPrint)."""

    for name in dict.fromkeys(modules or COMMANDS.values()):  # in the order of the table
        module = importlib.import_module(f"services.console.cli.{name}")
        module.register(app)
    return app


def command_of(argv: list[str]) -> str | None:
    """The command a `pressroom` call names: its first word (the root takes no option but
    `--help`, so `pressroom --help status` names none and shows every command)."""
    return argv[0] if argv and not argv[0].startswith("-") else None


def main() -> None:
    """Entry point: usage errors are one line too, like every other error."""

    argv = sys.argv[1:]
    if len(argv) == 2 and argv[0] == "worker" and not argv[1].startswith("-"):
        from services.console.worker import run_worker

        run_worker(argv[1])  # a service process: none of the CLI's libraries
        return
    import typer

    from services.console.cli._common import err
    from services.console.cli._output import literal
    from shared.observe.logging import configure_logging

    configure_logging(
        "pressroom-cli", json=False, level=os.environ.get("PRESSROOM_CLI_LOG_LEVEL", "WARNING")
    )
    try:
        name = command_of(sys.argv[1:])
        app = build([COMMANDS[name]] if name in COMMANDS else None)
        code = app(standalone_mode=False)
    except typer.Abort:
        raise SystemExit(130) from None
    except Exception as error:
        # Click's usage errors (bad option, unknown command, wrong type) know how to say it.
        if hasattr(error, "format_message") and hasattr(error, "exit_code"):
            ctx = getattr(error, "ctx", None)
            if not error.format_message():  # no arguments: the help was the answer
                raise SystemExit(int(error.exit_code)) from None
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            err.print(
                f"[bold red]error:[/] {literal(error.format_message())}{hint}", highlight=False
            )
            raise SystemExit(int(error.exit_code)) from None
        raise
    raise SystemExit(code if isinstance(code, int) else 0)
