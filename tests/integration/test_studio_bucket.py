"""The studio's recorded payloads live in an object-store bucket of their own (against a real
nats-server and the real `pressroom bus setup`).

The object store cannot list by prefix: a listing reads every object's record, and nats-server
loads every block that holds one, chunks and all. The renderer lists a template's records to
prune them every minute; while they shared the artefacts' bucket, each prune made the server
read, and keep in memory for a while, every artefact stored (its memory grew with the store:
74 MiB per 1,000 reports in the soak). An upgrade moves the records an earlier version kept
among the artefacts (every `bus setup`, found without reading any artefact)."""

from __future__ import annotations

import os
from pathlib import Path

import nats
import pytest

from services.console.embedded import free_port, start_nats_server
from services.renderer import recording
from shared.adapters.store import ObjectBucket, object_names, open_store
from shared.bus.names import OBJECT_BUCKET, STUDIO_BUCKET
from shared.settings import Settings
from tests.helpers import pressroom

pytestmark = pytest.mark.integration

TEMPLATE = "weekly.html"
REPORT = "reports/2026/12/01/r1.pdf"


def record_key(n: int) -> str:
    return f"{recording.template_prefix(TEMPLATE)}2026120{n}T101010000000-r{n}.sealed"


async def test_an_upgrade_moves_the_studio_records_out_of_the_artefacts_bucket(
    tmp_path: Path,
) -> None:
    port = free_port()
    server = start_nats_server(tmp_path / "nats", port, monitor_port=free_port())
    url = f"nats://127.0.0.1:{port}"
    env = {"PRESSROOM_NATS_URL": url}
    try:
        nc = await nats.connect(url)
        js = nc.jetstream()
        # What an earlier version left: a report and studio records in one bucket, one of them
        # deleted (its deletion record left by the client), one whose chunks are gone.
        legacy = ObjectBucket(await js.create_object_store(OBJECT_BUCKET), js)
        records = {record_key(n): os.urandom(3_000) for n in (1, 2)}
        for n, (key, data) in enumerate(records.items(), 1):
            meta = {"template": TEMPLATE, "request-id": f"r{n}"}
            await legacy.put(key, data, content_type="application/octet-stream", metadata=meta)
        await legacy.put(REPORT, b"%PDF-1.7 the report", content_type="application/pdf")
        gone, broken = record_key(5), record_key(6)
        for key in (gone, broken):
            await legacy.put(key, b"sealed", content_type="application/octet-stream")
        await (await js.object_store(OBJECT_BUCKET)).delete(gone)
        chunks = (await (await js.object_store(OBJECT_BUCKET)).get_info(broken)).nuid
        await js.purge_stream(f"OBJ_{OBJECT_BUCKET}", subject=f"$O.{OBJECT_BUCKET}.C.{chunks}")

        setup = pressroom("bus", "setup", env=env, cwd=tmp_path)
        assert setup.returncode == 0, setup.stderr
        assert "moved 2 studio record(s)" in setup.stdout
        [note] = setup.stderr.strip().splitlines()  # the broken one, said and left
        assert broken in note and "not moved" in note

        store = await open_store(Settings(), js)
        listed = await recording.listing(store, TEMPLATE)  # what the studio and the prune see
        assert sorted(r.key for r in listed) == sorted(records)
        for key, data in records.items():
            assert await store.get(key) == data
        studio = await js.object_store(STUDIO_BUCKET)
        moved = await studio.get_info(record_key(1))
        assert moved.headers is not None and moved.headers["template"] == TEMPLATE
        assert moved.headers["Content-Type"] == "application/octet-stream"
        # The artefacts' bucket keeps its report (and the record that could not be moved); the
        # deleted record's deletion record went too.
        assert sorted(await object_names(js, OBJECT_BUCKET)) == sorted([REPORT, broken])
        assert await store.get(REPORT) == b"%PDF-1.7 the report"
        assert [o.key for o in await store.list("reports/")] == [REPORT]

        # A record an old renderer still running wrote afterwards: the next setup moves it.
        late = record_key(3)
        await legacy.put(late, b"late", content_type="application/octet-stream")
        again = pressroom("bus", "setup", env=env, cwd=tmp_path)
        assert again.returncode == 0, again.stderr
        assert "moved 1 studio record(s)" in again.stdout
        assert await store.get(late) == b"late"
        assert late not in await object_names(js, OBJECT_BUCKET)
        await nc.close()
    finally:
        server.terminate()
        server.wait()


async def test_a_studio_record_is_kept_listed_and_deleted_in_the_studios_bucket(
    tmp_path: Path,
) -> None:
    """A record goes where the prune lists, nothing of it among the artefacts (a report's own
    recording is counted per bucket in tests/integration/test_jetstream_writes.py)."""
    port = free_port()
    server = start_nats_server(tmp_path / "nats", port, monitor_port=free_port())
    try:
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        js = nc.jetstream()
        for bucket in (OBJECT_BUCKET, STUDIO_BUCKET):
            await js.create_object_store(bucket)
        store = await open_store(Settings(), js)
        await store.put(record_key(1), b"sealed", content_type="application/octet-stream")
        await store.put(REPORT, b"%PDF-1.7", content_type="application/pdf")
        studio_stream = await js.stream_info(f"OBJ_{STUDIO_BUCKET}")
        artefacts_stream = await js.stream_info(f"OBJ_{OBJECT_BUCKET}")
        assert studio_stream.state.messages == 2  # its chunk and its meta record
        assert artefacts_stream.state.messages == 2  # the report's
        assert [r.key for r in await recording.listing(store, TEMPLATE)] == [record_key(1)]
        await store.delete(record_key(1))
        assert await recording.listing(store, TEMPLATE) == []
        # Nothing left behind: a deletion record under every name ever recorded would make
        # every later prune read them all.
        assert (await js.stream_info(f"OBJ_{STUDIO_BUCKET}")).state.messages == 0
        assert await store.get(REPORT) == b"%PDF-1.7"
        await nc.close()
    finally:
        server.terminate()
        server.wait()
