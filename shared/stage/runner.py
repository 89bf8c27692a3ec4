"""The one retry and dead-letter mechanism every stage runs its work through.

A stage's work is a plain async function `event -> next event`. The runner around it:
parses the message (invalid payloads are dead-lettered at once), claims the stage in the
ledger (duplicates and redeliveries of finished work are skipped), keeps the message alive
with in-progress acks while the work runs, publishes the next event with a `Nats-Msg-Id`,
records the outcome, and acks. Failures are classified: permanent ones and exhausted retries
become a dead letter plus `report.failed`; transient ones are nak'ed with a computed backoff
(JetStream's `backoff` does not apply to naks).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from shared.adapters.cancel import CANCEL_POLL, with_its_burst
from shared.adapters.ledger import Ledger
from shared.adapters.store import ArtefactStore
from shared.aio import all_settled
from shared.bus.names import StageSpec, msg_id
from shared.bus.topology import Publisher, encode
from shared.errors import (
    InvalidPayload,
    PermanentError,
    PressroomError,
    RequestCancelled,
    TransientError,
    classify,
)
from shared.events import (
    BurstSent,
    DataReady,
    Event,
    ReportRendered,
    ReportRequested,
    RunSkipped,
    claimed_child,
    claimed_request_id,
    claimed_requester,
    is_lane_subject,
    lane_subject,
    new_request_id,
    request_fingerprint,
    tenant_of_subject,
    utcnow,
)
from shared.jsonsafe import deeper_than
from shared.metrics import failure_kind, stage_done, stage_finished
from shared.observe.logging import get_logger
from shared.observe.telemetry import span
from shared.settings import Settings
from shared.stage.bursts import child_landed, parent_cancelled
from shared.stage.deadletters import MAX_REASON_CHARS, Failure, publish_dead_letter
from shared.stage.intake import MOVE_TO_LANE, Intake

E = TypeVar("E", bound=Event)
# An envelope carries the original body up to this size; bigger bodies go to the artefact
# store and the envelope keeps a preview (NATS's max_payload is 1 MB, JSON escaping can
# double a body's size).
MAX_RETRY_AFTER = 600.0
MAX_PAYLOAD_DEPTH = 100  # a context from a source is capped at 64 levels, plus the envelope
FIRST_FAILURE_HEADER = "Pressroom-First-Failure"
# Fewer JetStream writes per report: a stage's claim is one KV write and its finish another;
# work done within CLAIM_AFTER seconds records both in one. The fetcher's claim always goes
# first: it binds the request id to the request's content (a different request under the same
# id is refused before anything is published).
CLAIM_AFTER = 1.0
EAGER_CLAIM_STAGES = frozenset({"fetcher"})
LAST_STAGE = "distributor"  # a burst's child that finishes it is delivered
# Which process holds a stage, for `pressroom status` and for tests that kill a busy worker.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
# The delivery attempt of the message a stage's work is for (0 outside a stage: a CLI render);
# a first attempt has no earlier attempt's output to look for (the renderer's render cache).
ATTEMPT: ContextVar[int] = ContextVar("pressroom_attempt", default=0)
# Writes the work started and left to the runner (`while_publishing`); None outside a stage.
_WITH_EVENT: ContextVar[list[asyncio.Future[Any]] | None] = ContextVar(
    "pressroom_with_event", default=None
)


async def while_publishing(write: Awaitable[Any]) -> None:
    """A write the next stage need not wait for (a delivery's outcome record, the studio's
    copy of a payload). In a stage it starts at once and the work goes on without waiting for
    it; the runner awaits it, with the stage's event, before the ledger records the stage done
    and the message is acked — a failed one retries the message like any failure of the work.
    Outside a stage (a CLI delivery or render), it is awaited here."""
    pending = _WITH_EVENT.get()
    if pending is None:
        await write
    else:
        pending.append(asyncio.ensure_future(write))


log = get_logger("pressroom.stage")


class InboundMessage(Protocol):
    """What the runner needs of a JetStream message (NatsMessage is adapted to it)."""

    @property
    def subject(self) -> str: ...
    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> dict[str, str]: ...
    @property
    def attempt(self) -> int: ...
    @property
    def stream_seq(self) -> int: ...
    @property
    def first_delivered(self) -> datetime | None: ...

    async def ack(self) -> None: ...
    async def nack(self, delay: float) -> None: ...
    async def term(self) -> None: ...
    async def in_progress(self) -> None: ...


def request_of(event: Event) -> ReportRequested:
    if isinstance(event, ReportRequested):
        return event
    if isinstance(event, DataReady | ReportRendered):
        return event.request
    raise TypeError(f"{type(event).__name__} carries no request")


def _describe_validation(error: ValidationError) -> str:
    problems = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item["loc"]) or "payload"
        problems.append(f"{where}: {item['msg']}")
    more = f" (+{error.error_count() - 3} more)" if error.error_count() > 3 else ""
    return "invalid payload: " + "; ".join(problems) + more


def _has_request_id(body: bytes) -> bool:
    with suppress(Exception):
        data = json.loads(body)
        return isinstance(data, dict) and bool(data.get("request_id"))
    return False


@dataclass
class StageRunner:
    """Runs one stage's work for each message of its durable consumer."""

    spec: StageSpec
    settings: Settings
    ledger: Ledger
    publisher: Publisher
    store: ArtefactStore | None = None  # where bodies too big for a dead letter go
    # Checks before the ledger is touched (e.g. ids reserved for schedules): a PermanentError
    # dead-letters the message and leaves the ledger entry of that id alone.
    admit: Callable[[Event], Awaitable[None]] | None = None
    # Where requests come in (the fetcher's consumers): admission and lanes.
    intake: Intake | None = None
    routes: bool = False

    async def handle(
        self,
        msg: InboundMessage,
        model: type[E],
        work: Callable[[E], Awaitable[Event]],
    ) -> None:
        """Parse, admit, claim in the ledger, work, publish, finish — or settle the message
        as a duplicate, a retry or a dead letter on the way."""
        started = time.monotonic()
        try:
            event = self._parse(msg, model)
        except PermanentError as error:
            # Unreadable: whatever request_id it claims, it cannot speak for that request.
            await self.dead_letter(
                msg, error.reason, permanent=True, kind=failure_kind(error), own=False
            )
            return
        request = request_of(event)
        bound = log.bind(request_id=request.request_id, stage=self.spec.name, attempt=msg.attempt)
        if not await self._admitted(msg, event, request, bound):
            return
        tenant = tenant_of_subject(msg.subject)  # a calling system's own subject
        if self.routes and isinstance(event, ReportRequested):
            # Where it comes in: the lane it is handed to and the later stages see this time.
            event = as_received(event, msg.first_delivered, self.settings, tenant=tenant)  # type: ignore[assignment]
            routed = await self._routed(msg, event, bound)
            if routed is None:
                return
            event = routed  # type: ignore[assignment]
            request = routed
        received = as_received(request, msg.first_delivered, self.settings, tenant=tenant)
        # The claim is written at once where it binds the request id to its content (the
        # first stage) or on a redelivery (so `status` shows the attempt); otherwise it rides
        # along with the finish, or is written CLAIM_AFTER seconds into a longer piece of work.
        eager = self.spec.name in EAGER_CLAIM_STAGES or msg.attempt > 1
        if await self._claimed(msg, received, eager, bound):
            await self._work(msg, event, received, work, eager=eager, started=started, bound=bound)

    async def _admitted(
        self, msg: InboundMessage, event: Event, request: ReportRequested, bound: Any
    ) -> bool:
        """The stage's own checks before the ledger (`admit`); a refusal is a dead letter that
        leaves the ledger entry of that id alone."""
        if self.admit is None:
            return True
        try:
            await self.admit(event)
        except PermanentError as error:
            bound.warning("refused", reason=error.reason)
            await self.dead_letter(
                msg,
                error.reason,
                permanent=True,
                request_id=request.request_id,
                own=False,
                fingerprint=request_fingerprint(request),
            )
            return False
        return True

    async def _routed(
        self, msg: InboundMessage, request: ReportRequested, bound: Any
    ) -> ReportRequested | None:
        """Admission (a requester over its limit is refused now, replayable later) and the
        request's lane: the request to work on here, or None when it was settled or handed on
        to its lane's consumer."""
        assert self.intake is not None
        rid = request.request_id
        try:
            # Counted where it came in, not again in the lane it was sent to.
            await self.intake.admit(request, first_delivery=not is_lane_subject(msg.subject))
            hand_off = self.spec.tenant is None  # a calling system's: fetched in its own
            routed = await self.intake.route(request, here=self.spec.lane, hand_off=hand_off)
        except PermanentError as error:
            if await self._ran_before(request):  # read again, not asked again: no refusal
                bound.info("duplicate skipped", claim="done")
                await self._out_if_settled(request)
                await msg.ack()
                return None
            bound.warning("refused", reason=error.reason)
            await self.dead_letter(msg, error.reason, permanent=True, request_id=rid, own=False)
            return None
        except Exception as error:  # the admission bucket or the bus briefly away
            await self._retry_or_dead_letter(msg, f"intake: {error}", rid, bound)
            return None
        if routed is None:
            bound.info("handed to its lane", lane=request.priority)
            await msg.ack()
            return None
        if routed.priority != self.spec.lane:  # a calling system's, moved by a cap
            await self._into_lane(msg, routed.priority)
        return routed if await self._turn(msg, routed, bound) else None

    async def _into_lane(self, msg: InboundMessage, lane: str) -> None:
        """Fetched in the slots of the lane the request runs in, not of the one it was
        published on (shared/stage/app.py `InFlight`), kept alive while it waits for one."""
        move = MOVE_TO_LANE.get()
        if move is None:
            return
        heartbeat = asyncio.create_task(self._keep_alive(msg))
        try:
            await move(lane)
        except asyncio.CancelledError:
            with suppress(Exception):  # shutting down: another fetcher takes it now
                await asyncio.shield(msg.nack(0))
            raise
        finally:
            heartbeat.cancel()
            with suppress(asyncio.CancelledError):
                await heartbeat

    async def _turn(self, msg: InboundMessage, request: ReportRequested, bound: Any) -> bool:
        """Wait, kept alive, while the requester has its share of reports in the pipeline and
        renders wait (shared/stage/intake.py `Holding`); True to go on."""
        assert self.intake is not None
        if not self.intake.share(self.intake.requester(request)):
            return True
        heartbeat = asyncio.create_task(self._keep_alive(msg))
        try:
            await self.intake.wait_turn(request)
        except asyncio.CancelledError:
            with suppress(Exception):  # shutting down: another fetcher takes it now
                await asyncio.shield(msg.nack(0))
            raise
        except Exception as error:  # the admission bucket or the bus briefly away
            await self._retry_or_dead_letter(msg, f"intake: {error}", request.request_id, bound)
            return False
        finally:
            heartbeat.cancel()
            with suppress(asyncio.CancelledError):
                await heartbeat
        return True

    async def _claimed(
        self, msg: InboundMessage, request: ReportRequested, eager: bool, bound: Any
    ) -> bool:
        """The stage claimed in the ledger: True to go on; otherwise the message is settled
        (a duplicate acked, a conflicting id dead-lettered, an unavailable ledger retried)."""
        rid = request.request_id
        try:
            claim = await self.ledger.claim(
                rid,
                self.spec.name,
                seq=msg.stream_seq,
                attempt=msg.attempt,
                request=request,
                worker=WORKER_ID,
                record=eager,
                # A request's first delivery at the first stage: no entry yet, most likely.
                fresh=eager and msg.attempt == 1 and self.spec.name in EAGER_CLAIM_STAGES,
            )
        except Exception as error:  # the ledger (KV) briefly unavailable
            await self._retry_or_dead_letter(
                msg, f"ledger unavailable: {error}", rid, bound, template=request.template
            )
            return False
        if claim == "conflict":
            reason = (
                f"request_id '{rid}' was already used for a different request "
                "(same id, other content): not processed; publish it under a new request_id"
            )
            bound.warning("request_id conflict", reason=reason)
            await self.dead_letter(
                msg,
                reason,
                permanent=True,
                request_id=rid,
                own=False,
                fingerprint=request_fingerprint(request),
            )
            return False
        if claim == "done" and request.parent is not None and self.spec.name == LAST_STAGE:
            # Delivered before, perhaps without its parent counting it (a crash in between).
            await self._child_landed(request, "delivered")
        if claim == "proceed" and await parent_cancelled(self.ledger, request):
            claim = "cancelled"
            try:
                await self._stopped_with_burst(request)
            except Exception as error:  # the ledger briefly unavailable: decide again later
                await self._retry_or_dead_letter(
                    msg, f"ledger unavailable: {error}", rid, bound, template=request.template
                )
                return False
        if claim == "cancelled":
            if request.parent is not None:  # cancelled on its own, or with its burst
                await self._child_landed(request, "cancelled", "cancelled")
            await self._counted_out(request)
        if claim == "done" and self.routes and request.parent is None:
            # Run before (a redelivery, or read again after an upgrade): intake counted it in
            # again just now, so it is counted out again unless it is still under way.
            await self._out_if_settled(request)
        if claim != "proceed":
            bound.info("duplicate skipped", claim=claim)
            await msg.ack()
            return False
        return True

    async def _work(
        self,
        msg: InboundMessage,
        event: E,
        request: ReportRequested,
        work: Callable[[E], Awaitable[Event]],
        *,
        eager: bool,
        started: float,
        bound: Any,
    ) -> None:
        """The claimed work, kept alive while it runs; then ack, retry or dead letter."""
        rid = request.request_id
        heartbeat = asyncio.create_task(self._keep_alive(msg))
        claiming = None if eager else asyncio.create_task(self._claim_later(msg, rid, request))
        outcome = "done"
        try:
            await self._work_and_publish(msg, event, request, work, started)
        except RequestCancelled as cancelled:
            outcome = "cancelled"
            await self._cancelled(msg, request, cancelled.reason, bound)
        except asyncio.CancelledError:
            # Shutting down mid-work: hand the message back now rather than after ack_wait.
            outcome = "handed_back"
            with suppress(Exception):
                await asyncio.shield(msg.nack(0))
            raise
        except Exception as error:
            outcome = await self._failed(msg, error, request, bound)
            return
        finally:
            for task in (heartbeat, claiming):
                if task is not None:
                    task.cancel()
                    with suppress(asyncio.CancelledError):
                        await task
            with suppress(Exception):  # metrics must never break message handling
                stage_finished(self.spec.name, outcome, time.monotonic() - started)
        await msg.ack()
        bound.info("stage done", seconds=round(time.monotonic() - started, 3))

    async def _work_and_publish(
        self,
        msg: InboundMessage,
        event: E,
        request: ReportRequested,
        work: Callable[[E], Awaitable[Event]],
        started: float,
    ) -> None:
        """The work within the report's deadline, its event published, the stage finished."""
        rid = request.request_id
        ATTEMPT.set(msg.attempt)  # the work's own task (below) starts with it
        with_event: list[asyncio.Future[Any]] = []
        token = _WITH_EVENT.set(with_event)  # seen by the work's task, started with a copy
        try:
            with span(self.spec.name, rid, **{"pressroom.attempt": msg.attempt}):
                next_event = await self._work_then_publish(event, request, work, with_event)
        finally:
            _WITH_EVENT.reset(token)
        settled = await self.ledger.finish(
            rid,
            self.spec.name,
            seconds=time.monotonic() - started,
            event=next_event,
            seq=msg.stream_seq,
            attempt=msg.attempt,
            worker=WORKER_ID,
        )
        with suppress(Exception):  # metrics must never break message handling
            stage_done(next_event, settled)
        if request.parent is not None and self.spec.name == LAST_STAGE:
            await self._child_landed(request, "delivered")
        # Counted out when settled, or once a burst's children are on their way (they run
        # in the bulk lane) or a run was skipped.
        done = settled is not None or isinstance(next_event, BurstSent | RunSkipped)
        if done and self.intake is not None:
            with suppress(Exception):  # never the report's outcome (a redelivery counts out)
                await self.intake.settled(request)

    async def _work_then_publish(
        self,
        event: E,
        request: ReportRequested,
        work: Callable[[E], Awaitable[Event]],
        with_event: list[asyncio.Future[Any]],
    ) -> Event:
        """The work, within the report's deadline (its `timeout` in report.requested, from
        when it was asked); then its event published, and the writes the work left running
        (`while_publishing`) awaited with it."""
        deadline = report_deadline(request)
        writes: list[Awaitable[Any]] = []
        try:
            next_event = await self._unless_cancelled(
                request, self._in_time(deadline, request, work, event)
            )
            # A burst's children went out on their own; a skipped run sends nothing.
            if not isinstance(next_event, BurstSent | RunSkipped):
                onward = (
                    next_event.request
                    if isinstance(next_event, DataReady | ReportRendered)
                    else request
                )
                writes.append(
                    self.publisher.publish(
                        lane_subject(self.spec.produces, onward.priority),
                        encode(next_event),
                        msg_id=msg_id(request.request_id, self.spec.name),
                    )
                )
        except BaseException:
            # Made even so (a failed delivery's outcome is recorded), then the failure.
            await asyncio.gather(*with_event, return_exceptions=True)
            raise
        await all_settled([*writes, *with_event])
        return next_event

    async def _cancelled(
        self, msg: InboundMessage, request: ReportRequested, reason: str, bound: Any
    ) -> None:
        """`pressroom cancel` stopped the work: recorded where it stopped, nothing sent on."""
        bound.info("cancelled", reason=reason)
        with suppress(Exception):  # `status` shows where it stopped; the mark is what counts
            await self._stopped_with_burst(request)  # first: a cancel never settles as failed
            await self.ledger.fail(
                request.request_id,
                self.spec.name,
                reason=reason,
                seq=msg.stream_seq,
                attempt=msg.attempt,
            )
        if request.parent is not None:
            await self._child_landed(request, "cancelled", reason)
        await self._counted_out(request)

    async def _stopped_with_burst(self, request: ReportRequested) -> None:
        """A child stopped by its parent's cancel: marked cancelled in its own entry."""
        if request.parent is not None:
            change = with_its_burst(request.parent, utcnow())
            await self.ledger.update(request.request_id, change, request)

    async def _ran_before(self, request: ReportRequested) -> bool:
        """This very request already ran this stage (its id bound to the same content)."""
        try:
            entry = await self.ledger.get(request.request_id)
        except Exception:  # the ledger briefly away: refused as asked, replayable
            return False
        record = entry.stages.get(self.spec.name) if entry is not None else None
        return (
            entry is not None
            and record is not None
            and record.state == "done"
            and entry.fingerprint == request_fingerprint(request)
        )

    async def _out_if_settled(self, request: ReportRequested) -> None:
        with suppress(Exception):  # the ledger briefly away: the count is all that is at stake
            entry = await self.ledger.get(request.request_id)
            if entry is not None and entry.status in SETTLED:
                await self._counted_out(request)

    async def _counted_out(self, request: ReportRequested) -> None:
        """A cancelled report no longer counts against its requester."""
        if self.intake is not None:
            with suppress(Exception):  # never the report's outcome (counting out is idempotent)
                await self.intake.settled(request)

    async def _child_landed(self, request: ReportRequested, outcome: Any, reason: str = "") -> None:
        assert request.parent is not None and request.burst_index is not None
        await child_landed(
            self.ledger,
            self.publisher,
            parent=request.parent,
            index=request.burst_index,
            request_id=request.request_id,
            outcome=outcome,
            reason=reason,
            template=request.template,
            requested_by=request.requested_by,
        )

    async def _unless_cancelled(self, request: ReportRequested, work: Awaitable[Event]) -> Event:
        """The work, stopped (a render's process killed) when `pressroom cancel` marks its
        request, or a burst's child's parent, while it runs."""
        task = asyncio.ensure_future(work)
        ids = [request.request_id, *([request.parent] if request.parent else [])]
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=CANCEL_POLL)
                if done:
                    return task.result()
                for rid in ids:
                    try:
                        entry = await self.ledger.get(rid)
                    except Exception:  # the ledger briefly away: look again later
                        continue
                    if entry is not None and entry.cancelled_at is not None:
                        raise RequestCancelled(f"cancelled while at {self.spec.name}")
        finally:
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task
            elif not task.cancelled():
                task.exception()  # it ended meanwhile: the cancel is the outcome (not logged)

    async def _failed(
        self, msg: InboundMessage, error: Exception, request: ReportRequested, bound: Any
    ) -> str:
        """A failed piece of work dead-lettered or retried; the outcome for the metrics."""
        rid = request.request_id
        if isinstance(error, PermanentError):
            bound.warning("permanent failure", reason=error.reason)
            await self.dead_letter(
                msg,
                error.reason,
                permanent=True,
                request_id=rid,
                kind=failure_kind(error),
                template=request.template,
            )
            return "dead_letter"
        reason = error.reason if isinstance(error, PressroomError) else _describe(error)
        if classify(error) == "permanent":
            bound.warning("permanent failure", reason=reason)
            await self.dead_letter(msg, reason, permanent=True, request_id=rid)
            return "dead_letter"
        wait = error.retry_after if isinstance(error, TransientError) else None
        return await self._retry_or_dead_letter(
            msg, reason, rid, bound, retry_after=wait, template=request.template
        )

    async def _in_time(
        self,
        deadline: float | None,
        request: ReportRequested,
        work: Callable[[E], Awaitable[Event]],
        event: E,
    ) -> Event:
        """The stage's work, stopped when the report's deadline (its `timeout`) passes."""
        late = ReportTimedOut(
            f"timed out after {request.timeout or 0:g} s at {self.spec.name} "
            "(the request's `timeout`)"
        )
        if deadline is None:
            return await work(event)
        if deadline <= 0:
            raise late
        try:
            async with asyncio.timeout(deadline) as timer:
                return await work(event)
        except TimeoutError:
            if timer.expired():
                raise late from None
            raise  # the work's own timeout: its stage says what it was

    def _parse(self, msg: InboundMessage, model: type[E]) -> E:
        if deeper_than(msg.body, MAX_PAYLOAD_DEPTH):
            raise InvalidPayload(f"invalid payload: nested deeper than {MAX_PAYLOAD_DEPTH} levels")
        try:
            event = model.model_validate_json(msg.body)
        except ValidationError as error:
            raise InvalidPayload(_describe_validation(error)) from error
        if isinstance(event, ReportRequested) and not _has_request_id(msg.body):
            # Generated ids must not change between redeliveries of the same message.
            rid = new_request_id(received=msg.first_delivered, stream_seq=msg.stream_seq)
            event = event.model_copy(update={"request_id": rid})
        if isinstance(event, ReportRequested):
            # Stamped with the calling system the server says published it, whatever the body
            # says; `tenant` is the stamp alone: on every request subject a body's is replaced
            # (null on the plain subject, which only the services' own identities publish).
            # A lane's body was stamped at intake (only the fetcher may publish there).
            tenant = tenant_of_subject(msg.subject)
            stamp: dict[str, Any] = {"tenant": tenant}
            if tenant is not None:
                stamp["requested_by"] = tenant
            if not is_lane_subject(msg.subject):
                event = event.model_copy(update=stamp)
        return event

    async def _claim_later(self, msg: InboundMessage, rid: str, request: ReportRequested) -> None:
        """Work still going on after CLAIM_AFTER: record the claim, so `status` shows who."""
        await asyncio.sleep(CLAIM_AFTER)
        try:
            await self.ledger.claim(
                rid,
                self.spec.name,
                seq=msg.stream_seq,
                attempt=msg.attempt,
                request=request,
                worker=WORKER_ID,
            )
        except Exception as error:  # only what `status` shows meanwhile; the finish records it
            log.debug("claim not recorded", request_id=rid, error=repr(error))

    async def _keep_alive(self, msg: InboundMessage) -> None:
        interval = max(self.settings.ack_wait / 3, 0.5)
        while True:
            await asyncio.sleep(interval)
            with suppress(Exception):
                await msg.in_progress()

    async def _retry_or_dead_letter(
        self,
        msg: InboundMessage,
        reason: str,
        request_id: str,
        bound: Any,
        *,
        retry_after: float | None = None,
        template: str | None = None,
    ) -> str:
        if msg.attempt >= self.settings.max_attempts:
            bound.warning("retries exhausted", reason=reason)
            await self.dead_letter(
                msg,
                f"gave up after {msg.attempt} attempts: {reason}",
                permanent=False,
                request_id=request_id,
                kind="retries_exhausted",
                template=template,
            )
            return "dead_letter"
        delay = self.settings.backoff_for(msg.attempt)
        if retry_after:
            delay = min(max(delay, retry_after), MAX_RETRY_AFTER)
        bound.info("transient failure, will retry", reason=reason, retry_in=delay)
        try:  # the reason, for `request --wait`, `status` and `ls` while retries go on
            await self.ledger.retrying(
                request_id,
                self.spec.name,
                reason=reason[:MAX_REASON_CHARS],
                seq=msg.stream_seq,
                attempt=msg.attempt,
            )
        except Exception as error:  # the ledger may be the thing that is away
            bound.debug("retry reason not recorded", error=repr(error))
        await msg.nack(delay)
        return "retry"

    async def dead_letter(
        self,
        msg: InboundMessage,
        reason: str,
        *,
        permanent: bool,
        request_id: str | None = None,
        own: bool = True,
        kind: str = "permanent_error",
        template: str | None = None,
        fingerprint: str | None = None,
    ) -> None:
        """Park the message in `dlq.<subject>` with the reason, emit report.failed, terminate.

        `own=False`: the message does not own its request_id's ledger entry (a conflicting or
        refused request): the entry of the real request is left as it is.
        """
        failure = Failure(
            stage=self.spec.name,
            subject=msg.subject,
            body=msg.body,
            headers=msg.headers,
            reason=reason,
            permanent=permanent,
            attempts=msg.attempt,
            stream_seq=msg.stream_seq,
            first_failure=msg.first_delivered,
            request_id=request_id or claimed_request_id(msg.body),
            update_ledger=own,
            kind=kind,
            template=template,
            fingerprint=fingerprint,
        )
        settled = await publish_dead_letter(self.publisher, self.ledger, failure, store=self.store)
        if settled is not None and self.intake is not None and claimed_child(msg.body) is None:
            with suppress(Exception):  # never the report's outcome (counting out is idempotent)
                await self.intake.count_out(
                    claimed_requester(msg.subject, msg.body), failure.request_id
                )
        await msg.term()


