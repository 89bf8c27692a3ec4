"""How Pressroom's clients live through a NATS node going away: say so, reconnect, retry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from nats.errors import (
    NoRespondersError,
    NoServersError,
    StaleConnectionError,
    UnexpectedEOF,
)
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from shared.observe.logging import get_logger
from shared.urls import public_url

if TYPE_CHECKING:
    from nats.aio.client import Client


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


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
