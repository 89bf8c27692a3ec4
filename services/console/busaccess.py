"""The bus as the operator's tools open it: the `ops` identity, the topology checked, one reason
when the bus cannot be reached."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client
from nats.errors import AuthorizationError
from nats.js import JetStreamContext

from shared.adapters.ledger import KvLedger
from shared.adapters.store import ArtefactStore, move_studio_records, open_store
from shared.bus.failover import LEADERLESS, describe_error
from shared.bus.identity import REFUSALS, BusRefused, identity
from shared.bus.names import LEDGER_BUCKET
from shared.bus.topology import connect, ensure_topology
from shared.errors import PressroomError
from shared.observe.logging import get_logger
from shared.settings import Settings

log = get_logger("pressroom.console")


class BusUnavailable(PressroomError):
    """The NATS server cannot be reached."""


@dataclass
class Bus:
    nc: Client
    js: JetStreamContext
    settings: Settings
    # Set each time a lasting connection (the console's) is back after the server was away:
    # its watches start over (a restarted server forgets their consumers).
    reconnected: asyncio.Event = field(default_factory=asyncio.Event)

    async def ledger(self) -> KvLedger:
        return KvLedger(await self.js.key_value(LEDGER_BUCKET), js=self.js)

    async def store(self) -> ArtefactStore:
        return await open_store(self.settings, self.js)


CONNECT_TIMEOUT = 3.0
CONNECT_LIMIT = 30.0  # the whole connect, whatever nats-py does meanwhile


def connect_failure(error: BaseException, seen: list[BaseException]) -> str:
    """Why a connection failed, in words: nats-py's own error is often empty ("") or says
    only "no servers available", while the socket error it met on the way says more."""
    for candidate in [*reversed(seen), error]:
        if isinstance(candidate, ConnectionRefusedError):
            return "connection refused: nothing listens there (is the server running?)"
        if isinstance(candidate, TimeoutError | asyncio.TimeoutError):
            return (
                f"no answer within {CONNECT_TIMEOUT:g}s: a wrong address, or a firewall "
                "dropping the packets?"
            )
        if isinstance(candidate, OSError) and candidate.strerror:
            return candidate.strerror
    return str(error) or type(error).__name__


@asynccontextmanager
async def open_bus(
    settings: Settings, *, setup: bool = True, lasting: bool = False
) -> AsyncIterator[Bus]:
    """The CLI's connection, as the ops identity; `setup` declares the topology if needed.
    `lasting` (the console's): it reconnects for as long as it is open, whenever the server
    comes back, and says so on `Bus.reconnected`; a command's tries once and fails in a line."""
    who = identity(settings, "ops")
    seen: list[BaseException] = []
    back = asyncio.Event()

    async def reconnected() -> None:
        log.info("bus reconnected", name="pressroom-console")
        back.set()

    # nats-py reads 0 as "no limit" when picking servers: 1 means try once, then stop.
    retries: dict[str, Any] = (
        {"name": "pressroom-console", "reconnected_cb": reconnected}
        if lasting
        else {"name": "pressroom-cli", "max_reconnect_attempts": 1, "allow_reconnect": False}
    )

    async def quiet(error: Exception) -> None:
        """The CLI reports a failed connection itself, in one line (refusals are remembered)."""
        REFUSALS.record(error)
        seen.append(error)

    try:
        # Bounded as a whole too: once, under heavy load, a refused identity's connect never
        # returned (tests/integration/test_bus_auth.py); a CLI must not hang.
        nc = await asyncio.wait_for(
            connect(
                settings,
                role="ops",
                connect_timeout=CONNECT_TIMEOUT,
                error_cb=quiet,
                **retries,
            ),
            CONNECT_LIMIT,
        )
    except Exception as error:
        where = settings.bus_url_public
        text = str(error) or type(error).__name__
        auth_errors = [e for e in seen if "authorization" in str(e).lower()]
        if auth_errors and isinstance(error, TimeoutError):
            text = str(auth_errors[-1])  # the refusal is the reason, not the time it took
        if "authorization" in text.lower() or isinstance(error, AuthorizationError):
            raise BusUnavailable(
                f"NATS at {where} refused {who.describe()}: {text} "
                "(check PRESSROOM_NATS_CREDENTIALS_DIR / PRESSROOM_NATS_NKEY)"
            ) from None
        hint = (
            ""
            if settings.nats_url
            else " (start it with `pressroom up`, or set PRESSROOM_NATS_URL)"
        )
        reason = (
            f"no answer within {CONNECT_LIMIT:g}s"
            if isinstance(error, TimeoutError) and not seen
            else connect_failure(error, seen)
        )
        raise BusUnavailable(f"cannot reach NATS at {where}{hint}: {reason}") from None
    js = nc.jetstream(timeout=5)
    try:
        if setup:
            await ensure_topology(js, settings)
        yield Bus(nc, js, settings, back)
    except LEADERLESS as error:
        refused = REFUSALS.last()
        if refused:  # a refused request is never answered: the refusal is the reason
            raise BusRefused(refused) from None
        raise BusUnavailable(
            f"NATS at {settings.bus_url_public} does not answer JetStream requests "
            f"({describe_error(error)}): in a cluster, is a majority of the servers up? "
            "(`pressroom health` shows which)"
        ) from None
    finally:
        await nc.drain()


async def ready(bus: Bus) -> None:
    """Nothing more to do: `open_bus` (setup=True) declared the streams, consumers, buckets."""


async def set_up(bus: Bus) -> tuple[int, list[str]]:
    """What `pressroom bus setup` and `pressroom up` do beyond declaring the topology: studio
    records found among the artefacts (the JetStream backend) moved to the studio's bucket.
    How many moved, and a line for each that could not be."""
    if bus.settings.s3_endpoint:
        return 0, []
    try:
        return await move_studio_records(bus.js)
    except Exception as error:  # the topology is declared: the move waits for the next setup
        return 0, [f"studio records among the artefacts not looked for: {error!r}"[:300]]
