"""A NATS cluster on loopback for tests and benchmarks: real nats-server processes, routed.

Each node is its own process with its own store, ports and log, configured like every server
Pressroom writes (JetStream on file storage, `sync_interval: always`). Nodes are killed,
frozen and restarted by name; waits are on observable states (a stream leader elected, every
replica current), never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

from services.console.embedded import ClusterRoutes, free_port, start_nats_server
from shared.bus.names import STREAM
from shared.events import REPORT_DELIVERED
from tests.helpers import eventually, quiet

READY_WITHIN = 90.0  # seconds a node may take to find its leaders and catch up


@dataclass
class Node:
    name: str
    root: Path
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    route_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Cluster:
    """`size` nats-servers routed into one cluster, each with its own JetStream store."""

    root: Path
    size: int = 3
    name: str = "pressroom-test"
    nodes: list[Node] = field(default_factory=list)
    # Locked like every deployment: one identity per role, no anonymous clients.
    auth: bool = True

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes = [Node(f"n{i + 1}", self.root / f"n{i + 1}") for i in range(self.size)]

    @property
    def url(self) -> str:
        """What PRESSROOM_NATS_URL holds: every node, comma-separated, n1 first."""
        return ",".join(node.url for node in self.nodes)

    @property
    def servers(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def auth_dir(self) -> Path:
        return self.root / "auth"

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def start(self) -> Cluster:
        if self.auth:
            from services.console.identities import generate

            generate(self.auth_dir, hosts=["localhost", "127.0.0.1"])
        for node in self.nodes:
            if not node.running:
                self.start_node(node)
        # Formed: every node has found the meta leader (before that, `bus setup` times out).
        for node in self.nodes:
            self.wait_healthy(node)
        return self

    def start_node(self, node: Node) -> None:
        routes = ClusterRoutes(self.name, node.route_port, [n.route_port for n in self.nodes])
        node.proc = start_nats_server(
            node.root,
            node.port,
            monitor_port=node.monitor_port,
            log_file=self.root / f"{node.name}.log",
            server_name=node.name,
            cluster=routes,
            auth=self.auth_dir / "auth.conf" if self.auth else None,
        )

    def kill(self, node: Node, sig: int = signal.SIGKILL) -> None:
        """SIGKILL (a crash) by default; SIGTERM is a clean shutdown that hands leadership on."""
        assert node.proc is not None
        node.proc.send_signal(sig)
        node.proc.wait(timeout=30)

    def freeze(self, node: Node) -> None:
        """SIGSTOP: the process hangs with its sockets open, like a machine that stopped."""
        assert node.proc is not None
        node.proc.send_signal(signal.SIGSTOP)

    def thaw(self, node: Node) -> None:
        assert node.proc is not None
        node.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is None or node.proc.returncode is not None:
                continue
            node.proc.send_signal(signal.SIGCONT)
            node.proc.terminate()
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(timeout=5)

    async def connect(self, **options: Any) -> Any:
        """A client given every node, like the services (so it survives any one node)."""
        options = {
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.2,
            # A frozen node (SIGSTOP) keeps its sockets open: notice it by missed pings.
            "ping_interval": 2,
            "max_outstanding_pings": 2,
            "error_cb": quiet,
            **self.identity(),
            **options,
        }
        return await nats.connect(self.servers, **options)

    def identity(self) -> dict[str, Any]:
        """The ops identity's connect options (every stream and bucket may be looked at)."""
        if not self.auth:
            return {}
        from shared.bus.identity import Identity

        return Identity("ops", "nkey", self.auth_dir / "ops.nk").nats_kwargs()

    async def leader(self, stream: str, timeout: float = 60, *, all_current: bool = True) -> Node:
        """The node leading `stream` once it has a leader (and every replica is current)."""
        nc = await self.connect()
        try:
            js = nc.jetstream(timeout=2)

            async def elected() -> Node | None:
                try:
                    info = await js.stream_info(stream)
                except Exception:  # no leader yet: the request goes unanswered
                    return None
                cluster = info.cluster
                if cluster is None or not cluster.leader:
                    return None
                replicas = cluster.replicas or []
                if all_current and any(not p.current or p.offline for p in replicas):
                    return None
                return self.node(cluster.leader)

            return await eventually(elected, timeout=timeout, every=0.1)
        finally:
            await nc.close()

    async def wait_current(self, streams: Iterable[str], timeout: float = 90) -> None:
        """Until each stream has a leader and all its replicas are current, and each running
        node says on `/healthz` that its own streams and consumers have caught up: what a
        rolling update waits for before the next node goes (deploy/k8s/nats.yaml's probe)."""
        names = list(streams)
        await asyncio.gather(*(self.leader(s, timeout=timeout) for s in names))
        await asyncio.gather(
            *(asyncio.to_thread(self.wait_healthy, n, timeout) for n in self.nodes if n.running)
        )

    def wait_healthy(self, node: Node, timeout: float = READY_WITHIN) -> None:
        """Until `node` answers 200 on plain `/healthz` (JetStream current, not only enabled)."""
        deadline = time.monotonic() + timeout
        while (said := self._healthz(node))[0] != 200:
            if time.monotonic() > deadline or not node.running:
                raise AssertionError(f"{node.name} never healthy: {said}")
            time.sleep(0.1)

    @staticmethod
    def _healthz(node: Node) -> tuple[int, str]:
        """nats-server's own health answer: 200 once it has a meta leader and its streams and
        consumers are current; 503 with the reason before that."""
        url = f"http://127.0.0.1:{node.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")
        except OSError as error:  # not listening yet, or gone
            return 0, repr(error)


async def delivered_events(js: Any) -> list[tuple[str, float]]:
    """Every report.delivered in the (replicated) stream, oldest first, as (request_id, when
    the stream stored it: its clock, which survives client failover).

    Each message says how many are still to come: it reads until none is, however slow the
    machine. A read that stalls (a leader being elected) raises; the caller asks again.
    """
    info = await js.stream_info(STREAM, subjects_filter=REPORT_DELIVERED)
    if not info.state.subjects:
        return []
    sub = await js.subscribe(REPORT_DELIVERED, ordered_consumer=True)
    records: list[tuple[str, float]] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            stamp = msg.metadata.timestamp.timestamp()
            records.append((json.loads(msg.data)["request_id"], stamp))
            if msg.metadata.num_pending == 0:
                return records
    finally:
        await sub.unsubscribe()
