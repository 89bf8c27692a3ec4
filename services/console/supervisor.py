"""`pressroom up`: one stack per data folder — the lock, the embedded bus, a process per worker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from services.console.embedded import (
    DataDirInUse,
    free_port,
    lock_data_dir,
    port_open,
    start_nats_server,
)
from services.console.identities import generate
from services.console.monitoring import MonitoringUnavailable, start_prometheus, write_targets
from services.console.worker import SERVICES
from shared.bus.identity import embedded_auth_dir
from shared.bus.topology import connect
from shared.errors import PressroomError
from shared.events import ReportRequested
from shared.secretenv import for_role
from shared.settings import Settings


def parse_scale(scale: list[str]) -> dict[str, int]:
    """`--scale renderer=2 …` → replicas per service (1 each unless named)."""
    counts = dict.fromkeys(SERVICES, 1)
    for item in scale:
        name, _, number = item.partition("=")
        if name not in counts or not number.isdigit():
            raise PressroomError(
                f"--scale expects SERVICE=N with SERVICE one of {', '.join(SERVICES)}: '{item}'"
            )
        counts[name] = int(number)
    return counts


RESTART_FIRST_DELAY = 1.0  # seconds before the first restart; doubled each time in the window
RESTART_MAX_DELAY = 30.0


@dataclass
class Child:
    """One worker process `up` looks after, and what happened to it."""

    label: str  # e.g. renderer-1
    name: str  # e.g. renderer
    port: int  # its health port, the same across restarts (workers.json stays true)
    proc: subprocess.Popen[bytes]
    restarts: int = 0
    recent: deque[float] = field(default_factory=deque)  # when it was restarted, in the window
    last_exit: str = ""  # "killed by SIGKILL", "exit code 1"
    due: float | None = None  # when it is started again
    given_up: bool = False

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


def exit_reason(returncode: int) -> str:
    """How a process ended, in words: `killed by SIGKILL`, `exit code 1`."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class Supervisor:
    """Starts what `up` runs, restarts a worker that exits (with backoff, and gives up on one
    that keeps crashing), reports how it is doing, and stops all of it (in any state)."""

    def __init__(self, cfg: Settings, counts: dict[str, int]) -> None:
        self.cfg = cfg
        self.counts = counts
        self.log_dir = cfg.data_dir / "logs"
        self.env = dict(os.environ)
        self.children: list[Child] = []
        self.restart_limit = cfg.restart_limit
        self.restart_window = cfg.restart_window
        self._stopping = False
        self.registry: dict[str, str] = {}
        self._lock: IO[str] | None = None
        self._nats: subprocess.Popen[bytes] | None = None
        self._prometheus: Any = None
        self._counter: OutcomeCounter | None = None
        self.console: Child | None = None  # the web console, tended like a worker

    def start_bus(self) -> None:
        """Hold the data folder, then (embedded) start nats-server with one identity per role."""

        try:
            self._lock = lock_data_dir(self.cfg.data_dir)
        except DataDirInUse as error:
            raise PressroomError(str(error)) from None
        if not self.cfg.embedded:
            return

        # The embedded bus is locked like any other, and every process (and the CLI later)
        # finds its own key in the data folder.
        auth_dir = embedded_auth_dir(self.cfg)
        generate(auth_dir)
        try:
            self._nats = start_nats_server(
                self.cfg.data_dir, self.cfg.nats_port, auth=auth_dir / "auth.conf"
            )
        except RuntimeError as error:
            raise PressroomError(str(error)) from None
        self.env["PRESSROOM_NATS_URL"] = self.cfg.bus_url
        self.env["PRESSROOM_NATS_CREDENTIALS_DIR"] = str(auth_dir.resolve())

    def start_workers(self) -> None:
        """One process per replica, each with its own health port, listed in workers.json."""

        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, count in self.counts.items():
            for index in range(count):
                label = f"{name}-{index + 1}"
                port = free_port()
                self.registry[label] = f"http://127.0.0.1:{port}"
                self.children.append(Child(label, name, port, self._spawn(label, name, port)))
        (self.cfg.data_dir / "workers.json").write_text(json.dumps(self.registry, indent=2))
        self._counter = OutcomeCounter(self.cfg)

    def start_console(self) -> str:
        """The web console as the ops identity, on PRESSROOM_CONSOLE_PORT (a free port when
        that one is taken); its URL."""
        port = self.cfg.console_port
        if port == 0 or port_open(self.cfg.console_host, port):
            port = free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.console = Child("console", "console", port, self._spawn("console", "console", port))
        return f"http://{self.cfg.console_host}:{port}"

    def _spawn(self, label: str, name: str, port: int) -> subprocess.Popen[bytes]:
        if name == "console":
            command, env = ["console", "--port", str(port)], self.env  # the CLI's identity (ops)
        else:
            command = ["worker", name]
            env = {**self.worker_env(name), "PRESSROOM_HEALTH_PORT": str(port)}
        with (self.log_dir / f"{label}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "services.console.cli", *command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _tended(self) -> list[Child]:
        return [*self.children, *([self.console] if self.console else [])]

    def tend(self, now: float | None = None) -> list[str]:
        """Look after the workers once (`up` calls this twice a second): a worker that exited
        is started again after a backoff (1 s, 2 s, 4 s … at most 30 s); one restarted
        `restart_limit` times within `restart_window` seconds is given up instead of spun.
        Returns what happened, in words, each also logged to logs/up.log."""
        now = time.monotonic() if now is None else now
        said: list[str] = []
        if self._stopping:
            return said
        for child in self._tended():
            if child.given_up or child.alive:
                continue
            while child.recent and child.recent[0] < now - self.restart_window:
                child.recent.popleft()
            if child.due is None:  # it has just exited
                child.last_exit = exit_reason(child.proc.returncode)
                if len(child.recent) >= self.restart_limit:
                    child.given_up = True
                    said.append(
                        self._log(
                            f"{child.label} exited ({child.last_exit}) after "
                            f"{len(child.recent)} restart(s) in {self.restart_window:g}s: "
                            f"given up, see {self.log_dir / child.label}.log",
                            child,
                        )
                    )
                    continue
                delay = min(RESTART_FIRST_DELAY * 2 ** len(child.recent), RESTART_MAX_DELAY)
                child.due = now + delay
                said.append(
                    self._log(
                        f"{child.label} exited ({child.last_exit}); restarting in {delay:g}s",
                        child,
                    )
                )
            elif now >= child.due:
                child.proc = self._spawn(child.label, child.name, child.port)
                child.due = None
                child.restarts += 1
                child.recent.append(now)
                said.append(self._log(f"{child.label} restarted ({child.restarts}×)", child))
        return said

    def _log(self, message: str, child: Child) -> str:
        """One JSON line in logs/up.log (the supervisor's log) and the words for the terminal."""
        record = {
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),  # as workers log
            "level": "warning" if child.last_exit else "info",
            "service": "pressroom-up",
            "event": message,
            "worker": child.label,
            "exit": child.last_exit,
            "restarts": child.restarts,
            "given_up": child.given_up,
        }
        with (self.log_dir / "up.log").open("a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")
        return message

    def worker_env(self, role: str) -> dict[str, str]:
        """A worker's environment: its own role's seed (not the folder that holds ops.nk) and
        none of the other roles' secrets."""

        env = for_role(self.env, role)
        folder = env.pop("PRESSROOM_NATS_CREDENTIALS_DIR", None)
        if folder and "PRESSROOM_NATS_NKEY" not in env:
            env["PRESSROOM_NATS_NKEY"] = str(Path(folder) / f"{role}.nk")
        return env

    def start_prometheus(self, port: int | None) -> str | None:
        """targets.json for any Prometheus; with a port, the embedded one. Its URL, or None;
        a PressroomError says why it could not start."""

        folder = self.cfg.data_dir / "prometheus"
        write_targets(folder, self.registry)
        if port is None:
            return None
        port = free_port() if port_open("127.0.0.1", port) else port
        try:
            self._prometheus = start_prometheus(folder, port)
        except MonitoringUnavailable as error:
            raise PressroomError(error.reason) from None
        return str(self._prometheus.url)

    def line(self) -> str:
        """The live status: services up and outcomes counted, then a line per worker that was
        restarted, is being restarted or was given up (each fits 80 columns)."""
        alive = sum(1 for c in self.children if c.alive)
        counted = self._counter.line() if self._counter else ""
        lines = [
            f"[green]{alive}/{len(self.children)} services up[/]" + f" · {counted}" * bool(counted)
        ]
        for child in self._tended():
            if child.given_up:
                lines.append(
                    f"[red]{child.label} crash loop: given up after {child.restarts} "
                    f"restart(s) ({child.last_exit})[/]"
                )
            elif child.due is not None:
                lines.append(f"[yellow]{child.label} {child.last_exit}: restarting …[/]")
            elif child.restarts:
                lines.append(
                    f"[yellow]{child.label} restarted {child.restarts}× ({child.last_exit})[/]"
                )
        return "\n".join(lines)

    def stop(self) -> None:
        """SIGTERM every worker (SIGKILL after 10 s), then Prometheus and nats-server; the
        registry files go, and the data folder is free again."""
        self._stopping = True  # nothing is restarted from here on
        if self._counter is not None:
            self._counter.close()
        for child in self._tended():
            if child.alive:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for child in self._tended():
            try:
                child.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.proc.kill()
        if self._prometheus is not None:
            self._prometheus.stop()
        (self.cfg.data_dir / "prometheus" / "targets.json").unlink(missing_ok=True)
        if self._nats is not None:
            self._nats.terminate()
            try:
                self._nats.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._nats.kill()
        if self._lock is not None:  # only the holder may remove what the stack wrote
            (self.cfg.data_dir / "workers.json").unlink(missing_ok=True)
            self._lock.close()


