"""FastStream wiring shared by the stage services: one broker, the topology, the runner.

`stage_app` is the composition root each service's `create_app` calls: it chooses real
adapters unless given others, opens them at start-up and closes them at shutdown, and binds
one durable pull subscriber (plus the max-deliveries advisory catcher) to the stage runner.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from faststream import AckPolicy, FastStream
from faststream.nats import JStream, NatsBroker, NatsMessage, PullSub
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared.bus import (
    ADVISORY_STREAM,
    CACHE_BUCKET,
    DELIVERIES_BUCKET,
    LEDGER_BUCKET,
    STREAM,
    JetStreamPublisher,
    Publisher,
    StageSpec,
    TopologyError,
    ensure_topology,
    log_bus_error,
    stage_consumer_config,
)
from shared.busauth import REFUSALS, Identity, identity, inbox_prefix
from shared.errors import PressroomError
from shared.events import (
    DLQ_PREFIX,
    EVENT_MODELS,
    REPORT_FAILED,
    DeadLetter,
    Event,
    ReportFailed,
)
from shared.failover import (
    ConnectionEvents,
    FailoverKV,
    FailoverLedger,
    FailoverPublisher,
    FailoverStore,
)
from shared.health import Check, CheckResult, HealthServer
from shared.ledger import KvLedger, Ledger
from shared.logging import configure_logging, get_logger
from shared.metrics import observe_bus, scrape_handler
from shared.settings import Settings
from shared.stage import StageRunner, guess_request_id, publish_dead_letter
from shared.store import ArtefactStore, open_store
from shared.telemetry import setup_telemetry, shutdown_telemetry

log = get_logger("pressroom.service")


@dataclass
class Deps:
    """Adapters a stage uses; anything left None is opened from settings at start-up."""

    ledger: Ledger | None = None
    publisher: Publisher | None = None
    store: ArtefactStore | None = None
    js: JetStreamContext | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class NatsInbound:
    """Adapts FastStream's NatsMessage to what the stage runner needs."""

    def __init__(self, message: NatsMessage) -> None:
        self._m = message
        raw = message.raw_message
        try:
            meta = raw.metadata
            self._attempt = int(meta.num_delivered) if meta else 1
            self._seq = int(meta.sequence.stream) if meta else 0
            self._first = meta.timestamp if meta else None
        except Exception:  # in-memory test brokers carry no JetStream metadata
            self._attempt, self._seq, self._first = 1, 0, None

    @property
    def subject(self) -> str:
        return str(self._m.raw_message.subject)

    @property
    def body(self) -> bytes:
        return bytes(self._m.body)

    @property
    def headers(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self._m.headers or {}).items()}

    @property
    def attempt(self) -> int:
        return self._attempt

    @property
    def stream_seq(self) -> int:
        return self._seq

    @property
    def first_delivered(self) -> datetime | None:
        return self._first

    async def ack(self) -> None:
        await self._m.ack()

    async def nack(self, delay: float) -> None:
        await self._m.nack(delay=delay)

    async def term(self) -> None:
        await self._m.reject()

    async def in_progress(self) -> None:
        await self._m.in_progress()


Work = Callable[[Event], Awaitable[Event]]


async def raw_body(message: NatsMessage) -> bytes:
    """The body as bytes. FastStream's default decoder json-loads every body before a handler
    runs, and a 50,000-deep or binary "JSON" body would crash it on every delivery; the stage
    runner parses (and dead-letters) bodies itself."""
    return bytes(message.body)


def worker_broker(
    settings: Settings, role: str, service: str, **options: Any
) -> tuple[NatsBroker, Identity]:
    """The one way a worker connects: its role's identity and inbox, reconnecting for ever, and
    stopping (with one log line) if the server refuses the identity."""
    who = identity(settings, role)
    REFUSALS.identity, REFUSALS.fatal_on_auth = who, True
    # Losing a server (a cluster node) reads as one line when it goes, one when it is back.
    events = ConnectionEvents(service, lambda: broker._connection, log_bus_error)
    broker = NatsBroker(
        settings.nats_servers,
        name=service,
        max_reconnect_attempts=-1,
        logger=None,  # the stage runner logs structured lines with request_id instead
        error_cb=events.error,
        disconnected_cb=events.disconnected,
        reconnected_cb=events.reconnected,
        security=who.faststream_security(),
        inbox_prefix=inbox_prefix(role),
        **options,
    )
    return broker, who


async def _probe(settings: Settings, who: Identity) -> None:
    """One plain connection first: a refused identity is a clear error, not a reconnect loop."""
    import nats
    from nats.errors import AuthorizationError

    try:
        nc = await nats.connect(
            settings.nats_servers,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            connect_timeout=5,
            error_cb=_silent,
            **who.nats_kwargs(),
        )
    except AuthorizationError as error:
        raise StartupFailed(f"NATS refused {who.describe()}: {error}") from None
    except Exception as error:
        if "authorization violation" in str(error).lower():
            raise StartupFailed(f"NATS refused {who.describe()}: {error}") from None
        raise
    await nc.close()


