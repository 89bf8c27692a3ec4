"""Long and runaway renders with real processes: in-progress acks, timeouts, crashes, shutdown.

Nothing here assumes a machine speed: a calibration render on this machine sizes the "long"
report (several ack waits long) and the render timeout (a multiple of that), and the runaway
render never finishes on any machine.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.ledger import KvLedger
from shared.bus.names import LEDGER_BUCKET, STREAM
from tests.helpers import Outcomes, Stack, eventually, unique

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(600)]

ROWS = (
    "<table>{% for i in range(rows) %}<tr><td>Row {{ i }}</td><td>{{ i * 3 }}</td>"
    "<td>value {{ i }}</td></tr>{% endfor %}</table>"
)
# Ten billion loop steps: no machine finishes this before any sane render timeout.
SPIN = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}done"
ACK_WAIT = 2.0


@dataclass(frozen=True)
class Calibration:
    rows_long: int  # a render of about three ack waits on this machine, now
    render_timeout: float  # many times that, so the long render always fits
    # For the stack without long renders: many times a 10-row render (the largest report it
    # is sent), so a runaway render burns less of the machine than under `render_timeout`.
    short_timeout: float


def _render_seconds(folder: Path, rows: int) -> float:
    from services.renderer.job import RenderJob
    from services.renderer.pdf import render_job

    job = RenderJob(templates_dir=str(folder), template="rows.html", context={"rows": rows})
    started = time.perf_counter()
    render_job(job)
    return time.perf_counter() - started


@pytest.fixture(scope="module")
def calibration(tmp_path_factory: pytest.TempPathFactory) -> Calibration:
    folder = tmp_path_factory.mktemp("calibrate")
    (folder / "rows.html").write_text(ROWS)
    _render_seconds(folder, 10)  # imports and fonts, not rendering
    short = min(_render_seconds(folder, 10), _render_seconds(folder, 10))
    per_row = max(_render_seconds(folder, 300), _render_seconds(folder, 300)) / 300
    rows_long = min(max(int(3 * ACK_WAIT / per_row), 500), 20_000)
    # 8×: with the other core busy and three test processes, a long render going on while a
    # renderer started beside it took more than 4× its calibrated time (a spurious timeout).
    return Calibration(
        rows_long,
        render_timeout=max(15.0, 8 * rows_long * per_row),
        # 12 s at least: the killer test on that stack must see the render's claim (written
        # a second into the work) and kill it before this timeout ends it, on a loaded machine.
        short_timeout=max(12.0, 40 * short),
    )


def slow_stack(root: Any, **env: str) -> Stack:
    stack = Stack(
        root,
        env_extra={
            "PRESSROOM_ACK_WAIT": f"{ACK_WAIT:g}",
            "PRESSROOM_RENDER_CACHE": "false",
            **env,
        },
        workers={"fetcher": 1, "renderer": 2, "distributor": 1},
    )
    stack.root.mkdir(parents=True, exist_ok=True)
    stack.start()
    (stack.templates / "rows.html").write_text(ROWS)
    (stack.templates / "spin.html").write_text(SPIN)
    return stack


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory, calibration: Calibration) -> Iterator[Stack]:
    stack = slow_stack(
        tmp_path_factory.mktemp("slow"),
        PRESSROOM_RENDER_TIMEOUT=f"{calibration.render_timeout:.0f}",
    )
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def slow_outcomes(slow: Stack) -> Any:
    nc = await slow.connect()
    outcomes = await Outcomes().start(nc)
    yield outcomes
    await nc.close()


async def request(stack: Stack, rid: str, rows: int, template: str = "rows.html") -> None:
    nc = await stack.connect()
    body = {"request_id": rid, "template": template, "params": {"rows": rows}}
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
    slow: Stack, slow_outcomes: Outcomes, calibration: Calibration
) -> None:
    rid = unique("long")
    await request(slow, rid, calibration.rows_long)  # about three ack waits of rendering
    delivered = await slow_outcomes.delivered_event(rid, timeout=calibration.render_timeout * 2)
    assert delivered["artefacts"][0]["size"] > 5_000
    assert await renderer_state(slow, rid) == ("done", 1)
    nc = await slow.connect()
    info = await nc.jetstream().consumer_info(STREAM, "renderer")
    await nc.close()
    assert info.num_redelivered == 0


async def test_sigterm_mid_render_loses_nothing(
    slow: Stack, slow_outcomes: Outcomes, calibration: Calibration
) -> None:
    rid = unique("sigterm")
    await request(slow, rid, calibration.rows_long)

    async def rendering() -> bool:
        return await renderer_state(slow, rid) == ("running", 1)

    await eventually(rendering, timeout=30, every=0.05)
    for proc in slow.procs["renderer"]:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    slow.start_worker("renderer")
    await slow_outcomes.delivered_event(rid, timeout=calibration.render_timeout * 3)
    # Anything delivered twice would be a second render: let a marker overtake it first.
    marker = unique("marker")
    await request(slow, marker, 10)
    await slow_outcomes.delivered_event(marker, timeout=calibration.render_timeout * 2)
    assert len(slow_outcomes.delivered[rid]) == 1


@pytest.fixture(scope="module")
def fragile(tmp_path_factory: pytest.TempPathFactory, calibration: Calibration) -> Iterator[Stack]:
    """Short renders only: one attempt per report, and a render timeout fit for them."""
    stack = slow_stack(
        tmp_path_factory.mktemp("fragile"),
        PRESSROOM_MAX_ATTEMPTS="1",
        PRESSROOM_RENDER_TIMEOUT=f"{calibration.short_timeout:.0f}",
    )
    yield stack
    stack.stop()


async def test_a_runaway_render_is_stopped_and_fails_with_the_reason(
    fragile: Stack, calibration: Calibration
) -> None:
    nc = await fragile.connect()
    outcomes = await Outcomes().start(nc)
    rid = unique("runaway")
    await request(fragile, rid, 0, template="spin.html")
    failed = await outcomes.failed_event(rid, timeout=calibration.short_timeout * 3)
    limit = f"{calibration.short_timeout:.0f}s"
    assert f"took longer than {limit} and was stopped" in failed["reason"]
    assert failed["attempts"] == 1 and failed["stage"] == "renderer"
    after = unique("after")
    await request(fragile, after, 10)  # the killed worker was replaced: rendering goes on
    await outcomes.delivered_event(after, timeout=60)
    await nc.close()


async def test_a_message_that_kills_every_worker_is_dead_lettered(fragile: Stack) -> None:
    nc = await fragile.connect()
    outcomes = await Outcomes().start(nc)
    rid = unique("killer")
    await request(fragile, rid, 0, template="spin.html")  # never finishes: killed each time
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
    assert [r["request_id"] for r in rows].count(rid) == 1
    await nc.close()


# ---- render processes that die, and render processes recycled ---------------------------------
CRASH_MARKER = "pressroom-test-crash-here"


def render_processes(stack: Stack) -> set[int]:
    """The render processes (spawned workers) of the stack's renderer services, from /proc."""
    services = {p.pid for p in stack.procs["renderer"] if p.poll() is None}
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid in services and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


