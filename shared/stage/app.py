"""FastStream wiring shared by the stage services: one broker, the topology, the runner.

`stage_app` is the composition root each service's `create_app` calls: it chooses real
adapters unless given others, opens them at start-up and closes them at shutdown, and binds
one durable pull subscriber (plus the max-deliveries advisory catcher,
shared/stage/deadletters.py) to the stage runner (shared/stage/runner.py), all in one FastStream
lifespan.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import nats
from faststream import AckPolicy, FastStream
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsMessage
from nats.errors import AuthorizationError
from nats.js import JetStreamContext

from shared.adapters.failover import FailoverKV, FailoverLedger, FailoverPublisher, FailoverStore
from shared.adapters.ledger import KvLedger, Ledger
from shared.adapters.store import ArtefactStore, open_store, plain_http_s3_warning
from shared.admission import QueuedCounts
from shared.bus.failover import ConnectionEvents
from shared.bus.identity import REFUSALS, Identity, identity, inbox_prefix
from shared.bus.kv import KeyValue
from shared.bus.names import (
    ADMISSION_BUCKET,
    ADVISORY_STREAM,
    FETCHER,
    INTAKE_CRASHES,
    LEDGER_BUCKET,
    MAX_DELIVERIES_ADVISORY,
    RENDERER,
    STREAM,
    StageSpec,
    intake_of_durable,
)
from shared.bus.topology import (
    JetStreamPublisher,
    Publisher,
    TopologyError,
    ensure_topology,
    log_bus_error,
    stage_consumer_config,
)
from shared.errors import PressroomError
from shared.events import (
    DLQ_PREFIX,
    EVENT_MODELS,
    REPORT_FAILED,
    DeadLetter,
    Event,
    ReportFailed,
)
from shared.metrics import (
    bus_connected,
    observe_bus,
    operator_labels,
    prepare_from_settings,
    scrape_handler,
)
from shared.observe.health import Check, CheckResult, HealthServer
from shared.observe.logging import configure_logging, get_logger
from shared.observe.telemetry import processing, setup_telemetry, shutdown_telemetry
from shared.settings import Settings
from shared.stage.callers import CallerIntakes
from shared.stage.deadletters import advised_consumer, settle_crash, stream_reader
from shared.stage.intake import MOVE_TO_LANE, STEP_ASIDE, Intake
from shared.stage.readiness import config_check, lanes_together, stage_readiness
from shared.stage.runner import StageRunner
from shared.templatefiles import template_names

log = get_logger("pressroom.service")
BUS_PING_TIMEOUT = 1.0  # a health check waits this long for a reconnect before saying so


@dataclass
class Deps:
    """Adapters every stage uses; anything left None is opened from settings at start-up.

    A service adds its own adapters in a subclass (FetcherDeps, RendererDeps, DistributorDeps).
    """

    ledger: Ledger | None = None
    publisher: Publisher | None = None
    store: ArtefactStore | None = None
    # A JetStream context already connected, its topology declared: given one, the lifespan
    # neither connects nor declares, and opens what is missing above over it (the in-process
    # tests, tests/composition/kit.py, give one with in-memory buckets); None: the lifespan
    # connects and declares (connect_with_patience).
    js: JetStreamContext | None = None
    # Key-value buckets by name (shared.bus.topology *_BUCKET); stage_app opens the ones the stage
    # names.
    kv: dict[str, KeyValue] = field(default_factory=dict)


D = TypeVar("D", bound=Deps)


class NatsInbound:
    """Adapts FastStream's NatsMessage to what the stage runner needs."""

    def __init__(self, message: NatsMessage) -> None:
        self._m = message
        # Every message of a durable pull consumer carries JetStream's metadata; the stream
        # sequence names a dead letter (`dlq:<stage>:<seq>`), so there is no stand-in for it.
        meta = message.raw_message.metadata
        self._attempt = int(meta.num_delivered)
        self._seq = int(meta.sequence.stream)
        self._first: datetime | None = meta.timestamp

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


