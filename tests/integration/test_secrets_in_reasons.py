"""Secrets in failure reasons, tried as an attacker would read them, on real servers.

A reason quotes what failed: a source's URL, a library's message. It then reaches the worker's
log, the ledger (`pressroom status`), the dead letter (`pressroom dlq ls`), the tenant's own
`report.failed`, the console's pages for every role and the audit trail. Canary secrets sit in
the operator's configuration (a source URL's query, a credential token pasted with its newline,
the Prometheus URL's password) and in a tenant's own source URL; each test makes them fail and
looks for the canary everywhere a reader can.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.console.identities import generate
from shared.events import request_message_id
from tests.helpers import REPO, Console, Stack, eventually, unique
from tests.servers import HttpReceiver

pytestmark = pytest.mark.integration

QUERY = "CANARY-query-5b1e"  # the operator's API key in a named source's URL
TOKEN = "CANARY-token-93ad"  # the operator's bearer token, read from YAML with its newline
PATH_PARAM = "CANARY-param-77c0"  # a tenant's token as a `;token=` path parameter
MONITOR = "CANARY-monitor-2f4d"  # the Prometheus password in PRESSROOM_MONITOR_URL
CANARIES = (QUERY, TOKEN, PATH_PARAM, MONITOR)
VIEWER = ("vera", "vera-views-all-day-long")


def leaked(text: str) -> list[str]:
    return [canary for canary in CANARIES if canary in text]


def answer(path: str, n: int) -> tuple[int, bytes, dict[str, str]]:
    if path.startswith("/api/export"):
        return 404, b"{}", {"Content-Type": "application/json"}
    if path.startswith("/fail"):
        return 500, b"{}", {"Content-Type": "application/json"}
    return 401, b"", {}  # Prometheus, asked with the wrong password


@pytest.fixture(scope="module")
def server() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver(answer).start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, server: HttpReceiver) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("secrets")
    config = root / "config.yaml"
    config.write_text(
        "source_credentials:\n"
        "  billing_api:\n"
        f"    base_url: {server.url}/api\n"
        "    tenants: [alpha]\n"  # alpha, a calling system, may use them
        "    token: |\n"  # a block scalar: the token ends with a newline
        f"      {TOKEN}\n"
        "sources:\n"
        "  billing:\n"
        "    kind: http\n"
        "    tenants: [alpha]\n"
        f"    url: {server.url}/api/export?api_key={QUERY}\n"
        "  ledger_api:\n"
        "    kind: http\n"
        "    tenants: [alpha]\n"
        "    credentials: billing_api\n"
        f"    url: {server.url}/api/ledger\n"
    )
    generate(root / "auth", publishers=["alpha"])
    running = Stack(
        root,
        env_extra={
            "PRESSROOM_CONFIG": str(config),
            "PRESSROOM_MONITOR_URL": f"http://prom:{MONITOR}@127.0.0.1:{server.port}",
        },
        # Workers exec'd as in a deployment: /proc/<pid>/environ is what a process started
        # with, and a forked one (tests/cliproc.py) started with the zygote's.
        fork=False,
    ).start()
    (running.templates / "hello.html").write_text("<html><body>{{ who }}</body></html>")
    try:
        yield running
    finally:
        running.stop()


async def viewer_pages(stack: Stack, rids: list[str]) -> dict[str, str]:
    """What a console user with the viewer role reads about the failed reports."""
    console = Console(stack, {VIEWER[0]: ("viewer", VIEWER[1])}).start()
    try:
        await console.wait_ready()
        async with httpx.AsyncClient(timeout=60, base_url=console.url) as client:
            form = await client.get("/login")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
            assert csrf is not None
            cookie = "; ".join(f"{k}={v}" for k, v in form.cookies.items())
            login = await client.post(
                "/login",
                data={"username": VIEWER[0], "password": VIEWER[1], "csrf_token": csrf[1]},
                headers={"cookie": cookie},
            )
            assert login.status_code == 303, login.text
            (session,) = login.headers.get_list("set-cookie")
            client.headers["cookie"] = session.split(";")[0]

            async def listed() -> bool:
                shown = (await client.get("/api/reports")).json()["reports"]
                return set(rids) <= {row["request_id"] for row in shown}

            await eventually(listed, timeout=60, every=0.5)
            pages = {path: (await client.get(path)).text for path in ("/api/reports", "/reports")}
            for rid in rids:
                pages[f"/api/reports/{rid}"] = (await client.get(f"/api/reports/{rid}")).text
            letters = await client.get("/api/dead-letters")
            pages["/api/dead-letters"] = letters.text
            for row in letters.json()["dead_letters"]:
                for path in (f"/api/dead-letters/{row['id']}", f"/dead-letters/{row['id']}"):
                    pages[path] = (await client.get(path)).text
            pages["/api/health"] = (await client.get("/api/health")).text
            pages["/api/audit"] = (await client.get("/api/audit")).text
            return pages
    finally:
        console.stop()


async def test_no_reader_of_a_failure_sees_a_secret_it_quotes(
    stack: Stack, server: HttpReceiver
) -> None:
    alpha = await stack.connect("publisher-alpha")
    heard: dict[str, dict[str, Any]] = {}

    async def on_failed(msg: Any) -> None:
        event = json.loads(msg.data)
        heard[event["request_id"]] = event

    await alpha.subscribe("report.failed", cb=on_failed)
    await alpha.flush()
    sources = {
        unique("query"): {"name": "b", "source": "billing"},
        unique("token"): {"name": "l", "source": "ledger_api"},
        unique("param"): {
            "name": "s",
            "kind": "http",
            "url": f"{server.url}/fail;token={PATH_PARAM}",
        },
    }
    for rid, source in sources.items():
        body = {"request_id": rid, "template": "hello.html", "params": {"who": "x"}}
        data = json.dumps({**body, "sources": [source]}).encode()
        await alpha.jetstream().publish(
            "report.requested", data, headers={"Nats-Msg-Id": request_message_id(data, rid)}
        )
    rids = list(sources)

    async def all_failed() -> bool:
        return set(rids) <= set(heard)

    await eventually(all_failed, timeout=180, every=0.2)
    await alpha.close()

    # The tenant's own outcome says what failed, without the operator's secret.
    query, token, param = (heard[rid]["reason"] for rid in rids)
    assert "answered 404" in query and "api_key=***" in query, query
    assert "header Authorization has a line break" in token, token
    assert "token=***" in param, param
    for rid in rids:
        assert leaked(json.dumps(heard[rid])) == [], heard[rid]

    # The operator's tools.
    for rid in rids:
        status = stack.cli("status", rid, "--json", check=True)
        assert json.loads(status.stdout)["status"] == "failed"
        assert leaked(status.stdout + status.stderr) == [], rid
    letters = stack.cli("dlq", "ls", "--json", check=True)
    assert set(rids) <= {row["request_id"] for row in json.loads(letters.stdout)}
    assert leaked(letters.stdout) == []
    tried = stack.cli("sources", "test", "billing")  # audited, and it fails with the URL
    assert tried.returncode != 0 and "api_key=***" in tried.stderr, tried.stderr
    assert leaked(tried.stdout + tried.stderr) == []

    # The workers' logs.
    for log in (stack.root / "logs").glob("*.log"):
        assert leaked(log.read_text(errors="replace")) == [], log.name

    # Every page a console viewer may open, Prometheus (refusing the password) included.
    pages = await viewer_pages(stack, rids)
    assert "answered 401" in pages["/api/health"], pages["/api/health"]
    assert "sources test" in pages["/api/audit"]
    for path, text in pages.items():
        assert leaked(text) == [], path


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == parent:
            found.append(int(entry.name))
    return found


def test_a_render_process_starts_without_any_secret_in_its_environment(stack: Stack) -> None:
    """Even `/proc/<pid>/environ`, which keeps the environment a process started with, of a
    live render process: a template that found a way to read files would find no secret."""
    (renderer,) = stack.procs["renderer"]
    # Its render processes and multiprocessing's resource tracker.
    renders = [pid for pid in children_of(renderer.pid) if b"multiprocessing" in cmdline(pid)]
    assert len(renders) >= 2, [cmdline(pid) for pid in renders]
    for pid in renders:
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        names = {entry.partition("=")[0] for entry in environ.split("\0") if entry}
        assert "PRESSROOM_CONFIG" not in names
        assert "PRESSROOM_NATS_CREDENTIALS_DIR" not in names
        assert "PRESSROOM_MONITOR_URL" not in names  # a URL with a password in it
        assert leaked(environ) == []
    # The renderer itself still has what it needs (its own environment, unchanged).
    own = Path(f"/proc/{renderer.pid}/environ").read_bytes().decode(errors="replace")
    assert "PRESSROOM_CONFIG=" in own


def peek_from_a_render_process() -> tuple[str, str]:
    """What code that got to run in a render process could read: its own environment, and
    its parent's (the renderer's)."""
    own = Path("/proc/self/environ").read_bytes().decode(errors="replace")
    try:
        parent = Path(f"/proc/{os.getppid()}/environ").read_bytes().decode(errors="replace")
    except OSError as error:
        parent = type(error).__name__
    return own, parent


PEEK = """
import asyncio, json, sys
from services.renderer.pool import CappedPool
from tests.integration.test_secrets_in_reasons import peek_from_a_render_process

