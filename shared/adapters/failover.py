"""The adapters wrapped to ride out a leader election: each call retried with patience
(shared/bus/failover.py) while the bus elects a new leader, then the error the caller knows."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from nats.js import api

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from shared.adapters.ledger import ClaimResult, Ledger, LedgerEntry
    from shared.adapters.store import ArtefactStore, StoredObject
    from shared.bus.topology import Publisher
    from shared.events import Event, ReportRequested
from shared.bus.failover import patient


class FailoverPublisher:
    """A Publisher that rides out a leader election by retrying with the same message id."""

    def __init__(self, inner: Publisher, *, patience: float) -> None:
        self._inner = inner
        self._patience = patience

    async def publish(
        self, subject: str, body: bytes, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> api.PubAck:
        return await patient(
            lambda: self._inner.publish(subject, body, msg_id=msg_id, headers=headers),
            patience=self._patience,
            what=f"publish {subject}",
        )


class FailoverLedger:
    """A Ledger whose KV reads and compare-and-set updates ride out a leader election."""

    def __init__(self, inner: Ledger, *, patience: float) -> None:
        self._inner = inner
        self._patience = patience

    async def get(self, request_id: str) -> LedgerEntry | None:
        return await patient(
            lambda: self._inner.get(request_id), patience=self._patience, what="ledger get"
        )

    async def update(
        self,
        request_id: str,
        change: Callable[[LedgerEntry], tuple[LedgerEntry | None, Any]],
        request: ReportRequested | None = None,
    ) -> Any:
        return await patient(
            lambda: self._inner.update(request_id, change, request),
            patience=self._patience,
            what="ledger update",
        )

    async def claim(
        self,
        request_id: str,
        stage: str,
        *,
        seq: int,
        attempt: int,
        request: ReportRequested,
        worker: str | None = None,
        record: bool = True,
        fresh: bool = False,
    ) -> ClaimResult:
        return await patient(
            lambda: self._inner.claim(
                request_id,
                stage,
                seq=seq,
                attempt=attempt,
                request=request,
                worker=worker,
                record=record,
                fresh=fresh,
            ),
            patience=self._patience,
            what="ledger claim",
        )

    async def finish(
        self,
        request_id: str,
        stage: str,
        *,
        seconds: float,
        event: Event,
        seq: int | None = None,
        attempt: int | None = None,
        worker: str | None = None,
    ) -> LedgerEntry | None:
        """The entry if this finish settled the report (it counts the report's duration)."""
        return await patient(
            lambda: self._inner.finish(
                request_id,
                stage,
                seconds=seconds,
                event=event,
                seq=seq,
                attempt=attempt,
                worker=worker,
            ),
            patience=self._patience,
            what="ledger finish",
        )

    async def fail(
        self,
        request_id: str,
        stage: str,
        *,
        reason: str,
        seq: int | None = None,
        attempt: int | None = None,
    ) -> LedgerEntry | None:
        return await patient(
            lambda: self._inner.fail(request_id, stage, reason=reason, seq=seq, attempt=attempt),
            patience=self._patience,
            what="ledger fail",
        )

    async def retrying(
        self, request_id: str, stage: str, *, reason: str, seq: int, attempt: int
    ) -> None:
        await self._inner.retrying(request_id, stage, reason=reason, seq=seq, attempt=attempt)

    async def entries(self) -> list[LedgerEntry]:
        return await self._inner.entries()


class FailoverKV:
    """A KV bucket (deliveries, caches) whose reads and writes ride out a leader election."""

    def __init__(self, inner: KeyValue, *, patience: float) -> None:
        self._inner = inner
        self._patience = patience

    async def get(self, key: str) -> KeyValue.Entry:
        return await patient(lambda: self._inner.get(key), patience=self._patience, what="kv get")

    async def put(self, key: str, value: bytes) -> int:
        return await patient(
            lambda: self._inner.put(key, value), patience=self._patience, what="kv put"
        )

    # Compare-and-set (the admission counts): a wrong revision is an answer, not a failure.
    async def create(self, key: str, value: bytes) -> int:
        inner: Any = self._inner
        result: int = await patient(
            lambda: inner.create(key, value), patience=self._patience, what="kv create"
        )
        return result

    async def update(self, key: str, value: bytes, last: int | None = None) -> int:
        inner: Any = self._inner
        result: int = await patient(
            lambda: inner.update(key, value, last=last), patience=self._patience, what="kv update"
        )
        return result


class FailoverStore:
    """An ArtefactStore (the JetStream object store) that rides out a leader election."""

    def __init__(self, inner: ArtefactStore, *, patience: float) -> None:
        self._inner = inner
        self._patience = patience

    @property
    def backend(self) -> str:
        return type(self._inner).__name__

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
        new: bool = False,
    ) -> None:
        tries = [0]

        def attempt() -> Awaitable[None]:
            # A retry may follow an attempt that was stored but not acknowledged: it looks up
            # (and replaces) what that attempt left, whatever `new` said.
            tries[0] += 1
            return self._inner.put(
                key, data, content_type=content_type, metadata=metadata, new=new and tries[0] == 1
            )

        await patient(attempt, patience=self._patience, what="artefact put")

    async def get(self, key: str) -> bytes:
        return await patient(
            lambda: self._inner.get(key), patience=self._patience, what="artefact get"
        )

    async def delete(self, key: str) -> None:
        await self._inner.delete(key)

    async def list(self, prefix: str = "") -> list[StoredObject]:
        return await self._inner.list(prefix)

    async def presign(self, key: str, expires: timedelta = timedelta(days=7)) -> str | None:
        return await self._inner.presign(key, expires)

    async def check(self) -> None:
        await self._inner.check()
