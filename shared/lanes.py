"""Lanes and priorities: which lane a request runs in, and what a publisher may ask for.

A request asks for `interactive`, `normal` (the default) or `bulk`; the operator caps what each
publisher identity may ask for (`PRESSROOM_PRIORITY_CAPS`, e.g. `billing=interactive`; others
get `PRESSROOM_PRIORITY_CAP`), a burst's children and big reports (by their row estimate) run
as `bulk` whatever they asked. The services' own identities (ops, the scheduler) are uncapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shared.events import PRIORITIES, Priority, ReportRequested

# Higher is more urgent; a cap lowers a request's priority to at most the cap.
RANK: dict[str, int] = {"bulk": 0, "normal": 1, "interactive": 2}
ESTIMATE_DEPTH = 3  # how deep the row estimate looks into a context


def parse_caps(text: str) -> dict[str, Priority]:
    """`billing=interactive,batch=bulk` → {"billing": "interactive", "batch": "bulk"}; a
    ValueError naming the bad part otherwise."""
    caps: dict[str, Priority] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or value.strip() not in PRIORITIES:
            raise ValueError(
                f"'{part}' is not NAME=PRIORITY (priority one of {', '.join(PRIORITIES)})"
            )
        caps[name.strip()] = value.strip()  # type: ignore[assignment]
    return caps


def capped(asked: Priority, cap: Priority) -> Priority:
    return asked if RANK[asked] <= RANK[cap] else cap


def rows_estimate(value: Any, depth: int = ESTIMATE_DEPTH) -> int:
    """Rows a context would lay out: the items of its lists, a few levels deep (cheap: no
    render, the fetcher has the data at hand)."""
    if depth <= 0:
        return 0
    if isinstance(value, list):
        return len(value) + sum(rows_estimate(v, depth - 1) for v in value[:50])
    if isinstance(value, Mapping):
        return sum(rows_estimate(v, depth - 1) for v in value.values())
    return 0


def lane_for(
    request: ReportRequested,
    *,
    caps: Mapping[str, Priority],
    default_cap: Priority,
    rows: int = 0,
    bulk_rows: int = 0,
) -> Priority:
    """The lane a request runs in: what it asked, within its publisher's cap; a burst's child
    or a report over `bulk_rows` rows (0: no such rule) runs as bulk."""
    if request.parent is not None or (bulk_rows and rows >= bulk_rows):
        return "bulk"
    if request.tenant is None:  # ops, the scheduler, the services themselves
        return request.priority
    return capped(request.priority, caps.get(request.tenant, default_cap))
