"""The artefact-store contract (shared/adapters/store.py ArtefactStore), the same for every backend:
memory (unit tests), the JetStream object store (embedded default), S3 (MinIO), and the
failover wrapper the services put around them."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from shared.adapters.store import (
    ArtefactMissing,
    ArtefactStore,
    ArtefactTampered,
    read_verified,
    remove_older_than,
    sha256_hex,
)
from shared.errors import PermanentError
from shared.events import Artefact

pytestmark = pytest.mark.integration

PDF = "application/pdf"


async def test_what_was_put_is_got_back_byte_for_byte(store: ArtefactStore) -> None:
    data = bytes(range(256)) * 1024  # binary, 256 KiB: more than one object-store chunk
    await store.put("reports/2026/11/24/r1.pdf", data, content_type=PDF)
    assert await store.get("reports/2026/11/24/r1.pdf") == data


async def test_putting_the_same_key_again_replaces_the_bytes(store: ArtefactStore) -> None:
    await store.put("reports/r1.html", b"<p>first</p>", content_type="text/html")
    await store.put("reports/r1.html", b"<p>second</p>", content_type="text/html")
    assert await store.get("reports/r1.html") == b"<p>second</p>"
    assert [o.key for o in await store.list("reports/")] == ["reports/r1.html"]


async def test_a_missing_artefact_is_a_permanent_error_naming_its_key(
    store: ArtefactStore,
) -> None:
    await store.put("reports/2026/11/24/here.pdf", b"x", content_type=PDF)
    with pytest.raises(ArtefactMissing) as caught:
        await store.get("reports/2026/11/24/nowhere.pdf")
    assert "'reports/2026/11/24/nowhere.pdf'" in caught.value.reason
    assert isinstance(caught.value, PermanentError)


async def test_a_listing_shows_only_keys_under_the_prefix_with_size_and_time(
    store: ArtefactStore,
) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)
    await store.put("reports/a.pdf", b"12345", content_type=PDF)
    await store.put("reports/deep/b.pdf", b"123", content_type=PDF)
    await store.put("contexts/r1.json", b"{}", content_type="application/json")

    listed = sorted(await store.list("reports/"), key=lambda o: o.key)

    assert [(o.key, o.size) for o in listed] == [("reports/a.pdf", 5), ("reports/deep/b.pdf", 3)]
    for item in listed:
        assert item.modified is not None and item.modified.tzinfo is not None
        assert before <= item.modified <= datetime.now(UTC) + timedelta(minutes=5)
    assert {o.key for o in await store.list()} == {
        "reports/a.pdf",
        "reports/deep/b.pdf",
        "contexts/r1.json",
    }
    assert await store.list("nothing-here/") == []


async def test_studio_records_are_kept_listed_and_deleted_beside_the_artefacts(
    store: ArtefactStore,
) -> None:
    """The studio's recorded payloads (keys under studio/) go wherever the backend keeps them
    (the object store: a bucket of their own); callers see one store."""
    record = "studio/payloads/weekly.html/20261207T101010000000-r1.sealed"
    await store.put(record, b"sealed", content_type="application/octet-stream")
    await store.put("reports/r1.pdf", b"%PDF", content_type=PDF)
    assert await store.get(record) == b"sealed"
    assert [o.key for o in await store.list("studio/payloads/weekly.html/")] == [record]
    assert [o.key for o in await store.list("reports/")] == ["reports/r1.pdf"]
    assert {o.key for o in await store.list()} == {record, "reports/r1.pdf"}
    assert {o.key for o in await store.list("stu")} == {record}
    await store.delete(record)
    assert await store.list("studio/") == []
    assert await store.get("reports/r1.pdf") == b"%PDF"


async def test_a_deleted_artefact_is_gone_and_deleting_twice_is_fine(
    store: ArtefactStore,
) -> None:
    await store.put("reports/gone.pdf", b"x", content_type=PDF)
    await store.delete("reports/gone.pdf")
    await store.delete("reports/gone.pdf")
    await store.delete("reports/never-there.pdf")
    with pytest.raises(ArtefactMissing):
        await store.get("reports/gone.pdf")
    assert await store.list("reports/") == []


async def test_a_presigned_url_is_none_or_serves_exactly_the_bytes(store: ArtefactStore) -> None:
    await store.put("reports/shared.pdf", b"%PDF-1.7 shared", content_type=PDF)
    url = await store.presign("reports/shared.pdf", timedelta(hours=1))
    if url is None:  # stores without URLs: `pressroom get` downloads instead
        return
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.read() == b"%PDF-1.7 shared"


async def test_a_reachable_store_passes_its_health_check(store: ArtefactStore) -> None:
    await store.check()


async def test_bytes_changed_since_rendering_are_refused(store: ArtefactStore) -> None:
    await store.put("reports/r9.pdf", b"%PDF original", content_type=PDF)
    artefact = Artefact(
        format="pdf",
        key="reports/r9.pdf",
        size=13,
        sha256=sha256_hex(b"%PDF original"),
        content_type=PDF,
    )
    assert await read_verified(store, artefact) == b"%PDF original"
    await store.put("reports/r9.pdf", b"%PDF swapped!", content_type=PDF)
    with pytest.raises(ArtefactTampered):
        await read_verified(store, artefact)


async def test_retention_removes_only_old_reports_and_contexts(store: ArtefactStore) -> None:
    for key in ("reports/2026/old.pdf", "contexts/old.json", "other/keep.bin"):
        await store.put(key, b"x", content_type="application/octet-stream")
    later = datetime.now(UTC) + timedelta(days=31)

    listed = await remove_older_than(store, timedelta(days=30), now=later, dry_run=True)
    assert sorted(o.key for o in listed) == ["contexts/old.json", "reports/2026/old.pdf"]
    assert len(await store.list()) == 3
    assert await remove_older_than(store, timedelta(days=30)) == []  # nothing is 30 days old

    await remove_older_than(store, timedelta(days=30), now=later)
    assert [o.key for o in await store.list()] == ["other/keep.bin"]
