"""The CLI as an operator meets it: 80-column tables, early refusals, progress, clear reasons."""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, Outcomes, Stack, eventually, unique

pytestmark = pytest.mark.integration

NARROW = {"COLUMNS": "80"}


def words(text: str) -> str:
    return " ".join(text.split())


async def dead_letter_for(stack: Stack, nc: Any, outcomes: Outcomes, rid: str) -> dict[str, Any]:
    body = {"request_id": rid, "template": f"{rid}.html"}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await outcomes.failed_event(rid)
    [row] = json.loads(stack.cli("dlq", "ls", "--json", "--reason", rid, check=True).stdout)
    return dict(row)


async def test_ls_and_status_at_80_columns_show_whole_request_ids(stack: Stack) -> None:
    rid = unique("a-rather-long-request-id-for-narrow-terminals")
    sample = str(REPO / "templates/samples/portfolio.json")
    requested = ("request", "-t", "portfolio", "--data-file", sample, "--request-id", rid)
    stack.cli(*requested, "--wait", check=True)
    for args in (("ls", "--limit", "200"), ("status", rid)):
        shown = stack.cli(*args, env=NARROW, check=True).stdout
        assert rid in shown, shown  # whole: copyable into `status` / `get`


async def test_dlq_ls_at_80_columns_keeps_ids_whole_and_reasons_readable(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    rid = unique("narrow-dead-letter")
    row = await dead_letter_for(stack, nc, outcomes, rid)
    shown = stack.cli("dlq", "ls", "--reason", rid, env=NARROW, check=True).stdout
    assert rid in shown
    assert all(len(line) <= 80 for line in shown.splitlines() if rid not in line), shown
    # The reason reads as one text, wrapped between words only (no table fragments).
    assert words(row["reason"]) in words(shown), shown


async def test_dlq_show_takes_a_request_id_and_prints_the_payload_unbroken(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    rid = unique("show-by-request-id")
    row = await dead_letter_for(stack, nc, outcomes, rid)
    by_rid = json.loads(stack.cli("dlq", "show", rid, "--json", check=True).stdout)
    by_id = json.loads(stack.cli("dlq", "show", str(row["id"]), "--json", check=True).stdout)
    assert by_rid == by_id and by_rid["request_id"] == rid
    text = stack.cli("dlq", "show", rid, env=NARROW, check=True).stdout
    payload = text.split("payload:", 1)[1]
    assert rid in json.dumps(json.loads(payload))  # still JSON: nothing wrapped mid-word
    missing = stack.cli("dlq", "show", unique("nobody"))
    assert missing.returncode == 1 and "no dead letter with request_id" in missing.stderr


def test_dlq_ls_with_an_unknown_stage_names_the_stages(stack: Stack) -> None:
    result = stack.cli("dlq", "ls", "--stage", "bogus")
    assert result.returncode == 1
    assert "bogus" in result.stderr
    assert all(s in result.stderr for s in ("fetcher", "renderer", "distributor"))


def test_empty_lists_say_what_is_empty_and_why(stack: Stack) -> None:
    schedules = stack.cli("schedule", "ls", env=NARROW, check=True).stdout
    assert "no schedules: PRESSROOM_CONFIG is not set" in schedules
    sources = stack.cli("sources", "ls", env=NARROW, check=True).stdout
    assert "no data sources: PRESSROOM_CONFIG is not set" in sources
    marker = unique("matches-nothing")
    letters = stack.cli("dlq", "ls", "--reason", marker, check=True).stdout
    assert f"no dead letters match --reason {marker}" in letters
    assert "┏" not in schedules + sources + letters  # no bare table frames


def test_request_for_an_unknown_template_is_refused_before_publishing(stack: Stack) -> None:
    rid = unique("early-refusal")
    result = stack.cli("request", "-t", "portfolo", "--request-id", rid)
    assert result.returncode == 1
    assert "did you mean portfolio.html?" in result.stderr, result.stderr
    assert "nothing was published" in result.stderr
    assert stack.cli("status", rid).returncode == 1  # the pipeline never heard of it


async def test_without_the_templates_folder_the_request_is_published_as_before(
    stack: Stack, outcomes: Outcomes
) -> None:
    rid = unique("remote-templates")
    blind = {"PRESSROOM_TEMPLATES_DIR": str(stack.root / "not-here")}
    result = stack.cli("request", "-t", "portfolo", "--request-id", rid, env=blind)
    assert result.returncode == 0, result.stderr
    failed = await outcomes.failed_event(rid)
    assert "did you mean portfolio.html?" in failed["reason"]  # the renderer's own check


class SlowSource(BaseHTTPRequestHandler):
    release = threading.Event()

    def do_GET(self) -> None:
        self.release.wait(60)
        body = json.dumps({"value": 42}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slow_source() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowSource)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        SlowSource.release.set()
        server.shutdown()


async def test_wait_timeout_says_where_the_request_is_and_that_it_still_runs(
    stack: Stack, slow_source: str, outcomes: Outcomes
) -> None:
    (stack.templates / "slow-source.html").write_text("<p>{{ slow.value }}</p>")
    rid = unique("still-running")
    request = stack.root / f"{rid}.json"
    request.write_text(
        json.dumps(
            {
                "request_id": rid,
                "template": "slow-source.html",
                "sources": [{"name": "slow", "kind": "http", "url": slow_source}],
            }
        )
    )

    async def fetching() -> bool:
        status = stack.cli("status", rid, "--json")
        return status.returncode == 0 and "fetcher" in json.loads(status.stdout)["stages"]

    # Published without waiting first, so the timeout below is not a race with the fetcher.
    stack.cli("request", str(request), check=True)
    await eventually(fetching)
    result = stack.cli("request", str(request), "--wait", "--timeout", "1")
    assert result.returncode == 1
    assert "still running" in result.stderr and "fetcher working on it" in result.stderr
    assert f"pressroom status {rid}" in result.stderr
    SlowSource.release.set()
    await outcomes.delivered_event(rid)


def run_on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as stdout and stderr, as in an operator's shell."""
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
    screen = b"".join(chunks).decode(errors="replace")
    return proc.wait(timeout=60), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)  # no colours


def test_request_wait_shows_progress_on_a_terminal_only(stack: Stack) -> None:
    rid = unique("progress")
    sample = str(REPO / "templates/samples/portfolio.json")
    args = ["request", "-t", "portfolio", "--data-file", sample, "--request-id", rid, "--wait"]
    code, screen = run_on_a_terminal(args, stack.env)
    assert code == 0, screen
    assert f"{rid}: published" in screen and f"delivered {rid}" in screen
    piped = stack.cli(*args[:-3], "--request-id", unique("piped"), "--wait", check=True)
    assert "published" not in piped.stdout + piped.stderr  # no spinner text in pipes


def test_render_shows_progress_on_a_terminal(stack: Stack, tmp_path: Path) -> None:
    sample = str(REPO / "templates/samples/portfolio.json")
    output = tmp_path / "report.pdf"
    args = ["render", "-t", "portfolio.html", "--data-file", sample, "-o", str(output)]
    code, screen = run_on_a_terminal(args, stack.env)
    assert code == 0, screen
    assert "portfolio.html: rendering" in screen and output.read_bytes().startswith(b"%PDF")


@pytest.fixture
def blackhole() -> Iterator[str]:
    """An address that accepts TCP connections and never says a word (a dropped route)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"nats://127.0.0.1:{sock.getsockname()[1]}"


def test_a_blackholed_bus_gives_a_reason(stack: Stack, blackhole: str) -> None:
    result = stack.cli("ls", env={"PRESSROOM_NATS_URL": blackhole})
    assert result.returncode == 1
    reason = result.stderr.split(f"{blackhole}:", 1)[1].strip()
    assert re.search(r"[a-z]{3,} [a-z]{3,}", reason), result.stderr  # words, not "" or a type


class Ready(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "healthy", "checks": {}}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_health_against_an_unreachable_bus_lists_no_worker_as_healthy(
    stack: Stack, blackhole: str, tmp_path: Path
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        worker = f"http://127.0.0.1:{server.server_address[1]}"
        (tmp_path / "workers.json").write_text(json.dumps({"renderer-1": worker}))
        env = {"PRESSROOM_NATS_URL": blackhole, "PRESSROOM_DATA_DIR": str(tmp_path)}
        result = stack.cli("health", "--json", env=env, timeout=90)
    finally:
        server.shutdown()
    assert result.returncode == 1
    components = json.loads(result.stdout)["components"]
    assert not [n for n, c in components.items() if "worker" in n and c["status"] == "healthy"]
    assert "unreachable" in components["workers"]["detail"]
    assert "renderer-1" in components["workers"]["detail"]
