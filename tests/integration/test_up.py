"""`pressroom up` (what `make run` runs): embedded NATS, every service, the sample, clean Ctrl-C."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.console.embedded import free_port, port_open
from tests.helpers import REPO, delivered_file, pressroom, up_env

pytestmark = pytest.mark.integration


def test_up_delivers_the_sample_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    env = up_env(tmp_path)
    port = int(env["PRESSROOM_NATS_PORT"])
    up = subprocess.Popen(
        [sys.executable, "-m", "services.console.cli", "up", "--sample", "--scale", "renderer=2"],
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
        [pdf] = list((tmp_path / "out").glob("portfolio-status-report-*.pdf"))
        assert pdf.read_bytes().startswith(b"%PDF")
        workers = (tmp_path / "state" / "workers.json").read_text()
        assert "renderer-2" in workers and "scheduler-1" in workers
        children = descendants(up.pid)
        assert len(children) >= 6  # nats-server, scheduler, fetcher, 2 renderers, distributor
        # The embedded bus is locked too: identities in the data folder, nobody anonymous …
        seeds = tmp_path / "state" / "auth"
        assert oct((seeds / "ops.nk").stat().st_mode & 0o777) == "0o600"
        assert anonymous_refused(port)
        # … and the CLI in another terminal finds the ops identity by itself.
        listed = pressroom("ls", "--json", env=env, cwd=tmp_path, timeout=60)
        assert listed.returncode == 0, listed.stderr
        listed_ids = [e["request_id"] for e in json.loads(listed.stdout)]
        # The sample config's schedule fires every five minutes: a run across a boundary also
        # lists that fire, which delivers into out/scheduled/, not beside the sample.
        sample_ids = [rid for rid in listed_ids if not rid.startswith("sample-folder-")]
        assert len(sample_ids) == 1 and sample_ids[0].startswith("sample-portfolio-"), listed_ids
        assert [delivered_file(tmp_path / "out", rid) for rid in sample_ids] == [pdf]
    finally:
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=30)[0].decode()
    assert up.returncode == 0, output
    assert "stopped." in output
    assert "console on http://127.0.0.1:" in output  # the web console runs with the stack
    for log in (tmp_path / "state" / "logs").glob("*.log"):  # JSON lines only, no tracebacks
        for line in log.read_text().splitlines():
            event = json.loads(line)
            assert event["service"] == f"pressroom-{log.stem.rsplit('-', 1)[0]}", line
    assert not port_open("127.0.0.1", port)  # the embedded nats-server is gone too
    assert survivors(children) == []


def anonymous_refused(port: int) -> bool:
    import asyncio

    import nats

    async def attempt() -> bool:
        async def ignore(error: Exception) -> None:
            pass

        try:
            nc = await nats.connect(
                f"nats://127.0.0.1:{port}", allow_reconnect=False, max_reconnect_attempts=1,
                connect_timeout=3, error_cb=ignore,
            )  # fmt: skip
        except Exception as error:
            return "authorization" in str(error).lower()
        await nc.close()
        return False

    return asyncio.run(attempt())


def test_up_runs_the_pipeline_on_an_external_locked_bus(tmp_path: Path) -> None:
    from tests.helpers import Stack

    bus = Stack(tmp_path / "bus", workers={}).start()  # nats-server with `bus auth`, set up
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRESSROOM_", "OTEL_"))}
    env.update(
        PRESSROOM_NATS_URL=bus.url,
        PRESSROOM_NATS_CREDENTIALS_DIR=str(bus.auth_dir),
        PRESSROOM_DATA_DIR=str(tmp_path / "state"),
        PRESSROOM_OUT_DIR=str(tmp_path / "out"),
        PRESSROOM_TEMPLATES_DIR=str(REPO / "templates"),
        PYTHONPATH=str(REPO),
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "services.console.cli", "up", "--sample"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not list((tmp_path / "out").glob("*.pdf")):
            assert up.poll() is None, up.stdout.read().decode() if up.stdout else ""
            time.sleep(0.2)
        [pdf] = list((tmp_path / "out").glob("portfolio-status-report-*.pdf"))
        assert pdf.read_bytes().startswith(b"%PDF")
        logs = "".join(p.read_text() for p in (tmp_path / "state" / "logs").glob("*.log"))
        assert "bus refused" not in logs  # every role had the permissions it needed
    finally:
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=30)[0].decode()
        bus.stop()
    assert up.returncode == 0, output


def survivors(children: list[int], timeout: float = 30) -> list[int]:
    """Those of `children` still running once they have had `timeout` seconds to exit (a zombie
    waiting for init to reap it has exited)."""

    def running(pid: int) -> bool:
        try:
            return "zombie" not in Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False

    deadline = time.monotonic() + timeout
    while (alive := [pid for pid in children if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


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


def test_up_with_prometheus_shows_a_failing_templates_alert(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: `make test-deps` installs it")
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "templates", templates)
    (templates / "broken.html").write_text("<p>{{ nobody_sends_this }}</p>\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRESSROOM_", "OTEL_"))}
    env.update(
        PRESSROOM_NATS_PORT=str(free_port()),
        PRESSROOM_DATA_DIR=str(tmp_path / "state"),
        PRESSROOM_OUT_DIR=str(tmp_path / "out"),
        PRESSROOM_TEMPLATES_DIR=str(templates),
        PYTHONPATH=str(REPO),
        COLUMNS="80",
    )
    port = free_port()
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.console.cli",
            "up",
            "--prometheus",
            "--prometheus-port",
            str(port),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return pressroom(*args, env=env, cwd=tmp_path, timeout=60)

    try:
        targets = tmp_path / "state" / "prometheus" / "targets.json"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "state/prometheus/url").exists():
            assert up.poll() is None, up.stdout.read().decode() if up.stdout else ""
            time.sleep(0.2)
        services = {g["labels"]["service"] for g in json.loads(targets.read_text())}
        assert services == {"scheduler", "fetcher", "renderer", "distributor"}
        request = cli("request", "--template", "broken.html", "--wait", "--timeout", "90")
        assert request.returncode == 1 and "nobody_sends_this" in request.stderr, request

        shown = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            alerts = cli("alerts")
            if "PressroomReportFailed" in alerts.stdout:
                shown = alerts
                break
            assert alerts.returncode == 0, alerts.stdout + alerts.stderr  # nothing firing yet
            time.sleep(1)
        assert shown is not None, "PressroomReportFailed never fired"
        assert shown.returncode == 1  # something is firing
        assert "P3 PressroomReportFailed" in shown.stdout
        assert "template=broken.html" in shown.stdout and "reason=template_error" in shown.stdout
        assert "start with: pressroom dlq ls --stage renderer --since 1h" in shown.stdout
        assert "docs/operations.md#pressroomreportfailed" in shown.stdout
        as_json = json.loads(cli("alerts", "--json").stdout)
        [failed] = [a for a in as_json["alerts"] if a["alert"] == "PressroomReportFailed"]
        assert failed["severity"] == "P3" and failed["labels"]["template"] == "broken.html"
        assert as_json["prometheus"] == f"http://127.0.0.1:{port}"
        children = descendants(up.pid)
    finally:
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=30)[0].decode()
    assert up.returncode == 0, output
    assert f"Prometheus on http://127.0.0.1:{port}" in output
    assert not port_open("127.0.0.1", port)  # the embedded prometheus is gone too
    assert not targets.exists()
    assert survivors(children) == []


def test_alerts_without_any_prometheus_is_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRESSROOM_", "OTEL_"))}
    env.update(PRESSROOM_DATA_DIR=str(tmp_path / "state"), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "services.console.cli", "alerts"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "pressroom up --prometheus" in result.stderr
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.console.cli",
            "alerts",
            "--prometheus",
            f"http://127.0.0.1:{free_port()}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "cannot ask Prometheus" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0


def test_a_second_up_on_the_same_data_folder_is_refused_naming_the_first(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRESSROOM_", "OTEL_"))}
    env.update(
        PRESSROOM_NATS_PORT=str(free_port()),
        PRESSROOM_DATA_DIR=str(tmp_path / "state"),
        PRESSROOM_OUT_DIR=str(tmp_path / "out"),
        PRESSROOM_TEMPLATES_DIR=str(REPO / "templates"),
        PYTHONPATH=str(REPO),
        COLUMNS="80",
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "services.console.cli", "up"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    workers = tmp_path / "state" / "workers.json"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not workers.exists():
            assert first.poll() is None, first.stdout.read().decode() if first.stdout else ""
            time.sleep(0.2)
        registry = workers.read_text()
        # What the "port already in use" error suggests: another port, same folder.
        second = subprocess.run(
            [sys.executable, "-m", "services.console.cli", "up"],
            env={**env, "PRESSROOM_NATS_PORT": str(free_port())},
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1, second
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"pid {first.pid}" in lines[0], second.stderr
        assert "PRESSROOM_DATA_DIR" in lines[0]
        assert workers.read_text() == registry  # the first stack's registry is untouched
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        output = first.communicate(timeout=30)[0].decode()
    assert first.returncode == 0, output


def test_the_data_folder_lock_dies_with_its_holder(tmp_path: Path) -> None:
    from services.console.embedded import DataDirInUse, lock_data_dir

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path;"
         " from services.console.embedded import lock_data_dir;"
         "lock = lock_data_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(600)",
         str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirInUse, match=f"pid {holder.pid}"):
            lock_data_dir(tmp_path)
    finally:
        holder.kill()  # a crash: no clean-up code runs
        holder.wait(timeout=10)
    lock = lock_data_dir(tmp_path)  # the kernel released it: nothing stale blocks a restart
    assert (tmp_path / "up.lock").read_text().strip() == str(os.getpid())
    lock.close()


def test_an_embedded_bus_whose_monitoring_port_is_taken_starts_on_another(tmp_path: Path) -> None:
    """`pressroom up`'s nats-server watches the client port + 4000 for monitoring; another
    program holding that port (or taking it first) must not stop the bus from starting."""
    import socket

    from services.console.embedded import start_nats_server

    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port + 4000))
        holder.listen()
        server = start_nats_server(tmp_path / "data", port)
        try:
            assert port_open("127.0.0.1", port)
            config = (tmp_path / "data" / "nats-server.conf").read_text()
            assert f":{port + 4000}" not in config  # it watches another port
        finally:
            server.terminate()
            server.wait(timeout=30)
