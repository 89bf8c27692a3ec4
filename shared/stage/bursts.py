"""A burst's children as the stages see them: each child's outcome counted into its parent's
tally, the parent's outcome published once its last child lands, a cancelled parent stopping
its children."""

from __future__ import annotations

from shared.adapters import children
from shared.adapters.ledger import Ledger
from shared.burst import BurstOutcome, BurstTally
from shared.bus.topology import Publisher, encode
from shared.events import (
    CHILD_SEPARATOR,
    REPORT_DELIVERED,
    REPORT_FAILED,
    REPORT_REQUESTED,
    ReportDelivered,
    ReportFailed,
    ReportRequested,
)
from shared.observe.logging import get_logger

log = get_logger("pressroom.burst")


def child_key(request_id: str) -> str:
    return request_id.partition(CHILD_SEPARATOR)[2]


async def child_landed(
    ledger: Ledger,
    publisher: Publisher,
    *,
    parent: str,
    index: int,
    request_id: str,
    outcome: BurstOutcome,
    reason: str = "",
    template: str = "",
    requested_by: str | None = None,
) -> None:
    """Count a child's outcome into its parent (idempotent); the child that completes the
    burst publishes the parent's `report.delivered` or `report.failed`."""
    key = child_key(request_id)
    tally: BurstTally | None = await ledger.update(
        parent, children.record(index, key, outcome, reason)
    )
    if tally is not None:
        await publish_parent_outcome(publisher, parent, tally, template, requested_by)


async def publish_parent_outcome(
    publisher: Publisher,
    parent: str,
    tally: BurstTally,
    template: str,
    requested_by: str | None,
) -> None:
    """`report.delivered` when every child delivered, else `report.failed` naming the failed
    keys; the message id holds the counts, so a repeat of the same outcome is one message and
    a replay that ends otherwise is a new one."""
    summary = tally.summary()
    ident = f"{parent}:burst:{tally.delivered}:{tally.failed}:{tally.cancelled}"
    if not tally.failed and not tally.cancelled:
        delivered = ReportDelivered(
            request_id=parent,
            template=template,
            artefacts=[],
            channels=[],
            burst=summary,
            requested_by=requested_by,
        )
        await publisher.publish(REPORT_DELIVERED, encode(delivered), msg_id=ident)
    else:
        failed = ReportFailed(
            request_id=parent,
            stage="burst",
            reason=f"burst: {summary}",
            attempts=1,
            subject=REPORT_REQUESTED,
            requested_by=requested_by,
        )
        await publisher.publish(REPORT_FAILED, encode(failed), msg_id=ident)
    log.info("burst settled", request_id=parent, summary=summary)


async def parent_cancelled(ledger: Ledger, request: ReportRequested) -> bool:
    """Whether the burst this child belongs to was cancelled."""
    if request.parent is None:
        return False
    entry = await ledger.get(request.parent)
    return entry is not None and entry.cancelled_at is not None
