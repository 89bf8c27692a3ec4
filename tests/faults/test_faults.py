"""Fault injection with real processes: nothing lost, done twice or retried forever."""

from __future__ import annotations

import base64
import json
import re
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.adapters.ledger import KvLedger
from shared.bus.names import LEDGER_BUCKET, STREAM
from tests import cliproc
from tests.helpers import (
    REPO,
    Console,
    Stack,
    dead_letter_count,
    dead_letters_beyond,
    delivered_tags,
    eventually,
    tags,
    unique,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())


def big_context(rows: int) -> dict[str, Any]:
    project = dict(SAMPLE["projects"][0])
    return {**SAMPLE, "projects": [dict(project, name=f"P{i}") for i in range(rows)]}


async def stream_events(stack: Stack, subject: str) -> list[dict[str, Any]]:
    """Every message on `subject` still in the stream (survives NATS restarts, unlike core subs)."""
    nc = await stack.connect()
    try:
        js = nc.jetstream()
        info = await js.stream_info(STREAM)
        sub = await js.subscribe(subject, ordered_consumer=True)
        events = []
        for _ in range(info.state.messages):
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:
                break
            events.append(json.loads(msg.data))
        await sub.unsubscribe()
        return events
    finally:
        await nc.close()


async def publish_all(stack: Stack, bodies: list[dict[str, Any]]) -> None:
    nc = await stack.connect()
    js = nc.jetstream()
    for body in bodies:
        await js.publish("report.requested", json.dumps(body).encode())
    await nc.close()


async def all_settled(stack: Stack, rids: list[str], timeout: float = 240) -> Counter[str]:
    async def probe() -> Counter[str] | None:
        delivered = Counter(e["request_id"] for e in await stream_events(stack, "report.delivered"))
        failed = {e["request_id"] for e in await stream_events(stack, "report.failed")}
        settled = [r for r in rids if r in delivered or r in failed]
        return delivered if len(settled) == len(rids) else None

    return await eventually(probe, timeout=timeout, every=1.0)


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    stack = Stack(
        tmp_path_factory.mktemp("faults"),
        env_extra={
            "PRESSROOM_MAX_ATTEMPTS": "6",
            "PRESSROOM_RETRY_BACKOFF": "0.5,1,2",
            "PRESSROOM_RENDER_CACHE": "false",
        },  # every report really renders
        workers={"fetcher": 1, "renderer": 2, "distributor": 1},
    ).start()
    yield stack
    stack.stop()


async def busy_worker(stack: Stack, stage: str, rids: list[str]) -> cliproc.Process:
    """A live `stage` process that the ledger shows working on one of `rids` right now."""
    nc = await stack.connect()
    ledger = KvLedger(await nc.jetstream().key_value(LEDGER_BUCKET))
    pids = {p.pid: p for p in stack.procs[stage] if p.poll() is None}

    async def probe() -> cliproc.Process | None:
        for rid in rids:
            entry = await ledger.get(rid)
            record = entry.stages.get(stage) if entry else None
            if record and record.state == "running" and record.worker:
                pid = int(record.worker.rsplit(":", 1)[1])
                if pid in pids:
                    return pids[pid]
        return None

    try:
        return await eventually(probe, timeout=120, every=0.05)
    finally:
        await nc.close()


def pdfs(folder: Path) -> list[str]:
    """The request tags of the PDFs in `folder` (compare with `tags(rids)`)."""
    return delivered_tags(folder)


async def signed_in(console: Console, user: str, password: str) -> httpx.AsyncClient:
    """An httpx client signed in to the console (its session cookie kept)."""
    await console.wait_ready()
    client = httpx.AsyncClient(base_url=console.url, timeout=60)
    form = (await client.get("/login")).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None, form
    done = await client.post(
        "/login", data={"username": user, "password": password, "csrf_token": token[1]}
    )
    assert done.status_code == 303, done.text
    return client


