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
import base64
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from shared.bus import Publisher, StageSpec, encode, msg_id
from shared.errors import InvalidPayload, PermanentError, PressroomError, TransientError
from shared.events import (
    DLQ_PREFIX,
    REPORT_FAILED,
    DataReady,
    DeadLetter,
    Event,
    ReportFailed,
    ReportRendered,
    ReportRequested,
    utcnow,
)
from shared.ledger import Ledger
from shared.logging import get_logger
from shared.metrics import failure_kind, stage_done, stage_failed, stage_finished
from shared.settings import Settings
from shared.telemetry import span

E = TypeVar("E", bound=Event)
MAX_DEAD_LETTER_PAYLOAD = 512 * 1024
MAX_RETRY_AFTER = 600.0
FIRST_FAILURE_HEADER = "Pressroom-First-Failure"
# Which process holds a stage, for `pressroom status` and for tests that kill a busy worker.
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"

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


def guess_request_id(body: bytes) -> str | None:
    with suppress(Exception):
        data = json.loads(body)
        if isinstance(data, dict):
            rid = data.get("request_id") or (data.get("request") or {}).get("request_id")
            return rid if isinstance(rid, str) else None
    return None


@dataclass
class StageRunner:
    """Runs one stage's work for each message of its durable consumer."""

    spec: StageSpec
    settings: Settings
    ledger: Ledger
    publisher: Publisher

    async def handle(
        self,
        msg: InboundMessage,
        model: type[E],
        work: Callable[[E], Awaitable[Event]],
    ) -> None:
        started = time.monotonic()
        try:
            event = self._parse(msg, model)
        except PermanentError as error:
            await self.dead_letter(msg, error.reason, permanent=True, kind=failure_kind(error))
            return
        request = request_of(event)
        rid = request.request_id
        bound = log.bind(request_id=rid, stage=self.spec.name, attempt=msg.attempt)

        try:
            claim = await self.ledger.claim(
                rid,
                self.spec.name,
                seq=msg.stream_seq,
                attempt=msg.attempt,
                request=request,
                worker=WORKER_ID,
            )
        except Exception as error:  # the ledger (KV) briefly unavailable
            await self._retry_or_dead_letter(
                msg, f"ledger unavailable: {error}", rid, bound, template=request.template
            )
            return
        if claim != "proceed":
            bound.info("duplicate skipped", claim=claim)
            await msg.ack()
            return

        heartbeat = asyncio.create_task(self._keep_alive(msg))
        outcome = "done"
        try:
            with span(self.spec.name, rid, **{"pressroom.attempt": msg.attempt}):
                next_event = await work(event)
                await self.publisher.publish(
                    self.spec.produces, encode(next_event), msg_id=msg_id(rid, self.spec.name)
                )
            settled = await self.ledger.finish(
                rid, self.spec.name, seconds=time.monotonic() - started, event=next_event
            )
            with suppress(Exception):  # metrics must never break message handling
                stage_done(next_event, settled)
        except asyncio.CancelledError:
            # Shutting down mid-work: hand the message back now rather than after ack_wait.
            outcome = "handed_back"
            with suppress(Exception):
                await asyncio.shield(msg.nack(0))
            raise
        except PermanentError as error:
            outcome = "dead_letter"
            bound.warning("permanent failure", reason=error.reason)
            await self.dead_letter(
                msg,
                error.reason,
                permanent=True,
                request_id=rid,
                kind=failure_kind(error),
                template=request.template,
            )
            return
        except Exception as error:
            reason = error.reason if isinstance(error, PressroomError) else _describe(error)
            wait = error.retry_after if isinstance(error, TransientError) else None
            outcome = await self._retry_or_dead_letter(
                msg, reason, rid, bound, retry_after=wait, template=request.template
            )
            return
        finally:
            heartbeat.cancel()
            with suppress(asyncio.CancelledError):
                await heartbeat
            with suppress(Exception):  # metrics must never break message handling
                stage_finished(self.spec.name, outcome, time.monotonic() - started)
        await msg.ack()
        bound.info("stage done", seconds=round(time.monotonic() - started, 3))

    def _parse(self, msg: InboundMessage, model: type[E]) -> E:
        try:
            event = model.model_validate_json(msg.body)
        except ValidationError as error:
            raise InvalidPayload(_describe_validation(error)) from error
        if isinstance(event, ReportRequested) and not _has_request_id(msg.body):
            # Generated ids must not change between redeliveries of the same message.
            stamp = msg.first_delivered.strftime("%Y%m%d%H%M%S") if msg.first_delivered else "0"
            event = event.model_copy(update={"request_id": f"req-{stamp}-{msg.stream_seq}"})
        return event

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
        await msg.nack(delay)
        return "retry"

    async def dead_letter(
        self,
        msg: InboundMessage,
        reason: str,
        *,
        permanent: bool,
        request_id: str | None = None,
        kind: str = "permanent_error",
        template: str | None = None,
    ) -> None:
        """Park the message in `dlq.<subject>` with the reason, emit report.failed, terminate."""
        await publish_dead_letter(
            self.publisher,
            self.ledger,
            stage=self.spec.name,
            subject=msg.subject,
            body=msg.body,
            headers=msg.headers,
            reason=reason,
            permanent=permanent,
            attempts=msg.attempt,
            stream_seq=msg.stream_seq,
            first_failure=msg.first_delivered,
            request_id=request_id or guess_request_id(msg.body),
            kind=kind,
            template=template,
        )
        await msg.term()


