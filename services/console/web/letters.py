"""The dead-letter pages: the list with filters, one letter, replay one or a filtered set
(with a dry run), purge after a confirmation."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    Response,
)

from services.console import deadletters, redact, requests
from services.console.web.kit import (
    Console,
    audit_action,
    current_user,
    finish_action,
    page,
    render_page,
    wants_json,
)
from shared.errors import PressroomError
from shared.events import DeadLetter
from shared.templatename import canonical_template


# ---- dead letters --------------------------------------------------------------------------
def _letter_template(letter: DeadLetter) -> str:
    try:
        body = json.loads(letter.payload)
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    name = body.get("template") or (body.get("request") or {}).get("template") or ""
    return canonical_template(str(name)) if name else ""


def _letter_filter(request: Request | None, form: Any = None) -> dict[str, Any]:
    source = form if form is not None else (request.query_params if request else {})
    since = str(source.get("since") or "").strip()
    return {
        "stage": str(source.get("stage") or "").strip(),
        "reason": str(source.get("reason") or "").strip(),
        "template": str(source.get("template") or "").strip(),
        "since": since,
    }


def _letters_matching(
    records: list[deadletters.DeadLetterRecord], wanted: dict[str, Any]
) -> list[Any]:
    since = requests.parse_since(wanted["since"]) if wanted["since"] else None
    template = canonical_template(wanted["template"]) if wanted["template"] else ""
    return [
        r
        for r in records
        if (not wanted["stage"] or r.letter.stage == wanted["stage"])
        and (not wanted["reason"] or wanted["reason"].lower() in r.letter.reason.lower())
        and (not template or _letter_template(r.letter) == template)
        and (since is None or (r.time is not None and r.time >= since))
    ]


@page()
async def dead_letters(request: Request) -> Response:
    console: Console = request.app.state.console
    wanted = _letter_filter(request)
    records = list(reversed(await deadletters.dead_letters(console.ready_bus())))  # newest first
    shown = _letters_matching(records, wanted)
    if wants_json(request):
        return JSONResponse({"dead_letters": [r.summary() for r in shown], "total": len(records)})
    return render_page(
        request,
        "dead_letters.html",
        {
            "records": shown,
            "total": len(records),
            "wanted": wanted,
            "query": urlencode({k: v for k, v in wanted.items() if v}),
            "stages": sorted({r.letter.stage for r in records}),
            "template_of": _letter_template,
            "flash": request.session.pop("flash", None),
        },
    )


@page()
async def dead_letter(request: Request) -> Response:
    console: Console = request.app.state.console
    user = current_user(request)
    assert user is not None
    record = await deadletters.dead_letter(console.ready_bus(), int(request.path_params["seq"]))
    if record is None:
        raise PressroomError(f"no dead letter {request.path_params['seq']} (replayed or purged?)")
    letter = redact.redacted_letter(record.letter)  # secrets never; the body for ops only
    try:
        body = json.dumps(json.loads(letter.payload), indent=2)
    except ValueError:
        body = letter.payload
    if not user.may("ops"):
        body = "(request bodies are shown to the ops role)"
    if wants_json(request):
        return JSONResponse({**record.summary(), "body": body, "headers": letter.headers})
    return render_page(
        request, "dead_letter.html", {"record": record, "letter": letter, "body": body}
    )


@page("ops", action=True)
async def dead_letter_replay(request: Request) -> Response:
    console: Console = request.app.state.console
    seq = str(request.path_params["seq"])
    done = await deadletters.replay_many(console.ready_bus(), [seq])
    await audit_action(request, "replay dead letter", seq, f"to {done[0]['subject']}")
    return finish_action(
        request, f"replayed dead letter {seq} to {done[0]['subject']}", "/dead-letters", done
    )


@page("ops", action=True)
async def dead_letters_replay(request: Request) -> Response:
    """Replay every dead letter the filters select; `dry_run` only says which."""
    console: Console = request.app.state.console
    bus = console.ready_bus()
    form = await request.form()
    wanted = _letter_filter(None, form)
    chosen = _letters_matching(await deadletters.dead_letters(bus), wanted)
    if form.get("dry_run"):
        return (
            render_page(
                request,
                "dead_letters_confirm.html",
                {"records": chosen, "wanted": wanted, "verb": "replay", "dry_run": True},
            )
            if not wants_json(request)
            else JSONResponse({"would_replay": [r.summary() for r in chosen]})
        )
    done = await deadletters.replay_many(bus, [str(r.id) for r in chosen]) if chosen else []
    await audit_action(request, "replay dead letters", json.dumps(wanted), f"{len(done)} replayed")
    return finish_action(request, f"replayed {len(done)} dead letter(s)", "/dead-letters", done)


@page("ops", action=True)
async def dead_letters_purge(request: Request) -> Response:
    """Purge what the filters (or the ids given) select, once confirmed: the first POST shows
    what would go and asks again."""
    console: Console = request.app.state.console
    bus = console.ready_bus()
    form = await request.form()
    wanted = _letter_filter(None, form)
    ids = [str(i) for i in form.getlist("id") if str(i).isdigit()]
    records = await deadletters.dead_letters(bus)
    chosen = [r for r in records if str(r.id) in ids] if ids else _letters_matching(records, wanted)
    if form.get("confirm") != "yes":
        if wants_json(request):
            return JSONResponse(
                {"would_purge": [r.summary() for r in chosen], "confirm": "send confirm=yes"}
            )
        return render_page(
            request,
            "dead_letters_confirm.html",
            {"records": chosen, "wanted": wanted, "verb": "purge", "dry_run": False, "ids": ids},
        )
    removed = await deadletters.purge(bus, [str(r.id) for r in chosen]) if chosen else 0
    await audit_action(
        request, "purge dead letters", ",".join(str(r.id) for r in chosen), f"{removed}"
    )
    return finish_action(request, f"purged {removed} dead letter(s)", "/dead-letters", removed)
