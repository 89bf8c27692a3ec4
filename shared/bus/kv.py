"""The key-value port: what a stage needs of a JetStream KV bucket (delivery outcomes, caches).

nats-py's `KeyValue`, `FailoverKV` (shared/bus/failover.py) and `MemoryKeyValue`
(shared/adapters/memory.py)
all satisfy it; tests/contract/test_key_value.py holds them to the same behaviour.
"""

from __future__ import annotations

from typing import Protocol


class KvEntry(Protocol):
    """One stored value (nats-py's `KeyValue.Entry`)."""

    @property
    def value(self) -> bytes | None: ...

    @property
    def revision(self) -> int | None: ...


class KeyValue(Protocol):
    """A bucket of small values by key.

    `get` raises nats-py's `KeyNotFoundError` for a key never put (or deleted); `put` and
    `create` return the new revision.
    """

    async def get(self, key: str) -> KvEntry: ...

    async def put(self, key: str, value: bytes) -> int: ...

    async def create(self, key: str, value: bytes) -> int:
        """Put only if the key has no value: else nats-py's `KeyWrongLastSequenceError`."""
        ...

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        """Put only over revision `last`: else nats-py's `KeyWrongLastSequenceError`."""
        ...
