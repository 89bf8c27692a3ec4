"""`pressroom up` (what `make run` runs): embedded NATS, every service, the sample, clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.embedded import free_port, port_open
from tests.helpers import REPO

pytestmark = pytest.mark.integration


def test_up_delivers_the_sample_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRESSROOM_", "OTEL_"))}
    env.update(
        PRESSROOM_NATS_PORT=str(port),
        PRESSROOM_DATA_DIR=str(tmp_path / "state"),
        PRESSROOM_OUT_DIR=str(tmp_path / "out"),
        PRESSROOM_TEMPLATES_DIR=str(REPO / "templates"),
        PYTHONPATH=str(REPO),
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "up", "--sample", "--scale", "renderer=2"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not list((tmp_path / "out").glob("*.pdf")):
            assert up.poll() is None, up.stdout.read().decode() if up.stdout else ""
            time.sleep(0.2)
        [pdf] = list((tmp_path / "out").glob("sample-portfolio-*.pdf"))
        assert pdf.read_bytes().startswith(b"%PDF")
        workers = (tmp_path / "state" / "workers.json").read_text()
        assert "renderer-2" in workers and "scheduler-1" in workers
        children = descendants(up.pid)
        assert len(children) >= 6  # nats-server, scheduler, fetcher, 2 renderers, distributor
    finally:
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=30)[0].decode()
    assert up.returncode == 0, output
    assert "stopped." in output
    assert not port_open("127.0.0.1", port)  # the embedded nats-server is gone too
    time.sleep(0.5)
    assert [
        pid
        for pid in children
        if Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()
    ] == []


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (workers, their render processes, nats-server)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().split()[3])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        kids = [child for child, parent in parents.items() if parent == current]
        found += kids
        frontier += kids
    return found
