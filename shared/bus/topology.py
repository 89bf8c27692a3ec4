"""The bus topology (streams, durable consumers, KV and object buckets) and how we publish.

Streams and consumers are declared here, deliberately and idempotently, at every service's
start-up; FastStream subscribers only bind to them (`declare=False`), so no service overwrites
another's configuration (faststream#1830) and a changed ack wait or max_deliver reaches the
existing durable consumers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import api
from nats.js.errors import APIError, NotFoundError
from pydantic import BaseModel

from shared.bus.failover import ConnectionEvents
from shared.bus.identity import REFUSALS, BusRefused, identity, tenant_outcomes
from shared.bus.names import (
    ADMISSION_BUCKET,
    ADVISORY_STREAM,
    CACHE_BUCKET,
    DELIVERIES_BUCKET,
    DLQ_STREAM,
    FETCHER,
    INTAKE_CRASHES,
    LANE_SUBJECTS,
    LEDGER_BUCKET,
    MAX_DELIVERIES_ADVISORY,
    MSG_ID,
    OBJECT_BUCKET,
    RENDER_CACHE_BUCKET,
    SCHEDULES_BUCKET,
    STAGES,
    STREAM,
    STUDIO_BUCKET,
    StageSpec,
    intake_of_subject,
)
from shared.errors import PressroomError
from shared.events import (
    DLQ_PREFIX,
    LANES,
    PIPELINE_SUBJECTS,
    REPORT_DELIVERED,
    REPORT_FAILED,
    REPORT_REQUESTED,
    TENANT_NAME,
    TENANT_REQUESTS,
    claimed_request_id,
    tenant_lane_requests,
)
from shared.observe.logging import get_logger
from shared.observe.telemetry import sending

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from shared.settings import Settings

log = get_logger("pressroom.bus")


async def log_bus_error(error: Exception) -> None:
    """nats-py's default prints a traceback per failed (re)connect; one log line is enough.

    A refusal by the server (authentication, permissions) is said once, naming the identity
    and the subject, and remembered so that a refused request fails instead of timing out.
    """
    refused = REFUSALS.record(error)
    if refused is not None:
        log.error("bus refused", reason=refused)
        if REFUSALS.fatal_on_auth and "authorization violation" in str(error).lower():
            REFUSALS.stop_process()
        return
    log.warning("bus connection error", error=repr(error))


async def connect(
    settings: Settings, *, name: str = "pressroom", role: str = "ops", **kwargs: Any
) -> Client:
    """A nats-py connection as `role` to any of the servers (a cluster's nodes) that keeps
    reconnecting instead of giving up after ~2 minutes, and logs each disconnect and reconnect
    once."""

    who = identity(settings, role)
    REFUSALS.identity = who
    nc = Client()
    events = ConnectionEvents(name, lambda: nc, kwargs.pop("error_cb", log_bus_error))
    await nc.connect(
        kwargs.pop("servers", settings.nats_servers),
        name=name,
        error_cb=events.error,
        max_reconnect_attempts=kwargs.pop("max_reconnect_attempts", -1),
        reconnect_time_wait=kwargs.pop("reconnect_time_wait", 0.5),
        disconnected_cb=kwargs.pop("disconnected_cb", events.disconnected),
        reconnected_cb=kwargs.pop("reconnected_cb", events.reconnected),
        **who.nats_kwargs(),
        **kwargs,
    )
    return nc


async def _ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    assert config.name
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


class TopologyMissing(PressroomError):
    """A stream or bucket is not there and this identity may not create it."""


TOPOLOGY_STREAMS = (
    STREAM,
    DLQ_STREAM,
    ADVISORY_STREAM,
    *(
        f"KV_{b}"
        for b in (
            LEDGER_BUCKET,
            DELIVERIES_BUCKET,
            SCHEDULES_BUCKET,
            ADMISSION_BUCKET,
            CACHE_BUCKET,
            RENDER_CACHE_BUCKET,
        )
    ),
    f"OBJ_{OBJECT_BUCKET}",
    # Not the studio's bucket (OBJ_pressroom_studio): only the renderer uses it, and a service
    # without it (an S3 deployment, an auth.conf of an earlier version) still does its work.
)


class TopologyError(PressroomError):
    """NATS cannot hold the streams as configured (replicas it cannot place)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent  # a single server never places R3; a cluster may, later


async def _replicas(js: JetStreamContext, stream: str, settings: Settings) -> int:
    """The replicas to declare `stream` with: scaled up to PRESSROOM_STREAM_REPLICAS if it has
    fewer, never down (a client started with the default of 1 must not shrink a cluster's R3)."""
    wanted = settings.stream_replicas
    try:
        config = (await js.stream_info(stream)).config
    except NotFoundError:
        return wanted
    have = config.num_replicas or 1
    if have >= wanted:
        return have
    config.num_replicas = wanted
    await js.update_stream(config)
    log.warning("stream scaled up", stream=stream, replicas_before=have, replicas=wanted)
    return wanted


# JetStream's "replicas > 1 not supported in non-clustered mode", "insufficient resources".
_NOT_CLUSTERED, _TOO_FEW_SERVERS = 10074, 10023


async def ensure_topology(
    js: JetStreamContext,
    settings: Settings,
    *,
    admin: bool = True,
    stages: list[StageSpec] | None = None,
) -> None:
    """Declare the topology. Safe to run often.

    `admin` (the ops identity, or an unauthenticated development bus): create or update every
    stream, consumer and bucket. Otherwise (a service's own identity, which may administer
    nothing but its own consumers): check that every stream and bucket exists — raising
    TopologyMissing, which start-up waits out, if not — and declare only `stages`' consumers.
    """
    if not admin:
        for name in TOPOLOGY_STREAMS:
            try:
                await js.stream_info(name)
            except NotFoundError:
                raise TopologyMissing(
                    f"stream {name} does not exist yet (the ops identity creates it: "
                    "`pressroom bus setup`, or `pressroom up`)"
                ) from None
        for stage in stages or []:
            for lane in stage.lanes:
                await _declare_consumers(js, lane, settings)
        return
    try:
        await _declare_topology(js, settings)
    except APIError as error:
        if error.err_code not in (_NOT_CLUSTERED, _TOO_FEW_SERVERS):
            raise
        wanted = settings.stream_replicas
        raise TopologyError(
            f"NATS cannot keep {wanted} replicas of each stream ({error.description}): "
            f"PRESSROOM_STREAM_REPLICAS={wanted} needs a cluster with at least {wanted} "
            "JetStream servers up; start the missing servers, or lower PRESSROOM_STREAM_REPLICAS",
            permanent=error.err_code == _NOT_CLUSTERED,
        ) from None


async def _declare_topology(js: JetStreamContext, settings: Settings) -> None:
    await _ensure_stream(
        js,
        api.StreamConfig(
            name=STREAM,
            description="Pressroom pipeline events",
            subjects=[
                *PIPELINE_SUBJECTS,
                TENANT_REQUESTS,
                *LANE_SUBJECTS,
                *(tenant_lane_requests(lane) for lane in LANES),
            ],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            max_age=30 * 24 * 3600,
            duplicate_window=settings.duplicate_window,
            num_replicas=await _replicas(js, STREAM, settings),
        ),
    )
    await _ensure_stream(
        js,
        api.StreamConfig(
            name=DLQ_STREAM,
            description="Pressroom dead letters: inspect, replay, purge",
            subjects=[f"{DLQ_PREFIX}>"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            duplicate_window=settings.duplicate_window,
            num_replicas=await _replicas(js, DLQ_STREAM, settings),
        ),
    )
    # Max-deliveries advisories are core NATS (at most once): keep them in a stream so a
    # message that crashed every worker is still dead-lettered when nobody was listening.
    await _ensure_stream(
        js,
        api.StreamConfig(
            name=ADVISORY_STREAM,
            description="JetStream max-deliveries advisories of Pressroom consumers",
            subjects=[f"{MAX_DELIVERIES_ADVISORY}.{STREAM}.*"],
            storage=api.StorageType.FILE,
            max_age=7 * 24 * 3600,
            num_replicas=await _replicas(js, ADVISORY_STREAM, settings),
        ),
    )
    for stage in STAGES.values():
        for lane in stage.lanes:
            await _declare_consumers(js, lane, settings)
    buckets = (LEDGER_BUCKET, DELIVERIES_BUCKET, SCHEDULES_BUCKET, ADMISSION_BUCKET)
    for bucket, history in ((b, 1) for b in buckets):
        replicas = await _replicas(js, f"KV_{bucket}", settings)
        await js.create_key_value(
            api.KeyValueConfig(
                bucket=bucket, history=history, storage=api.StorageType.FILE, replicas=replicas
            )
        )
    for cache in (CACHE_BUCKET, RENDER_CACHE_BUCKET):
        await js.create_key_value(
            api.KeyValueConfig(
                bucket=cache,
                history=1,
                storage=api.StorageType.FILE,
                replicas=await _replicas(js, f"KV_{cache}", settings),
                ttl=7 * 24 * 3600,
            )
        )
    for objects in (OBJECT_BUCKET, STUDIO_BUCKET):
        await js.create_object_store(
            objects,
            api.ObjectStoreConfig(
                storage=api.StorageType.FILE,
                replicas=await _replicas(js, f"OBJ_{objects}", settings),
            ),
        )


async def _declare_consumers(js: JetStreamContext, stage: StageSpec, settings: Settings) -> None:
    """A stage's durable consumer and its max-deliveries catcher, created or updated."""
    if stage == FETCHER:  # the normal lane's keeps where the calling systems' consumers begin
        # Their catcher first: a fetcher whose permissions predate them (an auth.conf not
        # written again since) fails here, before its consumer stops reading their subjects.
        every = f"{MAX_DELIVERIES_ADVISORY}.{STREAM}.*"
        await _declare_catcher(js, INTAKE_CRASHES, every, settings)
        floors = await _intake_floors(js)
        await js.add_consumer(STREAM, stage_consumer_config(stage, settings, floors=floors))
    else:
        await js.add_consumer(STREAM, stage_consumer_config(stage, settings))
    await _declare_catcher(js, f"{stage.durable}-crashes", stage.advisory_subject, settings)


async def _declare_catcher(
    js: JetStreamContext, durable: str, subject: str, settings: Settings
) -> None:
    await js.add_consumer(
        ADVISORY_STREAM,
        api.ConsumerConfig(
            name=durable,
            durable_name=durable,
            filter_subject=subject,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=settings.ack_wait,
            max_deliver=settings.max_attempts,
        ),
    )


# Where the calling systems' own consumers begin reading, per lane (metadata of the `fetcher`
# consumer). Before them, the fetcher's consumer of each lane read every calling system's
# subjects of that lane too: the first start after that layout notes, per lane, the first
# message that consumer had not acknowledged, so a calling system's consumer made now or later
# does not run its requests a second time (a few acknowledged out of order may run again).
INTAKE_FLOOR = "pressroom_intake_from_"


async def _intake_floors(js: JetStreamContext) -> dict[str, str]:
    try:
        info = await js.consumer_info(STREAM, FETCHER.durable)
    except NotFoundError:
        return {f"{INTAKE_FLOOR}{lane.lane}": "1" for lane in FETCHER.lanes}
    kept = {k: v for k, v in (info.config.metadata or {}).items() if k.startswith(INTAKE_FLOOR)}
    if kept:
        return kept
    floors = {}
    for lane in FETCHER.lanes:  # the layout before: every lane's consumer as it stands now
        try:
            found = info if lane == FETCHER else await js.consumer_info(STREAM, lane.durable)
        except NotFoundError:
            acked = 0
        else:
            acked = int(found.ack_floor.stream_seq or 0) if found.ack_floor else 0
        floors[f"{INTAKE_FLOOR}{lane.lane}"] = str(acked + 1)
    return floors


async def intake_floor(js: JetStreamContext, lane: str) -> int:
    """Where a calling system's consumer of `lane` begins: the stream sequence kept on the
    fetcher's consumer (1: every request of theirs in the stream is still unread)."""
    info = await js.consumer_info(STREAM, FETCHER.durable)
    kept = (info.config.metadata or {}).get(f"{INTAKE_FLOOR}{lane}", "1")
    return int(kept) if kept.isdigit() else 1


async def intake_subjects(js: JetStreamContext) -> list[StageSpec]:
    """The calling systems' consumers the stream calls for: one per subject of theirs that
    holds messages (`report.requested.<tenant>[.<lane>]`), by the stream's own subject index."""
    info = await js.stream_info(STREAM, subjects_filter=f"{REPORT_REQUESTED}.>")
    found = (intake_of_subject(subject) for subject in (info.state.subjects or {}))
    return sorted((spec for spec in found if spec is not None), key=lambda s: s.durable)


async def declare_intake(js: JetStreamContext, spec: StageSpec, settings: Settings) -> None:
    """A calling system's consumer, created or updated (its catcher is INTAKE_CRASHES); where
    it begins is fixed when it is made."""
    try:
        floor = (await js.consumer_info(STREAM, spec.durable)).config.opt_start_seq or 1
    except NotFoundError:
        floor = await intake_floor(js, spec.lane)
    await js.add_consumer(STREAM, stage_consumer_config(spec, settings, floor=floor))


def stage_consumer_config(
    stage: StageSpec,
    settings: Settings,
    *,
    floor: int | None = None,
    floors: dict[str, str] | None = None,
) -> api.ConsumerConfig:
    """A stage's durable consumer; a calling system's begins at stream sequence `floor`, and
    the fetcher's normal lane keeps every lane's (`floors`) in its metadata."""
    # One more delivery than our own attempts: the runner dead-letters on its last attempt,
    # the server's max-deliveries advisory only catches workers that died before deciding.
    config = api.ConsumerConfig(
        name=stage.durable,
        durable_name=stage.durable,
        description=f"Pressroom {stage.name}: {stage.consumes} -> {stage.produces}",
        filter_subjects=stage.filter_subjects,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait,
        max_deliver=settings.max_attempts + 1,
        max_ack_pending=1000,
        deliver_policy=api.DeliverPolicy.ALL,
    )
    if floors is not None:
        config.metadata = floors
    if floor is not None and floor > 1:
        config.deliver_policy = api.DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = floor
    return config


class Publisher(Protocol):
    """Publishes to a JetStream subject and waits for the stream's acknowledgement."""

    async def publish(
        self, subject: str, body: bytes, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> api.PubAck: ...


def encode(event: BaseModel) -> bytes:
    return event.model_dump_json().encode()


def requester(body: bytes) -> str | None:
    """The tenant an outcome event is for (its `requested_by`, when that names one)."""
    try:
        who = json.loads(body).get("requested_by")
    except (ValueError, AttributeError, RecursionError):
        return None
    return who if isinstance(who, str) and TENANT_NAME.match(who) else None


class JetStreamPublisher:
    """The one way Pressroom publishes to JetStream: trace context, message id, and a check
    that a de-duplicated publish was really de-duplicated against our own earlier message.

    An outcome (`report.delivered`, `report.failed`) of a tenant's request is also sent to
    `tenant.<name>.report.…`, which that tenant's account imports as its `report.…`: each
    calling system hears its own outcomes and nobody else's."""

    def __init__(
        self, js: JetStreamContext, *, timeout: float = 5.0, verify_duplicates: bool = True
    ) -> None:
        self._js = js
        self._timeout = timeout
        # An identity that may not read the stream back (the scheduler) trusts its ids instead.
        self._verify = verify_duplicates

    @property
    def js(self) -> JetStreamContext:
        return self._js

    async def publish(
        self, subject: str, body: bytes, *, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> api.PubAck:
        ack = await self._send(subject, body, msg_id, headers)
        if ack.duplicate and self._verify and not await self._ours(ack, subject, body):
            # Anyone may publish with any Nats-Msg-Id: a message that took ours first (within
            # the duplicate window) must not make this one vanish. Publish under a fresh id.
            log.warning("message id taken by another message", subject=subject, msg_id=msg_id)
            ack = await self._send(subject, body, f"{msg_id}:{uuid.uuid4().hex}", headers)
        if subject in (REPORT_DELIVERED, REPORT_FAILED):  # again after a retry: at least once
            await self._tell_tenant(subject, body, headers)
        return ack

    async def _tell_tenant(
        self, subject: str, body: bytes, headers: Mapping[str, str] | None
    ) -> None:
        tenant = requester(body)
        if tenant is None:
            return
        target = f"{tenant_outcomes(tenant)}.{subject.removeprefix('report.')}"
        try:  # core NATS, like any subscriber of report.delivered: at most once
            await self._js._nc.publish(target, body, headers=dict(headers or {}) or None)
        except Exception as error:  # the outcome is stored; the tenant's copy is best effort
            log.warning("tenant outcome not sent", subject=target, error=repr(error))

    async def _send(
        self, subject: str, body: bytes, msg_id: str, headers: Mapping[str, str] | None
    ) -> api.PubAck:
        hdrs = {**(headers or {}), MSG_ID: msg_id}
        with sending(subject, hdrs, len(body), getattr(self._js, "_nc", None)):
            try:
                return await self._js.publish(subject, body, headers=hdrs, timeout=self._timeout)
            except NatsTimeoutError:
                # A publish the server refused is never acknowledged: say so, not retry.
                if REFUSALS.refused(subject):
                    raise BusRefused(
                        REFUSALS.last() or f"publishing to {subject} refused"
                    ) from None
                raise

    async def _ours(self, ack: api.PubAck, subject: str, body: bytes) -> bool:
        """Is the stored message with our id an earlier copy of this one (same subject, same
        request)? If it cannot be read, assume so rather than publish twice."""
        try:
            stored = await self._js.get_msg(ack.stream, ack.seq)
        except Exception:
            return True
        return stored.subject == subject and claimed_request_id(
            stored.data or b""
        ) == claimed_request_id(body)


class IncompleteListing(PressroomError):
    """A listing came back shorter than the stream says it is: never shown as if complete."""


async def kv_snapshot(
    js: JetStreamContext, bucket: str, *, timeout: float = 10.0
) -> dict[str, bytes]:
    """Every live key of a KV bucket with its value, read in one ordered pass and counted.

    nats-py's `keys()` can end its watch early and return fewer keys (or none) with no error;
    here the number of messages read is compared with the stream's own count first, and a
    shortfall is an error, never a silently shorter list.
    """
    stream = f"KV_{bucket}"
    prefix = f"$KV.{bucket}."
    expected = int((await js.stream_info(stream)).state.messages)
    if expected == 0:
        return {}
    sub = await js.subscribe(
        f"{prefix}>",
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
    )
    values: dict[str, bytes] = {}
    read = 0
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=timeout)
            except Exception as error:  # nats' TimeoutError: the pass stalled
                raise IncompleteListing(
                    f"listing '{bucket}' stalled after {read} of {expected} entries ({error!r}); "
                    "try again"
                ) from None
            read += 1
            key = msg.subject[len(prefix) :]
            operation = (msg.headers or {}).get("KV-Operation")
            if operation in ("DEL", "PURGE"):
                values.pop(key, None)
            else:
                values[key] = msg.data
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    if read < expected:
        raise IncompleteListing(f"listing '{bucket}' read {read} of {expected} entries; try again")
    return values
