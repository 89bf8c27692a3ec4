"""Every implementation of a port, each as a fresh, empty instance per test.

The real ones run against real servers started here once per session: a nats-server (JetStream
object store and KV buckets) and moto's S3 in server mode (what S3Artefacts talks to).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.embedded import free_port, start_nats_server
from shared.failover import FailoverKV, FailoverStore
from shared.memory import MemoryKeyValue
from shared.store import ArtefactStore, MemoryArtefacts, ObjectStoreArtefacts, S3Artefacts
from tests.helpers import unique
from tests.servers import S3Server

STORES = ["memory", "object-store", "s3", "failover-object-store"]
# The full key-value contract (what the ledger uses of a bucket) ...
KV_BUCKETS = ["memory", "jetstream"]
# ... and the KeyValue port of shared/kv.py (what the stages use), over the wrappers too.
KV_PORTS = [*KV_BUCKETS, "failover-jetstream", "failover-memory"]


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    folder: Path = tmp_path_factory.mktemp("contract-nats")
    server = start_nats_server(folder, port, monitor_port=free_port())
    try:
        yield f"nats://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
async def js(nats_url: str) -> AsyncIterator[Any]:
    import nats

    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, js: Any, s3: S3Server) -> ArtefactStore:
    kind: str = request.param
    if kind == "memory":
        return MemoryArtefacts()
    if kind == "s3":
        return S3Artefacts(s3.client(), unique("contract").lower())
    objects = ObjectStoreArtefacts(await js.create_object_store(unique("contract")))
    return FailoverStore(objects, patience=5.0) if kind.startswith("failover") else objects


async def _bucket(js: Any, kind: str) -> Any:
    if kind.endswith("memory"):
        return MemoryKeyValue()
    return await js.create_key_value(bucket=unique("contract"), history=1)


@pytest.fixture(params=KV_BUCKETS)
async def bucket(request: pytest.FixtureRequest, js: Any) -> Any:
    """A key-value bucket with everything the ledger uses: get, put, create, update, delete,
    keys."""
    return await _bucket(js, request.param)


@pytest.fixture(params=KV_PORTS)
async def kv(request: pytest.FixtureRequest, js: Any) -> Any:
    """The KeyValue port (get, put) as every stage sees it."""
    kind: str = request.param
    inner = await _bucket(js, kind)
    return FailoverKV(inner, patience=5.0) if kind.startswith("failover") else inner
