"""`audited`: the one decorator that puts a CLI command into the audit trail.

Every command that changes state or reveals data wears it (`pressroom audit` lists them; the
table is in docs/operations.md): who ran it (the login name, and the bus identity the CLI acts
as), what (the command and its arguments, secrets masked), when, and how it ended (`ok`, the
one-line error, or the exit code). A command may say more about its outcome with `outcome()`.
When the bus cannot be reached the record waits in `<data dir>/audit-pending.jsonl` and goes
into the trail with the next audited command that reaches it, its own time kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import typer
from typer.models import ArgumentInfo, OptionInfo

from services.console import audit
from services.console.busaccess import Bus, open_bus
from services.console.cli._common import failures
from services.console.redact import redacted_text
from shared.bus.identity import identity
from shared.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., None])
PRESENTATION = {"as_json", "yes", "wait", "timeout"}  # how it is shown or waited for, not what
PENDING = "audit-pending.jsonl"
RECORDED = ("who", "action", "target", "outcome", "source")
_said: list[str] = []


def requester() -> str:
    """`requested_by` of what the CLI publishes: `cli:` and the login name the audit trail
    records for the same person (`audit.cli_identity`: the login name, else the uid's), so a
    request and the audited command that sent it name one user, with or without USER set."""
    return f"cli:{audit.cli_identity()[0]}"


def outcome(text: str) -> None:
    """What the running audited command achieved, in a few words ("3 replayed")."""
    _said.append(text)


def _flag(name: str, info: OptionInfo) -> str:
    decls = [d for d in (info.param_decls or ()) for d in d.split("/") if d.startswith("--")]
    return decls[0] if decls else f"--{name.replace('_', '-')}"


def _target(command: Callable[..., Any], arguments: dict[str, Any]) -> str:
    """The command's arguments as typed (those left at their default are left out)."""
    words: list[str] = []
    for name, parameter in inspect.signature(command).parameters.items():
        value, info = arguments.get(name), parameter.default
        if name in PRESENTATION or value is None:
            continue
        if isinstance(info, OptionInfo):
            if value == info.default or value == []:
                continue
            flag = _flag(name, info)
            if value is True:
                words.append(flag)
            elif value is False:
                words.append(f"--no-{flag[2:]}")
            else:
                values = value if isinstance(value, list | tuple) else [value]
                words += [f"{flag} {v}" for v in values]
        elif isinstance(info, ArgumentInfo) or info is inspect.Parameter.empty:
            words += [str(v) for v in (value if isinstance(value, list | tuple) else [value])]
    return redacted_text(" ".join(words))


def audited(action: str) -> Callable[[F], F]:
    """Record every run of the command as `action` (e.g. "dlq replay")."""

    def wrap(command: F) -> F:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> None:
            _said.clear()
            failures.clear()
            ended = "ok"
            try:
                command(*args, **kwargs)
            except (typer.Exit, click.exceptions.Exit, SystemExit) as stop:
                code = getattr(stop, "exit_code", getattr(stop, "code", 1))
                if code not in (0, None):
                    ended = redacted_text(failures[-1]) if failures else f"exit {code}"
                raise
            except (typer.Abort, click.exceptions.Abort):
                ended = "aborted"
                raise
            except Exception as error:
                ended = f"error: {type(error).__name__}"
                raise
            finally:
                if ended == "ok" and _said:
                    ended = _said[-1]
                bound = inspect.signature(command).bind_partial(*args, **kwargs).arguments
                _record(action, _target(command, bound), ended)

        return run  # type: ignore[return-value]

    return wrap


def _record(action: str, target: str, ended: str) -> None:
    """Into the trail; kept on disk when the bus is out of reach (never fails the command)."""
    try:
        cfg = load_settings()  # quietly: a bad configuration was said once, by the command
    except Exception:
        return
    who, source = audit.cli_identity()
    role = "ops"
    with contextlib.suppress(Exception):  # settings that name no identity: said without it
        role = identity(cfg, "ops").role
        source = f"{source} as {role}"
    line = {
        "at": datetime.now(UTC).isoformat(),
        "who": who,
        "action": action,
        "target": target,
        "outcome": ended,
        "source": source,
    }
    pending = Path(cfg.data_dir) / PENDING
    try:
        if role != "ops":  # a publisher's seed may not write the trail: kept here for ops
            raise PermissionError(role)
        asyncio.run(asyncio.wait_for(_write(cfg, line), 15))
    except Exception:
        with contextlib.suppress(OSError):
            pending.parent.mkdir(parents=True, exist_ok=True)
            with pending.open("a") as file:  # said by `pressroom audit`, not here: the
                file.write(json.dumps(line) + "\n")  # command's own output stays as it was


async def _write(cfg: Settings, line: dict[str, Any]) -> None:
    async with open_bus(cfg, setup=False) as bus:
        await flush(bus)
        await _into_trail(bus, line)


async def _into_trail(bus: Bus, line: dict[str, Any]) -> None:
    fields = {k: str(v) for k, v in line.items() if k in RECORDED}
    await audit.record(bus, at=datetime.fromisoformat(str(line["at"])), **fields)


async def flush(bus: Bus) -> int:
    """Records kept on disk while the bus was out of reach, into the trail (their own time);
    what cannot be written now stays on disk."""
    pending = Path(bus.settings.data_dir) / PENDING
    taken = pending.with_name(f"{PENDING}.{os.getpid()}")
    try:
        pending.rename(taken)  # a command that ends meanwhile starts a new file
        lines = taken.read_text().splitlines()
    except OSError:
        return 0
    done = 0
    try:
        for text in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):  # damaged: dropped
                await _into_trail(bus, json.loads(text))
            done += 1
    finally:
        if done < len(lines):
            with pending.open("a") as file:
                file.writelines(f"{text}\n" for text in lines[done:])
        taken.unlink(missing_ok=True)
    return done
