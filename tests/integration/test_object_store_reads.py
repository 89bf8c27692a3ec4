"""Reading artefacts from the JetStream object store: small ones message by message (no
consumer per read), bigger ones through the client's consumer; the bytes are what was put,
a missing object is ArtefactMissing and a changed one is refused (against a real nats-server)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nats
import pytest

from services.console.embedded import free_port, start_nats_server
from shared.adapters.store import (
    BY_MESSAGE_MAX,
    CHUNK_SIZE,
    PUT_WINDOW,
    ArtefactMissing,
    ArtefactTampered,
    open_store,
)
from shared.bus.names import OBJECT_BUCKET
from shared.settings import Settings
from tests.helpers import unique

pytestmark = pytest.mark.integration


async def test_what_was_put_is_read_back_small_big_and_empty(nc: Any) -> None:
    js = nc.jetstream()
    store = await open_store(Settings(), js)
    sizes = {
        "one-chunk": 60_000,
        "two-chunk": BY_MESSAGE_MAX,
        "big": BY_MESSAGE_MAX + 1,
        # More chunks than are written without waiting for their acks.
        "many-chunk": CHUNK_SIZE * (PUT_WINDOW * 2 + 3) + 5,
    }
    for name, size in {**sizes, "empty": 0}.items():
        key = unique(name)
        data = os.urandom(size)
        await store.put(key, data, content_type="application/pdf")
        assert await store.get(key) == data, name
        # Written again under the same name: the newest bytes, not the first chunks.
        again = os.urandom(size)
        await store.put(key, again, content_type="application/pdf")
        assert await store.get(key) == again, name
    with pytest.raises(ArtefactMissing):
        await store.get(unique("never-put"))


async def test_a_chunk_changed_in_the_store_is_refused(nc: Any) -> None:
    js = nc.jetstream()
    store = await open_store(Settings(), js)
    key = unique("tampered")
    await store.put(key, b"%PDF-1.7 the report" * 100, content_type="application/pdf")
    info = await (await js.object_store(OBJECT_BUCKET)).get_info(key)
    chunks = f"$O.{OBJECT_BUCKET}.C.{info.nuid}"
    await js.purge_stream(f"OBJ_{OBJECT_BUCKET}", subject=chunks)
    await js.publish(chunks, b"%PDF-1.7 the forger" * 100)  # same size, other bytes
    with pytest.raises(ArtefactTampered, match="no longer matches"):
        await store.get(key)


async def test_a_put_whose_chunk_is_refused_leaves_no_object_behind(tmp_path: Path) -> None:
    """The chunks and the meta record go out without waiting for each other's acks: when the
    server takes the meta record but refuses a chunk, the put fails and the name is not left
    pointing at chunks that are not there (its own nats-server: the stream's limits change)."""
    port = free_port()
    server = start_nats_server(tmp_path / "nats", port, monitor_port=free_port())
    try:
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        js = nc.jetstream()
        await js.create_object_store(OBJECT_BUCKET)
        store = await open_store(Settings(), js)
        await store.put("kept", b"before", content_type="text/plain")
        stream = f"OBJ_{OBJECT_BUCKET}"
        config = (await js.stream_info(stream)).config
        config.max_msg_size = 2_000  # a meta record fits, a 60 KB chunk does not
        await js.update_stream(config)
        with pytest.raises(Exception, match=r"(?i)maximum|size"):
            await store.put(unique("refused"), os.urandom(60_000), content_type="application/pdf")
        with pytest.raises(Exception, match=r"(?i)maximum|size"):
            await store.put("kept", os.urandom(60_000), content_type="application/pdf")
        with pytest.raises(ArtefactMissing):
            await store.get("kept")  # its new meta went with its chunk, none left dangling
        listed = [o.key for o in await store.list("")]
        assert listed == [], listed
        await nc.close()
    finally:
        server.terminate()
        server.wait()
