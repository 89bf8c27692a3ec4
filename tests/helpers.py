"""Test helpers: a real Pressroom stack (nats-server + worker processes) and polling."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

import nats

from services.console.embedded import free_port, start_nats_server
from shared.adapters.ledger import KvLedger
from shared.bus.names import LEDGER_BUCKET
from shared.filenames import request_tag
from tests import cliproc

if TYPE_CHECKING:
    from tests.cluster import Cluster

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def up_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment `pressroom up` gets on a fresh machine (no PRESSROOM_/OTEL_ setting of
    this one), its state, out folder and port of its own under `root`; `extra` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PRESSROOM_", "OTEL_"))}
    env.update(
        PRESSROOM_NATS_PORT=str(free_port()),
        PRESSROOM_DATA_DIR=str(root / "state"),
        PRESSROOM_OUT_DIR=str(root / "out"),
        PRESSROOM_TEMPLATES_DIR=str(REPO / "templates"),
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


def run_probe(code: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """`code` (given `argv`) in a fresh interpreter, with nothing from this test process
    imported and no setting of this environment."""
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        timeout=120,
    )


def pressroom(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The `pressroom` command as a user runs it (80 columns, the bundled templates), in a
    clean environment: only what `env` adds. A process of its own (tests/cliproc.py)."""
    return cliproc.run(
        args,
        cwd=cwd,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "HOME": str(cwd),
            "COLUMNS": "80",
            "PRESSROOM_TEMPLATES_DIR": str(REPO / "templates"),
            **(env or {}),
        },
        timeout=timeout,
    )


async def quiet(error: Exception) -> None:
    """Test clients ride out servers being killed; nats-py would print a traceback per attempt."""


async def stage_done(nc: Any, rid: str, stage: str, *, timeout: float = 60.0) -> None:
    """Until the ledger records `stage` of request `rid` done. What the stage wrote beside its
    event (`while_publishing`: the renderer's studio record, the distributor's outcome
    records) is stored by then, not necessarily when its event is seen."""
    ledger = KvLedger(await nc.jetstream().key_value(LEDGER_BUCKET))

    async def done() -> bool:
        entry = await ledger.get(rid)
        record = entry.stages.get(stage) if entry is not None else None
        return record is not None and record.state == "done"

    await eventually(done, timeout=timeout, every=0.01)


async def dead_letter_count(nc: Any) -> int:
    """How many messages the dead-letter stream holds now."""
    from shared.bus.names import DLQ_STREAM

    return int((await nc.jetstream().stream_info(DLQ_STREAM)).state.messages)


