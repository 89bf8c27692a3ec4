"""The ledger's status is a function of the stage records, whatever order they arrive in.

Each record is one write a stage makes to the ledger (claim, retry reason, done, failed). The
stages run in separate processes and their KV writes can land in any order (a slow write, a
leader election, a redelivery), so every permutation of a scenario's records, duplicates and
redeliveries included, must leave the same status, error and stage records — each applied as
the ledger applies it (the claim's own decision included) and stored as JSON between writes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from shared.adapters.ledger import (
    KvLedger,
    LedgerEntry,
    _apply_claim,
    _apply_fail,
    _apply_finish,
    _apply_retrying,
    _seed,
)
from shared.adapters.memory import MemoryKeyValue
from shared.events import (
    Artefact,
    ChannelResult,
    DataReady,
    ReportDelivered,
    ReportRendered,
    ReportRequested,
    request_fingerprint,
)

REQUEST = ReportRequested(request_id="r-order", template="weekly")
FINGERPRINT = request_fingerprint(REQUEST)
Record = Callable[[LedgerEntry], LedgerEntry | None]


def claim(stage: str, seq: int, attempt: int = 1) -> Record:
    return lambda e: _apply_claim(e, stage, seq, attempt, "w:1", FINGERPRINT)[0]


def retry(stage: str, seq: int, attempt: int, reason: str) -> Record:
    return lambda e: _apply_retrying(e, stage, reason, seq, attempt)[0]


def failed(stage: str, seq: int, attempt: int, reason: str) -> Record:
    return lambda e: _apply_fail(e, stage, reason, seq, attempt)


def pdf(key: str) -> Artefact:
    return Artefact(format="pdf", key=key, size=10, sha256="0" * 64, content_type="x")


FETCHED = DataReady(request=REQUEST, context={}, fetch_seconds=0.5)


def done(stage: str, seq: int, attempt: int = 1, version: str = "v1") -> Record:
    event: Any = {
        "fetcher": FETCHED,
        "renderer": ReportRendered(
            request=REQUEST,
            artefacts=[pdf(f"{version}.pdf")],
            template_version=version,
            render_seconds=1.0,
        ),
        "distributor": ReportDelivered(
            request_id=REQUEST.request_id,
            template="weekly.html",
            artefacts=[pdf(f"{version}.pdf")],
            channels=[ChannelResult(channel="file", ok=True, target=f"out/{version}.pdf")],
        ),
    }[stage]
    return lambda e: _apply_finish(e, stage, 0.1, event, seq, attempt)


def start() -> str:
    return _seed(REQUEST.request_id, REQUEST).model_dump_json()


def apply(stored: str, record: Record) -> str:
    """One record applied as the ledger applies it, the entry stored as JSON (as in KV)."""
    changed = record(LedgerEntry.model_validate_json(stored))
    return stored if changed is None else changed.model_dump_json()


def seen(entry: LedgerEntry) -> dict[str, Any]:
    """What an operator sees of an entry: status, error, stages, outputs."""
    return {
        "status": entry.status,
        "error": entry.error,
        "failed_stage": entry.failed_stage,
        "last_error": entry.last_error,
        "stages": {
            s: (r.state, r.seq, r.attempts, r.error, r.error_attempt)
            for s, r in sorted(entry.stages.items())
        },
        "artefacts": [a.key for a in entry.artefacts],
        "channels": [c.target for c in entry.channels],
        "template_version": entry.template_version,
        "fetch_seconds": entry.fetch_seconds,
    }


def every_order(records: list[Record]) -> dict[str, Any]:
    """The one view every permutation leads to (fails naming two orders that disagree).

    Walks the tree of orders depth first, so orders sharing a prefix share its writes."""
    views: dict[str, tuple[tuple[int, ...], dict[str, Any]]] = {}
    count = 0

    def walk(stored: str, order: tuple[int, ...]) -> None:
        nonlocal count
        left = [i for i in range(len(records)) if i not in order]
        if not left:
            count += 1
            view = seen(LedgerEntry.model_validate_json(stored))
            views.setdefault(repr(view), (order, view))
            return
        for i in left:
            walk(apply(stored, records[i]), (*order, i))

    walk(start(), ())
    assert count == math.factorial(len(records))  # every interleaving was tried
    assert len(views) == 1, f"orders disagree: {list(views.values())}"
    return next(iter(views.values()))[1]


def test_a_late_fetcher_done_never_undoes_a_renderer_failure() -> None:
    """The issue's report: a broken template, the fetcher's done record landing last (and
    twice), the renderer's failure recorded twice."""
    view = every_order(
        [
            claim("fetcher", 1),
            done("fetcher", 1),
            done("fetcher", 1),  # a redelivered finish
            claim("renderer", 2),
            failed("renderer", 2, 1, "undefined variable 'kpis' in weekly.html:3"),
            failed("renderer", 2, 1, "undefined variable 'kpis' in weekly.html:3"),
        ]
    )
    assert view["status"] == "failed" and view["failed_stage"] == "renderer"
    assert view["error"] == "undefined variable 'kpis' in weekly.html:3"
    assert view["stages"]["fetcher"][0] == "done"


