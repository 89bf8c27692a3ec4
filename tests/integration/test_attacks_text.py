"""Attacks with text: request data that tries to restyle a report or stall the renderer, and
request strings that try to drive the operator's terminal. Against a real stack."""

from __future__ import annotations

import base64
import http.server
import json
import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from services.console.cli._output import visible
from services.renderer.job import RenderJob
from services.renderer.pdf import render_job
from services.renderer.sandbox import MAX_ASSET_BYTES
from shared.errors import ResourceBlocked
from tests.helpers import (
    REPO,
    Outcomes,
    Stack,
    dead_letter_count,
    dead_letters_beyond,
    delivered_file,
    eventually,
    unique,
)
from tests.pdftext import page_texts

pytestmark = pytest.mark.integration

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
NARROW = {"COLUMNS": "80"}


# ---- request data inside a template's CSS -----------------------------------------------------


def percent(text: str) -> str:
    return "".join(f"%{byte:02X}" for byte in text.encode())


def css_attack(canary: str) -> str:
    """Ends the footer's CSS string (a newline), hides the body, and draws `canary` with an SVG
    in a data: URL: no quotes or angle brackets needed, so HTML escaping alone does not stop it.
    The canary is percent-encoded, so it is only ever seen if the CSS took effect."""
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="300" height="40"><text x="5" y="30">'
    image = f"data:image/svg+xml,{quote(svg, safe='')}{percent(canary)}{quote('</text></svg>')}"
    return (
        f"x\n}}}} body {{ display: none }} html::after {{ content: url({image}) }} "
        f"@page {{ @bottom-center {{ content: url({image}) }} }} x {{"
    )


@pytest.mark.parametrize("template", ["daily.html", "custom-report.html"])
async def test_request_data_in_a_footer_cannot_restyle_the_report(
    stack: Stack, nc: Any, outcomes: Outcomes, template: str, tmp_path: Path
) -> None:
    rid, canary = unique("css-attack"), unique("CANARY").upper().replace("-", "")
    attack = css_attack(canary)
    params = {**SAMPLE, "reporting_period": attack, "report_title": attack}
    body = {"request_id": rid, "template": template, "params": params}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())

    await outcomes.delivered_event(rid)

    text = "\n".join(page_texts(delivered_file(stack.out, rid).read_bytes(), tmp_path))
    assert "Project Atlas" in text and "Project Cobalt" in text  # the report is all there
    assert canary not in text  # and nothing the request drew
    assert "body { display: none }" in text  # the value shown as the text it is


# ---- a data: URL bomb ------------------------------------------------------------------------


def use_bomb(levels: int = 12, fan: int = 10) -> str:
    """fan ** levels rectangles in a few kilobytes: each group draws the one before it ten times."""
    ns = 'xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"'
    groups = "".join(
        f'<g id="l{i}">' + f'<use xlink:href="#l{i - 1}"/>' * fan + "</g>"
        for i in range(1, levels + 1)
    )
    return (
        f'<svg {ns} width="100" height="100"><defs><g id="l0"><rect width="1" height="1"/></g>'
        f'{groups}</defs><use xlink:href="#l{levels}"/></svg>'
    )


