"""`pressroom dlq`: dead letters — list, show, replay, purge."""

from __future__ import annotations

import json
import sys
from contextlib import suppress

import typer
from rich.progress import Progress

from services.console.cli._audit import audited, outcome
from services.console.cli._common import checked, emit_json, err, fail, on_bus, out, settings
from services.console.cli._output import Col, literal, print_table, visible
from services.console.deadletters import (
    DEAD_LETTER_STAGES,
    dead_letters,
    find_dead_letters,
    purge,
    replay_many,
)
from services.console.requests import parse_since

dlq_app = typer.Typer(help="Dead letters: list, show, replay, purge.", no_args_is_help=True)

ALL_HELP = "Every dead letter (instead of IDs)."


def _targets(refs: list[str] | None, all_: bool) -> list[str] | None:
    """Ids or request ids, or None for every dead letter: --all means the same for replay and
    purge."""
    if refs and all_:
        fail("give dead-letter ids (or request ids) or --all, not both")
    if not refs and not all_:
        fail("give dead-letter ids (or request ids) or --all")
    return None if all_ else list(refs or [])


REFS_HELP = "Dead-letter ids, or request ids (all of a request's dead letters)."


@dlq_app.command("ls")
def dlq_ls(
    stage: str | None = typer.Option(None, help="fetcher, renderer or distributor"),
    reason: str | None = typer.Option(None, help="Text the reason contains"),
    since: str | None = typer.Option(None, help="ISO time or age like 2h, 30m, 1d"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Dead letters, oldest first."""

    if stage is not None and stage not in DEAD_LETTER_STAGES:
        fail(f"no stage '{stage}' (stages: {', '.join(DEAD_LETTER_STAGES)})")
    cutoff = checked(lambda: parse_since(since)) if since else None
    records = on_bus(settings(), dead_letters)
    rows = [
        r.summary()
        for r in records
        if (not stage or r.letter.stage == stage)
        and (not reason or reason.lower() in r.letter.reason.lower())
        and (cutoff is None or (r.time is not None and r.time.timestamp() >= cutoff.timestamp()))
    ]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        given = (("stage", stage), ("reason", reason), ("since", since))
        filters = " ".join(f"--{k} {v}" for k, v in given if v is not None)
        out.print(
            f"no dead letters match {literal(filters)} ({len(records)} in all)"
            if filters and records
            else "no dead letters: nothing has failed for good"
        )
        return
    columns = [Col("id", justify="right"), Col("time"), Col("stage"), Col("request_id")]
    columns += [Col("attempts", justify="right"), Col("reason", long=True)]
    cells = ("id", "time", "stage", "request_id", "attempts", "reason")
    table = [["" if row[c] is None else str(row[c]) for c in cells] for row in rows]
    for line in table:
        line[1] = line[1][:19]  # to the second
    print_table(out, columns, table)


@dlq_app.command("show")
@audited("dlq show")
def dlq_show(
    ref: str = typer.Argument(..., metavar="ID|REQUEST_ID", help="Dead-letter id or request id"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One dead letter, with its original message (the newest, given a request id)."""

    records = on_bus(settings(), lambda bus: find_dead_letters(bus, ref))
    if not records:
        fail(f"no dead letter with {'id' if ref.isdigit() else 'request_id'} {ref}")
    record = records[-1]
    if len(records) > 1:
        others = ", ".join(str(r.id) for r in records[:-1])
        err.print(
            f"note: {len(records)} dead letters for {literal(ref)}; the newest (others: {others})"
        )
    if as_json:
        emit_json({**record.summary(), "letter": json.loads(record.letter.model_dump_json())})
        return
    for key, value in record.summary().items():
        out.print(f"[bold]{key}[/]: {literal(value)}", highlight=False)
    out.print("[bold]payload[/]:")
    payload = record.letter.payload
    with suppress(ValueError):  # indented JSON, printed as it is: never re-wrapped mid-word
        payload = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    out.print(visible(payload, lines=True), highlight=False, markup=False, soft_wrap=True)


@dlq_app.command("replay")
@audited("replay dead letters")
def dlq_replay(
    ids: list[str] = typer.Argument(None, metavar="[ID|REQUEST_ID]...", help=REFS_HELP),
    all_: bool = typer.Option(False, "--all", help=ALL_HELP),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Republish dead letters to their original subjects (fresh attempt count)."""

    targets = _targets(ids, all_)
    with Progress(console=err, disable=as_json, transient=True) as bar:
        task = bar.add_task("replaying", total=None, visible=False)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, visible=total >= 5)

        replayed = on_bus(settings(), lambda bus: replay_many(bus, targets, advance))
    outcome(f"{len(replayed)} replayed")
    if as_json:
        emit_json({"replayed": replayed})
    else:
        out.print(f"replayed {len(replayed)} dead letter(s)")


@dlq_app.command("purge")
@audited("purge dead letters")
def dlq_purge(
    ids: list[str] = typer.Argument(None, metavar="[ID|REQUEST_ID]...", help=REFS_HELP),
    all_: bool = typer.Option(False, "--all", help=ALL_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before purging --all."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Delete dead letters for good (--all asks first, unless --yes)."""

    targets = _targets(ids, all_)
    if targets is None and not yes:
        if not sys.stdin.isatty():
            fail("purging every dead letter cannot be undone: add --yes to confirm")
        if not typer.confirm("Delete every dead letter for good?", default=False):
            raise typer.Exit(1)
    removed = on_bus(settings(), lambda bus: purge(bus, targets))
    outcome(str(removed))
    if as_json:
        emit_json({"purged": removed})
    else:
        out.print(f"purged {removed} dead letter(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")