class OutcomeCounter:
    """Counts report.delivered / report.failed for the live status line (best effort)."""

    def __init__(self, cfg: Settings) -> None:
        self.delivered = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(cfg,), daemon=True)
        self._thread.start()

    def _run(self, cfg: Settings) -> None:
        async def main() -> None:
            async def quiet(error: Exception) -> None:
                """Services log the bus's troubles; the status line stays clean."""

            nc = await connect(cfg, name="pressroom-up", error_cb=quiet)

            async def delivered(msg: Any) -> None:
                self.delivered += 1

            async def failed(msg: Any) -> None:
                self.failed += 1

            await nc.subscribe("report.delivered", cb=delivered)
            await nc.subscribe("report.failed", cb=failed)
            while not self._stop.is_set():
                await asyncio.sleep(0.2)
            await nc.close()

        try:
            asyncio.run(main())
        except Exception:  # the status line is cosmetic; never take `up` down with it
            return

    def line(self) -> str:
        return f"delivered {self.delivered} · failed {self.failed}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def sample_request(path: Path) -> ReportRequested:
    """The bundled sample with a new id each run: the request_id is an idempotency key, and
    each run should deliver."""
    request = ReportRequested.model_validate_json(path.read_text())
    stamp = time.strftime("%Y%m%dT%H%M%S")
    return request.model_copy(update={"request_id": f"{request.request_id}-{stamp}"})