def _describe(error: BaseException) -> str:
    text = str(error) or error.__class__.__name__
    return f"{error.__class__.__name__}: {text}" if text != error.__class__.__name__ else text


async def publish_dead_letter(
    publisher: Publisher,
    ledger: Ledger,
    *,
    stage: str,
    subject: str,
    body: bytes,
    headers: dict[str, str],
    reason: str,
    permanent: bool,
    attempts: int,
    stream_seq: int,
    first_failure: datetime | None,
    request_id: str | None,
    kind: str = "permanent_error",
    template: str | None = None,
) -> None:
    now = utcnow()
    try:
        payload, encoding = body[:MAX_DEAD_LETTER_PAYLOAD].decode(), "utf-8"
    except UnicodeDecodeError:
        payload, encoding = base64.b64encode(body[:MAX_DEAD_LETTER_PAYLOAD]).decode(), "base64"
    letter = DeadLetter(
        subject=subject,
        payload=payload,
        payload_encoding=encoding,  # type: ignore[arg-type]
        headers={k: v for k, v in headers.items() if not k.lower().startswith("nats-")},
        stage=stage,
        reason=reason if len(body) <= MAX_DEAD_LETTER_PAYLOAD else f"{reason} (payload truncated)",
        permanent=permanent,
        attempts=attempts,
        first_failure=first_failure or now,
        last_failure=now,
        request_id=request_id,
    )
    # The stream sequence makes the id stable across a crash between publish and terminate.
    ack = await publisher.publish(
        f"{DLQ_PREFIX}{subject}", encode(letter), msg_id=f"dlq:{stage}:{stream_seq}"
    )
    rid = request_id or f"unknown-{stage}-{stream_seq}"
    failed = ReportFailed(
        request_id=rid,
        stage=stage,
        reason=reason,
        attempts=attempts,
        subject=subject,
        dead_letter_seq=ack.seq,
    )
    await publisher.publish(REPORT_FAILED, encode(failed), msg_id=f"failed:{stage}:{stream_seq}")
    settled = None
    if request_id:
        with suppress(Exception):
            settled = await ledger.fail(request_id, stage, reason=reason)
    with suppress(Exception):  # metrics must never break dead-lettering
        stage_failed(stage, kind, template, settled)
    log.warning("dead-lettered", request_id=rid, stage=stage, reason=reason, attempts=attempts)
