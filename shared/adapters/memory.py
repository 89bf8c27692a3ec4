"""In-memory fakes of the bus adapters, with the same contracts, for fast unit tests."""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nats.js import api
from nats.js.errors import (
    InvalidKeyError,
    KeyNotFoundError,
    KeyWrongLastSequenceError,
    NoKeysError,
)

from shared.events import claimed_request_id

# What JetStream accepts as a key (nats-py checks it before asking the server).
_KEY = re.compile(r"^[-/_=.a-zA-Z0-9]+$")


def _checked(key: str) -> str:
    if not _KEY.match(key) or key.startswith(".") or key.endswith("."):
        raise InvalidKeyError(key)
    return key


@dataclass
class _Entry:
    key: str
    value: bytes | None
    revision: int


class MemoryKeyValue:
    """The subset of nats-py's KeyValue that Pressroom uses, with the same errors
    (tests/contract/test_key_value.py runs the same tests over both)."""

    def __init__(self) -> None:
        self._data: dict[str, _Entry] = {}
        self._revisions = itertools.count(1)

    async def get(self, key: str) -> _Entry:
        if _checked(key) not in self._data:
            raise KeyNotFoundError
        return self._data[key]

    async def put(self, key: str, value: bytes) -> int:
        _checked(key)
        revision = next(self._revisions)
        self._data[key] = _Entry(key, value, revision)
        return revision

    async def create(self, key: str, value: bytes) -> int:
        if key in self._data:
            raise KeyWrongLastSequenceError
        return await self.put(key, value)

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        current = self._data.get(key)
        if current is None or current.revision != last:
            raise KeyWrongLastSequenceError
        return await self.put(key, value)

    async def delete(self, key: str) -> bool:
        self._data.pop(key, None)
        return True

    async def keys(self) -> list[str]:
        if not self._data:
            raise NoKeysError
        return list(self._data)


@dataclass
class Published:
    subject: str
    body: bytes
    msg_id: str
    headers: dict[str, str]


@dataclass
class MemoryPublisher:
    """Records what would be published; de-duplicates by msg_id like JetStream does, and like
    JetStreamPublisher stores a message about another request under a fresh id rather than
    lose it to a taken one (tests/contract/test_publisher.py holds the two to that)."""

    messages: list[Published] = field(default_factory=list)
    fail_with: Exception | None = None

    async def publish(
        self, subject: str, body: bytes, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> api.PubAck:
        if self.fail_with is not None:
            raise self.fail_with
        for seq, kept in enumerate(self.messages, start=1):
            if kept.msg_id != msg_id:
                continue
            if kept.subject == subject and claimed_request_id(kept.body) == claimed_request_id(
                body
            ):
                return api.PubAck(stream="MEMORY", seq=seq, duplicate=True)
            msg_id = f"{msg_id}:{uuid.uuid4().hex}"
            break
        self.messages.append(Published(subject, body, msg_id, dict(headers or {})))
        return api.PubAck(stream="MEMORY", seq=len(self.messages), duplicate=False)

    def on(self, subject: str) -> list[Published]:
        return [m for m in self.messages if m.subject == subject]

    def decoded(self, subject: str) -> list[Any]:
        return [json.loads(m.body) for m in self.on(subject)]


@dataclass
class MemoryMessage:
    """A delivered JetStream message (shared.stage.runner.InboundMessage) that records how it was
    settled: `("ack", None)`, `("nack", delay)`, `("term", None)`, `("wip", None)`."""

    body: bytes
    attempt: int = 1
    stream_seq: int = 7
    subject: str = "report.requested"
    headers: dict[str, str] = field(default_factory=dict)
    first_delivered: datetime | None = None
    settled: list[tuple[str, float | None]] = field(default_factory=list)

    async def ack(self) -> None:
        self.settled.append(("ack", None))

    async def nack(self, delay: float) -> None:
        self.settled.append(("nack", delay))

    async def term(self) -> None:
        self.settled.append(("term", None))

    async def in_progress(self) -> None:
        self.settled.append(("wip", None))
