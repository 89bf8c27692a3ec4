"""Cancelling requests: the mark in the ledger, and what each stage makes of it.

`pressroom cancel ID` writes `cancelled_at` into the request's ledger entry with compare-and-
set. The distributor claims its stage with compare-and-set on the same entry before it sends
anything, so the two are ordered: a cancel written first stops every delivery, and a cancel
that finds the distributor already at work says so (`too_late`) instead of promising what it
cannot. Every stage skips a cancelled request at its claim; a render in progress is stopped
(the runner looks at the mark while the work runs). A burst's children look at their parent's
mark too: cancelling the parent stops every child not yet delivered.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from shared.adapters.ledger import LedgerEntry, derive

CancelOutcome = Literal[
    "cancelled", "unseen", "already_cancelled", "delivered", "finished", "too_late"
]
CANCEL_POLL = 1.0  # seconds between looks at the mark while a stage works

MESSAGES: dict[str, str] = {
    "cancelled": "cancelled",
    # No stage has seen it: still queued, or an id nobody used; either way it will not run.
    "unseen": "not seen by any stage yet: marked, it will not run if it comes",
    "already_cancelled": "was already cancelled",
    "delivered": "already delivered: nothing to cancel",
    "finished": "already failed: nothing to cancel (`pressroom dlq ls` shows its dead letter)",
    "too_late": "already being delivered: it may still arrive",
}


def apply_cancel(
    entry: LedgerEntry, when: datetime, by: str | None
) -> tuple[LedgerEntry | None, CancelOutcome]:
    """The entry with the cancel mark (None: unchanged) and what the cancel achieved."""
    if entry.cancelled_at is not None:
        return None, "already_cancelled"
    if entry.status == "delivered" and entry.burst is None:
        return None, "delivered"
    if entry.status == "failed":  # a burst too, once every child landed
        return None, "finished"
    unseen = not entry.stages and entry.burst is None
    distributor = entry.stages.get("distributor")
    if distributor is not None and entry.burst is None:
        return None, "too_late"
    if entry.burst is not None and entry.burst.complete and not entry.burst.failed:
        return None, "delivered"
    entry.cancelled_at, entry.cancelled_by = when, by
    derive(entry)
    return entry, "unseen" if unseen else "cancelled"


def with_its_burst(
    parent: str, when: datetime
) -> Callable[[LedgerEntry], tuple[LedgerEntry | None, None]]:
    """A burst's child stopped because its parent was cancelled: its own entry says
    `cancelled` too (not `requested` or `rendered` for ever, nor `failed`)."""

    def change(entry: LedgerEntry) -> tuple[LedgerEntry | None, None]:
        if entry.cancelled_at is not None or entry.status == "delivered":
            return None, None
        entry.cancelled_at, entry.cancelled_by = when, f"its burst {parent}"
        derive(entry)
        return entry, None

    return change


def skip(reason: str) -> Callable[[LedgerEntry], tuple[LedgerEntry | None, None]]:
    """Record a run that sent nothing on purpose (`skip_if_empty`): status `skipped`."""

    def change(entry: LedgerEntry) -> tuple[LedgerEntry | None, None]:
        if entry.skipped == reason:
            return None, None
        entry.skipped = reason
        derive(entry)
        return entry, None

    return change
