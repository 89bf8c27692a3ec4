"""`pressroom up` restarts a worker that is killed, and gives up on one that keeps crashing.

A real `up` runs on a pseudo-terminal at 80 columns, so the test reads the status line an
operator reads; workers are killed with SIGKILL as the kernel's OOM killer would.
"""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, delivered_file, pressroom, unique, up_env
from tests.integration.test_up import descendants, survivors

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(600)]

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class Up:
    """`pressroom up` on a pseudo-terminal (COLUMNS=80): what it printed, ANSI codes removed."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env = up_env(root, COLUMNS="80", LINES="25", TERM="xterm", **(env or {}))
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.console.cli", "up"],
            env=self.env, cwd=root, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
            start_new_session=True,
        )  # fmt: skip
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:
                return
            if not data:
                return
            self._chunks.append(data)

    @property
    def screen(self) -> str:
        return ANSI.sub("", b"".join(self._chunks).decode(errors="replace")).replace("\r", "")

    @property
    def status(self) -> str:
        """The status line as last drawn (its first line and the lines about workers)."""
        frames = list(re.finditer(r"\d+/\d+ services up", self.screen))
        return self.screen[frames[-1].start() :] if frames else ""

    def until(self, what: Callable[[], Any], timeout: float = 180, why: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"up exited:\n{self.screen[-3000:]}"
            found = what()
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"{why or what} not seen within {timeout}s:\n{self.screen[-3000:]}")

    def workers(self) -> dict[str, str]:
        registry = self.root / "state" / "workers.json"
        self.until(registry.exists, why="workers.json")
        return dict(json.loads(registry.read_text()))

    def pid_of(self, name: str) -> int | None:
        """The running `pressroom worker NAME` process (none while it is being restarted)."""
        for pid in descendants(self.proc.pid):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                state = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            if argv[-3:-1] == [b"worker", name.encode()] and "zombie" not in state:
                return pid
        return None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return pressroom(*args, env=self.env, cwd=self.root, timeout=120)

    def stop(self) -> str:
        children = descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            self._reader.join(timeout=5)
            os.close(self._master)
        assert survivors(children) == []
        return self.screen


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def up_log(root: Path) -> list[dict[str, Any]]:
    log = root / "state" / "logs" / "up.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    config = tmp_path / "pressroom.yaml"
    config.write_text(
        "schedules:\n"
        "  - name: every-minute\n"
        "    cron: '* * * * *'\n"
        "    request:\n"
        "      template: weekly.html\n"
        "      sources: [{name: inventory, kind: file, path: portfolio.json, merge: true}]\n"
        "      deliver: [{channel: file, path: scheduled}]\n"
        f"data_files_dir: {REPO / 'templates' / 'samples'}\n"
    )
    stack = Up(tmp_path, {"PRESSROOM_CONFIG": str(config)})
    yield stack
    if stack.proc.poll() is None:
        stack.stop()


def test_every_kind_of_worker_killed_comes_back_and_what_queued_meanwhile_is_delivered(
    up: Up,
) -> None:
    workers = up.workers()
    for url in workers.values():
        up.until(lambda url=url: ready(url), why=f"{url}/readyz")
    data = str(REPO / "templates" / "samples" / "portfolio.json")
    for round_, name in enumerate(("fetcher", "renderer", "distributor", "scheduler"), 1):
        pid = up.until(lambda name=name: up.pid_of(name), why=f"{name} pid")
        os.kill(pid, signal.SIGKILL)
        # Published while the worker is down: it waits in the stream for the new process.
        rids = [unique(f"{name}-killed") for _ in range(2)]
        for rid in rids:
            sent = up.cli("request", "-t", "weekly.html", "--data-file", data, "--request-id", rid)
            assert sent.returncode == 0, sent.stderr
        shown = f"{name}-1 restarted 1× (killed by SIGKILL)"
        up.until(lambda shown=shown: shown in up.screen, why=shown)
        new = up.until(lambda name=name: up.pid_of(name), why=f"{name} again")
        assert new != pid
        up.until(lambda name=name: ready(workers[f"{name}-1"]), why=f"{name}-1 ready again")
        for rid in rids:
            up.until(lambda rid=rid: delivered_file(up.root / "out", rid).exists(), why=rid)
        everyone = f"{len(workers)}/{len(workers)} services up"
        up.until(
            lambda s=shown, e=everyone: up.status.startswith(e) and s in up.status, why=everyone
        )
        restarts = [e for e in up_log(up.root) if "restarted" in e["event"]]
        assert len(restarts) == round_ and restarts[-1]["worker"] == f"{name}-1"
        assert restarts[-1]["exit"] == "killed by SIGKILL"
    # The restarted scheduler fires its schedule (every minute) into the file channel.
    up.until(lambda: list((up.root / "out" / "scheduled").glob("*.pdf")), timeout=150)
    for pdf in (up.root / "out").glob("*.pdf"):
        assert pdf.read_bytes().startswith(b"%PDF")
    assert "stopped." in up.stop()


def test_a_worker_that_keeps_crashing_is_given_up_and_the_rest_carry_on(tmp_path: Path) -> None:
    up = Up(tmp_path, {"PRESSROOM_RESTART_LIMIT": "2"})
    taken = socket.socket()
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past our probes' TIME_WAIT
    try:
        health = up.workers()["scheduler-1"]
        up.until(lambda: ready(health), why="scheduler ready")
        # Its health port is taken by someone else once it is killed: every restart exits at once.
        os.kill(up.until(lambda: up.pid_of("scheduler")), signal.SIGKILL)
        port = int(health.rsplit(":", 1)[1])
        up.until(lambda: bound(taken, port), why=f"port {port} free")
        given_up = "scheduler-1 crash loop: given up after 2 restart(s) (exit code 1)"
        up.until(lambda: given_up in up.screen, why=given_up)
        up.until(lambda: up.status.startswith("3/4 services up") and given_up in up.status)
        # The others carry on: a report goes through while the scheduler stays down.
        rid = unique("carry-on")
        data = str(REPO / "templates" / "samples" / "portfolio.json")
        sent = up.cli(
            "request", "-t", "weekly.html", "--data-file", data, "--request-id", rid, "--wait"
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert delivered_file(tmp_path / "out", rid).exists()
        # Bounded: two restarts, then nothing more (the report above took seconds).
        events = [e for e in up_log(tmp_path) if e["worker"] == "scheduler-1"]
        assert [e["event"].split(";")[0] for e in events] == [
            "scheduler-1 exited (killed by SIGKILL)",
            "scheduler-1 restarted (1×)",
            "scheduler-1 exited (exit code 1)",
            "scheduler-1 restarted (2×)",
            f"scheduler-1 exited (exit code 1) after 2 restart(s) in 300s: given up, see "
            f"{tmp_path / 'state' / 'logs' / 'scheduler-1'}.log",
        ]
        assert events[-1]["given_up"] is True
        assert up.pid_of("scheduler") is None
        log = (tmp_path / "state" / "logs" / "scheduler-1.log").read_text()
        assert "error: scheduler:" in log and "address already in use" in log  # one line why
        assert "Traceback" not in log
    finally:
        taken.close()
        output = up.stop()
    assert "stopped." in output


def bound(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    sock.listen()
    return True
