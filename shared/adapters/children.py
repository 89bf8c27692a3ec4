"""The ledger side of bursting: a parent's tally started, and each child's outcome counted once.

Each function returns a `change` for `Ledger.update` (compare-and-set on the parent's entry):
concurrent children in several distributors each land exactly once, and exactly one of them
sees the tally become complete (that one publishes the parent's outcome).
"""

from __future__ import annotations

from collections.abc import Callable

from shared.adapters.ledger import LedgerEntry, derive
from shared.burst import BurstOutcome, BurstTally
from shared.events import utcnow

Change = Callable[[LedgerEntry], tuple[LedgerEntry | None, BurstTally | None]]


def start(total: int) -> Change:
    """The parent's tally, planned once: a redelivery of the parent's message (a fetcher that
    died mid-fan-out) finds it as it was, its children's outcomes kept. A failed child runs
    again from its own dead letter (`pressroom dlq replay <parent id>` replays them all)."""

    def change(entry: LedgerEntry) -> tuple[LedgerEntry | None, BurstTally | None]:
        if entry.burst is not None:
            return None, entry.burst
        entry.burst = BurstTally.planned(total)
        derive(entry)
        return entry, entry.burst

    return change


def record(index: int, key: str, outcome: BurstOutcome, reason: str = "") -> Change:
    """Count one child's outcome; the result is the tally when this completed the burst or
    changed a complete burst's outcome."""

    def change(entry: LedgerEntry) -> tuple[LedgerEntry | None, BurstTally | None]:
        tally = entry.burst
        if tally is None:
            return None, None
        was_complete = tally.complete
        updated = tally.record(index, key, outcome, reason)
        if updated is None:
            return None, None
        entry.burst = updated
        if updated.complete and entry.settled is None and entry.cancelled_at is None:
            # A burst that only cancels held back is neither delivered nor failed (as a
            # cancelled report is not): it counts in no success rate.
            if updated.failed:
                entry.settled, entry.settled_at = "failed", utcnow()
            elif not updated.cancelled:
                entry.settled, entry.settled_at = "delivered", utcnow()
        derive(entry)
        # Complete now, or complete before with another outcome (a replayed child delivered).
        counts = (updated.failed, updated.cancelled)
        changed = not was_complete or counts != (tally.failed, tally.cancelled)
        return entry, (updated if updated.complete and changed else None)

    return change