async def the_message(message: NatsMessage) -> NatsMessage:
    """The message itself, as the handler's argument. FastStream's default decoder json-loads
    every body before a handler runs, and a 50,000-deep or binary "JSON" body would crash it on
    every delivery: the stage runner parses (and dead-letters) bodies itself. And a handler
    that asks for the message by FastStream's `NatsMessage` annotation has it looked up by
    FastDepends through a synchronous `Context.use`, which runs in a worker thread: a thread
    hop on every message (a few milliseconds of each stage's latency on a small VM)."""
    return message


def taken(delivered: Any) -> NatsMessage:
    """The message a handler was given by `the_message`, its decoder cache cleared: the cache
    held the message itself, a cycle that would keep it (body and all) until a full collection."""
    message: NatsMessage = delivered
    message.clear_cache()
    return message


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
            js = connection.jetstream(timeout=settings.bus_request_timeout)
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
    broker: NatsBroker,
    deps: Deps,
    spec: StageSpec,
    settings: Settings,
    callers: Callable[[], Sequence[StageSpec]] = list,
) -> dict[str, Check]:
    """A worker's /readyz checks; `callers`: the calling systems' consumers it reads too."""

    async def bus() -> CheckResult:
        connected = await broker.ping(timeout=BUS_PING_TIMEOUT)
        return CheckResult(
            "healthy" if connected else "unhealthy",
            settings.bus_url_public if connected else "not connected to NATS",
        )

    async def store() -> CheckResult:
        assert deps.store is not None
        await deps.store.check()
        return CheckResult("healthy", getattr(deps.store, "backend", type(deps.store).__name__))

    async def consumer() -> CheckResult:  # every lane's consumer: the worker reads them all
        assert deps.js is not None
        found = await stage_readiness(
            deps.js, spec, settings.health_max_pending, seen_by_worker=True, callers=callers()
        )
        return lanes_together(found)

    return {"bus": bus, "store": store, "consumer": consumer, "config": config_check(settings)}


