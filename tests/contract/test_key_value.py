"""The key-value contract: shared/adapters/memory.py's MemoryKeyValue behaves as a real JetStream KV
bucket does — the same values, revisions and errors — and the KeyValue port of shared/bus/kv.py
holds through the failover wrapper the services put around a bucket."""

from __future__ import annotations

from typing import Any

import pytest
from nats.js.errors import (
    InvalidKeyError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)

pytestmark = pytest.mark.integration


# ---- the port every stage uses: get and put ---------------------------------------------------
async def test_a_key_never_put_is_not_found(kv: Any) -> None:
    with pytest.raises(KeyNotFoundError):
        await kv.get("r1.0-abc")


async def test_what_was_put_is_got_back(kv: Any) -> None:
    await kv.put("http.0123abcd", b'{"ok": true}')
    assert (await kv.get("http.0123abcd")).value == b'{"ok": true}'


async def test_a_second_put_replaces_the_value_under_a_higher_revision(kv: Any) -> None:
    first = await kv.put("r1.0-abc", b"intent")
    second = await kv.put("r1.0-abc", b"outcome")
    assert second > first
    assert (await kv.get("r1.0-abc")).value == b"outcome"


# ---- the whole bucket, as the ledger uses it ------------------------------------------------
async def test_an_entry_carries_its_key_and_the_revision_put_returned(bucket: Any) -> None:
    revision = await bucket.put("weekly-2026-11-23", b"{}")
    entry = await bucket.get("weekly-2026-11-23")
    assert (entry.key, entry.value, entry.revision) == ("weekly-2026-11-23", b"{}", revision)


async def test_create_refuses_a_key_that_exists(bucket: Any) -> None:
    await bucket.create("r2", b"claimed")
    with pytest.raises(KeyWrongLastSequenceError):
        await bucket.create("r2", b"claimed again")
    assert (await bucket.get("r2")).value == b"claimed"


async def test_update_needs_the_revision_last_read(bucket: Any) -> None:
    revision = await bucket.put("r3", b"one")
    newer = await bucket.update("r3", b"two", last=revision)
    with pytest.raises(KeyWrongLastSequenceError):
        await bucket.update("r3", b"stale", last=revision)
    assert newer > revision
    assert (await bucket.get("r3")).value == b"two"


async def test_update_of_a_key_never_put_is_refused(bucket: Any) -> None:
    with pytest.raises(KeyWrongLastSequenceError):
        await bucket.update("r4", b"x", last=1)


async def test_a_deleted_key_is_not_found_and_can_be_created_again(bucket: Any) -> None:
    await bucket.put("r5", b"x")
    await bucket.delete("r5")
    with pytest.raises(KeyNotFoundError):
        await bucket.get("r5")
    await bucket.create("r5", b"again")
    assert (await bucket.get("r5")).value == b"again"


async def test_keys_lists_live_keys_and_an_empty_bucket_has_none(bucket: Any) -> None:
    with pytest.raises(NoKeysError):
        await bucket.keys()
    for key in ("a", "b.c", "d"):
        await bucket.put(key, b"1")
    await bucket.delete("d")
    assert sorted(await bucket.keys()) == ["a", "b.c"]


@pytest.mark.parametrize("key", ["", "with space", ".leading", "trailing.", "star*"])
async def test_keys_outside_the_kv_alphabet_are_refused(bucket: Any, key: str) -> None:
    with pytest.raises(InvalidKeyError):
        await bucket.put(key, b"x")
    with pytest.raises((InvalidKeyError, KeyNotFoundError)):
        await bucket.get(key)