class ReportTimedOut(PermanentError):
    """The report was not done within its request's `timeout`."""


SETTLED = frozenset({"delivered", "failed", "cancelled", "skipped"})


def report_deadline(request: ReportRequested) -> float | None:
    """Seconds left of the report's `timeout` (≤ 0: already past), or None without one."""
    if request.timeout is None:
        return None
    spent = (datetime.now(UTC) - request.requested_at).total_seconds()
    return request.timeout - spent


def as_received(
    request: ReportRequested,
    received: datetime | None,
    settings: Settings,
    *,
    tenant: str | None = None,
) -> ReportRequested:
    """The request as the ledger records it: `requested_at` is the publisher's word, so it is
    kept within what is plausible for when the message reached the stream — a few minutes of
    clock skew, or a scheduled fire caught up within the schedule grace — and can neither
    predate a report by 26 years nor postdate it (latency SLOs are computed from it). A
    calling system on its own subject (`tenant`) gets no skew: its word would move every
    tenant's latency SLO (60 reports claiming 290 s of queueing fail the p95)."""
    if received is None:
        return request
    scheduled = (request.requested_by or "").startswith("scheduler:")
    skew = 0 if tenant is not None else settings.schedule_grace if scheduled else 300
    earliest = received - timedelta(seconds=skew)
    when = min(max(request.requested_at, earliest), received)
    return (
        request
        if when == request.requested_at
        else request.model_copy(update={"requested_at": when})
    )


def _describe(error: BaseException) -> str:
    text = str(error) or error.__class__.__name__
    return f"{error.__class__.__name__}: {text}" if text != error.__class__.__name__ else text
