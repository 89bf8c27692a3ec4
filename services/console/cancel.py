"""`pressroom cancel`: mark requests cancelled in the ledger, and say what that achieved.

The mark is written with compare-and-set (shared/adapters/cancel.py). The distributor writes a
delivery's intent and only then looks at the mark, so once the mark is written, a delivery whose
intent is not yet recorded will never be sent; one whose intent is already there may be (it is
said so, rather than promised otherwise).
"""

from __future__ import annotations

import json
import re
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

from services.console.busaccess import Bus
from shared.adapters.cancel import MESSAGES, apply_cancel
from shared.bus.names import DELIVERIES_BUCKET
from shared.errors import PressroomError
from shared.events import REQUEST_ID_PATTERN, utcnow


@dataclass(frozen=True)
class Cancelled:
    request_id: str
    outcome: str
    message: str


async def _sending(bus: Bus, request_id: str) -> bool:
    """Whether a delivery of the request has its intent (or outcome) recorded already."""
    kv = await bus.js.key_value(DELIVERIES_BUCKET)
    watcher = await kv.watch(f"{request_id}.>", ignore_deletes=True)
    try:
        async for entry in watcher:
            if entry is None:
                return False
            if entry.key.startswith(f"{request_id}.") and entry.value:
                with suppress(ValueError):
                    if json.loads(entry.value).get("state") != "cancelled":
                        return True
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    return False


def _cancel(entry: Any, *, when: Any, by: str | None) -> Any:
    return apply_cancel(entry, when, by)


async def cancel_requests(bus: Bus, request_ids: list[str], by: str | None) -> list[Cancelled]:
    """Cancel each request (one not started yet included: no stage will start it)."""
    ledger = await bus.ledger()
    results = []
    for rid in request_ids:
        if not re.fullmatch(REQUEST_ID_PATTERN, rid):
            raise PressroomError(f"'{rid[:80]}' is not a request id")
        outcome = await ledger.update(rid, partial(_cancel, when=utcnow(), by=by))
        message = MESSAGES[outcome]
        if outcome == "cancelled" and await _sending(bus, rid):
            outcome, message = "too_late", MESSAGES["too_late"]
        results.append(Cancelled(rid, outcome, message))
    return results