async def main() -> None:
    import ctypes

    pool = CappedPool(1, warm=False)
    try:
        own, parent = await pool.run(peek_from_a_render_process, label="peek")
        dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)  # PR_GET_DUMPABLE, of this process
    finally:
        await pool.close()
    print(json.dumps({"own": own, "parent": parent, "dumpable": dumpable}))

asyncio.run(main())
"""


def test_code_running_in_a_render_process_finds_no_secret_in_its_or_the_renderers_environment(
    tmp_path: Path,
) -> None:
    """As an attacker who got code to run in a render process (a WeasyPrint or Pillow bug)
    would look: its own environment, then its parent's `/proc/<ppid>/environ`. The renderer is
    not dumpable once its pool started, so Linux refuses that read to a process of the same user
    without CAP_SYS_PTRACE (ptrace(2), "access mode checking"). The tests run as root, which may
    read it anyway, so what is checked is the flag; where the read is refused, it must be."""
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(REPO),
        "SOFTHSM2_CONF": str(tmp_path / "softhsm2.conf"),  # a library's own: it passes
        "PRESSROOM_S3_SECRET_KEY": "CANARY-env-s3",
        "PRESSROOM_CONFIG": "/etc/pressroom/CANARY-env-config.yaml",
        "SENTRY_DSN": "https://CANARY-env-dsn@sentry.example/1",
        "HTTPS_PROXY": "http://CANARY-env-proxy@proxy.example:3128",
        "PRESSROOM_SOURCES": '{"b": {"kind": "http", "headers": {"X-Key": "CANARY-env-hdr"}}}',
        "PRESSROOM_PDF_SEAL_KEY_FILE": "/run/secrets/CANARY-env-seal",
    }
    done = subprocess.run(
        [sys.executable, "-c", PEEK],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert "CANARY" not in seen["own"], seen["own"]
    assert "SOFTHSM2_CONF=" in seen["own"]  # what the libraries need is there
    assert seen["dumpable"] == 0  # the renderer: /proc/<pid>/environ for root only
    if os.getuid() != 0:
        assert seen["parent"] == "PermissionError", seen["parent"][:200]
