"""What every command shares: the consoles, one-line errors, settings, the bus, progress."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
import yaml
from nats.errors import Error as NatsError
from rich.console import Console
from rich.markup import escape

from services.console.busaccess import open_bus
from services.console.cli._output import literal, visible
from services.console.requests import parse_age
from shared.bus.identity import REFUSALS
from shared.errors import PressroomError
from shared.schedules import load_schedules
from shared.settings import Settings, load_settings

if TYPE_CHECKING:
    from services.console.busaccess import Bus

T = TypeVar("T")

# No `:name:` emoji codes: text from requests is shown as it was written.
out = Console(emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)


failures: list[str] = []  # what `fail` said, for the audit trail (cli/_audit.py)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr and exit `code`; `message` is plain text (it often quotes a request)."""
    failures.append(message)
    err.print(f"[bold red]error:[/] {literal(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run an async operation; Pressroom errors become one line and exit 1."""

    try:
        return asyncio.run(coro)
    except PressroomError as error:
        fail(error.reason)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (NatsError, TimeoutError) as error:
        # A refused request is never answered: name the refusal rather than "timeout".
        fail(REFUSALS.last() or f"NATS: {error or type(error).__name__}")


def on_bus(cfg: Settings, operation: Callable[[Bus], Awaitable[T]], *, setup: bool = True) -> T:
    """Run one operation of services/console/requests.py on a fresh connection (the ops identity),
    the
    one
    way every command reaches the bus; `setup=False` for what a publisher identity may do."""

    async def main() -> T:
        async with open_bus(cfg, setup=setup) as bus:
            return await operation(bus)

    return run(main())


def settings() -> Settings:
    try:
        return load_settings()
    except PressroomError as error:  # a YAML file that does not parse, too
        fail(error.reason)


def checked(value: Callable[[], T]) -> T:
    """A Pressroom error from a plain call becomes the one-line error."""
    try:
        return value()
    except PressroomError as error:
        fail(error.reason)


def age(text: str, option: str) -> timedelta:
    return checked(lambda: parse_age(text, option))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def parse_params(params: list[str]) -> dict[str, Any]:
    """`k=v` pairs; values that parse as JSON (numbers, lists, true) keep their type."""
    result: dict[str, Any] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"--param expects key=value, got '{item}'")
        try:
            result[key] = json.loads(value)
        except ValueError:
            result[key] = value
    return result


def load_data_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        fail(f"data file '{path}' not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as error:
        fail(f"cannot parse data file '{path}': {str(error).splitlines()[0]}")
    if not isinstance(data, dict):
        fail(f"data file '{path}' must hold an object at the top level")
    return data


def library(cfg: Settings, folder: Path | None = None) -> Any:
    root = folder or cfg.templates_dir
    if not root.is_dir():
        fail(f"templates folder '{root}' does not exist (set PRESSROOM_TEMPLATES_DIR)")
    from services.renderer.templating import TemplateLibrary  # Jinja: start-up time elsewhere

    return TemplateLibrary(root)


def schedules(cfg: Settings) -> Any:
    return checked(lambda: load_schedules(cfg.schedules))


def validate_capped(cfg: Settings, folder: Path, names: list[str] | None) -> Any:
    # Imported here: Jinja and the render pool cost every other command's start-up time.
    from services.renderer.pool import run_capped
    from services.renderer.templating import validate_in_folder

    return checked(
        lambda: run_capped(validate_in_folder, str(folder), names, label="validation", settings=cfg)
    )


def config_says(cfg: Settings, section: str) -> str:
    """Why a section of the config file is empty."""
    if cfg.config is None:
        return "PRESSROOM_CONFIG is not set (point it at a YAML file, e.g. deploy/pressroom.yaml)"
    return f"the config file {cfg.config} lists no {section}"


def status_line(subject: str, text: str, elapsed: str, width: int) -> str:
    """`subject: text · 12s` within `width` (less the spinner): the elapsed time always
    shows whole; a long subject (an id) is cut in the middle first, then the text."""
    subject, text = visible(subject), visible(text)
    room = width - 3 - len(f": · {elapsed}") - 1
    if len(subject) + len(text) > room:
        keep = max(room - len(text), 13)
        if len(subject) > keep:
            head = (keep - 1) // 2
            subject = f"{subject[:head]}…{subject[len(subject) - (keep - 1 - head) :]}"
    if len(subject) + len(text) > room:
        text = text[: max(room - len(subject) - 1, 0)] + "…"
    return f"{escape(subject)}: {escape(text)} · {elapsed}"


@contextmanager
def progress(subject: str, first: str, *, tick: bool = False) -> Iterator[Callable[[str], None]]:
    """On a terminal, a Rich status line: what `subject` is doing and for how long (`tick`:
    the elapsed time counts up by itself while the caller blocks). Elsewhere (pipes, CI logs)
    nothing: the output stays what scripts parse."""
    if not err.is_terminal:
        yield lambda text: None
        return

    started, doing, done = time.monotonic(), [first], threading.Event()
    with err.status(status_line(subject, first, "0s", err.width)) as status:

        def show(text: str) -> None:
            doing[0] = text
            elapsed = f"{time.monotonic() - started:.0f}s"
            status.update(status_line(subject, text, elapsed, err.width))

        def ticker() -> None:
            while not done.wait(1):
                show(doing[0])

        clock = threading.Thread(target=ticker, daemon=True)
        if tick:
            clock.start()
        try:
            yield show
        finally:
            done.set()
