"""`pressroom worker NAME`: one service process, what a container and `pressroom up` run.

It starts without the CLI's own libraries (Typer, Rich tables, the bus commands): only the
service's composition root is imported, in its own process. A worker is started at every
deployment, scale-out and restart, and a test run starts about 150 of them.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from shared.errors import PressroomError

SERVICES = ("scheduler", "fetcher", "renderer", "distributor")


def composition_root(name: str) -> Callable[[], Any]:
    """That service's composition root, imported here: one service's libraries per process."""
    if name == "fetcher":
        from services.fetcher.app import create_app as fetcher

        return fetcher
    if name == "renderer":
        from services.renderer.app import create_app as renderer

        return renderer
    if name == "distributor":
        from services.distributor.app import create_app as distributor

        return distributor
    if name == "scheduler":
        from services.scheduler.app import create_app as scheduler

        return scheduler
    raise PressroomError(f"no composition root for worker '{name}'")


def fail(message: str) -> NoReturn:
    """One line on stderr and exit 1, like every `pressroom` error (`up` restarts the worker);
    control characters in it (a name given on the command line) are written out."""
    from services.console.cli._output import visible

    print(f"error: {visible(message)}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def run_worker(name: str) -> None:
    """Run one service process until it is stopped; Ctrl-C while it starts is exit 130, with
    no traceback (`pressroom up`'s Ctrl-C reaches every worker, some of them still starting)."""
    try:
        _run(name)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _run(name: str) -> None:
    from shared.observe.logging import configure_logging
    from shared.secretenv import scrub
    from shared.settings import load_settings

    if name not in SERVICES:
        fail(f"unknown worker '{name}' (known: {', '.join(SERVICES)})")
    configure_logging(
        "pressroom-cli", json=False, level=os.environ.get("PRESSROOM_CLI_LOG_LEVEL", "WARNING")
    )
    scrub(role=name)  # the other roles' secrets are nothing this process (or a child) may use
    try:
        load_settings()  # said in one line now, not in a traceback from the service
    except PressroomError as error:
        fail(error.reason)
    try:
        app = composition_root(name)()
        asyncio.run(app.run())
    except KeyboardInterrupt:
        return  # stopped while it ran: as a stop by SIGTERM
    except PressroomError as error:
        fail(f"{name}: {error.reason}")
    except OSError as error:  # e.g. its health port is taken: one line, and `up` restarts it
        fail(f"{name}: {error}")