async def test_a_data_svg_bomb_is_refused_at_once_and_the_next_tenant_is_served(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    # A template that shows a logo the request chooses, as a calling system may well have.
    (stack.templates / "logo-card.html").write_text(
        "<html><body><h1>{{ title }}</h1><img src='{{ logo }}'></body></html>"
    )
    bomb = "data:image/svg+xml;base64," + base64.b64encode(use_bomb().encode()).decode()
    assert len(bomb) < 5000
    attacker, victim = unique("svg-bomb"), unique("after-the-bomb")
    js = nc.jetstream()
    await js.publish(
        "report.requested",
        json.dumps(
            {
                "request_id": attacker,
                "template": "logo-card.html",
                "params": {"title": "Bomb", "logo": bomb},
            }
        ).encode(),
    )
    await js.publish(
        "report.requested",
        json.dumps({"request_id": victim, "template": "weekly.html", "params": SAMPLE}).encode(),
    )

    failed = await outcomes.failed_event(attacker)
    # Refused by counting, not stopped by the render timeout (which would say "took longer").
    assert "would draw over 200,000 elements" in failed["reason"], failed
    assert "20,000-element limit" in failed["reason"]
    assert failed["stage"] == "renderer" and failed["attempts"] == 1  # never retried
    await outcomes.delivered_event(victim)


class AssetServer(http.server.BaseHTTPRequestHandler):
    """/bomb.svg: an SVG bomb; /huge.png: more than the asset limit; /drip.css: a byte every
    half second, for ever (a per-read timeout never trips)."""

    stop = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        if self.path == "/bomb.svg":
            self.send_header("Content-Type", "image/svg+xml")
            self.end_headers()
            self.wfile.write(use_bomb().encode())
        elif self.path == "/huge.png":
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            chunk = b"\0" * 1024 * 1024
            for _ in range(MAX_ASSET_BYTES // len(chunk) + 2):
                self.wfile.write(chunk)
        elif self.path == "/drip.css":
            self.send_header("Content-Type", "text/css")
            self.end_headers()
            while not self.stop.wait(0.5):
                self.wfile.write(b" ")
                self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def asset_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AssetServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        AssetServer.stop.set()
        server.shutdown()
        server.server_close()


def test_an_allow_listed_server_gets_the_same_caps(asset_server: str, tmp_path: Path) -> None:
    (tmp_path / "t.html").write_text(
        "{% if css %}<link rel='stylesheet' href='{{ css }}'>{% endif %}<p>Body</p>"
        "{% if image %}<img src='{{ image }}'>{% endif %}"
    )

    def render(css: str = "", image: str = "") -> None:
        context = {
            "css": css and f"{asset_server}/{css}",
            "image": image and f"{asset_server}/{image}",
        }
        render_job(RenderJob(str(tmp_path), "t.html", context, asset_allow=("127.0.0.1",)))

    with pytest.raises(ResourceBlocked, match="would draw over 200,000 elements"):
        render(image="bomb.svg")
    with pytest.raises(ResourceBlocked, match=f"over the {MAX_ASSET_BYTES:,}-byte asset limit"):
        render(image="huge.png")
    with pytest.raises(ResourceBlocked, match="took longer than 10s to download"):
        render(css="drip.css")


# ---- request strings on the operator's terminal -----------------------------------------------

RAW = ("\x1b", "\x07", "\u202e", "\x9b")


def hostile(tag: str) -> str:
    """Rich markup that crashes a print, a terminal title, a screen clear, a bidi override."""
    return f"[/evil][red]{tag}\x1b]0;pwned-title\x07\x1b[2J\u202eabc\x9b31m"


def flat(text: str) -> str:
    return "".join(text.replace("│", "").split())


def shown(result: subprocess.CompletedProcess[str], code: int = 0) -> str:
    """stdout + stderr of a command that ran as it should: exit `code`, no traceback, and no
    control character for the terminal to act on."""
    output = result.stdout + result.stderr
    assert result.returncode == code, output
    assert "Traceback" not in output, output
    assert not [c for c in RAW if c in output], repr(output)
    return flat(output)


async def hostile_history(stack: Stack, nc: Any, outcomes: Outcomes) -> dict[str, str]:
    """A request whose template name is hostile (the renderer fails it: ledger entry, dead
    letter) and an invalid message claiming a hostile request id (a dead letter)."""
    tag = unique("h")
    rid, template, claimed = unique("hostile-template"), hostile(tag), hostile(f"{tag}-id")
    js = nc.jetstream()
    before = await dead_letter_count(nc)
    await js.publish(
        "report.requested", json.dumps({"request_id": rid, "template": template}).encode()
    )
    await js.publish(
        "report.requested", json.dumps({"request_id": claimed, "template": 1}).encode()
    )
    await outcomes.failed_event(rid)
    await dead_letters_beyond(nc, before + 1)  # both dead letters are in

    async def claimed_letter() -> str | None:
        rows = json.loads(stack.cli("dlq", "ls", "--json", check=True).stdout)
        return next((str(r["id"]) for r in rows if r["request_id"] == claimed), None)

    letter = await eventually(claimed_letter, timeout=120)
    return {"tag": tag, "rid": rid, "template": template, "claimed": claimed, "letter": letter}


async def test_every_command_shows_hostile_request_strings_as_text(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    seen = await hostile_history(stack, nc, outcomes)
    template, claimed = flat(visible(seen["template"])), flat(visible(seen["claimed"]))

    for args in (("ls", "--limit", "1000"), ("status", seen["rid"]), ("dlq", "show", seen["rid"])):
        assert template in shown(stack.cli(*args, env=NARROW)), args
    assert template in shown(stack.cli("dlq", "ls", "--reason", seen["tag"], env=NARROW))
    listing = shown(stack.cli("dlq", "ls", env=NARROW))
    assert template in listing and claimed in listing
    assert claimed in shown(stack.cli("dlq", "show", seen["letter"], env=NARROW))
    assert template in shown(stack.cli("stats", env=NARROW))
    slo = stack.cli("slo", env=NARROW)
    assert slo.returncode in (0, 1), slo.stderr  # 1: an objective is missed (tests fail a lot)
    shown(slo, code=slo.returncode)
    # Strings an operator types are text too: a one-line error, not a crash.
    assert "error:" in shown(stack.cli("status", seen["template"]), code=1)
    assert template in shown(stack.cli("dlq", "show", seen["template"]), code=1)
    assert flat(visible(seen["template"])) in shown(stack.cli(seen["template"]), code=2)


def test_template_names_and_headers_are_shown_as_text(stack: Stack, tmp_path: Path) -> None:
    name = hostile(unique("file")).replace("/", "") + ".html"
    description = r"[/evil][red]header\e]0;pwned-title\a\e[2J\u202Eabc"
    (tmp_path / name).write_text(
        f'{{#- ---\ndescription: "{description}"\nparams:\n  who: "{description}"\n--- -#}}\n'
        "<p>{{ who }}</p>"
    )
    env = {**NARROW, "PRESSROOM_TEMPLATES_DIR": str(tmp_path)}
    header = flat(visible("[/evil][red]header\x1b]0;pwned-title\x07\x1b[2J\u202eabc"))
    listing = shown(stack.cli("templates", "ls", env=env))
    assert flat(visible(name)) in listing and header in listing
    assert header in shown(stack.cli("templates", "vars", name, env=env))
    (tmp_path / name).write_text("{{ who | no_such_filter }}")
    problems = shown(stack.cli("templates", "validate", "--all", env=env), code=1)
    assert flat(visible(name)) in problems and "unknownfilter'no_such_filter'" in problems


def on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """The CLI with a pseudo-terminal as stdout and stderr; everything it wrote, unfiltered."""
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.console.cli", *args],
        env={**env, "TERM": "xterm", "COLUMNS": "80"},
        stdin=subprocess.DEVNULL, stdout=child, stderr=child, close_fds=True,
    )  # fmt: skip
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace")


def test_request_wait_shows_a_hostile_outcome_as_text_on_a_terminal(stack: Stack) -> None:
    template = hostile(unique("wait"))
    rid = unique("hostile-wait")
    blind = {"PRESSROOM_TEMPLATES_DIR": str(stack.root / "not-here")}  # the renderer decides
    args = ["request", "-t", template, "--request-id", rid, "--wait"]
    code, screen = on_a_terminal(args, {**stack.env, **blind})
    assert code == 1, screen
    # Rich colours the terminal itself; what the request carried acts on nothing.
    for sequence in ("\x1b]0;pwned-title", "\x1b[2J", "\u202e", "\x9b", "\x07"):
        assert sequence not in screen, repr(screen)
    assert "Traceback" not in screen
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)  # Rich's own colours and cursor
    assert flat(visible(template)) in flat(plain), repr(screen)
    piped = shown(
        stack.cli(*args[:-3], "--request-id", unique("hostile-pipe"), "--wait", env=blind), code=1
    )
    assert flat(visible(template)) in piped
