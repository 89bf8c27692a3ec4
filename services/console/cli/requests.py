"""Commands about reports: request, render, status, ls, get, deliver, check, fonts."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit

import typer

from services.console import requests
from services.console.cli._audit import audited, outcome, requester
from services.console.cli._common import (
    age,
    checked,
    emit_json,
    err,
    fail,
    library,
    load_data_file,
    on_bus,
    out,
    parse_params,
    progress,
    run,
    settings,
)
from services.console.cli._output import Col, literal, print_table, shorten, visible
from services.console.requests import (
    artefact_bytes,
    artefact_url,
    build_request,
    channel_outcomes,
    deliver_again,
    ledger_entries,
    ledger_entry,
    queue_waits,
)
from shared.adapters.ledger import LedgerEntry, StageRecord, Status, entry_as_dict
from shared.downloadlinks import LOOPBACK_HOSTS
from shared.errors import PressroomError
from shared.settings import Settings

STATUSES: tuple[str, ...] = get_args(Status)  # what `ls --status` can match


@audited("request")
def request(
    file: Path | None = typer.Argument(None, help="A report.requested JSON file."),
    template: str | None = typer.Option(None, "--template", "-t"),
    param: list[str] = typer.Option([], "--param", "-p", help="key=value, repeatable"),
    data_file: Path | None = typer.Option(None, "--data-file", help="JSON/YAML params"),
    fmt: list[str] = typer.Option([], "--format", "-f", help="pdf, html, csv, xlsx; repeatable"),
    request_id: str | None = typer.Option(None, "--request-id"),
    to_folder: str | None = typer.Option(None, "--to-folder", help="file delivery folder"),
    email: list[str] = typer.Option([], "--email", help="email delivery recipient"),
    subject: str | None = typer.Option(None, "--subject", help="email subject (with --email)"),
    source: list[str] = typer.Option(
        [], "--source", help="NAME of a config source, or VAR=NAME / VAR=URL; repeatable"
    ),
    locale: str | None = typer.Option(None, "--locale", help="e.g. de-DE, ja: numbers, dates"),
    split: str | None = typer.Option(
        None, "--split", help="auto | on | off: lay a long report out in several processes"
    ),
    report_timeout: float | None = typer.Option(
        None, "--report-timeout", help="Seconds the report may take (`timeout`): then it fails."
    ),
    validate: bool = typer.Option(False, "--validate", help="Only check the payload."),
    wait: bool = typer.Option(False, "--wait", help="Wait for delivery or failure."),
    timeout: float = typer.Option(120.0, help="Seconds to wait with --wait."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Publish a report.requested (from a JSON file or flags); optionally wait for the outcome."""

    body: dict[str, Any] = {}
    if file is not None:
        try:
            body = json.loads(file.read_text())
        except (OSError, ValueError) as error:
            fail(f"cannot read request file '{file}': {error}")
    params = {**(load_data_file(data_file) if data_file else {}), **parse_params(param)}
    deliver: list[dict[str, Any]] = [{"channel": "file", "path": to_folder}] if to_folder else []
    if subject is not None and not email:
        fail("--subject is the email's subject: give --email RECIPIENT too")
    mail = {"channel": "email", "to": email, **({"subject": subject} if subject else {})}
    deliver += [mail] if email else []
    if source:
        body = {**body, "sources": [*body.get("sources", []), *map(source_spec, source)]}
    fields: dict[str, Any] = {"template": template, "formats": fmt, "request_id": request_id}
    fields |= {"locale": locale, "split": split, "timeout": report_timeout}
    req = checked(
        lambda: build_request(
            body, params=params, deliver=deliver, requested_by=requester(), **fields
        )
    )
    cfg = settings()
    check_template(cfg, req.template)
    if validate:
        if as_json:
            emit_json({"valid": True, "request": json.loads(req.model_dump_json())})
        else:
            out.print(f"valid report.requested for template '{literal(req.template)}'")
        return
    show_outcome(req.request_id, submit(cfg, req, wait, timeout), wait=wait, as_json=as_json)


