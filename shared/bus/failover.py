"""How Pressroom's clients live through a NATS node going away: say so, reconnect, retry.

A client is given every node (`PRESSROOM_NATS_URL` is a comma-separated list) and reconnects
to any of them for ever; each disconnect and reconnect is one log line naming the server
(never its credentials). A JetStream publish that finds no stream leader (an election after a
node died takes seconds) is retried with the same `Nats-Msg-Id` until the new leader answers:
the stream de-duplicates, and the stage keeps its message instead of handing it back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from nats.errors import (
    NoRespondersError,
    NoServersError,
    StaleConnectionError,
    UnexpectedEOF,
)
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from shared.adapters.egress import public_url
from shared.observe.logging import get_logger

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.kv import KeyValue

    from shared.adapters.ledger import ClaimResult, Ledger, LedgerEntry
    from shared.adapters.store import ArtefactStore, StoredObject
    from shared.bus.topology import Publisher
    from shared.events import Event, ReportRequested

T = TypeVar("T")

log = get_logger("pressroom.bus")

# What a publish sees while the stream has no leader or the client is between servers.
LEADERLESS: tuple[type[BaseException], ...] = (
    NatsTimeoutError,
    TimeoutError,
    NoRespondersError,
    NoStreamResponseError,  # a publish nobody answered: the stream has no leader (yet)
    ServiceUnavailableError,
)
RETRY_EVERY = 0.25
ERROR_LOG_EVERY = 10.0  # seconds between lines while no server can be reached at all


def _server(client: Client | None) -> str | None:
    if client is None:
        return None
    # While disconnected, nats-py still holds the server it lost as the current one.
    current = getattr(client, "_current_server", None)
    url = client.connected_url or (current.uri if current is not None else None)
    return public_url(url.geturl()) if url is not None else None


def _is_connection_error(error: Exception) -> bool:
    """What nats-py reports while a server goes away or is being reconnected to."""
    return isinstance(
        error, OSError | TimeoutError | UnexpectedEOF | StaleConnectionError | NoServersError
    )


class ConnectionEvents:
    """nats-py's connection callbacks, so that losing a server reads as two log lines.

    One line when the connection is lost (with the cause), one when it is back (with the
    server, how long it took and how many attempts failed) - instead of a line per failed
    attempt. Other errors (a permissions violation, a slow consumer) go to `on_error` at once.
    """

    def __init__(
        self,
        name: str,
        client: Callable[[], Client | None],
        on_error: Callable[[Exception], Awaitable[None]],
    ) -> None:
        self._name = name
        self._client = client
        self._on_error = on_error
        self._lost_at: float | None = None
        self._lost: str | None = None
        self._cause: str | None = None
        self._failed = 0
        self._last_logged = -ERROR_LOG_EVERY

    async def error(self, error: Exception) -> None:
        if _is_connection_error(error):
            if self._lost_at is not None:
                self._failed += 1  # the reconnected line counts them
                return
            if isinstance(error, UnexpectedEOF | StaleConnectionError):
                self._cause = describe_error(error)  # a disconnect follows: it says so
                return
            # Not connected yet (a server list that is down at start): a line now and then.
            now = time.monotonic()
            if now - self._last_logged < ERROR_LOG_EVERY:
                return
            self._last_logged = now
        await self._on_error(error)

    async def disconnected(self) -> None:
        client = self._client()
        if self._lost_at is not None or (client is not None and client.is_closed):
            return  # once per outage; and closing on purpose is no news
        self._lost_at = time.monotonic()
        self._lost = _server(client)
        self._failed = 0
        log.warning(
            "bus disconnected, reconnecting",
            client=self._name,
            server=self._lost,
            cause=self._cause,
        )
        self._cause = None

    async def reconnected(self) -> None:
        away = time.monotonic() - self._lost_at if self._lost_at is not None else None
        self._lost_at = None
        log.warning(
            "bus reconnected",
            client=self._name,
            server=_server(self._client()),
            was=self._lost,
            after_seconds=round(away, 3) if away is not None else None,
            failed_attempts=self._failed,
        )


async def patient(call: Callable[[], Awaitable[T]], *, patience: float, what: str) -> T:
    """`call()`, retried while NATS answers as it does during a leader election.

    Safe only for operations that may run twice: publishes carry a `Nats-Msg-Id`, ledger
    updates are compare-and-set, artefacts are put under a fixed key.
    """
    deadline = time.monotonic() + patience
    attempt = 0
    while True:
        attempt += 1
        try:
            result = await call()
        except LEADERLESS as error:
            if time.monotonic() + RETRY_EVERY > deadline:
                raise
            if attempt == 1:
                log.info("waiting for a NATS leader", operation=what, error=describe_error(error))
            await asyncio.sleep(RETRY_EVERY)
            continue
        if attempt > 1:
            log.info("went through after a failover", operation=what, attempts=attempt)
        return result


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
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str] | None = None
    ) -> None:
        await patient(
            lambda: self._inner.put(key, data, content_type=content_type, metadata=metadata),
            patience=self._patience,
            what="artefact put",
        )

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


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
