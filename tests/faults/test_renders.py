"""Long and runaway renders with real processes: in-progress acks, timeouts, crashes, shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from shared.bus import LEDGER_BUCKET, STREAM
from shared.ledger import KvLedger
from tests.helpers import Outcomes, Stack, eventually, unique

pytestmark = [pytest.mark.faults, pytest.mark.integration]

ROWS = (
    "<table>{% for i in range(rows) %}<tr><td>Row {{ i }}</td><td>{{ i * 3 }}</td>"
    "<td>value {{ i }}</td></tr>{% endfor %}</table>"
)


def slow_stack(root: Any, **env: str) -> Stack:
    stack = Stack(
        root,
        env_extra={"PRESSROOM_ACK_WAIT": "2", "PRESSROOM_RENDER_CACHE": "false", **env},
        workers={"fetcher": 1, "renderer": 2, "distributor": 1},
    )
    stack.root.mkdir(parents=True, exist_ok=True)
    stack.start()
    (stack.templates / "rows.html").write_text(ROWS)
    return stack


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = slow_stack(tmp_path_factory.mktemp("slow"), PRESSROOM_RENDER_TIMEOUT="12")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def slow_outcomes(slow: Stack) -> Any:
    nc = await slow.connect()
    outcomes = await Outcomes().start(nc)
    yield outcomes
    await nc.close()


async def request(stack: Stack, rid: str, rows: int) -> None:
    nc = await stack.connect()
    body = {"request_id": rid, "template": "rows.html", "params": {"rows": rows}}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await nc.close()


async def renderer_state(stack: Stack, rid: str) -> tuple[str, int] | None:
    nc = await stack.connect()
    try:
        ledger = KvLedger(await nc.jetstream().key_value(LEDGER_BUCKET))
        entry = await ledger.get(rid)
    finally:
        await nc.close()
    record = entry.stages.get("renderer") if entry else None
    return (record.state, record.attempts) if record else None


async def test_a_render_longer_than_the_ack_wait_is_not_redelivered(
    slow: Stack, slow_outcomes: Outcomes
) -> None:
    rid = unique("long")
    await request(slow, rid, 3000)  # several seconds, the ack wait is 2 s
    delivered = await slow_outcomes.delivered_event(rid, timeout=90)
    assert delivered["artefacts"][0]["size"] > 50_000
    assert await renderer_state(slow, rid) == ("done", 1)
    nc = await slow.connect()
    info = await nc.jetstream().consumer_info(STREAM, "renderer")
    await nc.close()
    assert info.num_redelivered == 0


async def test_a_runaway_render_is_stopped_and_fails_with_the_reason(
    slow: Stack, slow_outcomes: Outcomes
) -> None:
    rid = unique("runaway")
    await request(slow, rid, 40000)
    failed = await slow_outcomes.failed_event(rid, timeout=60)
    assert "took longer than 12s and was stopped" in failed["reason"]
    assert failed["attempts"] == 1 and failed["stage"] == "renderer"
    after = unique("after")
    await request(slow, after, 10)  # the killed worker was replaced: rendering goes on
    await slow_outcomes.delivered_event(after, timeout=60)


async def test_sigterm_mid_render_loses_nothing(slow: Stack, slow_outcomes: Outcomes) -> None:
    rid = unique("sigterm")
    await request(slow, rid, 2000)

    async def rendering() -> bool:
        return await renderer_state(slow, rid) == ("running", 1)

    await eventually(rendering, timeout=30, every=0.05)
    for proc in slow.procs["renderer"]:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    slow.start_worker("renderer")
    await slow_outcomes.delivered_event(rid, timeout=90)
    await asyncio.sleep(1)
    assert len(slow_outcomes.delivered[rid]) == 1


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = slow_stack(tmp_path_factory.mktemp("fragile"), PRESSROOM_MAX_ATTEMPTS="1")
    yield stack
    stack.stop()


async def test_a_message_that_kills_every_worker_is_dead_lettered(fragile: Stack) -> None:
    nc = await fragile.connect()
    outcomes = await Outcomes().start(nc)
    rid = unique("killer")
    await request(fragile, rid, 3000)
    for attempt in (1, 2):  # max_deliver is max_attempts + 1 = 2

        async def rendering(n: int = attempt) -> bool:
            return await renderer_state(fragile, rid) == ("running", n)

        await eventually(rendering, timeout=60, every=0.05)
        for proc in fragile.procs["renderer"]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
        fragile.start_worker("renderer")
    failed = await outcomes.failed_event(rid, timeout=60)
    assert failed["stage"] == "renderer"
    assert "no renderer finished it in 2 deliveries" in failed["reason"]
    rows = json.loads(fragile.cli("dlq", "ls", "--json", check=True).stdout)
    assert [r["request_id"] for r in rows] == [rid]
    await nc.close()