@pytest.mark.timeout(900)  # twenty long reports through two faults: minutes on a loaded machine
async def test_twenty_reports_survive_a_renderer_sigkill_and_a_nats_restart(
    fault_stack: Stack,
) -> None:
    stack = fault_stack
    # The console, a process that lasts, is there through the restart too.
    console = Console(stack, {"vera": ("viewer", "vera-views-all-day")}, name="console-blip")
    console.start()
    client = await signed_in(console, "vera", "vera-views-all-day")
    rids = [unique("fault") for _ in range(20)]
    bodies = [
        {
            "request_id": rid,
            "template": "portfolio.html",
            "params": big_context(150),
            "deliver": [{"channel": "file", "path": "faults"}],
        }
        for rid in rids
    ]
    await publish_all(stack, bodies)

    # Kill a renderer while it is rendering (its message must go to the other one), replace it.
    victim = await busy_worker(stack, "renderer", rids)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    stack.start_worker("renderer")

    # Restart nats-server (file storage) in the middle of the run: some delivered, not all.
    async def midway() -> bool:
        return 0 < len(pdfs(stack.out / "faults")) < len(rids)

    await eventually(midway, timeout=180, every=0.05)
    stack.stop_nats()
    # The outage itself, until a worker says it (PressroomBusUnreachable's gauge): its
    # /metrics still answers, with pressroom_bus_connected 0.
    metrics = f"{stack.health['fetcher-1']}/metrics"

    async def connected(value: str) -> bool:
        async with httpx.AsyncClient(timeout=10) as probe:
            text = (await probe.get(metrics)).text
        return any(
            line.startswith("pressroom_bus_connected") and line.split()[-1] == value
            for line in text.splitlines()
        )

    await eventually(lambda: connected("0.0"), timeout=60, every=0.2)
    stack.start_nats()
    await eventually(lambda: connected("1.0"), timeout=120, every=0.5)

    delivered = await all_settled(stack, rids)
    assert {rid: delivered[rid] for rid in rids} == dict.fromkeys(rids, 1), stack.logs()
    assert pdfs(stack.out / "faults") == tags(rids)

    # The console is connected again and its list shows every report as delivered, those
    # settled after the restart too (its ledger watch died with the server's consumers).
    async def listed() -> bool:
        answer = await client.get("/api/reports", params={"q": "fault-"})
        if answer.status_code != 200:
            return False
        shown = {r["request_id"]: r["status"] for r in answer.json()["reports"]}
        return all(shown.get(rid) == "delivered" for rid in rids)

    try:
        await eventually(listed, timeout=120, every=0.5)
        assert (await client.get("/healthz")).status_code == 200
    finally:
        await client.aclose()
        console.stop()


async def test_a_request_id_published_three_times_is_delivered_once(fault_stack: Stack) -> None:
    stack = fault_stack
    rid = unique("dup")
    body = {
        "request_id": rid,
        "template": "portfolio.html",
        "params": SAMPLE,
        "deliver": [{"channel": "file", "path": "dups"}],
    }
    await publish_all(stack, [body, body, body])
    # A later request as a marker: once it is delivered, the duplicates have been consumed.
    marker = unique("marker")
    await publish_all(stack, [{**body, "request_id": marker}])
    delivered = await all_settled(stack, [rid, marker])
    await all_settled(stack, [marker])
    assert delivered[rid] == 1
    assert pdfs(stack.out / "dups") == tags([rid, marker])

    async def ledger_delivered() -> bool:
        status = json.loads(stack.cli("status", rid, "--json", check=True).stdout)
        return bool(status["status"] == "delivered")

    assert await eventually(ledger_delivered, timeout=10)


async def test_poison_messages_are_dead_lettered_without_retries(fault_stack: Stack) -> None:
    stack = fault_stack
    nc = await stack.connect()
    js = nc.jetstream()
    marker = unique("poison")
    before = await dead_letter_count(nc)
    await js.publish("report.requested", b"\xff\xfe not json " + marker.encode())
    await js.publish("report.requested", json.dumps({"request_id": marker, "formats": []}).encode())
    await js.publish("data.ready", json.dumps({"request": {"template": "x"}}).encode())
    await dead_letters_beyond(nc, before + 2)
    await nc.close()

    async def letters() -> list[dict[str, Any]] | None:
        rows = json.loads(stack.cli("dlq", "ls", "--json", check=True).stdout)
        found = [
            r
            for r in rows
            if r["request_id"] == marker
            or marker in _shown(stack, r["id"])
            or r["subject"] == "data.ready"
        ]
        return found if len(found) >= 3 else None

    found = await eventually(letters, timeout=60)
    assert all(r["attempts"] == 1 and r["permanent"] for r in found)
    assert all(r["reason"].startswith("invalid payload") for r in found)


def _shown(stack: Stack, dead_letter_id: int) -> str:
    shown = stack.cli("dlq", "show", str(dead_letter_id), "--json", check=True)
    letter = json.loads(shown.stdout)["letter"]
    if letter["payload_encoding"] == "base64":
        return base64.b64decode(letter["payload"]).decode(errors="replace")
    return str(letter["payload"])
