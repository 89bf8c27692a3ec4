"""Artefact keys and retention over the in-memory store (every store: tests/contract/)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from shared.adapters.store import MemoryArtefacts, artefact_key, context_key, remove_older_than


async def test_retention_removes_only_old_artefacts_and_contexts() -> None:
    store = MemoryArtefacts()
    now = datetime(2026, 11, 22, tzinfo=UTC)
    for key, age_days in (
        ("reports/old.pdf", 40),
        ("contexts/old.json", 31),
        ("reports/new.pdf", 2),
        ("other/keep.bin", 90),
    ):
        await store.put(key, b"x", content_type="application/octet-stream")
        data, meta, _ = store.objects[key]
        store.objects[key] = (data, meta, now - timedelta(days=age_days))

    listed = await remove_older_than(store, timedelta(days=30), now=now, dry_run=True)
    assert sorted(o.key for o in listed) == ["contexts/old.json", "reports/old.pdf"]
    assert len(store.objects) == 4
    await remove_older_than(store, timedelta(days=30), now=now)
    assert sorted(store.objects) == ["other/keep.bin", "reports/new.pdf"]


def test_artefacts_are_filed_by_utc_day_and_contexts_by_request() -> None:
    evening_in_tokyo = datetime(2026, 11, 24, 8, 30, tzinfo=timezone(timedelta(hours=9)))
    assert artefact_key("weekly-1", "pdf", evening_in_tokyo) == "reports/2026/11/23/weekly-1.pdf"
    assert context_key("weekly-1") == "contexts/weekly-1.json"
