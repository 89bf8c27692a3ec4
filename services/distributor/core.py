"""Deliver a rendered report on every channel it names, each channel exactly once."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import nullcontext
from datetime import UTC, datetime

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from services.distributor.parcel import Channel, Parcel
from services.distributor.targets import TargetLimits, caller_of, target_of
from shared.adapters.store import ArtefactStore, artefact_key
from shared.bus.kv import KeyValue
from shared.errors import PermanentError, PressroomError, RequestCancelled, TransientError
from shared.events import ChannelResult, Delivery, ReportDelivered, ReportRendered
from shared.observe.logging import get_logger
from shared.observe.telemetry import span
from shared.settings import Settings
from shared.stage.runner import while_publishing

log = get_logger("pressroom.distributor")


def outcome_key(request_id: str, index: int, delivery: Delivery) -> str:
    spec = json.dumps(delivery.model_dump(mode="json"), sort_keys=True).encode()
    return f"{request_id}.{index}-{hashlib.sha256(spec).hexdigest()[:10]}"


async def _recorded(outcomes: KeyValue, key: str) -> ChannelResult | None:
    try:
        entry = await outcomes.get(key)
    except KeyNotFoundError:
        return None
    if not entry.value:
        return None
    data = json.loads(entry.value)
    return ChannelResult.model_validate(data) if data.get("ok") else None


def deliveries_for(event: ReportRendered, settings: Settings) -> list[Delivery]:
    if event.request.deliver:
        return list(event.request.deliver)
    return [Delivery.model_validate(d) for d in settings.delivery_defaults]


async def distribute(
    event: ReportRendered,
    *,
    channels: Mapping[str, Channel],
    store: ArtefactStore,
    outcomes: KeyValue,
    settings: Settings,
    limits: TargetLimits | None = None,
    cancelled: Callable[[], Awaitable[bool]] | None = None,
) -> ReportDelivered:
    """Every delivery of the report, each at most once (its outcome recorded in `outcomes`);
    a failed one is a permanent or transient error naming each channel that failed."""
    request = event.request
    for artefact in event.artefacts:
        # The renderer stores every artefact under the request's own key (a cache hit is copied
        # there): a report.rendered pointing elsewhere is asking for another request's report.
        own = artefact_key(request.request_id, artefact.ext, request.requested_at)
        if artefact.key != own:
            raise PermanentError(f"report.rendered names artefact '{artefact.key}', not its own")
    parcel = Parcel(event=event, store=store)
    parcel.read_ahead()
    try:
        results, failures = await _deliver_all(
            event,
            parcel,
            channels,
            outcomes,
            settings,
            limits or TargetLimits.from_settings(settings),
            cancelled,
        )
    finally:
        await parcel.close()
    if failures:
        raise _delivery_failed(failures)
    return ReportDelivered(
        request_id=parcel.request_id,
        template=event.request.template,
        artefacts=event.artefacts,
        channels=results,
        requested_by=event.request.requested_by,
    )


async def _deliver_all(
    event: ReportRendered,
    parcel: Parcel,
    channels: Mapping[str, Channel],
    outcomes: KeyValue,
    settings: Settings,
    limits: TargetLimits,
    cancelled: Callable[[], Awaitable[bool]] | None,
) -> tuple[list[ChannelResult], list[tuple[ChannelResult, PressroomError]]]:
    """Each delivery in turn, once: (every channel's result, the failures among them)."""
    results: list[ChannelResult] = []
    failures: list[tuple[ChannelResult, PressroomError]] = []
    for index, delivery in enumerate(deliveries_for(event, settings)):
        key = outcome_key(parcel.request_id, index, delivery)
        channel = channels.get(delivery.channel)
        if channel is None and (done := await _recorded(outcomes, key)) is not None:
            results.append(done)  # delivered before its channel was taken out of the config
            continue
        try:
            if channel is None:
                raise PermanentError("channel not configured")
            result = await _deliver(
                channel, delivery, parcel, outcomes, key, limits, settings, cancelled
            )
        except _DeliveredBefore as earlier:
            results.append(earlier.result)  # delivered by an earlier attempt: never send twice
            continue
        except RequestCancelled:
            raise
        except PressroomError as error:
            result = ChannelResult(
                channel=delivery.channel, ok=False, target="", detail=error.reason
            )
            failures.append((result, error))
            if isinstance(error, _Busy):  # the record is the other attempt's: left to it
                results.append(result)
                continue
        results.append(result)
        if channel is not None:
            # Sent now, right after the send it records (a crash in between sends again on
            # the next attempt), but not waited for here: the next delivery, and then
            # report.delivered, go out meanwhile. Stored before the message is acked.
            await while_publishing(outcomes.put(key, result.model_dump_json().encode()))
            log.info(
                "channel outcome",
                request_id=parcel.request_id,
                channel=delivery.channel,
                ok=result.ok,
                detail=result.detail,
            )
    return results, failures


async def _deliver(
    channel: Channel,
    delivery: Delivery,
    parcel: Parcel,
    outcomes: KeyValue,
    key: str,
    limits: TargetLimits,
    settings: Settings,
    cancelled: Callable[[], Awaitable[bool]] | None,
) -> ChannelResult:
    """One delivery within its caller's and its target's share, its intent recorded first."""
    caller = caller_of(delivery, parcel.event.request.requested_by)
    async with (
        limits.slot(caller) if caller else nullcontext(),
        limits.slot(target_of(delivery, settings)),
    ):
        # Intent before, outcome after: an ambiguous crash in between is in the record.
        interrupted = await _intend(outcomes, key, sending_fresh(settings))
        # Looked at after the intent is written: a cancel that saw no intent is kept.
        if cancelled is not None and await cancelled():
            await outcomes.put(key, json.dumps({"ok": False, "state": "cancelled"}).encode())
            raise RequestCancelled("cancelled before delivery")
        with span(f"deliver {delivery.channel}", parcel.request_id):
            result = await channel.deliver(delivery, parcel)
        if interrupted:
            # At least once: sent again rather than maybe never, and said where ops look.
            log.warning(
                "sent again after an interrupted attempt",
                request_id=parcel.request_id,
                channel=delivery.channel,
            )
            note = f"sent again: an earlier attempt was interrupted while sending ({interrupted})"
            detail = f"{result.detail}; {note}" if result.detail else note
            result = result.model_copy(update={"detail": detail})
        return result


# A "sending" intent younger than this is taken for another attempt at work now (two replays
# at once): this one waits. Older, it was an attempt that died while sending.
SENDING_FRESH = 120.0


def sending_fresh(settings: Settings) -> float:
    """How long another attempt's intent is taken for a send in progress: SENDING_FRESH, or
    twice the longest a channel's send may take, if that is longer."""
    longest = max(settings.smtp_timeout, settings.webhook_timeout, settings.s3_timeout)
    return max(SENDING_FRESH, 2 * longest)


def _sending() -> bytes:
    return json.dumps({"ok": False, "state": "sending", "at": time.time()}).encode()


class _Busy(TransientError):
    """Another attempt holds the delivery's intent now: this one tries again later."""


class _DeliveredBefore(Exception):
    """An earlier attempt made this delivery (its outcome is recorded)."""

    def __init__(self, result: ChannelResult) -> None:
        super().__init__(result.channel)
        self.result = result


async def _intend(outcomes: KeyValue, key: str, fresh: float = SENDING_FRESH) -> str:
    """The intent to send, written by this attempt alone: "" or, when an earlier attempt died
    while sending (its intent there, no outcome), when that was — the send may have arrived.
    Mostly a delivery's first attempt: the record is created (one round trip, no read first).
    A delivery recorded as made is not made again (`_DeliveredBefore`); one another attempt
    is sending right now (two replays at once) waits for it (a TransientError)."""
    try:
        await outcomes.create(key, _sending())
        return ""
    except KeyWrongLastSequenceError:
        pass
    entry = await outcomes.get(key)
    found = json.loads(entry.value) if entry.value else {}
    if found.get("ok"):
        raise _DeliveredBefore(ChannelResult.model_validate(found))
    interrupted = ""
    if found.get("state") == "sending":
        age = time.time() - float(found.get("at") or 0)
        if age < fresh:
            busy = _Busy(f"another attempt is sending this delivery (since {age:.0f} s)")
            busy.retry_after = fresh - age
            raise busy
        interrupted = (
            datetime.fromtimestamp(float(found.get("at") or 0), UTC).strftime(
                "%Y-%m-%d %H:%M:%S UTC"
            )
            if found.get("at")
            else "before this attempt"
        )
    try:
        await outcomes.update(key, _sending(), last=entry.revision)
    except KeyWrongLastSequenceError:
        raise _Busy("another attempt took this delivery at the same moment") from None
    return interrupted


def _delivery_failed(failures: list[tuple[ChannelResult, PressroomError]]) -> PressroomError:
    """Permanent when every failure is; otherwise transient, after the longest Retry-After."""
    reason = "; ".join(f"{r.channel}: {r.detail}" for r, _ in failures)
    if all(isinstance(error, PermanentError) for _, error in failures):
        return PermanentError(f"delivery failed on {reason}")
    transient = TransientError(f"delivery failed on {reason}")
    waits = [e.retry_after for _, e in failures if isinstance(e, TransientError) and e.retry_after]
    transient.retry_after = max(waits) if waits else None
    return transient