@pytest.fixture(scope="module")
async def crashy(tmp_path_factory: pytest.TempPathFactory, calibration: Calibration) -> Any:
    """One renderer with one render process; reports whose HTML holds the marker crash it
    (the test-only hook in services/renderer/pdf.py)."""
    stack = Stack(
        tmp_path_factory.mktemp("crashy"),
        env_extra={
            "PRESSROOM_RENDER_CACHE": "false",
            "PRESSROOM_RENDER_TIMEOUT": f"{calibration.render_timeout:.0f}",
            "TEST_RENDER_CRASH_MARKER": CRASH_MARKER,
        },
    )
    stack.root.mkdir(parents=True, exist_ok=True)
    await stack.astart()
    (stack.templates / "rows.html").write_text(ROWS)
    (stack.templates / "crash.html").write_text(f"<p>{CRASH_MARKER} {{{{ rows }}}}</p>")
    yield stack
    stack.stop()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
async def test_a_render_process_killed_mid_report_still_delivers_it(
    crashy: Stack, calibration: Calibration, sig: signal.Signals
) -> None:
    nc = await crashy.connect()
    outcomes = await Outcomes().start(nc)
    rid = unique("killed")
    await request(crashy, rid, calibration.rows_long)  # several seconds of rendering

    async def rendering() -> set[int] | None:
        running = await renderer_state(crashy, rid) == ("running", 1)
        return render_processes(crashy) if running else None

    victims = await eventually(rendering, timeout=60, every=0.05)
    for pid in victims:
        os.kill(pid, sig)
    delivered = await outcomes.delivered_event(rid, timeout=calibration.render_timeout * 3)
    assert delivered["artefacts"][0]["size"] > 5_000
    # Rendered again in a fresh process within the same delivery: not a retry of the stage.
    assert await renderer_state(crashy, rid) == ("done", 1)
    assert not victims & render_processes(crashy)
    await nc.close()


async def test_a_report_that_crashes_the_renderer_every_time_is_dead_lettered_with_why(
    crashy: Stack,
) -> None:
    nc = await crashy.connect()
    outcomes = await Outcomes().start(nc)
    rid = unique("crasher")
    await request(crashy, rid, 1, template="crash.html")
    failed = await outcomes.failed_event(rid, timeout=180)
    assert failed["stage"] == "renderer"
    assert "the renderer crashed (signal 11) on this report twice" in failed["reason"]
    rows = json.loads(crashy.cli("dlq", "ls", "--json", check=True).stdout)
    assert rid in [r["request_id"] for r in rows]
    after = unique("after-crash")  # the renderer goes on with a fresh process
    await request(crashy, after, 5)
    await outcomes.delivered_event(after, timeout=120)
    await nc.close()


async def test_render_processes_recycled_after_n_renders_deliver_every_report(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    stack = Stack(
        tmp_path_factory.mktemp("recycled"),
        env_extra={"PRESSROOM_RENDER_CACHE": "false", "PRESSROOM_RENDER_MAX_RENDERS": "2"},
    )
    stack.root.mkdir(parents=True, exist_ok=True)
    await stack.astart()
    try:
        (stack.templates / "rows.html").write_text(ROWS)
        nc = await stack.connect()
        outcomes = await Outcomes().start(nc)
        seen: set[int] = set()

        async def started() -> set[int]:
            return render_processes(stack)

        first = await eventually(started, timeout=120)
        seen |= first
        rids = []
        for batch in range(4):
            batch_rids = [unique(f"recycled-{batch}") for _ in range(3)]
            for rid in batch_rids:
                await request(stack, rid, 20)
            for rid in batch_rids:
                await outcomes.delivered_event(rid, timeout=180)
                seen |= render_processes(stack)
            rids += batch_rids

        async def replaced() -> bool:
            now = render_processes(stack)
            seen.update(now)
            return bool(now) and not now & first

        await eventually(replaced, timeout=120, every=0.1)
        assert all(len(outcomes.delivered[rid]) == 1 for rid in rids)
        await nc.close()
    finally:
        stack.stop()
