"""A burst's fan-out: the data gathered once, each item sent on as its own child `data.ready`.

Children go out one window at a time (PRESSROOM_BURST_PUBLISH_WINDOW), each with only its own
slice, so neither a message nor this process holds every child at once. A redelivered parent
(its fetcher died mid-fan-out) sends again only the children its tally does not count as
delivered, under the same message ids.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from shared.adapters import children
from shared.adapters.ledger import Ledger
from shared.adapters.store import ArtefactStore, context_key
from shared.burst import BurstTally, ChildFailed, ChildPlan, items_at, plan_children
from shared.bus.topology import Publisher, encode
from shared.events import (
    DATA_READY,
    REPORT_FAILED,
    REPORT_REQUESTED,
    BurstSent,
    DataReady,
    ReportFailed,
    ReportRequested,
    lane_subject,
)
from shared.settings import Settings
from shared.stage.bursts import child_landed, publish_parent_outcome


async def _send(
    plan: ChildPlan,
    generation: int,
    *,
    publisher: Publisher,
    store: ArtefactStore,
    settings: Settings,
) -> None:
    encoded = json.dumps(plan.context, default=str).encode()
    if len(encoded) <= settings.inline_context_limit:
        ready = DataReady(request=plan.request, context=plan.context)
    else:  # a big item: its slice by reference, like any big context
        key = context_key(plan.request.request_id)
        await store.put(key, encoded, content_type="application/json")
        ready = DataReady(request=plan.request, context_ref=key)
    # One id per child and run of the parent: a redelivered parent sends each child once; a
    # replay (a later run) sends the failed ones again past the duplicate window's memory.
    ident = f"{plan.request.request_id}:fetcher:{generation}"
    # In the bulk lane: a burst's children never queue ahead of anyone's interactive report.
    await publisher.publish(lane_subject(DATA_READY, "bulk"), encode(ready), msg_id=ident)


async def fan_out(
    request: ReportRequested,
    context: dict[str, Any],
    *,
    ledger: Ledger,
    publisher: Publisher,
    store: ArtefactStore,
    settings: Settings,
    fetch_seconds: float = 0.0,
) -> BurstSent:
    assert request.burst is not None
    parent = request.request_id
    total = len(items_at(context, request.burst, max_items=settings.burst_max_items))
    tally: BurstTally = await ledger.update(parent, children.start(total), request)
    entry = await ledger.get(parent)
    record = entry.stages.get("fetcher") if entry is not None else None
    generation = record.seq if record is not None else 0
    window = asyncio.Semaphore(settings.burst_publish_window)
    pending: set[asyncio.Task[None]] = set()
    sent = 0

    async def one(plan: ChildPlan) -> None:
        try:
            await _send(plan, generation, publisher=publisher, store=store, settings=settings)
        finally:
            window.release()

    try:
        for plan in plan_children(request, context, max_items=settings.burst_max_items):
            if tally.is_delivered(plan.index):
                continue
            if isinstance(plan, ChildFailed):
                await _refused(plan, request, ledger=ledger, publisher=publisher)
                continue
            await window.acquire()
            task = asyncio.create_task(one(plan))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
            # Failed publishes surface here, not at the end: the message is retried.
            for done in [t for t in pending if t.done()]:
                done.result()
        await asyncio.gather(*pending)
    finally:
        for task in pending:
            task.cancel()
    if total == 0:  # nothing to send: the burst is complete as it stands
        await publish_parent_outcome(
            publisher, parent, tally, request.template, request.requested_by
        )
    return BurstSent(request=request, children=sent, total=total, fetch_seconds=fetch_seconds)


async def _refused(
    plan: ChildFailed, request: ReportRequested, *, ledger: Ledger, publisher: Publisher
) -> None:
    """An item that cannot be a child (its key, its recipients): that child fails alone."""
    rid = f"{request.request_id}/{plan.key}"
    failed = ReportFailed(
        request_id=rid,
        stage="fetcher",
        reason=plan.reason,
        attempts=1,
        subject=REPORT_REQUESTED,
        requested_by=request.requested_by,
    )
    await publisher.publish(REPORT_FAILED, encode(failed), msg_id=f"{rid}:refused:{plan.index}")
    await child_landed(
        ledger,
        publisher,
        parent=request.request_id,
        index=plan.index,
        request_id=rid,
        outcome="failed",
        reason=plan.reason,
        template=request.template,
        requested_by=request.requested_by,
    )