def source_spec(text: str) -> dict[str, Any]:
    """`--source`: a config-file source by NAME (the template sees it as NAME with `_` for
    `-`), or VAR=NAME, or VAR=URL (an http source; PRESSROOM_SOURCE_ALLOW decides)."""

    if "://" in text.partition("=")[0]:
        fail(f"--source: name the variable the template reads, e.g. --source data={text}")
    var, sep, what = text.partition("=")
    if not sep:
        var, what = re.sub(r"\W", "_", text), text
    if not var or not what or not re.fullmatch(r"\w+", var):
        fail(f"--source expects NAME, VAR=NAME or VAR=URL (VAR: letters, digits, _), got '{text}'")
    if "://" in what:
        return {"name": var, "kind": "http", "url": what}
    return {"name": var, "source": what}


def submit(cfg: Settings, req: Any, wait: bool, timeout: float, schedule: Any = None) -> Any:
    """Publish (and with `wait`, wait, showing the stage on a terminal): the outcome or None."""

    with progress(req.request_id, "published") as show:
        return on_bus(
            cfg,
            lambda bus: requests.submit(
                bus, req, wait=wait, timeout=timeout, schedule=schedule, progress=show
            ),
            setup=False,  # a publisher identity may only publish and hear outcomes
        )


def show_outcome(rid: str, outcome: Any, *, wait: bool, as_json: bool) -> None:
    if as_json:
        found = {"subject": outcome.subject, "payload": outcome.payload} if outcome else None
        emit_json({"request_id": rid, **({"outcome": found} if wait else {})})
    elif not wait:
        out.print(f"published [cyan]{literal(rid)}[/]", soft_wrap=True)
    if outcome is None:
        return
    if outcome.delivered:
        if not as_json:
            out.print(f"[green]delivered[/] {literal(rid)}", soft_wrap=True)
            for ch in outcome.payload.get("channels", []):
                # whole, for the terminal to wrap: a newline inside a path breaks copying it
                out.print(f"  {literal(ch['channel'])}: {literal(ch['target'])}", soft_wrap=True)
        return
    if not as_json:
        reason = outcome.payload.get("reason")
        err.print(f"[red]failed[/] {literal(rid)}: {literal(reason)}", highlight=False)
    raise typer.Exit(1)


def check_template(cfg: Settings, name: str) -> None:
    """Refuse, before publishing, a template the renderer will not find — when this machine
    sees the templates folder; when it does not (a remote stack), the renderer decides."""
    if not cfg.templates_dir.is_dir():
        return
    templates = library(cfg)
    try:
        templates.resolve(name)
    except PressroomError as error:
        fail(f"{error.reason} in {cfg.templates_dir}; nothing was published")


