"""What a new user and an operator see at 80 columns (issue 26, items 7 and 8): each test does
what the user did, with the CLI against real servers."""

from __future__ import annotations

import json
import os
import pwd
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from services.console.embedded import free_port
from tests import cliproc
from tests.helpers import (
    REPO,
    Outcomes,
    Stack,
    delivered_file,
    eventually,
    pressroom,
    unique,
    up_env,
)
from tests.integration.test_cli_operator import run_on_a_terminal
from tests.pdftext import pdf_text

pytestmark = pytest.mark.integration

NARROW = {"COLUMNS": "80"}
SAMPLE = str(REPO / "templates/samples/portfolio.json")


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# ---- servers the tests point sources at ---------------------------------------------------
class Held(BaseHTTPRequestHandler):
    """A data source that answers only when released (a slow upstream)."""

    release = threading.Event()

    def do_GET(self) -> None:
        self.release.wait(120)
        self._json({"value": 42})

    def _json(self, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Quick(Held):
    def do_GET(self) -> None:
        self._json({"value": 1234567, "items": [1, 2, 3]})


def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        Held.release.set()
        server.shutdown()


@pytest.fixture
def held_source() -> Iterator[str]:
    Held.release.clear()
    yield from serve(Held)


@pytest.fixture
def quick_source() -> Iterator[str]:
    yield from serve(Quick)


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/"  # nothing listens there: connection refused


def delivered_sample(stack: Stack, rid: str) -> None:
    """The sample portfolio report under `rid`, requested and waited for as a user does."""
    stack.cli(
        "request", "-t", "portfolio", "--data-file", SAMPLE, "--request-id", rid, "--wait",
        check=True,
    )  # fmt: skip


# ---- ls and the live --wait line ------------------------------------------------------------
def test_ls_fits_80_columns_with_a_long_request_id(stack: Stack) -> None:
    rid = unique("a-rather-long-request-id-that-leaves-no-room-for-the-other-columns")
    delivered_sample(stack, rid)
    shown = stack.cli("ls", "--status", "delivered", "--limit", "200", env=NARROW, check=True)
    lines = shown.stdout.splitlines()
    assert "total s" in lines[0] and len(lines[0]) <= 80, shown.stdout  # no `tot`/`al s`
    # Every line fits; only an id longer than its column goes whole on a line of its own.
    assert all(len(line) <= 80 or " " not in line.strip() for line in lines), shown.stdout
    [at] = [i for i, line in enumerate(lines) if line.strip() == rid]
    assert "delivered" in lines[at + 1] and rid not in lines[at + 1]


async def test_the_wait_line_cuts_a_long_id_not_the_elapsed_time(
    stack: Stack, held_source: str, outcomes: Outcomes
) -> None:
    rid = unique("x" * 90)
    (stack.templates / "held-source.html").write_text("<p>{{ held.value }}</p>")
    request = stack.root / f"{rid}.json"
    request.write_text(
        json.dumps(
            {
                "request_id": rid,
                "template": "held-source.html",
                "sources": [{"name": "held", "kind": "http", "url": held_source}],
            }
        )
    )
    code, screen = run_on_a_terminal(
        ["request", str(request), "--wait", "--timeout", "3"], stack.env
    )
    assert code == 1, screen  # still running after 3 s: the source is held
    shown = re.findall(r"xxx…xxx[^\r\n]*working on it[^\r\n]*· \d+s", screen)
    assert shown, screen  # the id gave way, the seconds did not
    assert all(len(line) <= 80 for line in shown)
    Held.release.set()
    await outcomes.delivered_event(rid)


# ---- status: queue waits, partly delivered channels ------------------------------------------
def test_status_shows_where_the_time_went_and_it_adds_up(stack: Stack) -> None:
    rid = unique("waits")
    delivered_sample(stack, rid)

    text = stack.cli("status", rid, env=NARROW, check=True).stdout
    assert "(queued)" in text and "before fetcher" in text, text
    total = re.search(
        r"total ([\d.]+)s: ([\d.]+)s in stages, ([\d.]+)s queued(?:, ([\d.]+)s retrying)?"
        r"(?:, ([\d.]+)s not timed by a stage)?(?:, less ([\d.]+)s where stages overlapped)?",
        text,
    )
    assert total, text
    parts = [float(g) for g in total.groups()[1:5] if g is not None]
    overlap = float(total.group(6) or 0)
    assert abs(float(total.group(1)) - sum(parts) + overlap) <= 0.011, text  # rounding only
    rows = re.findall(r"^  (?:fetcher|renderer|distributor) +done +([\d.]+)s", text, re.M)
    assert len(rows) == 3 and abs(sum(map(float, rows)) - float(total.group(2))) < 0.005, text
    waits = json.loads(stack.cli("status", rid, "--json", check=True).stdout)["waits"]
    assert set(waits) == {"fetcher", "renderer", "distributor"}


async def test_a_partly_delivered_report_shows_the_channel_that_delivered(
    stack: Stack, outcomes: Outcomes
) -> None:
    rid2 = unique("partly")
    body = {
        "request_id": rid2,
        "template": "portfolio",
        "params": json.loads(Path(SAMPLE).read_text()),
        "deliver": [{"channel": "file", "path": rid2}, {"channel": "s3", "bucket": "reports"}],
    }
    request = stack.root / f"{rid2}.json"
    request.write_text(json.dumps(body))
    failed = stack.cli("request", str(request), "--wait")
    assert failed.returncode == 1 and "s3" in failed.stderr
    assert delivered_file(stack.out / rid2, rid2).exists()  # the file channel did deliver
    status = json.loads(stack.cli("status", rid2, "--json", check=True).stdout)
    channels = {c["channel"]: c for c in status["channels"]}
    assert channels["file"]["ok"] is True and channels["file"]["target"].endswith(".pdf")
    assert channels["s3"]["ok"] is False and "not configured" in channels["s3"]["detail"]
    text = stack.cli("status", rid2, env=NARROW, check=True).stdout
    assert "file: ok" in text and "s3: FAILED" in text


# ---- delivering again --------------------------------------------------------------------------
def test_a_report_delivered_again_keeps_its_file_name(stack: Stack) -> None:
    rid, folder = unique("again"), unique("again-folder")
    stack.cli(
        "request", "-t", "portfolio", "--data-file", SAMPLE, "--request-id", rid,
        "--to-folder", folder, "--wait", check=True,
    )  # fmt: skip
    [first] = (stack.out / folder).glob("*.pdf")
    assert first.name.startswith("portfolio-status-report-"), first.name  # the report's title
    first.write_bytes(b"tampered with since")
    again = stack.cli("deliver", rid, "--folder", folder, env=NARROW, check=True)
    assert list((stack.out / folder).glob("*.pdf")) == [first]  # replaced, not a second copy
    assert first.read_bytes().startswith(b"%PDF")
    # The path whole on its line (the terminal wraps it), as the user copies it.
    assert f"ok file: PRESSROOM_OUT_DIR/{folder}/{first.name}" in again.stdout.splitlines()[0]


# ---- paths at 80 columns ----------------------------------------------------------------------
def test_paths_and_links_are_printed_whole_at_80_columns(stack: Stack, tmp_path: Path) -> None:
    rid, folder = unique("whole-paths"), f"{unique('finance')}/weekly/operations-and-portfolio"
    waited = stack.cli(
        "request", "-t", "portfolio", "--data-file", SAMPLE, "--request-id", rid,
        "--to-folder", folder, "-f", "pdf", "-f", "csv", "--wait", env=NARROW, check=True,
    )  # fmt: skip
    files = sorted((stack.out / folder).iterdir())
    assert files and all(len(f"PRESSROOM_OUT_DIR/{folder}/{f.name}") > 80 for f in files)
    for file in files:
        assert f"PRESSROOM_OUT_DIR/{folder}/{file.name}" in waited.stdout, waited.stdout
    status = stack.cli("status", rid, env=NARROW, check=True).stdout
    keys = [a["key"] for a in json.loads(stack.cli("status", rid, "--json").stdout)["artefacts"]]
    for shown in [*keys, *(f"PRESSROOM_OUT_DIR/{folder}/{f.name}" for f in files)]:
        assert shown in status, status
    deep = tmp_path / "a-folder-with-a-long-name-for-downloads" / "another-level-of-folders"
    got = stack.cli("get", rid, "-o", str(deep / f"{rid}.pdf"), env=NARROW, check=True)
    assert f"wrote {deep / rid}.pdf (" in got.stdout, got.stdout
    public = {**NARROW, "PRESSROOM_PUBLIC_URL": "https://reports.example.com/pressroom"}
    link = stack.cli("get", rid, "--url", env=public, check=True).stdout
    assert len(link.splitlines()) == 1 and len(link) > 80, link
    rendered = pressroom(
        "render", "-t", "portfolio", "--data-file", SAMPLE, "-o", str(deep / "rendered.pdf")
    )
    assert f"wrote {deep}/rendered.pdf (" in rendered.stdout, rendered.stdout
    archive = deep / "pressroom-backup-of-the-whole-stack-before-the-upgrade.tar.gz"
    backup = stack.cli("backup", str(archive), env=NARROW, check=True)
    assert f"wrote {archive} (0600)" in backup.stdout, backup.stdout


# ---- get, clean ------------------------------------------------------------------------------
def test_get_without_output_writes_request_id_dot_format(stack: Stack) -> None:
    rid = unique("get-default")
    delivered_sample(stack, rid)
    got = stack.cli("get", rid, env=NARROW)
    assert got.returncode == 0, got.stderr
    assert (stack.root / f"{rid}.pdf").read_bytes().startswith(b"%PDF")
    again = stack.cli("get", rid)  # the name was not the user's choice: never overwritten
    assert again.returncode == 1 and "exists already" in one_line(again.stderr)


def test_clean_also_removes_old_delivered_files_and_dry_run_lists_them(stack: Stack) -> None:
    folder = stack.out / unique("old-deliveries")
    folder.mkdir(parents=True)
    old, new, notes = folder / "old.pdf", folder / "new.pdf", folder / "README.txt"
    old.write_bytes(b"%PDF old")
    new.write_bytes(b"%PDF new")
    notes.write_text("the operator's own file: not a delivered report")
    forty_days_ago = time.time() - 40 * 86400
    for path in (old, notes):
        os.utime(path, (forty_days_ago, forty_days_ago))
    listed = stack.cli("clean", "--older-than", "30d", "--dry-run", env=NARROW, check=True)
    shown = [ln.split()[-1] for ln in listed.stdout.splitlines() if "  out  " in ln]
    assert shown == [str(old.relative_to(stack.out))], listed.stdout  # relative to out/
    assert old.exists()  # a dry run deletes nothing
    assert "would remove 1 delivered file(s)" in listed.stdout
    done = json.loads(stack.cli("clean", "--older-than", "30d", "--json", check=True).stdout)
    assert [f["path"] for f in done["files"]] == [str(old)]
    assert not old.exists() and new.exists() and notes.exists()


# ---- errors: all at once, and naming what is wrong --------------------------------------------
def test_render_dry_run_names_every_missing_variable(tmp_path: Path) -> None:
    (tmp_path / "three.html").write_text(
        "<h1>{{ title }}</h1>{% if note is defined %}{{ note }}{% endif %}"
        "<p>{{ owner.name }}</p>{% for row in rows %}{{ row }}{% endfor %}"
    )
    result = pressroom(
        "render", "-t", "three.html", "--dry-run", env={"PRESSROOM_TEMPLATES_DIR": str(tmp_path)}
    )
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert all(f"'{name}'" in line for name in ("title", "owner", "rows")), line
    assert "'note'" not in line  # optional: the template asks whether it is defined


def test_config_errors_come_all_at_once_and_cron_names_the_field(tmp_path: Path) -> None:
    config = tmp_path / "pressroom.yaml"
    config.write_text(
        "max_attempts: 0\nrender_timeout: soon\n"
        "schedules:\n"
        "  - {name: weekly, cron: '0 8 * * 8', request: {template: weekly.html}}\n"
        "  - {name: nightly, cron: '0 24 * *', request: {template: weekly.html}}\n"
    )
    bad = pressroom("config", "check", env={"PRESSROOM_CONFIG": str(config)})
    assert bad.returncode == 1
    line = one_line(bad.stderr)
    assert "max_attempts" in line and "render_timeout" in line, line
    config.write_text(config.read_text().replace("max_attempts: 0\nrender_timeout: soon\n", ""))
    cron = pressroom("config", "check", env={"PRESSROOM_CONFIG": str(config)})
    assert cron.returncode == 1
    line = one_line(cron.stderr)
    assert "day-of-week 8 is out of range 0-7" in line, line
    assert "schedule 'nightly'" in line and "has 4 field(s)" in line, line  # both schedules


def test_a_source_error_names_the_source_as_spelled(tmp_path: Path) -> None:
    config = tmp_path / "pressroom.yaml"
    config.write_text(f"sources:\n  inventory-api: {{kind: http, url: '{closed_url()}'}}\n")
    result = pressroom("sources", "test", "inventory-api", env={"PRESSROOM_CONFIG": str(config)})
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "source 'inventory-api'" in line and "inventory_api" not in line, line


def test_sources_test_all_gives_one_row_each_and_fails_if_any_fails(
    tmp_path: Path, quick_source: str
) -> None:
    config = tmp_path / "pressroom.yaml"
    config.write_text(
        "sources:\n"
        f"  inventory: {{kind: http, url: '{quick_source}'}}\n"
        f"  billing-api: {{kind: http, url: '{closed_url()}'}}\n"
    )
    env = {"PRESSROOM_CONFIG": str(config)}
    shown = pressroom("sources", "test", "--all", env=env)
    assert shown.returncode == 1, shown.stderr
    assert all(len(line) <= 80 for line in shown.stdout.splitlines()), shown.stdout
    rows = json.loads(pressroom("sources", "test", "--all", "--json", env=env).stdout)
    assert {r["source"]: r["ok"] for r in rows} == {"inventory": True, "billing-api": False}
    assert "billing-api" in shown.stdout and "FAILED" in shown.stdout
    config.write_text(f"sources:\n  inventory: {{kind: http, url: '{quick_source}'}}\n")
    assert pressroom("sources", "test", "--all", env=env).returncode == 0


def test_sources_test_reaches_a_schedules_own_source_by_the_name_alerts_give(
    tmp_path: Path, quick_source: str
) -> None:
    # PressroomSourceFailing says `pressroom sources test <source label>`; a scheduled
    # request's own source is labelled with its name in that request. Two schedules' sources
    # and a config source all called `stock`: each one is tested, none silently left out.
    closed = closed_url()
    config = tmp_path / "pressroom.yaml"
    config.write_text(
        f"sources:\n  stock: {{kind: http, url: '{quick_source}'}}\n"
        "schedules:\n"
        "  - name: stock-daily\n    cron: '0 6 * * *'\n    request:\n"
        "      template: weekly.html\n"
        f"      sources: [{{name: stock, kind: http, url: '{quick_source}'}}]\n"
        "  - name: stock-weekly\n    cron: '0 6 * * 1'\n    request:\n"
        "      template: weekly.html\n"
        f"      sources: [{{name: stock, kind: http, url: '{closed}'}}]\n"
    )
    hosts = {quick_source.split("/")[2], closed.split("/")[2]}
    env = {"PRESSROOM_CONFIG": str(config), "PRESSROOM_SOURCE_ALLOW": ",".join(sorted(hosts))}
    each = pressroom("sources", "test", "stock", "--json", env=env)
    assert each.returncode == 1, each.stderr
    rows = {r["source"]: (r["kind"], r["ok"]) for r in json.loads(each.stdout)}
    assert rows == {
        "stock": ("http", True),
        "stock-daily/stock": ("http", True),
        "stock-weekly/stock": ("http", False),
    }
    one = pressroom("sources", "test", "stock-daily/stock", env=env)
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("ok: stock-daily/stock (http) answered"), one.stdout
    listed = json.loads(pressroom("sources", "test", "--all", "--json", env=env).stdout)
    assert {r["source"] for r in listed} == set(rows)
    unknown = pressroom("sources", "test", "stocks", env=env)
    assert "schedules' requests (known: stock, stock-daily/stock" in one_line(unknown.stderr)


# ---- request --subject / --source, and the report timeout -------------------------------------
async def test_request_source_and_subject_flags(
    stack: Stack, quick_source: str, outcomes: Outcomes
) -> None:
    checked = stack.cli(
        "request",
        "-t",
        "portfolio",
        "--email",
        "ops@example.com",
        "--subject",
        "Weekly numbers",
        "--source",
        "prs=portfolio-prs",
        "--validate",
        "--json",
        check=True,
    )
    body = json.loads(checked.stdout)["request"]
    assert body["deliver"] == [
        {"channel": "email", "to": ["ops@example.com"], "subject": "Weekly numbers"}
    ]
    [source] = body["sources"]
    assert (source["name"], source["source"]) == ("prs", "portfolio-prs")
    lonely = stack.cli("request", "-t", "portfolio", "--subject", "x", "--validate")
    assert lonely.returncode == 1 and "--email" in one_line(lonely.stderr)
    (stack.templates / "flag-source.html").write_text("<p>value={{ inv.value }}</p>")
    rid = unique("flag-source")
    stack.cli(
        "request",
        "-t",
        "flag-source.html",
        "--source",
        f"inv={quick_source}",
        "-f",
        "html",
        "--request-id",
        rid,
        "--wait",
        check=True,
    )
    assert "value=1234567" in delivered_file(stack.out, rid, "html").read_text()


def test_a_request_from_a_shell_without_user_names_the_login_the_audit_names() -> None:
    # `pressroom()` runs in a clean environment: no USER, LOGNAME (a container, cron).
    checked = pressroom("request", "-t", "portfolio", "--validate", "--json")
    assert checked.returncode == 0, checked.stderr
    login = pwd.getpwuid(os.getuid()).pw_name
    assert json.loads(checked.stdout)["request"]["requested_by"] == f"cli:{login}"


async def test_a_report_over_its_timeout_fails_naming_the_stage(
    stack: Stack, held_source: str, outcomes: Outcomes
) -> None:
    (stack.templates / "held-source.html").write_text("<p>{{ held.value }}</p>")
    rid = unique("deadline")
    request = stack.root / f"{rid}.json"
    request.write_text(
        json.dumps(
            {
                "request_id": rid,
                "template": "held-source.html",
                "timeout": 2,
                "sources": [{"name": "held", "kind": "http", "url": held_source}],
            }
        )
    )
    result = stack.cli("request", str(request), "--wait", "--timeout", "120")
    assert result.returncode == 1
    assert "timed out after 2 s at fetcher" in result.stderr, result.stderr
    failed = await outcomes.failed_event(rid)
    assert failed["stage"] == "fetcher" and failed["attempts"] == 1
    status = json.loads(stack.cli("status", rid, "--json", check=True).stdout)
    assert status["status"] == "failed" and "timed out" in status["error"]


def cpu_seconds_of_children(parent: int) -> dict[int, float]:
    """CPU seconds used so far by each child process of `parent` (from /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == parent:  # ppid
            found[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf(
                "SC_CLK_TCK"
            )
    return found


async def test_a_render_over_the_report_timeout_is_stopped_and_the_renderer_goes_on(
    stack: Stack, outcomes: Outcomes
) -> None:
    # Ten billion loop rounds: far more than the 10 s the request allows (and than the
    # renderer's own 120 s cap), so only the request's timeout can end it in time.
    (stack.templates / "endless.html").write_text(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    )
    rid = unique("render-deadline")
    waiting = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.console.cli",
            "request",
            "-t",
            "endless.html",
            "--report-timeout",
            "10",
            "--request-id",
            rid,
            "--wait",
            "--timeout",
            "110",
        ],
        env=stack.env,
        cwd=stack.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    renderer = stack.procs["renderer"][0].pid

    async def busy_render_process() -> int | None:
        used = cpu_seconds_of_children(renderer)
        return next((pid for pid, secs in used.items() if secs >= 1.0), None)

    busy = await eventually(busy_render_process, timeout=60)
    _, stderr = waiting.communicate(timeout=120)
    assert waiting.returncode == 1
    assert "timed out after 10 s at renderer" in stderr, stderr

    async def stopped() -> bool:  # not left looping for nobody
        return (
            not Path(f"/proc/{busy}").exists()
            or "Z" in Path(f"/proc/{busy}/stat").read_text().rsplit(")", 1)[1].split()[0]
        )

    await eventually(stopped, timeout=30)
    after = unique("after-deadline")
    delivered_sample(stack, after)
    assert delivered_file(stack.out, after).read_bytes().startswith(b"%PDF")


# ---- the sample template, the README ------------------------------------------------------------
def test_kpi_tiles_show_grouped_numbers(tmp_path: Path) -> None:
    data = str(REPO / "templates/samples/multilingual.json")  # deployment_count: 1234567
    for locale, shown in ((None, "1,234,567"), ("de-DE", "1.234.567")):
        pdf = tmp_path / f"kpi-{locale}.pdf"
        args = ["render", "-t", "portfolio", "--data-file", data, "-o", str(pdf)]
        result = pressroom(*args, *(["--locale", locale] if locale else []))
        assert result.returncode == 0, result.stderr
        text = pdf_text(pdf)
        assert shown in text and "1234567" not in text


def test_the_readme_tls_line_works_once_uncommented() -> None:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Publishing a request from another system") :]
    code = section[section.index("```python") + len("```python") : section.index("```\n", 10)]
    assert "# tls=ssl." in code
    code = code.replace("# tls=ssl.", "tls=ssl.")
    ruff = Path(sys.executable).with_name("ruff")
    checked = subprocess.run(
        [str(ruff), "check", "--select", "F821", "--stdin-filename", "snippet.py", "-"],
        input=code,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout  # no undefined name (ssl)


# ---- under `pressroom up` (what `make run` runs): alerts, logs ---------------------------------
@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("up")
    env = up_env(root, COLUMNS="80")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.console.cli", "up", "--sample"],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while not list((root / "out").glob("portfolio-status-report-*.pdf")):
            assert proc.poll() is None, "pressroom up exited"
            assert time.monotonic() < deadline, "the sample was not delivered"
            time.sleep(0.2)
        [pdf] = list((root / "out").glob("portfolio-status-report-*.pdf"))
        listed = pressroom("ls", "--json", env=env, cwd=root, timeout=120)
        [sample] = [
            e["request_id"]
            for e in json.loads(listed.stdout)
            if e["request_id"].startswith("sample-portfolio-")  # not a fire of the schedule
        ]
        assert delivered_file(root / "out", sample) == pdf
        yield {"env": env, "root": root, "sample": sample}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def cli(up: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return cliproc.run(args, env=up["env"], cwd=up["root"], timeout=120)


def test_alerts_under_make_run_says_how_to_get_prometheus(up: dict[str, Any]) -> None:
    result = cli(up, "alerts")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "started without one" in line and "pressroom up --sample --prometheus" in line, line


def test_logs_shows_a_request_across_the_services(up: dict[str, Any]) -> None:
    rid = up["sample"]
    shown = cli(up, "logs", "--request", rid, "--lines", "0")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), shown.stdout
    assert not any(line.startswith("{") for line in lines)  # readable, not JSON
    for service in ("fetcher-1", "renderer-1", "distributor-1"):
        assert any(f" {service} " in line for line in lines), (service, shown.stdout)
    renderer = cli(up, "logs", "renderer", "--request", rid).stdout
    assert " renderer-1 " in renderer and " fetcher-1 " not in renderer
    as_json = cli(up, "logs", "--request", rid, "--json").stdout
    records = [json.loads(line) for line in as_json.splitlines()]
    assert records and all(r["request_id"] == rid for r in records)
    unknown = cli(up, "logs", "bogus")
    assert unknown.returncode == 1 and "fetcher" in one_line(unknown.stderr)


def _interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.timeout(480)  # its own limits (a request, 180 s, 120 s) are the ones that count
def test_logs_follow_prints_new_lines_as_they_come(up: dict[str, Any]) -> None:
    rid = unique("followed")
    follower = subprocess.Popen(
        [sys.executable, "-m", "services.console.cli", "logs", "-f", "--request", rid],
        env=up["env"],
        cwd=up["root"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C as a terminal's foreground command gets it: a test run started in the
        # background (`make test &`, nohup) hands SIGINT down ignored, and Python then keeps
        # ignoring it — the command would never see the Ctrl-C this test sends.
        preexec_fn=_interruptible,
    )
    seen: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            seen.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        published = cli(
            up, "request", "-t", "portfolio", "--data-file", SAMPLE, "--request-id", rid, "--wait"
        )
        assert published.returncode == 0, published.stderr
        services: set[str] = set()
        deadline = time.monotonic() + 180  # generous: a loaded machine is slow, not broken
        while not {"fetcher-1", "distributor-1"} <= services:
            assert time.monotonic() < deadline, services
            try:
                line = seen.get(timeout=1)
            except queue.Empty:
                continue
            services |= {s for s in ("fetcher-1", "distributor-1") if f" {s} " in line}
    finally:
        follower.send_signal(signal.SIGINT)
        try:
            follower.wait(timeout=120)
        except subprocess.TimeoutExpired:
            follower.kill()  # then the assertion below says it did not stop on Ctrl-C
            follower.wait()
    assert follower.returncode == 0, "`pressroom logs -f` did not stop cleanly on Ctrl-C"