def test_a_replay_moves_a_failed_report_forward_with_no_stale_error() -> None:
    """The replay is a new message (a later stream sequence): a new generation of the stage."""
    view = every_order(
        [
            claim("fetcher", 1),
            done("fetcher", 1),
            claim("renderer", 2),
            failed("renderer", 2, 1, "template error"),
            claim("renderer", 9),  # the replayed data.ready
            done("renderer", 9, version="v2"),
            claim("distributor", 10),
            done("distributor", 10, version="v2"),
        ]
    )
    assert view["status"] == "delivered"
    assert view["error"] is None and view["failed_stage"] is None and view["last_error"] is None
    assert view["stages"]["renderer"][:2] == ("done", 9)
    assert view["artefacts"] == ["v2.pdf"] and view["channels"] == ["out/v2.pdf"]


def test_retries_show_the_last_error_while_they_go_on_and_none_once_done() -> None:
    attempts = [
        claim("fetcher", 1, 1),
        retry("fetcher", 1, 1, "sales: connection refused"),
        claim("fetcher", 1, 2),  # the redelivery
        retry("fetcher", 1, 2, "sales: connection refused (again)"),
        claim("fetcher", 1, 3),
    ]
    view = every_order(attempts)
    assert view["status"] == "requested" and view["error"] is None
    assert view["stages"]["fetcher"][:3] == ("running", 1, 3)
    assert view["last_error"] == "fetcher attempt 2: sales: connection refused (again)"

    settled = every_order([*attempts, done("fetcher", 1, 3)])
    assert settled["status"] == "fetched" and settled["last_error"] is None


def test_the_last_attempt_failing_settles_it_whatever_came_late() -> None:
    view = every_order(
        [
            claim("fetcher", 1, 1),
            retry("fetcher", 1, 1, "refused"),
            claim("fetcher", 1, 2),
            failed("fetcher", 1, 2, "gave up after 2 attempts: refused"),
            claim("fetcher", 1, 2),  # the dead-lettered message redelivered (term was lost)
        ]
    )
    assert view["status"] == "failed"
    assert view["error"] == "gave up after 2 attempts: refused"


def test_a_distributor_failure_after_a_replayed_render_is_the_one_shown() -> None:
    view = every_order(
        [
            done("fetcher", 1),
            failed("renderer", 2, 1, "render crashed"),
            done("renderer", 5),  # a replay rendered it
            claim("distributor", 6),
            failed("distributor", 6, 1, "webhook answered 410"),
            claim("renderer", 2),  # a late redelivery of the failed message
        ]
    )
    assert view["status"] == "failed" and view["failed_stage"] == "distributor"
    assert view["error"] == "webhook answered 410"


@pytest.mark.parametrize("stage", ["fetcher", "renderer", "distributor"])
def test_every_interleaving_of_a_whole_report_ends_where_the_furthest_stage_says(
    stage: str,
) -> None:
    chain = ["fetcher", "renderer", "distributor"]
    records = [r for s in chain[: chain.index(stage) + 1] for r in (claim(s, 1), done(s, 1))]
    view = every_order([*records, records[-1]])
    expected = {"fetcher": "fetched", "renderer": "rendered", "distributor": "delivered"}
    assert view["status"] == expected[stage] and view["error"] is None


async def test_the_kv_ledger_applies_the_same_rules() -> None:
    """Through KvLedger (compare-and-set over a KV bucket): late fetcher done, then replay."""
    ledger = KvLedger(MemoryKeyValue())  # type: ignore[arg-type]
    rid = REQUEST.request_id
    assert await ledger.claim(rid, "fetcher", seq=1, attempt=1, request=REQUEST) == "proceed"
    assert await ledger.claim(rid, "renderer", seq=2, attempt=1, request=REQUEST) == "proceed"
    await ledger.fail(rid, "renderer", reason="broken", seq=2, attempt=1)
    await ledger.finish(rid, "fetcher", seconds=0.1, event=FETCHED, seq=1, attempt=1)
    entry = await ledger.get(rid)
    assert entry is not None and entry.status == "failed" and entry.error == "broken"
    assert entry.template == "weekly.html"  # the canonical name, whatever the request said
    # the dead-lettered message itself, redelivered: skipped; the replay (a new message) runs
    assert await ledger.claim(rid, "renderer", seq=2, attempt=2, request=REQUEST) == "done"
    assert await ledger.claim(rid, "renderer", seq=7, attempt=1, request=REQUEST) == "proceed"
    entry = await ledger.get(rid)
    assert entry is not None and entry.status == "fetched" and entry.error is None
