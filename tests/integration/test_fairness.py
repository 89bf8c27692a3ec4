"""Lanes and admission on a real stack with three calling systems (publisher identities).

alpha floods 500 bulk requests, then beta asks for one interactive report on its lane's
subject (`report.requested.interactive`): beta's is delivered before alpha's 20th, and every
one of alpha's is delivered in the end. Why 20: beta's request waits behind none of alpha's
(its own lane's consumers at every stage are idle) — only for a free slot in each process,
whose bulk lane may use half: its own fetch, render and delivery, about the time of one of
alpha's reports per stage. alpha's reports delivered meanwhile are the few its bulk lane
finishes in that time (a handful); 20 leaves room for a slow machine, and in one queue
beta's report would have been the 501st.

gamma may have 2 reports queued: its third is refused at once with `report.failed`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from shared.adapters.ledger import KvLedger
from shared.bus.identity import generate
from shared.bus.names import LEDGER_BUCKET
from tests.helpers import Outcomes, Stack, eventually, unique

pytestmark = pytest.mark.integration

FLOOD = 500
BOUND = 20
TINY = "<!doctype html><html><body><p>report {{ n }}</p></body></html>\n"
SLOW = """<!doctype html><html><body>
{% for i in range(40000) %}<p>line {{ i }} of a long report</p>{% endfor %}</body></html>
"""


@pytest.fixture(scope="module")
def fair_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("fairness")
    generate(root / "auth", publishers=["alpha", "beta", "gamma"])
    stack = Stack(
        root,
        env_extra={
            "PRESSROOM_PRIORITY_CAPS": "beta=interactive",
            "PRESSROOM_REQUESTER_LIMITS": "gamma=2",
            "PRESSROOM_RENDER_CACHE": "false",
            "PRESSROOM_RENDER_WORKERS": "2",
        },
    )
    try:
        stack.start()
        (stack.templates / "tiny.html").write_text(TINY)
        (stack.templates / "slow.html").write_text(SLOW)
        yield stack
    finally:
        stack.stop()


async def publish(nc: Any, body: dict[str, Any]) -> None:
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())


def tiny(rid: str, n: int, priority: str) -> dict[str, Any]:
    return {
        "request_id": rid,
        "template": "tiny.html",
        "params": {"n": n},
        "formats": ["html"],  # the lanes are the point here, not WeasyPrint
        "priority": priority,
        "deliver": [{"channel": "file", "path": "fair"}],
    }


async def test_an_interactive_report_is_not_queued_behind_a_bulk_flood(fair_stack: Stack) -> None:
    stack = fair_stack
    ops = await stack.connect()
    outcomes = await Outcomes().start(ops)
    alpha = await stack.connect("publisher-alpha")
    beta = await stack.connect("publisher-beta")
    tag = unique("a")
    flood = [f"{tag}-{i}" for i in range(FLOOD)]
    try:
        js = alpha.jetstream()
        acks = [
            await js.publish_async("report.requested", json.dumps(tiny(rid, n, "bulk")).encode())
            for n, rid in enumerate(flood)
        ]
        await asyncio.gather(*acks)
        urgent = unique("b")
        # Its own lane's subject (README: "Lanes"), past the flood on report.requested.
        await beta.jetstream().publish(
            "report.requested.interactive", json.dumps(tiny(urgent, 0, "interactive")).encode()
        )

        await outcomes.delivered_event(urgent, timeout=120)
        ahead = sum(1 for rid in flood if rid in outcomes.delivered)
        assert ahead < BOUND, f"{ahead} of alpha's bulk reports were delivered before beta's"

        async def all_delivered() -> bool:
            return all(rid in outcomes.delivered for rid in flood)

        await eventually(all_delivered, timeout=240, every=0.5)
        assert not any(rid in outcomes.failed for rid in flood)
        status = json.loads(stack.cli("status", urgent, "--json", check=True).stdout)
        assert status["requested_by"] == "beta" and status["status"] == "delivered"
    finally:
        for nc in (alpha, beta, ops):
            await nc.close()


async def test_a_requester_over_its_limit_is_refused_at_once(fair_stack: Stack) -> None:
    stack = fair_stack
    ops = await stack.connect()
    outcomes = await Outcomes().start(ops)
    gamma = await stack.connect("publisher-gamma")
    queued = [unique("g") for _ in range(2)]
    try:
        for rid in queued:  # long renders: both still queued when the third comes in
            await publish(gamma, {"request_id": rid, "template": "slow.html"})

        ledger = KvLedger(await ops.jetstream().key_value(LEDGER_BUCKET))

        async def both_admitted() -> bool:
            entries = [await ledger.get(rid) for rid in queued]
            return all(e is not None and "fetcher" in e.stages for e in entries)

        await eventually(both_admitted, timeout=60, every=0.2)
        third = unique("g")
        await publish(gamma, tiny(third, 3, "normal"))
        failed = await outcomes.failed_event(third, timeout=60)
        assert failed["reason"] == "requester gamma is over its limit of 2 queued reports"
        assert failed["requested_by"] == "gamma"
        assert third not in outcomes.delivered and not any(r in outcomes.failed for r in queued)
        # Its dead letter stays for ops to replay once the queue has room.
        letters = json.loads(stack.cli("dlq", "ls", "--json", check=True).stdout)
        assert any(row.get("request_id") == third for row in letters)
        cancel = stack.cli("cancel", *queued)
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
    finally:
        await gamma.close()
        await ops.close()
