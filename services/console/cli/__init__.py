"""The `pressroom` command: run the stack, request and render reports, inspect and repair.

Presentation only — arguments, tables, exit codes — over services/console/requests.py and its
neighbours
(supervisor, readiness, probes, adhoc), which tests call directly. One module per group:
stack (up, worker, health, bus, config, backup), requests, templates, schedules, dlq, reports.
"""

from __future__ import annotations

import os

import typer

from services.console.cli import (
    cancel,
    console,
    dlq,
    logs,
    pdf,
    reports,
    requests,
    schedules,
    stack,
    templates,
)
from services.console.cli._common import err
from services.console.cli._output import literal
from shared.observe.logging import configure_logging

app = typer.Typer(
    help="Pressroom: event-driven report pipeline (NATS JetStream · FastStream · WeasyPrint).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(schedules.sources_app, name="sources")
app.add_typer(templates.templates_app, name="templates")
app.add_typer(dlq.dlq_app, name="dlq")
app.add_typer(schedules.schedule_app, name="schedule")
app.add_typer(pdf.pdf_app, name="pdf")
stack.register(app)
requests.register(app)
reports.register(app)
logs.register(app)
console.register(app)
cancel.register(app)


def main() -> None:
    """Entry point: usage errors are one line too, like every other error."""

    configure_logging(
        "pressroom-cli", json=False, level=os.environ.get("PRESSROOM_CLI_LOG_LEVEL", "WARNING")
    )
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        raise SystemExit(130) from None
    except Exception as error:
        # Click's usage errors (bad option, unknown command, wrong type) know how to say it.
        if hasattr(error, "format_message") and hasattr(error, "exit_code"):
            ctx = getattr(error, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            err.print(
                f"[bold red]error:[/] {literal(error.format_message())}{hint}", highlight=False
            )
            raise SystemExit(int(error.exit_code)) from None
        raise
    raise SystemExit(code if isinstance(code, int) else 0)