async def dead_letters_beyond(nc: Any, count: int, *, timeout: float = 60.0) -> None:
    """Until the dead-letter stream holds more than `count` messages: looked at in process,
    before a test reads them with `pressroom dlq` (a CLI process per look cost a second of
    CPU, and a look through `dlq show` one process per dead letter)."""

    async def grown() -> bool:
        return await dead_letter_count(nc) > count

    await eventually(grown, timeout=timeout, every=0.05)


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0, every: float = 0.1
) -> T:
    """Poll `probe` until it returns something truthy, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


@dataclass
class Stack:
    """nats-server plus Pressroom worker processes, configured through the environment."""

    root: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    workers: dict[str, int] = field(
        default_factory=lambda: {"fetcher": 1, "renderer": 1, "distributor": 1}
    )
    port: int = 0
    nats: subprocess.Popen[bytes] | None = None
    procs: dict[str, list[cliproc.Process]] = field(default_factory=dict)
    health: dict[str, str] = field(default_factory=dict)
    # Like every deployment: one identity per role (`pressroom bus auth`), no anonymous access;
    # so every test also proves that each role's permissions are enough, and no more is needed.
    auth: bool = True
    tls: bool = False
    unset: tuple[str, ...] = ()  # defaults below to leave out (a config file decides instead)
    cluster: Cluster | None = None  # run against these nodes instead of one nats-server
    fork: bool = True  # workers forked from a zygote (tests/cliproc.py), or exec'd afresh

    @property
    def url(self) -> str:
        if self.cluster is not None:
            return self.cluster.url
        return f"nats://127.0.0.1:{self.port}"

    @property
    def auth_dir(self) -> Path:
        return self.cluster.auth_dir if self.cluster is not None else self.root / "auth"

    def identity(self, role: str = "ops") -> Any:
        """How a test client connects as `role` (ops unless said otherwise)."""
        import ssl

        from shared.bus.identity import Identity

        context = (
            ssl.create_default_context(cafile=str(self.auth_dir / "ca.pem")) if self.tls else None
        )
        if not self.auth:
            return Identity(role, tls=context)
        return Identity(role, "nkey", self.auth_dir / f"{role}.nk", tls=context)

    @property
    def servers(self) -> list[str]:
        return self.url.split(",")

    @property
    def templates(self) -> Path:
        return self.root / "templates"

    @property
    def out(self) -> Path:
        return self.root / "out"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PRESSROOM_", "OTEL_"))}
        env.update(
            PRESSROOM_NATS_URL=self.url,
            PRESSROOM_TEMPLATES_DIR=str(self.templates),
            PRESSROOM_OUT_DIR=str(self.out),
            PRESSROOM_DATA_FILES_DIR=str(self.root / "data"),
            PRESSROOM_RETRY_BACKOFF="0.2,0.5,1",
            PRESSROOM_MAX_ATTEMPTS="3",
            PRESSROOM_ACK_WAIT="5",
            # The operator's allow-lists for the loopback test servers (trust tests narrow them).
            PRESSROOM_SOURCE_ALLOW="127.0.0.1",
            PRESSROOM_EMAIL_ALLOW="example.com",
            PRESSROOM_LOG_LEVEL="INFO",
            **({"PRESSROOM_NATS_CREDENTIALS_DIR": str(self.auth_dir)} if self.auth else {}),
            **({"PRESSROOM_NATS_TLS_CA": str(self.auth_dir / "ca.pem")} if self.tls else {}),
            OTEL_TRACES_EXPORTER="none",
            OTEL_METRICS_EXPORTER="none",
            PYTHONPATH=str(REPO),
        )
        env.update(self.env_extra)
        for name in self.unset:
            env.pop(name, None)
        return env

    def _launch(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.templates.exists():
            shutil.copytree(REPO / "templates", self.templates)
        (self.root / "data").mkdir(exist_ok=True)
        self.start_nats()
        if self.auth:  # only ops may create streams and buckets: as in a real deployment
            self.bus_setup()
        for name, count in self.workers.items():
            for _ in range(count):
                self.start_worker(name)

    def bus_setup(self) -> None:
        """What `pressroom bus setup` does, in this process, with the stack's settings: the ops
        identity declares the streams, consumers and buckets. A CLI process per stack cost a
        second of CPU; tests/integration/test_bus_auth.py runs the command itself."""
        from unittest import mock

        from services.console.busaccess import open_bus, ready
        from shared.settings import load_settings

        with mock.patch.dict(os.environ, self.env, clear=True):
            settings = load_settings()

        async def setup() -> None:
            async with open_bus(settings, setup=True) as bus:
                await ready(bus)

        # Its own thread and event loop: a stack is started from sync and async tests alike.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, asyncio.wait_for(setup(), timeout=120)).result()

    def start(self) -> Stack:
        self._launch()
        asyncio.run(self.wait_ready())
        return self

    async def astart(self) -> Stack:
        """`start` from inside a running event loop."""
        self._launch()
        await self.wait_ready()
        return self

    async def wait_ready(self, timeout: float = 180.0) -> None:
        """Until every started stage has a worker pulling from its durable consumer (a renderer
        warms its render processes first: over a minute on a busy machine)."""
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.errors import NotFoundError, ServiceUnavailableError

        from shared.bus.names import STREAM

        nc = await self.connect()
        js = nc.jetstream(timeout=2)

        async def ready() -> bool:
            for name, procs in self.procs.items():
                for proc in procs:
                    if proc.poll() is not None:
                        raise AssertionError(f"worker {name} exited:\n{self.logs()}")
                if name == "scheduler" or not any(p.poll() is None for p in procs):
                    continue
                try:
                    info = await js.consumer_info(STREAM, name)
                except (NotFoundError, NatsTimeout, ServiceUnavailableError):
                    return False  # not declared yet, or (in a cluster) no leader elected yet
                if not info.num_waiting:
                    return False
            return True

        try:
            await eventually(ready, timeout=timeout, every=0.2)
        finally:
            await nc.close()

    def start_nats(self) -> None:
        from services.console.identities import generate

        if self.cluster is not None:
            self.auth = (
                self.cluster.auth
            )  # the cluster's own identities (it is locked the same way)
            self.cluster.start()
            return
        chosen = self.port
        if self.auth:
            generate(self.auth_dir, tls=self.tls, hosts=["localhost", "127.0.0.1"])
        log = self.root / "nats.log"
        for attempt in range(3):
            self.port = chosen or free_port()
            try:
                self.nats = start_nats_server(
                    self.root / "nats",
                    self.port,
                    monitor_port=free_port(),
                    log_file=log,
                    auth=self.auth_dir / "auth.conf" if self.auth else None,
                )
                return
            except RuntimeError:
                # A free port is free only until someone else takes it (parallel tests): when
                # that is why the server exited, take fresh ports; anything else is a failure.
                taken = log.exists() and "address already in use" in log.read_text()
                if chosen or not taken or attempt == 2:
                    raise
                log.rename(log.with_suffix(f".{attempt}.log"))

    def stop_nats(self, sig: int = signal.SIGTERM) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            return
        if self.nats and self.nats.poll() is None:
            self.nats.send_signal(sig)
            self.nats.wait(timeout=10)

    def start_worker(self, name: str, extra_env: dict[str, str] | None = None) -> cliproc.Process:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        index = len(self.procs.get(name, [])) + 1
        log = (logs / f"{name}-{index}.log").open("ab")
        port = free_port()
        self.health[f"{name}-{index}"] = f"http://127.0.0.1:{port}"
        extra_env = {"PRESSROOM_HEALTH_PORT": str(port), **(extra_env or {})}
        with log:
            proc = cliproc.start(
                ["worker", name], env={**self.env, **(extra_env or {})}, cwd=self.root, output=log,
                fork=self.fork,
            )  # fmt: skip
        self.procs.setdefault(name, []).append(proc)
        return proc

    def stop(self) -> None:
        for procs in self.procs.values():
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        for procs in self.procs.values():
            for proc in procs:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.stop_nats()

    def write_prometheus_targets(self, folder: Path) -> Path:
        """targets.json for Prometheus, written the way `pressroom up` writes it."""
        from services.console.monitoring import write_targets

        return write_targets(folder, self.health)

    def logs(self) -> str:
        return "\n".join(
            f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted((self.root / "logs").glob("*.log"))
        )

    async def connect(self, role: str = "ops", **options: Any) -> Any:
        options = {**self.identity(role).nats_kwargs(), **options}
        if self.cluster is not None:
            return await self.cluster.connect(**options)
        return await nats.connect(
            self.servers,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            **{"error_cb": quiet, **options},
        )

    def cli(
        self,
        *args: str,
        check: bool = False,
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return cliproc.run(
            args, env={**self.env, **(env or {})}, timeout=timeout, cwd=self.root, check=check
        )


class Console:
    """`pressroom console` as its own process beside a stack: a port, a secret and a log of
    its own, the users it is given already in its users file (`name: (role, password)`), and
    the stack's settings with `extra` on top. The one way the tests run a console."""

    def __init__(
        self,
        stack: Stack,
        users: dict[str, tuple[str, str]] | None = None,
        *,
        name: str = "console",
        **extra: str,
    ) -> None:
        self.stack, self.name = stack, name
        self.users = dict(users or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret = f"{name}-test-secret-".encode() + b"x" * 20
        self.env = {
            **stack.env,
            "PRESSROOM_CONSOLE_SECRET": self.secret.decode(),
            "PRESSROOM_PUBLIC_URL": self.url,
            "COLUMNS": "80",
            **extra,
        }
        self.log_file = stack.root / "logs" / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def users_file(self) -> Path:
        """Where `pressroom console user add` writes with these settings."""
        from services.console.web.auth import USERS_FILE

        if self.env.get("PRESSROOM_CONSOLE_USERS"):
            return Path(self.env["PRESSROOM_CONSOLE_USERS"])
        return self.stack.root / self.env.get("PRESSROOM_DATA_DIR", ".pressroom") / USERS_FILE

    def cli(
        self,
        *args: str,
        stdin: str = "",
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        """A `pressroom` command with the console's settings (its audit trail, its users)."""
        return cliproc.run(
            args, env={**self.env, **(env or {})}, input=stdin, cwd=self.stack.root,
            timeout=timeout,
        )  # fmt: skip

    def start(self) -> Self:
        from services.console.web.auth import add_user

        for user, (role, password) in self.users.items():
            add_user(self.users_file, user, role, password)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.console.cli", "console", "--port", str(self.port)],
            env=self.env,
            stdout=self.log_file.open("ab"),
            stderr=subprocess.STDOUT,
            cwd=self.stack.root,
        )
        return self

    async def wait_ready(self, timeout: float = 120) -> None:
        """Until /healthz answers 200 (the console imports the whole web app first)."""
        import httpx

        async def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            try:
                async with httpx.AsyncClient() as client:
                    return (await client.get(f"{self.url}/healthz")).status_code == 200
            except httpx.TransportError:
                return False

        await eventually(up, timeout=timeout, every=0.2)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-4000:] if self.log_file.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class Outcomes:
    """Collects report.delivered / report.failed by request_id from a core subscription."""

    def __init__(self) -> None:
        self.delivered: dict[str, list[dict[str, Any]]] = {}
        self.failed: dict[str, list[dict[str, Any]]] = {}
        self._subs: list[Any] = []

    async def start(self, nc: Any) -> Outcomes:
        async def on_delivered(msg: Any) -> None:
            data = json.loads(msg.data)
            self.delivered.setdefault(data["request_id"], []).append(data)

        async def on_failed(msg: Any) -> None:
            data = json.loads(msg.data)
            self.failed.setdefault(data["request_id"], []).append(data)

        self._subs = [
            await nc.subscribe("report.delivered", cb=on_delivered),
            await nc.subscribe("report.failed", cb=on_failed),
        ]
        return self

    async def delivered_event(
        self, rid: str, timeout: float = 180, *, failed_before: int = 0
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            if rid in self.delivered:
                return self.delivered[rid][0]
            if len(self.failed.get(rid, [])) > failed_before:
                raise AssertionError(f"{rid} failed: {self.failed[rid]}")
            return None

        return await eventually(probe, timeout=timeout, every=0.01)

    async def failed_event(self, rid: str, timeout: float = 180) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            return self.failed.get(rid, [None])[0]

        return await eventually(probe, timeout=timeout, every=0.01)


def file_tag(path: Path) -> str:
    """The request tag a delivered file's default name ends with (`…-2026-12-05-3f9a1c2e.pdf`)."""
    return path.stem.rsplit("-", 1)[-1]


def delivered_tags(folder: Path, ext: str = "pdf") -> list[str]:
    """The request tags of the files in `folder`, sorted, one per file (duplicates kept)."""
    return sorted(file_tag(p) for p in folder.glob(f"*.{ext}"))


def tags(request_ids: Iterable[str]) -> list[str]:
    """The sorted request tags of `request_ids`, to compare with `delivered_tags`."""
    return sorted(request_tag(r) for r in request_ids)


def delivered_file(folder: Path, request_id: str, ext: str = "pdf") -> Path:
    """The file the folder channel wrote for a request, `<title>-<date>-<tag>.<ext>` (the tag
    from its request id); a path that does not exist while there is none."""
    tag = request_tag(request_id)
    found = sorted(folder.glob(f"*{tag}.{ext}"))
    return found[0] if found else folder / f"{tag}.{ext}"