@audited("render")
def render(
    template: str = typer.Option(..., "--template", "-t", help="Template name or path"),
    data_file: Path | None = typer.Option(None, "--data-file", help="JSON or YAML data"),
    param: list[str] = typer.Option([], "--param", "-p", help="key=value, overrides the file"),
    output: Path | None = typer.Option(None, "--output", "-o"),
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="pdf, html, csv (a file per table) or xlsx"
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and render, write nothing."),
    locale: str | None = typer.Option(None, "--locale", help="e.g. de-DE, ja: numbers, dates"),
    split: str | None = typer.Option(
        None, "--split", help="auto | on | off: lay a long report out in several processes"
    ),
    pdf_variant: str | None = typer.Option(
        None, "--pdf-variant", help="pdf/a-3b | pdf/a-2b | pdf/ua-1 | none"
    ),
    tagged: bool | None = typer.Option(
        None, "--tagged/--untagged", help="Tagged PDF (default: the template's)"
    ),
    author: str | None = typer.Option(None, "--author", help="The PDF's author"),
    subject: str | None = typer.Option(None, "--subject", help="The PDF's subject"),
    keyword: list[str] = typer.Option([], "--keyword", help="A keyword of the PDF (repeat)"),
    csv_bom: bool | None = typer.Option(
        None, "--csv-bom/--no-csv-bom", help="UTF-8 byte order mark in CSV (Excel)"
    ),
    watermark: str | None = typer.Option(None, "--watermark", help="Text across every page"),
    password_file: Path | None = typer.Option(
        None, "--password-file", help="File with the reader's password (AES-256)"
    ),
    allow_print: bool = typer.Option(True, "--print/--no-print", help="Protected PDF: print"),
    allow_copy: bool = typer.Option(False, "--copy/--no-copy", help="Protected PDF: copy text"),
    sign: bool = typer.Option(False, "--sign", help="Sign with the operator's key (PAdES)"),
    append: list[str] = typer.Option([], "--append", help="Allowed PDF of the templates folder"),
) -> None:
    """Render a template without the bus (the legacy generate_report.py)."""
    # Imported here, as for the other commands below: the renderer's libraries (WeasyPrint,
    # pikepdf, Jinja) and the channels' (S3, SMTP) would cost every `pressroom` call to start.
    from services.console.adhoc import adhoc_job, export_paths, output_format, pdf_options
    from services.renderer.split import render_capped

    cfg = settings()
    if output is None and not dry_run:
        fail("--output is required (or use --dry-run)")
    chosen = checked(lambda: output_format(fmt, output))
    data = {**(load_data_file(data_file) if data_file else {}), **parse_params(param)}
    formats = ("html",) if dry_run or chosen == "html" else (chosen,)
    pdf = pdf_options(pdf_variant, tagged, author, subject, keyword) or {}
    # Only what was given: the template's front matter `pdf:` gives the rest.
    finishing: dict[str, Any] = {"watermark": watermark, "sign": sign or None, "append": append}
    if password_file is not None or not allow_print or allow_copy:
        finishing["permissions"] = {"print": allow_print, "copy": allow_copy}
    pdf.update({k: v for k, v in finishing.items() if v})
    job = checked(
        lambda: adhoc_job(
            cfg,
            template,
            data,
            formats=formats,
            locale=locale,
            split=split,
            pdf=pdf or None,
            csv_bom=csv_bom,
            password_file=password_file,
        )
    )
    # Long reports are split over PRESSROOM_RENDER_WORKERS processes, as in the renderer.
    with progress(job.template, "rendering", tick=True):
        result = checked(lambda: render_capped(job, cfg))
    for notice in result.notices:
        err.print(f"[yellow]warning:[/] {literal(notice)}", highlight=False, soft_wrap=True)
    if dry_run:
        out.print(
            f"ok: '{literal(job.template)}' renders ({len(result.html):,} bytes of HTML); "
            "nothing written"
        )
        return
    assert output is not None
    output.parent.mkdir(parents=True, exist_ok=True)
    if chosen in ("csv", "xlsx"):
        exports = [e for e in result.exports if e.format == chosen]
        for path, export in zip(
            export_paths(output, chosen, [e.name for e in exports]), exports, strict=True
        ):
            path.write_bytes(export.content)
            out.print(f"wrote {literal(path)} ({len(export.content):,} bytes)", soft_wrap=True)
        return
    content = result.pdf if chosen == "pdf" else result.html
    assert content is not None
    output.write_bytes(content)
    extra = f", {result.pages} page(s)" if chosen == "pdf" else ""
    if chosen == "pdf" and (result.variant or result.tagged):
        extra += ", " + ", ".join(
            [*([result.variant] if result.variant else []), *(["tagged"] if result.tagged else [])]
        )
    out.print(f"wrote {literal(output)} ({len(content):,} bytes{extra})", soft_wrap=True)


