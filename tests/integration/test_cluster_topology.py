"""Stream replicas against real servers: a cluster's R1 topology is scaled up, never down."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.console.cluster import topology_streams
from services.console.embedded import free_port, start_nats_server
from shared.bus.names import STAGES, STREAM
from shared.bus.topology import ensure_topology
from shared.settings import Settings
from tests import cliproc
from tests.cluster import Cluster
from tests.helpers import REPO, eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

STREAMS = list(topology_streams().values())


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("topology")).start()
    try:
        yield running
    finally:
        running.stop()


async def test_an_r1_topology_is_scaled_up_to_r3_with_its_data_and_never_down(
    cluster: Cluster,
) -> None:
    nc = await cluster.connect()
    js = nc.jetstream(timeout=5)
    try:
        one = Settings(nats_url=cluster.url, stream_replicas=1)

        async def declared() -> bool:
            try:
                await ensure_topology(js, one)
            except Exception:  # the cluster is still electing its meta leader
                return False
            return True

        await eventually(declared, timeout=60, every=0.5)
        await js.publish("report.requested", b'{"template": "x"}', stream=STREAM)
        assert [(await js.stream_info(s)).config.num_replicas for s in STREAMS] == [1] * len(
            STREAMS
        )

        await ensure_topology(js, Settings(nats_url=cluster.url, stream_replicas=3))
        await cluster.wait_current(STREAMS)
        for stream in STREAMS:
            info = await js.stream_info(stream)
            assert info.config.num_replicas == 3, stream
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2, stream
        assert (await js.stream_info(STREAM)).state.messages == 1

        # The stage consumers follow their stream to three replicas.
        async def consumers_replicated() -> bool:
            infos = [await js.consumer_info(STREAM, stage) for stage in STAGES]
            return all(i.cluster is not None and len(i.cluster.replicas or []) == 2 for i in infos)

        await eventually(consumers_replicated, timeout=60, every=0.5)

        # A client started with the default of 1 replica leaves the cluster's R3 alone.
        await ensure_topology(js, one)
        assert [(await js.stream_info(s)).config.num_replicas for s in STREAMS] == [3] * len(
            STREAMS
        )
    finally:
        await nc.close()


def test_replicas_a_single_server_cannot_keep_are_one_line_that_says_how(tmp_path: Path) -> None:
    port = free_port()
    server = start_nats_server(tmp_path / "nats", port, monitor_port=free_port())
    try:
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "PRESSROOM_NATS_URL": f"nats://127.0.0.1:{port}",
            "PRESSROOM_STREAM_REPLICAS": "3",
            "PRESSROOM_TEMPLATES_DIR": str(REPO / "templates"),
        }
        result = cliproc.run(["ls", "--json"], env=env, timeout=60, cwd=tmp_path)
        assert result.returncode == 1
        [line] = result.stderr.strip().splitlines()
        assert "PRESSROOM_STREAM_REPLICAS=3 needs a cluster with at least 3" in line
        assert "non-clustered" in line

        worker = subprocess.run(
            [sys.executable, "-m", "services.console.cli", "worker", "fetcher"],
            env={**env, "PRESSROOM_STARTUP_TIMEOUT": "120"},
            capture_output=True,
            text=True,
            timeout=60,  # it gives up at once, not after the start-up timeout
            cwd=tmp_path,
        )
        assert worker.returncode == 1
        assert "lower PRESSROOM_STREAM_REPLICAS" in worker.stderr.strip().splitlines()[-1]
        assert "Traceback" not in worker.stderr
    finally:
        server.terminate()
        server.wait(timeout=10)
