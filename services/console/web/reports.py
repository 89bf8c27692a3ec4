"""The reports pages: the newest reports (live over server-sent events), one report with its
timeline, request, deliveries and artefacts, and its actions (re-deliver, replay)."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from pypdf import PdfReader
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)

from services.console import busaccess, cancel, deadletters, redact, requests
from services.console.web.index import Filters, Row
from services.console.web.kit import (
    NO_BUFFER,
    Console,
    audit_action,
    current_user,
    finish_action,
    on_loopback,
    page,
    render_page,
    sse_event,
    templates_env,
    wants_json,
)
from shared.adapters.ledger import PIPELINE, LedgerEntry, entry_as_dict
from shared.bus.names import STREAM
from shared.downloadlinks import (
    download_link,
    mint_token,
)
from shared.errors import PressroomError
from shared.events import CHILD_SEPARATOR

PAGE_SIZE = 50
CHILDREN_PAGE = 50  # a burst's children per page of its parent (a burst may have 10,000)
STATUSES = ("requested", "fetched", "rendered", "delivered", "failed", "conflict")


# ---- reports -------------------------------------------------------------------------------
def report_filters(request: Request) -> Filters:
    q = request.query_params

    def moment(name: str) -> datetime | None:
        text = q.get(name, "").strip()
        if not text:
            return None
        try:
            return requests.parse_since(text, name)
        except PressroomError:
            return None

    return Filters(
        status=q.get("status", "") if q.get("status", "") in STATUSES else "",
        template=q.get("template", "").strip(),
        requester=q.get("requester", "").strip(),
        schedule=q.get("schedule", "").strip(),
        since=moment("since"),
        until=moment("until"),
        q=q.get("q", "").strip(),
    )


def row_dict(row: Row) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "status": row.status,
        "template": row.template,
        "requested_by": row.requested_by,
        "schedule": row.schedule or None,
        "requested_at": row.requested_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "error": row.error or None,
        "total_seconds": row.total_seconds,
    }


@page()
async def reports(request: Request) -> Response:
    console: Console = request.app.state.console
    filters = report_filters(request)
    found = console.index.page(filters, request.query_params.get("cursor") or None, PAGE_SIZE)
    query = filters.query()
    if wants_json(request):
        return JSONResponse(
            {
                "reports": [row_dict(r) for r in found.rows],
                "next_cursor": found.next_cursor,
                "indexed": len(console.index),
                "loading": not console.index.loaded.is_set(),
            }
        )
    return render_page(
        request,
        "reports.html",
        {
            "rows": found.rows,
            "filters": filters,
            "query": query,
            "first_page": not request.query_params.get("cursor"),
            "next_url": (
                f"/reports?{urlencode({**query, 'cursor': found.next_cursor})}"
                if found.next_cursor
                else None
            ),
            "stream_url": f"/reports/stream?{urlencode(query)}",
            "statuses": STATUSES,
            "templates": sorted(console.index.templates),
            "schedules": sorted(console.index.schedules),
            "indexed": len(console.index),
            "loading": not console.index.loaded.is_set(),
        },
    )


@page()
async def reports_stream(request: Request) -> Response:
    """Server-sent events: each changed report that matches the page's filters, as the row
    the page shows (rendered here), for the page to put in place."""
    console: Console = request.app.state.console
    filters = report_filters(request)
    row_template = templates_env.get_template("_row.html")

    def event(row: Row) -> str | None:
        if not filters.matches(row):
            return None
        html = row_template.render(row=row)
        return sse_event("row", json.dumps({"id": row.request_id, "html": html}))

    return _row_stream(console, event)


async def _request_message(bus: busaccess.Bus, entry: LedgerEntry) -> tuple[dict[str, Any], str]:
    """The report.requested body and trace id of the generation the ledger records (from the
    stream, while it still holds it), or ({}, "")."""
    record = entry.stages.get("fetcher")
    if record is None:
        return {}, ""
    try:
        raw = await bus.js.get_msg(STREAM, record.seq)
        body = json.loads(raw.data or b"{}")
    except Exception:  # aged out of the stream, or not JSON: the page says it is not there
        return {}, ""
    if not isinstance(body, dict) or body.get("request_id") != entry.request_id:
        return {}, ""
    parent = (raw.headers or {}).get("traceparent", "")
    parts = parent.split("-")
    return body, parts[1] if len(parts) == 4 else ""


def _timeline(entry: LedgerEntry) -> list[dict[str, Any]]:
    """Queued, then each stage: attempts, reason, duration and the wait before its worker
    began (`pressroom status`'s figures: requests.queue_waits). A burst's child has no
    fetcher; a burst's parent renders and delivers nothing itself (its children do)."""
    steps: list[dict[str, Any]] = [
        {"name": "queued", "state": "done", "at": entry.requested_at, "seconds": None}
    ]
    waits = requests.queue_waits(entry)
    child = CHILD_SEPARATOR in entry.request_id
    for stage in PIPELINE:
        record = entry.stages.get(stage)
        if record is None:
            if entry.burst is not None and stage != PIPELINE[0]:
                steps.append({"name": stage, "state": "children", "label": "by its children"})
            elif not (child and stage == PIPELINE[0]):
                steps.append({"name": stage, "state": "waiting"})
            continue
        steps.append(
            {
                "name": stage,
                "state": record.state,
                "at": requests.work_started(record),
                "finished": record.finished_at,
                "seconds": record.seconds,
                "wait": waits.get(stage),
                "attempts": record.attempts,
                "error": record.error,
                "worker": record.worker,
            }
        )
    return steps


@page()
async def report(request: Request) -> Response:
    console: Console = request.app.state.console
    bus = console.ready_bus()
    rid = request.path_params["rid"]
    user = current_user(request)
    assert user is not None
    entry = await requests.ledger_entry(bus, rid)
    body, trace_id = await _request_message(bus, entry)
    # Bodies and delivery targets for ops only; secrets for nobody.
    shown = redact.redacted_json(body) if body and user.may("ops") else None
    channels = await requests.channel_outcomes(bus, rid)
    entry_shown = entry
    if not user.may("ops"):  # where a report went is for ops only
        channels = [c.model_copy(update={"target": "(ops only)"}) for c in channels]
        entry_shown = redact.redacted_entry(entry).model_copy(
            update={
                "channels": [c.model_copy(update={"target": "(ops only)"}) for c in entry.channels]
            }
        )
    letters = [
        r for r in await deadletters.dead_letters(bus) if r.letter.request_id == rid
    ]  # what replay would send back
    trace_link = (
        console.settings.trace_url.replace("{trace_id}", trace_id)
        if console.settings.trace_url and trace_id
        else None
    )
    # A burst's parent: its tally in the line `pressroom status` prints, and its children.
    children = console.index.page(
        Filters(parent=rid), request.query_params.get("children") or None, CHILDREN_PAGE
    )
    burst = (
        f"burst of {entry.burst.total:,}: {entry.burst.summary()}"
        if entry.burst is not None
        else None
    )
    if wants_json(request):
        return JSONResponse(
            {
                "entry": entry_as_dict(entry_shown),
                "burst": burst,
                "children": [row_dict(r) for r in children.rows],
                "children_next_cursor": children.next_cursor,
                "request": shown,
                "timeline": json.loads(json.dumps(_timeline(entry), default=str)),
                "deliveries": [c.model_dump(mode="json") for c in channels],
                "dead_letters": [r.summary() for r in letters],
                "trace_id": trace_id or None,
            }
        )
    where = requests.whereabouts(entry)
    return render_page(
        request,
        "report.html",
        {
            "entry": entry_shown,
            "where": "" if where == entry.status else where,
            "request_json": json.dumps(shown, indent=2) if shown is not None else None,
            "timeline": _timeline(entry),
            "channels": channels,
            "letters": letters,
            "trace_id": trace_id,
            "trace_link": trace_link,
            "deliveries": (body.get("deliver") or []) if body else [],
            "may_cancel": entry.status not in FINISHED,
            "burst": burst,
            "children": children.rows,
            "children_first": not request.query_params.get("children"),
            "children_next": (
                f"/reports/{rid}?{urlencode({'children': children.next_cursor})}#burst-h"
                if children.next_cursor
                else None
            ),
            "children_all": f"/reports?{urlencode({'q': rid + CHILD_SEPARATOR})}",
        },
    )


@page()
async def report_stream(request: Request) -> Response:
    console: Console = request.app.state.console
    rid = request.path_params["rid"]

    def event(row: Row) -> str | None:
        if row.request_id != rid:
            return None
        return sse_event("changed", json.dumps({"status": row.status}))

    # Once listening, one "changed" at once: a change between the page being served and this
    # stream opening would otherwise never reach it (a cancel, the last change, stayed unseen).
    return _row_stream(console, event, on_listen=sse_event("changed", json.dumps({"status": None})))


def _row_stream(
    console: Console, event: Callable[[Row], str | None], *, on_listen: str | None = None
) -> Response:
    """Server-sent events over the ledger index's changed rows: what `event` makes of each
    (None: nothing for this page), and a keep-alive comment every 15 s of quiet; `on_listen`
    is sent once the changes are being listened to."""

    async def events() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        with console.index.listen() as queue:
            if on_listen is not None:
                yield on_listen
            while True:
                try:
                    row = await asyncio.wait_for(queue.get(), 15)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if (said := event(row)) is not None:
                    yield said

    return StreamingResponse(events(), media_type="text/event-stream", headers=NO_BUFFER)


async def artefact_of(bus: busaccess.Bus, rid: str, fmt: str) -> Any:
    entry = await requests.ledger_entry(bus, rid)
    for artefact in entry.artefacts:
        if artefact.format == fmt:
            return artefact
    raise PressroomError(f"request '{rid}' has no {fmt} artefact")


@page()
async def report_download(request: Request) -> Response:
    """A download from the page: a short link of our own, the one way artefacts are served."""
    console: Console = request.app.state.console
    artefact = await artefact_of(
        console.ready_bus(), request.path_params["rid"], request.path_params["fmt"]
    )
    token = mint_token(console.secret, artefact, datetime.now(UTC) + timedelta(minutes=5))
    return RedirectResponse(f"/a/{token}", status_code=303)


@page()
async def report_page_image(request: Request) -> Response:
    """Page N of the report's PDF as a PNG (poppler's pdftoppm, in a capped child process)."""
    console: Console = request.app.state.console
    bus = console.ready_bus()
    number = int(request.path_params["n"])
    tool = shutil.which("pdftoppm")
    if tool is None:
        return PlainTextResponse("page images need pdftoppm (Debian: poppler-utils)", 501)
    data = await requests.artefact_bytes(bus, request.path_params["rid"], "pdf")

    def draw() -> bytes:
        with tempfile.TemporaryDirectory() as folder:
            source = Path(folder) / "report.pdf"
            source.write_bytes(data)
            done = subprocess.run(
                [
                    tool,
                    "-png",
                    "-r",
                    "80",
                    "-f",
                    str(number),
                    "-l",
                    str(number),
                    "-singlefile",
                    str(source),
                    str(Path(folder) / "page"),
                ],
                capture_output=True,
                timeout=30,
                check=False,
            )
            image = Path(folder) / "page.png"
            if done.returncode != 0 or not image.is_file():
                raise PressroomError(f"the report has no page {number}")
            return image.read_bytes()

    png = await asyncio.to_thread(draw)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


@page()
async def report_pages(request: Request) -> Response:
    """The PDF's pages as images, one under the other (at most the first 50)."""
    console: Console = request.app.state.console
    rid = request.path_params["rid"]
    data = await requests.artefact_bytes(console.ready_bus(), rid, "pdf")
    try:
        count = len(PdfReader(io.BytesIO(data)).pages)
    except Exception as error:  # pypdf's many error types: the page says why
        raise PressroomError(f"the PDF of {rid} cannot be read: {error}") from None
    return render_page(request, "pages.html", {"rid": rid, "count": count, "shown": min(count, 50)})


@page("ops", action=True)
async def report_redeliver(request: Request) -> Response:
    console: Console = request.app.state.console
    bus = console.ready_bus()
    rid = request.path_params["rid"]
    entry = await requests.ledger_entry(bus, rid)
    body, _ = await _request_message(bus, entry)
    deliveries = (body.get("deliver") if body else None) or console.settings.delivery_defaults
    results = await requests.deliver_again(bus, rid, list(deliveries))
    outcome = ", ".join(f"{r['channel']}: {'ok' if r['ok'] else r['detail']}" for r in results)
    await audit_action(request, "re-deliver", rid, outcome)
    return finish_action(request, f"re-delivered {rid}: {outcome}", f"/reports/{rid}", results)


@page("ops", action=True)
async def report_replay(request: Request) -> Response:
    console: Console = request.app.state.console
    rid = request.path_params["rid"]
    done = await deadletters.replay_many(console.ready_bus(), [rid])
    await audit_action(request, "replay", rid, f"{len(done)} dead letter(s)")
    return finish_action(
        request, f"replayed {len(done)} dead letter(s) of {rid}", f"/reports/{rid}", done
    )


# A report in one of these has nothing left to stop.
FINISHED = frozenset({"delivered", "failed", "conflict", "cancelled", "skipped"})


@page("ops", action=True)
async def report_cancel(request: Request) -> Response:
    """`pressroom cancel` from the page, once confirmed: the first POST asks, the second
    (`confirm=yes`) cancels; the page then shows `cancelled` (live, to everyone watching)."""
    console: Console = request.app.state.console
    bus = console.ready_bus()
    rid = request.path_params["rid"]
    form = await request.form()
    if form.get("confirm") != "yes":
        entry = await requests.ledger_entry(bus, rid)
        if wants_json(request):
            return JSONResponse({"would_cancel": rid, "confirm": "send confirm=yes"})
        return render_page(request, "cancel_confirm.html", {"entry": entry})
    user = current_user(request)
    done = await cancel.cancel_requests(bus, [rid], user.name if user else None)
    outcome = done[0].message
    await audit_action(request, "cancel", rid, outcome)
    return finish_action(request, f"{rid}: {outcome}", f"/reports/{rid}", [asdict(d) for d in done])


@page()
async def mint_link(request: Request) -> Response:
    """A link to share (PRESSROOM_PUBLIC_URL/a/…, or this console's own address when that is
    unset), valid 24 h: what `get --url` prints."""
    console: Console = request.app.state.console
    artefact = await artefact_of(
        console.ready_bus(), request.path_params["rid"], request.path_params["fmt"]
    )
    # Without PRESSROOM_PUBLIC_URL, the address it was reached at — on this machine only:
    # elsewhere the Host header may be a proxy's rewrite, and the link would point there.
    here = str(request.base_url) if on_loopback(request.url, request.headers) else None
    link = download_link(console.settings, artefact, timedelta(hours=24), base=here)
    return JSONResponse({"url": link})