class InFlight:
    """Up to `limit` messages worked on side by side. The subscriber fetches one message at a
    time and its handler returns only once a slot is free again, so a message is fetched when
    it can start (faststream#2563, which `max_workers` has), and once started the runner keeps
    it alive. Several subscribers share a lane's slots (the calling systems' own consumers,
    shared/stage/callers.py): all of them may pass the gate when one slot frees, and those that
    fetched a message for nobody wait their turn for a slot — the message kept alive meanwhile
    (`keep_alive_every` seconds), and handed back if the process is closing by then.

    `others`: every lane's slots by lane; a request a cap moved to another lane takes a slot
    there instead (MOVE_TO_LANE)."""

    def __init__(self, limit: int, keep_alive_every: float = 1.0) -> None:
        self._free = asyncio.Semaphore(limit)
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self._drained = asyncio.Event()
        self._every = keep_alive_every
        self.others: dict[str, InFlight] = {}

    async def start(self, work: Coroutine[Any, Any, None], message: Any) -> None:
        if self._free.locked():  # another subscriber took the slot this one passed the gate for
            beat = asyncio.create_task(_keep_alive(message, self._every))
            try:
                await self._free.acquire()
            finally:
                beat.cancel()
                await asyncio.gather(beat, return_exceptions=True)
        else:
            await self._free.acquire()
        if self.closing:  # drained meanwhile: another worker takes it now
            self._free.release()
            work.close()
            await message.nack()
            await self.turned_away()
            return
        task = asyncio.create_task(self._run(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        async with self._free:  # the next fetch waits for a free slot
            pass

    async def _run(self, work: Coroutine[Any, Any, None]) -> None:
        holding, owner = [True], [self]

        @asynccontextmanager
        async def aside() -> AsyncIterator[None]:
            """The slot left to other messages meanwhile (a request waiting for its turn)."""
            owner[0]._free.release()
            holding[0] = False
            yield  # an error or a cancel here: no slot to take back, none to give back
            await owner[0]._free.acquire()
            holding[0] = True

        async def move(lane: str) -> None:
            """This message's slot given back, and one of `lane`'s taken instead."""
            target = self.others.get(lane, owner[0])
            if target is owner[0]:
                return
            owner[0]._free.release()
            holding[0] = False
            await target._free.acquire()
            owner[0] = target
            holding[0] = True

        STEP_ASIDE.set(aside)
        MOVE_TO_LANE.set(move)
        try:
            await work
        except Exception as error:  # the runner settles every message itself; never silent
            log.error("message handling crashed", error=repr(error))
        finally:
            if holding[0]:
                owner[0]._free.release()

    async def drain(self, grace: float) -> None:
        """Let the work in flight finish for `grace` seconds, then hand the rest back."""
        self.closing = True
        try:
            if not self._tasks:
                return
            _, late = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in late:
                task.cancel()  # the runner nacks a cancelled message at once
            await asyncio.gather(*late, return_exceptions=True)
        finally:
            self._drained.set()

    async def turned_away(self) -> None:
        """After handing back a message fetched while closing: hold the subscriber's fetch
        loop until the drain is over. Returning at once would fetch the next message at once,
        and the one handed back would come round again within milliseconds, each time counted
        as a delivery, until max_deliver dead-lettered it."""
        await self._drained.wait()


async def _keep_alive(message: Any, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        with suppress(Exception):
            await message.in_progress()


class StartupFailed(PressroomError):
    """A service could not connect to NATS or declare its streams in time."""


@dataclass
class StageParts:
    """What one stage's app is made of, handed from `stage_app` to the pieces that build it."""

    spec: StageSpec
    model: type[Event]
    settings: Settings
    deps: Deps
    service: str
    build_work: Callable[[Any], Awaitable[Work]]
    buckets: Sequence[str]
    close: Callable[[Any], Awaitable[None]] | None
    admit: Callable[[Event], Awaitable[None]] | None
    observe: Callable[[Any], Awaitable[None]] | None
    # Filled in by the lifespan, before the broker starts: what the subscribers call (one
    # runner per lane, and one per calling system's consumer, by durable consumer name).
    runners: dict[str, StageRunner] = field(default_factory=dict)
    work: Work | None = None
    intake: Intake | None = None
    callers: CallerIntakes | None = None  # the fetcher's, once the broker has started

    def add_runner(self, spec: StageSpec) -> None:
        assert self.deps.ledger is not None and self.deps.publisher is not None
        runner = StageRunner(
            spec,
            self.settings,
            self.deps.ledger,
            self.deps.publisher,
            store=self.deps.store,
            admit=self.admit,
        )
        runner.intake = self.intake
        runner.routes = spec.name == FETCHER.name  # where requests come in
        self.runners[spec.durable] = runner

    def reading_callers(self) -> list[StageSpec]:
        return list(self.callers.reading.values()) if self.callers is not None else []


def stage_app(
    spec: StageSpec,
    model: type[Event],
    settings: Settings,
    deps: D,
    *,
    build_work: Callable[[D], Awaitable[Work]],
    buckets: Sequence[str] = (),
    close: Callable[[D], Awaitable[None]] | None = None,
    concurrency: int = 1,
    in_flight: int = 1,
    admit: Callable[[Event], Awaitable[None]] | None = None,
    observe: Callable[[D], Awaitable[None]] | None = None,
) -> FastStream:
    """One stage's FastStream app: a broker, one lifespan, the stage's subscriber.

    The lifespan connects (waiting for the bus), opens what `deps` does not already hold —
    the ledger, the publisher, the artefact store and the KV `buckets` this stage names —
    calls `build_work`, serves /readyz and /metrics, and on the way out (after the broker has
    drained its in-flight messages) closes them again.

    `concurrency` messages are fetched together and worked on together (the next batch waits
    for the slowest); `in_flight` > 1 instead works on up to that many side by side, each
    fetched once a slot is free (`InFlight`): one slow message does not hold the others.
    """
    service = f"pressroom-{spec.name}"
    setup_telemetry(service)  # messaging spans: `processing` around each message's work
    broker, who = worker_broker(
        settings,
        spec.name,
        service,
        reconnect_time_wait=1,
        ping_interval=settings.bus_ping_interval,
        max_outstanding_pings=2,
        graceful_timeout=settings.shutdown_grace,
    )
    parts = StageParts(
        spec, model, settings, deps, service, build_work, buckets, close, admit, observe
    )
    app = FastStream(broker, logger=None, lifespan=_lifespan(parts, broker, who))
    # Each lane works on its own messages side by side (interactive never waits for bulk).
    # The fetcher's calling systems' own consumers share its lanes' slots: it always has them.
    slotted = in_flight > 1 or spec.name == FETCHER.name
    every = max(settings.ack_wait / 3, 0.5)
    sides = {
        lane.durable: InFlight(lane_share(lane, in_flight), every) if slotted else None
        for lane in spec.lanes
    }
    by_lane = {lane.lane: side for lane in spec.lanes if (side := sides[lane.durable])}
    for side in by_lane.values():
        side.others = by_lane

    @app.on_shutdown
    async def drain_in_flight() -> None:
        """Before the broker stops: the work still needs the connection to ack and publish.
        No calling system's consumer is added from now on; every lane stops taking messages
        at once and all drain together (one grace, not one per lane)."""
        if parts.callers is not None:
            await parts.callers.stop()
        draining = [side for side in sides.values() if side is not None]
        await asyncio.gather(*(side.drain(settings.shutdown_grace) for side in draining))

    _declare_outputs(broker, spec)
    for lane in spec.lanes:
        batch = lane_share(lane, concurrency)
        _subscribe_stage(broker, parts, lane, batch, sides[lane.durable])
        _subscribe_crashes(broker, lane, parts)
    if spec.name == FETCHER.name:
        _read_callers(app, broker, parts, sides, concurrency)
    return app


def _read_callers(
    app: FastStream,
    broker: NatsBroker,
    parts: StageParts,
    sides: dict[str, InFlight | None],
    concurrency: int,
) -> None:
    """The calling systems' own consumers (shared/stage/callers.py), each bound to a runner of
    its own and sharing its lane's slots, found once the broker runs and while it does."""
    _subscribe_crashes(broker, FETCHER, parts, callers=True)

    async def start(caller: StageSpec) -> Any:
        lane = FETCHER.in_lane(caller.lane) if caller.lane != "normal" else FETCHER
        parts.add_runner(caller)
        batch = lane_share(lane, concurrency)
        subscriber = _subscribe_stage(
            broker, parts, caller, batch, sides[lane.durable], persistent=False
        )
        try:
            await subscriber.start()
        except BaseException:
            with suppress(Exception):  # half started: stopped, and made again next time
                await subscriber.stop()
            raise
        return subscriber

    @app.after_startup
    async def read_callers() -> None:
        assert parts.deps.js is not None
        parts.callers = CallerIntakes(parts.deps.js, parts.settings, start)
        parts.callers.watch()


def renders_idle(js: JetStreamContext) -> Callable[[str], Awaitable[bool]]:
    """Whether a renderer waits for work of a lane and none is queued for it (a requester past
    its share may then use the idle capacity: shared/stage/intake.py). A renderer asks for more
    only once one of its slots (a render process each, and PRESSROOM_RENDER_PREFETCH more) is
    free, so a waiting pull is a renderer with room for a report: one held request goes to it
    per tick, and renders next, before any request that comes in after it."""

    async def idle(lane: str) -> bool:
        try:
            info = await js.consumer_info(STREAM, RENDERER.in_lane(lane).durable)
        except Exception:  # no renderer yet, or the bus briefly away: not idle
            return False
        return not info.num_pending and bool(info.num_waiting)

    return idle


def lane_share(lane: StageSpec, slots: int) -> int:
    """A lane's share of a stage's slots: bulk work gets half (at least one), so a process —
    its render processes, its event loop — always has room for interactive and normal work."""
    return max(1, slots // 2) if lane.lane == "bulk" else slots


def _gauges(parts: StageParts) -> Callable[[], Awaitable[None]]:
    """Gauges read from outside the process (bus, disk, templates), fresh for a scrape."""
    deps, settings = parts.deps, parts.settings

    async def observe_all() -> None:
        assert deps.js is not None
        # First, and without the bus: a worker cut off from NATS still answers /metrics.
        bus_connected(bool(getattr(getattr(deps.js, "_nc", None), "is_connected", False)))
        # The template label takes the operator's templates only (requests name anything).
        names = await asyncio.to_thread(template_names, settings.templates_dir)
        if names:  # a worker without the folder keeps the first-come budget
            operator_labels("template", names)
        await observe_bus(deps.js, parts.spec, parts.reading_callers())
        if parts.observe is not None:
            await parts.observe(deps)

    return observe_all


async def _watch(observe_all: Callable[[], Awaitable[None]]) -> None:
    """Between scrapes too: OTLP exports what the gauges last saw."""
    while True:
        try:
            await observe_all()
        except Exception as error:  # the bus may be briefly away; the next look will do
            log.debug("gauges not refreshed", error=repr(error))
        await asyncio.sleep(10)


def _lifespan(parts: StageParts, broker: NatsBroker, who: Identity) -> Callable[[], Any]:
    spec, settings, deps = parts.spec, parts.settings, parts.deps
    observe_all = _gauges(parts)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        configure_logging(parts.service)
        if insecure := plain_http_s3_warning(settings):
            log.warning("artefact store over plain HTTP", reason=insecure)
        if deps.js is None:
            deps.js = await connect_with_patience(broker, settings, who=who, stages=[spec])
        await _open_adapters(deps, deps.js, settings, [*parts.buckets, ADMISSION_BUCKET])
        assert deps.ledger is not None and deps.publisher is not None
        parts.intake = Intake(
            settings,
            deps.publisher,
            QueuedCounts(deps.kv[ADMISSION_BUCKET]),
            idle=renders_idle(deps.js) if spec.name == FETCHER.name else None,
        )
        for lane in spec.lanes:
            parts.add_runner(lane)
        parts.work = await parts.build_work(deps)
        health = await _serve_health(parts, broker, observe_all)
        prepare_from_settings(spec.name, settings)  # every series at 0 before its first event
        gauges = asyncio.create_task(_watch(observe_all))
        log.info("stage ready", stage=spec.name, bus=settings.bus_url_public)
        try:
            yield  # FastStream starts the broker here, and stops (drains) it before we go on
        finally:
            log.info("stage stopping", stage=spec.name)
            gauges.cancel()
            with suppress(asyncio.CancelledError):
                await gauges
            if health is not None:
                await health.stop()
            if parts.close is not None:
                await parts.close(deps)
            shutdown_telemetry()

    return lifespan


async def _serve_health(
    parts: StageParts, broker: NatsBroker, observe_all: Callable[[], Awaitable[None]]
) -> HealthServer | None:
    settings = parts.settings
    if settings.health_port is None:
        return None
    health = HealthServer(
        parts.service,
        stage_checks(broker, parts.deps, parts.spec, settings, parts.reading_callers),
        settings.health_host,
        settings.health_port,
        metrics=scrape_handler(observe_all),
    )
    port = await health.start()
    log.info("health endpoint", url=f"http://{settings.health_host}:{port}/readyz")
    return health


def _declare_outputs(broker: NatsBroker, spec: StageSpec) -> None:
    """Declared for the AsyncAPI document only: the runner publishes (with Nats-Msg-Id) itself."""
    next_model = EVENT_MODELS[spec.produces]
    for subject, schema in (
        (spec.produces, next_model),
        (REPORT_FAILED, ReportFailed),
        (f"{DLQ_PREFIX}{spec.consumes}", DeadLetter),
    ):
        broker.publisher(
            subject,
            schema=schema,
            title=f"{subject}:{spec.name}",
            description=schema.__doc__,
        )


def _subscribe_stage(
    broker: NatsBroker,
    parts: StageParts,
    spec: StageSpec,
    concurrency: int,
    side_by_side: InFlight | None,
    *,
    persistent: bool = True,
) -> Any:
    """One lane's durable pull consumer, bound to its runner; the subscriber (one made while the
    broker runs, `persistent=False`, is started by the caller)."""
    settings = parts.settings

    subscriber = broker.subscriber(
        spec.consumes,
        stream=JStream(STREAM, declare=False),
        durable=spec.durable,
        config=stage_consumer_config(spec, settings),
        pull_sub=PullSub(
            batch_size=1 if side_by_side else concurrency, timeout=settings.pull_timeout
        ),
        ack_policy=AckPolicy.MANUAL,
        decoder=the_message,
        inbox_prefix=f"{inbox_prefix(spec.name)}.".encode(),  # FastStream's own default: _INBOX.
        title=f"{spec.consumes}:{spec.durable}",
        description=f"{spec.durable}: {spec.consumes} → {spec.produces}",
        persistent=persistent,
        include_in_schema=persistent,  # the calling systems' own: not part of the contract
    )

    @subscriber
    async def handle(delivered: Any) -> None:  # Any: what `the_message` gives, not looked up
        message = taken(delivered)
        runner, work = parts.runners.get(spec.durable), parts.work
        assert runner is not None and work is not None, "the lifespan opens the adapters first"
        if side_by_side is not None and side_by_side.closing:
            await message.nack()  # shutting down: another worker takes it now
            await side_by_side.turned_away()
            return
        handled = processing(
            message, spec.durable, runner.handle(NatsInbound(message), parts.model, work)
        )
        if side_by_side is None:
            await handled
        else:
            await side_by_side.start(handled, message)

    return subscriber


def _subscribe_crashes(
    broker: NatsBroker, spec: StageSpec, parts: StageParts, *, callers: bool = False
) -> None:
    """The max-deliveries advisories of the stage's consumer, each turned into a dead letter;
    `callers`: those of the calling systems' consumers (INTAKE_CRASHES reads every consumer's
    advisories and keeps theirs)."""
    deps = parts.deps

    @broker.subscriber(
        f"{MAX_DELIVERIES_ADVISORY}.{STREAM}.*" if callers else spec.advisory_subject,
        stream=JStream(ADVISORY_STREAM, declare=False),
        durable=INTAKE_CRASHES if callers else f"{spec.durable}-crashes",
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        ack_policy=AckPolicy.MANUAL,
        decoder=the_message,
        inbox_prefix=f"{inbox_prefix(spec.name)}.".encode(),  # FastStream's own default: _INBOX.
        include_in_schema=False,
    )
    async def crashed(delivered: Any) -> None:  # Any: what `the_message` gives, not looked up
        """A message no worker finished in max_deliver deliveries: dead-letter it."""
        message = taken(delivered)
        assert deps.js is not None and deps.ledger is not None and deps.publisher is not None
        crashed_in = intake_of_durable(advised_consumer(message.body)) if callers else spec
        if crashed_in is None:  # another consumer's: its own catcher settles it
            await message.ack()
            return
        intake = parts.intake
        await settle_crash(
            bytes(message.body),
            spec=crashed_in,
            read=stream_reader(deps.js, STREAM),
            ledger=deps.ledger,
            publisher=deps.publisher,
            store=deps.store,
            count_out=intake.count_out if intake is not None else None,
        )
        await message.ack()


async def _open_adapters(
    deps: Deps, js: JetStreamContext, settings: Settings, buckets: Sequence[str]
) -> None:
    """Fill in what `deps` lacks; each bus operation rides out a leader election instead of
    handing the message back."""
    patience = settings.failover_patience
    if deps.ledger is None:
        deps.ledger = FailoverLedger(KvLedger(await js.key_value(LEDGER_BUCKET)), patience=patience)
    if deps.publisher is None:
        deps.publisher = FailoverPublisher(
            JetStreamPublisher(js, timeout=settings.bus_request_timeout), patience=patience
        )
    if deps.store is None:
        deps.store = FailoverStore(await open_store(settings, js), patience=patience)
    for bucket in buckets:
        if bucket not in deps.kv:
            deps.kv[bucket] = FailoverKV(await js.key_value(bucket), patience=patience)
