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
from pathlib import Path
from typing import IO, Any

from shared.errors import PressroomError
from shared.events import ReportRequested
from shared.settings import Settings

SERVICES = ("scheduler", "fetcher", "renderer", "distributor")


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


class Supervisor:
    """Starts what `up` runs, reports how it is doing, and stops all of it (in any state)."""

    def __init__(self, cfg: Settings, counts: dict[str, int]) -> None:
        self.cfg = cfg
        self.counts = counts
        self.log_dir = cfg.data_dir / "logs"
        self.env = dict(os.environ)
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.registry: dict[str, str] = {}
        self._lock: IO[str] | None = None
        self._nats: subprocess.Popen[bytes] | None = None
        self._prometheus: Any = None
        self._counter: OutcomeCounter | None = None

    def start_bus(self) -> None:
        """Hold the data folder, then (embedded) start nats-server with one identity per role."""
        from shared.embedded import DataDirInUse, lock_data_dir, start_nats_server

        try:
            self._lock = lock_data_dir(self.cfg.data_dir)
        except DataDirInUse as error:
            raise PressroomError(str(error)) from None
        if not self.cfg.embedded:
            return
        from shared.busauth import embedded_auth_dir, generate

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
        from shared.embedded import free_port

        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name, count in self.counts.items():
            for index in range(count):
                label = f"{name}-{index + 1}"
                port = free_port()
                self.registry[label] = f"http://127.0.0.1:{port}"
                with (self.log_dir / f"{label}.log").open("ab") as log:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "shared.cli", "worker", name],
                        env={**self.worker_env(name), "PRESSROOM_HEALTH_PORT": str(port)},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                self.children.append((label, proc))
        (self.cfg.data_dir / "workers.json").write_text(json.dumps(self.registry, indent=2))
        self._counter = OutcomeCounter(self.cfg)

    def worker_env(self, role: str) -> dict[str, str]:
        """A worker's environment: its own role's seed (not the folder that holds ops.nk) and
        none of the other roles' secrets."""
        from shared.secretenv import for_role

        env = for_role(self.env, role)
        folder = env.pop("PRESSROOM_NATS_CREDENTIALS_DIR", None)
        if folder and "PRESSROOM_NATS_NKEY" not in env:
            env["PRESSROOM_NATS_NKEY"] = str(Path(folder) / f"{role}.nk")
        return env

    def start_prometheus(self, port: int | None) -> str | None:
        """targets.json for any Prometheus; with a port, the embedded one. Its URL, or None;
        a PressroomError says why it could not start."""
        from shared.embedded import free_port, port_open
        from shared.monitoring import MonitoringUnavailable, start_prometheus, write_targets

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
        """The live status line: services up, outcomes counted, which exited."""
        alive = sum(1 for _, p in self.children if p.poll() is None)
        dead = [n for n, p in self.children if p.poll() is not None]
        counted = self._counter.line() if self._counter else ""
        return f"[green]{alive}/{len(self.children)} services up[/] · {counted}" + (
            f" · [red]exited: {', '.join(dead)}[/]" if dead else ""
        )

    def stop(self) -> None:
        """SIGTERM every worker (SIGKILL after 10 s), then Prometheus and nats-server; the
        registry files go, and the data folder is free again."""
        if self._counter is not None:
            self._counter.close()
        for _, proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in self.children:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
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
            from shared.bus import connect

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