async def _silent(error: Exception) -> None:
    """The probe reports its failure itself."""


async def connect_with_patience(
    broker: NatsBroker,
    settings: Settings,
    js: JetStreamContext | None = None,
    *,
    who: Identity | None = None,
    stages: list[StageSpec] | None = None,
) -> JetStreamContext:
    """Connect and bind to the topology, waiting out a NATS server that is (re)starting and
    streams that ops has not created yet.

    Every Pressroom process starts through here, the scheduler included. A process without an
    identity (a development bus) declares the whole topology itself; with one, only ops may.
    """
    deadline = time.monotonic() + settings.startup_timeout
    delay = 0.2
    while True:
        try:
            if who is not None:
                await _probe(settings, who)
            connection = await broker.connect()
            js = js or connection.jetstream(timeout=settings.bus_request_timeout)
            admin = who is None or who.kind == "anonymous"
            await ensure_topology(js, settings, admin=admin, stages=stages)
            return js
        except StartupFailed:
            raise
        except Exception as error:
            if isinstance(error, TopologyError) and error.permanent:
                raise StartupFailed(error.reason) from None
            if time.monotonic() + delay > deadline:
                raise StartupFailed(
                    f"cannot set up the bus at {settings.bus_url_public} within "
                    f"{settings.startup_timeout:g}s: {error or type(error).__name__}"
                ) from None
            reason = error.reason if isinstance(error, PressroomError) else repr(error)
            log.warning("bus not ready, retrying", error=reason, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def stage_checks(
    broker: NatsBroker, deps: Deps, spec: StageSpec, settings: Settings
) -> dict[str, Check]:
    async def bus() -> CheckResult:
        connected = broker._connection is not None and broker._connection.is_connected
        return CheckResult(
            "healthy" if connected else "unhealthy",
            settings.bus_url_public if connected else "not connected to NATS",
        )

    async def store() -> CheckResult:
        assert deps.store is not None
        await deps.store.check()
        return CheckResult("healthy", getattr(deps.store, "backend", type(deps.store).__name__))

    async def consumer() -> CheckResult:
        from shared.readiness import stage_readiness

        assert deps.js is not None
        return await stage_readiness(
            deps.js, spec.durable, settings.health_max_pending, seen_by_worker=True
        )

    return {"bus": bus, "store": store, "consumer": consumer}


class StartupFailed(PressroomError):
    """A service could not connect to NATS or declare its streams in time."""


def stage_app(
    spec: StageSpec,
    model: type[Event],
    settings: Settings,
    deps: Deps,
    *,
    build_work: Callable[[Deps], Awaitable[Work]],
    close: Callable[[Deps], Awaitable[None]] | None = None,
    concurrency: int = 1,
    admit: Callable[[Event], Awaitable[None]] | None = None,
    observe: Callable[[Deps], Awaitable[None]] | None = None,
) -> FastStream:
    service = f"pressroom-{spec.name}"
    tracer_provider, meter_provider = setup_telemetry(service)
    middlewares = []
    if tracer_provider is not None or meter_provider is not None:
        middlewares.append(
            NatsTelemetryMiddleware(tracer_provider=tracer_provider, meter_provider=meter_provider)
        )
    broker, who = worker_broker(
        settings,
        spec.name,
        service,
        reconnect_time_wait=1,
        ping_interval=settings.bus_ping_interval,
        max_outstanding_pings=2,
        graceful_timeout=settings.shutdown_grace,
        middlewares=middlewares,
    )
    app = FastStream(broker, logger=None)  # our own JSON lines say "ready" and "stopping"
    state: dict[str, Any] = {}

    async def observe_all() -> None:
        """Gauges read from outside the process (bus, disk, templates), fresh for a scrape."""
        assert deps.js is not None
        await observe_bus(deps.js, spec.durable)
        if observe is not None:
            await observe(deps)

    @app.on_startup
    async def startup() -> None:
        configure_logging(service)
        js = deps.js = await connect_with_patience(
            broker, settings, deps.js, who=who, stages=[spec]
        )
        # Each bus operation rides out a leader election instead of handing the message back.
        patience = settings.failover_patience
        deps.ledger = deps.ledger or FailoverLedger(
            KvLedger(await js.key_value(LEDGER_BUCKET)), patience=patience
        )
        deps.publisher = deps.publisher or FailoverPublisher(
            JetStreamPublisher(js, timeout=settings.bus_request_timeout), patience=patience
        )
        deps.store = deps.store or FailoverStore(await open_store(settings, js), patience=patience)
        for name, bucket in (("deliveries", DELIVERIES_BUCKET), ("cache", CACHE_BUCKET)):
            if name not in deps.extra:
                deps.extra[name] = FailoverKV(await js.key_value(bucket), patience=patience)
        state["work"] = await build_work(deps)
        state["runner"] = StageRunner(
            spec, settings, deps.ledger, deps.publisher, store=deps.store, admit=admit
        )
        if settings.health_port is not None:
            server = HealthServer(
                service,
                stage_checks(broker, deps, spec, settings),
                settings.health_host,
                settings.health_port,
                metrics=scrape_handler(observe_all),
            )
            state["health"] = server
            port = await server.start()
            log.info("health endpoint", url=f"http://{settings.health_host}:{port}/readyz")
        log.info("stage ready", stage=spec.name, bus=settings.bus_url_public)

    async def watch() -> None:
        # Between scrapes too: OTLP exports what the gauges last saw.
        while True:
            try:
                await observe_all()
            except Exception as error:  # the bus may be briefly away; the next look will do
                log.debug("gauges not refreshed", error=repr(error))
            await asyncio.sleep(10)

    @app.after_startup
    async def start_watching() -> None:
        state["backlog"] = asyncio.create_task(watch())

    @app.on_shutdown
    async def shutdown() -> None:
        log.info("stage stopping", stage=spec.name)
        if "backlog" in state:
            state["backlog"].cancel()
        if "health" in state:
            await state["health"].stop()
        if close is not None:
            await close(deps)
        shutdown_telemetry()

    # Declared for the AsyncAPI document only: the runner publishes (with Nats-Msg-Id) itself.
    next_model = EVENT_MODELS[spec.produces]
    broker.publisher(
        spec.produces,
        schema=next_model,
        title=f"{spec.produces}:{spec.name}",
        description=next_model.__doc__,
    )
    broker.publisher(
        REPORT_FAILED,
        schema=ReportFailed,
        title=f"{REPORT_FAILED}:{spec.name}",
        description=ReportFailed.__doc__,
    )
    broker.publisher(
        f"{DLQ_PREFIX}{spec.consumes}",
        schema=DeadLetter,
        title=f"{DLQ_PREFIX}{spec.consumes}:{spec.name}",
        description=DeadLetter.__doc__,
    )

    @broker.subscriber(
        spec.consumes,
        stream=JStream(STREAM, declare=False),
        durable=spec.durable,
        config=stage_consumer_config(spec, settings),
        pull_sub=PullSub(batch_size=concurrency, timeout=settings.pull_timeout),
        ack_policy=AckPolicy.MANUAL,
        decoder=raw_body,
        inbox_prefix=f"{inbox_prefix(spec.name)}.".encode(),  # FastStream's own default: _INBOX.
        title=f"{spec.consumes}:{spec.name}",
        description=f"{spec.name}: {spec.consumes} → {spec.produces}",
    )
    async def handle(message: NatsMessage) -> None:
        runner: StageRunner = state["runner"]
        await runner.handle(NatsInbound(message), model, state["work"])

    @broker.subscriber(
        spec.advisory_subject,
        stream=JStream(ADVISORY_STREAM, declare=False),
        durable=f"{spec.durable}-crashes",
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        ack_policy=AckPolicy.MANUAL,
        decoder=raw_body,
        inbox_prefix=f"{inbox_prefix(spec.name)}.".encode(),  # FastStream's own default: _INBOX.
        include_in_schema=False,
    )
    async def crashed(message: NatsMessage) -> None:
        """A message no worker finished in max_deliver deliveries: dead-letter it."""
        advisory = json.loads(message.body)
        seq = int(advisory.get("stream_seq", 0))
        assert deps.js is not None and deps.ledger is not None and deps.publisher is not None
        try:
            original = await deps.js.get_msg(STREAM, seq)
        except NotFoundError:
            await message.ack()
            return
        body = original.data or b""
        request_id = guess_request_id(body)
        entry = await deps.ledger.get(request_id) if request_id else None
        record = entry.stages.get(spec.name) if entry else None
        if record is not None and record.state in ("done", "failed") and record.seq == seq:
            await message.ack()  # the runner already settled it on its last attempt
            return
        await publish_dead_letter(
            deps.publisher,
            deps.ledger,
            stage=spec.name,
            subject=original.subject or spec.consumes,
            body=body,
            headers=dict(original.headers or {}),
            reason=(
                f"no {spec.name} finished it in {advisory.get('deliveries')} deliveries "
                "(worker crashed or timed out each time)"
            ),
            permanent=False,
            attempts=int(advisory.get("deliveries", 0)),
            stream_seq=seq,
            first_failure=None,
            request_id=request_id,
            store=deps.store,
            kind="worker_crashed",
            template=entry.template if entry else None,
        )
        await message.ack()

    return app