def status(request_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """What happened to one request: stages, timings (with the waits between them),
    artefacts, channels, error."""

    async def read(bus: Any) -> Any:
        entry = await ledger_entry(bus, request_id)
        if not entry.channels and "distributor" in entry.stages:
            # A partly delivered report: what each channel did is in the deliveries record.
            entry.channels = await channel_outcomes(bus, request_id)
        return entry

    entry = on_bus(settings(), read)
    waits = queue_waits(entry)
    if as_json:
        emit_json({**entry_as_dict(entry), "waits": waits})
        return
    out.print(
        f"[bold]{literal(request_id)}[/] · {literal(entry.status)} · "
        f"template {literal(entry.template)}",
        soft_wrap=True,
    )
    for stage, rec in entry.stages.items():
        if stage in waits and round(waits[stage], 2):
            out.print(_wait_row(stage, rec, waits[stage]))
        secs = f"{rec.seconds:.2f}s" if rec.seconds is not None else "—"
        out.print(
            f"  {literal(stage):12} {literal(rec.state):8} {secs:>8}  attempts {rec.attempts}"
        )
        if rec.error and rec.state == "running":  # retries go on: why the last one failed
            out.print(
                f"    last error (attempt {rec.error_attempt}): {visible(rec.error)}",
                highlight=False,
                markup=False,
            )
        elif rec.error and rec.error != entry.error:  # the request's own error follows below
            out.print(f"    {visible(rec.error)}", highlight=False, markup=False)
    if entry.total_seconds is not None:
        out.print(total_line(entry, waits))
    # Paths, keys and targets whole on one line (the terminal wraps them): a newline inserted
    # inside one would make it impossible to copy.
    for art in entry.artefacts:
        out.print(
            f"  artefact {literal(art.ext)}: {literal(art.key)} ({art.size:,} bytes)",
            soft_wrap=True,
        )
    for ch in entry.channels:
        mark = "ok" if ch.ok else "FAILED"
        out.print(
            f"  {literal(ch.channel)}: {mark} {literal(ch.target)} {literal(ch.detail)}",
            soft_wrap=True,
        )
    if entry.burst is not None:
        out.print(f"  burst of {entry.burst.total:,}: {literal(entry.burst.summary())}")
    if entry.cancelled_at is not None:
        by = f" by {literal(entry.cancelled_by)}" if entry.cancelled_by else ""
        out.print(f"  cancelled {entry.cancelled_at:%Y-%m-%d %H:%M:%S} UTC{by}")
    if entry.skipped:
        out.print(f"  {literal(entry.skipped)}")
    if entry.error:
        out.print(f"  [red]error[/]: {literal(entry.error)}")


def _wait_row(stage: str, record: StageRecord, seconds: float) -> str:
    """The time before a stage: in its queue; before a retried stage's last attempt, also
    its earlier attempts and their backoff (the ledger keeps no timing of those)."""
    if record.attempts > 1:
        return (
            f"  {'(retrying)':12} {'waiting':8} {seconds:>7.2f}s  before {stage} attempt "
            f"{record.attempts}"
        )
    return f"  {'(queued)':12} {'waiting':8} {seconds:>7.2f}s  before {stage}"


def total_line(entry: LedgerEntry, waits: dict[str, float]) -> str:
    """`total 2.71s: 2.60s in stages, 0.11s queued`: the parts are the rows above, as
    printed, so they add up to the total (publish of the request to delivery)."""
    total = round(entry.total_seconds or 0.0, 2)
    records = entry.stages
    worked = sum(round(r.seconds, 2) for r in records.values() if r.seconds is not None)
    shown = {stage: round(secs, 2) for stage, secs in waits.items()}
    queued = sum(s for stage, s in shown.items() if records[stage].attempts == 1)
    retrying = sum(s for stage, s in shown.items() if records[stage].attempts > 1)
    line = f"  total {total:.2f}s: {worked:.2f}s in stages, {queued:.2f}s queued"
    if retrying:
        line += f", {retrying:.2f}s retrying"
    other = round(total - worked - queued - retrying, 2)
    if other >= 0.01:  # a stage without its worker's timing (an entry from an old backup)
        line += f", {other:.2f}s not timed by a stage"
    elif other <= -0.01:  # the next stage picked up the event before the finish was written
        line += f", less {-other:.2f}s where stages overlapped"
    return line


def list_requests(
    limit: int = typer.Option(20, help="How many, newest first."),
    status_: str | None = typer.Option(None, "--status", help=", ".join(STATUSES)),
    template: str | None = typer.Option(None, "--template"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Recent requests from the ledger."""

    if status_ is not None and status_ not in STATUSES:
        fail(f"unknown status '{status_}' (known: {', '.join(STATUSES)})")
    if limit < 1:
        fail(f"--limit is how many requests to list: 1 or more, got {limit}")
    found = on_bus(settings(), lambda bus: ledger_entries(bus, status=status_, template=template))
    entries = found[:limit]
    if as_json:
        emit_json([entry_as_dict(e) for e in entries])
        return
    if not entries:
        filters = [f"--{k} {v}" for k, v in (("status", status_), ("template", template)) if v]
        out.print(
            f"no requests match {literal(' '.join(filters))}" if filters else "no requests yet"
        )
        return
    columns = [Col("request_id"), Col("status"), Col("template"), Col("updated (UTC)")]
    columns += [Col("total s", justify="right"), Col("error", long=True)]
    rows = [
        [e.request_id, e.status, e.template or "", _updated(e), _total(e), _error(e)]
        for e in entries
    ]
    print_table(out, columns, rows)


def _updated(entry: Any) -> str:
    return str(entry.updated_at.strftime("%m-%d %H:%M:%S"))  # recent: the year is noise


def _error(entry: Any) -> str:
    burst = f"burst: {entry.burst.summary()}" if entry.burst is not None else ""
    return shorten(entry.last_error or burst or entry.skipped or "", 160)


def _total(entry: Any) -> str:
    return f"{entry.total_seconds:.2f}" if entry.total_seconds is not None else ""


@audited("get")
def get(
    request_id: str,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Default: REQUEST_ID.FORMAT in the current folder."
    ),
    fmt: str = typer.Option("pdf", "--format", "-f"),
    url: bool = typer.Option(
        False, "--url", help="Print a download link instead (the console's, or S3's)."
    ),
    expires: str = typer.Option("24h", help="How long the --url link works."),
) -> None:
    """Download a rendered artefact (checked against its recorded sha256), or link to it."""

    cfg = settings()
    if url:
        lasts = age(expires, "--expires")
        link = on_bus(cfg, lambda bus: artefact_url(bus, request_id, fmt, lasts))
        sys.stdout.write(link + "\n")
        if not cfg.public_url and urlsplit(link).hostname in LOOPBACK_HOSTS:
            note = "a link to the console on this machine; PRESSROOM_PUBLIC_URL: links for others"
            err.print(f"note: {note}", highlight=False, markup=False)
        return
    if output is None:
        output = Path(default_file_name(request_id, fmt))
        if output.exists():
            fail(f"'{output}' exists already: give --output FILE (the same name overwrites it)")
    data = on_bus(cfg, lambda bus: artefact_bytes(bus, request_id, fmt))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    out.print(f"wrote {literal(output)} ({len(data):,} bytes)", soft_wrap=True)


def default_file_name(request_id: str, fmt: str) -> str:
    """`<request-id>.<fmt>` with only safe characters (never a path, never hidden)."""

    stem = re.sub(r"[^A-Za-z0-9._-]", "_", request_id).lstrip(".") or "report"
    return f"{stem}.{re.sub(r'[^A-Za-z0-9]', '', fmt) or 'pdf'}"


@audited("re-deliver")
def deliver(
    request_id: str,
    email: list[str] = typer.Option([], "--email", help="Recipient (repeatable)"),
    s3: str | None = typer.Option(None, "--s3", help="bucket/key"),
    webhook: str | None = typer.Option(None, "--webhook", help="URL"),
    folder: str | None = typer.Option(None, "--folder", help="Folder under PRESSROOM_OUT_DIR"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Deliver an already rendered report again (the legacy send-report.py)."""

    bucket, _, key = (s3 or "").partition("/")
    deliveries: list[dict[str, Any]] = [{"channel": "email", "to": email}] if email else []
    deliveries += [{"channel": "s3", "bucket": bucket, "key": key or None}] if s3 else []
    deliveries += [{"channel": "webhook", "url": webhook}] if webhook else []
    deliveries += [{"channel": "file", "path": folder}] if folder else []
    if not deliveries:
        fail("name at least one of --email, --s3, --webhook, --folder")
    results = on_bus(settings(), lambda bus: deliver_again(bus, request_id, deliveries))
    outcome(", ".join(f"{r['channel']}: {'ok' if r['ok'] else 'failed'}" for r in results))
    if as_json:
        emit_json(results)
    for result in [] if as_json else results:
        mark = "[green]ok[/]" if result["ok"] else "[red]failed[/]"
        where = f"{literal(result['channel'])}: {literal(result['target'])}"
        out.print(f"{mark} {where} {literal(result['detail'])}", soft_wrap=True)
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


@audited("check")
def check(
    what: str = typer.Argument(..., help="email | webhook"),
    to: str | None = typer.Option(None, "--to", help="email: also send a test message here"),
    url: str | None = typer.Option(None, "--url", help="webhook: URL to send a signed ping to"),
) -> None:
    """Test the email or webhook configuration (the legacy test_email_config)."""
    from services.console.probes import check_email, check_webhook  # start-up time (above)

    cfg = settings()
    if what == "email":
        out.print(literal(run(check_email(cfg, to))))
    elif what == "webhook":
        if not url:
            fail("give --url for the webhook check")
        out.print(literal(run(check_webhook(cfg, url))))
    else:
        fail(f"unknown check '{what}' (known: email, webhook)")


def fonts(as_json: bool = typer.Option(False, "--json")) -> None:
    """The font families the renderer uses and the scripts each covers."""
    from services.renderer import fonts as catalogue  # start-up time (above)

    cfg = settings()
    extra = catalogue.extra_dirs_from(cfg.fonts_dir)
    found = catalogue.families(extra)
    fast = catalogue.harfbuzz_subset_available()
    if as_json:
        emit_json(
            {
                "families": [f.as_dict() for f in found],
                "font_dirs": [str(d) for d in catalogue.font_dirs(extra)],
                "missing_glyphs": cfg.missing_glyphs,
                "subsetter": "harfbuzz" if fast else "fonttools",
            }
        )
        return
    rows = [
        [f.name, first(sorted(f.styles), 3), first(f.scripts, 5), _origin(f.source)] for f in found
    ]
    print_table(out, [Col("family"), Col("styles"), Col("scripts", long=True), Col("from")], rows)
    out.print(f"a character no font has: {cfg.missing_glyphs} (PRESSROOM_MISSING_GLYPHS)")
    if not fast:
        err.print(
            "[yellow]warning:[/] HarfBuzz-Subset is not installed (Debian: libharfbuzz-subset0): "
            "renders take ~4x the CPU, 10-25 s more with Chinese, Japanese or Korean text",
            highlight=False,
        )


def _origin(source: str) -> str:
    return "yours" if source == "PRESSROOM_FONTS_DIR" else source


def first(items: list[str], n: int) -> str:
    return ", ".join(items[:n]) + (f" +{len(items) - n}" if len(items) > n else "")


def register(app: typer.Typer) -> None:
    app.command("request")(request)
    app.command("render")(render)
    app.command("fonts")(fonts)
    app.command("status")(status)
    app.command("ls")(list_requests)
    app.command("get")(get)
    app.command("deliver")(deliver)
    app.command("check")(check)
