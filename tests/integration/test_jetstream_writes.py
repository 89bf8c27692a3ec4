"""JetStream writes per report, counted from the server's sequence numbers (bench.jswrites).

Before the ledger merged each later stage's claim into its finish a report cost 18 writes
(4 events, 6 ledger updates, 2 delivery records, 1 render-cache entry, 2 object-store records,
3 acks); now the renderer and the distributor write the ledger once each when their work takes
under CLAIM_AFTER seconds: 16. The studio's recording of the payload (on by default,
PRESSROOM_STUDIO_RECORD; at most PRESSROOM_STUDIO_MAX_PAYLOADS per template a minute) adds one
sealed object: 2 object-store records, 18 in all.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from bench.jswrites import count_writes
from shared.adapters.ledger import KvLedger
from shared.bus.names import LEDGER_BUCKET
from tests.helpers import Outcomes, Stack, eventually, unique

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def quiet_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """A stack of its own: nothing else publishes while writes are counted."""
    stack = Stack(
        tmp_path_factory.mktemp("writes"),
        env_extra={
            "PRESSROOM_WEBHOOK_ALLOW": "127.0.0.1",
            "PRESSROOM_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"w" * 32).decode(),
        },
    )
    await stack.astart()
    (stack.templates / "tiny.html").write_text("<p>{{ n }}</p>")
    try:
        yield stack
    finally:
        stack.stop()


async def test_a_report_costs_four_ledger_writes_and_eighteen_with_its_recording(
    quiet_stack: Stack,
) -> None:
    nc = await quiet_stack.connect()
    outcomes = await Outcomes().start(nc)
    kv = await nc.jetstream().key_value(LEDGER_BUCKET)
    ledger = KvLedger(kv)
    updates: list[Any] = []
    watcher = await kv.watchall(include_history=False)

    async def collect() -> None:
        async for update in watcher:
            if update is not None:
                updates.append(update)

    collecting = asyncio.create_task(collect())
    counted: list[str] = []

    async def report(n: int) -> None:
        rid = unique("writes")
        body = {
            "request_id": rid,
            "template": "tiny",
            "formats": ["html"],  # a render of milliseconds: inside CLAIM_AFTER unless starved
            "params": {"n": f"{n}-{rid}"},
            "deliver": [{"channel": "file", "path": "writes"}],
        }
        await nc.jetstream().publish("report.requested", json.dumps(body).encode())
        await outcomes.delivered_event(rid)

        async def settled() -> bool:  # the ledger's last write follows the delivered event
            entry = await ledger.get(rid)
            return (
                entry is not None
                and "distributor" in entry.stages
                and (entry.stages["distributor"].finished_at is not None)
            )

        await eventually(settled, timeout=60)
        counted.append(rid)

    await report(-1)  # consumers and buckets warm
    counted.clear()
    writes = await count_writes(nc, report, reports=3)
    collecting.cancel()
    await nc.drain()
    shown = writes.table()
    # A busy machine may add claims of the renderer or the distributor, written on their own
    # (work past CLAIM_AFTER, or a redelivery): counted from what the ledger saw, not guessed.
    early = 0
    for update in updates:
        if update.key in counted and update.value:
            stages = json.loads(update.value).get("stages") or {}
            later = [stages.get(s) or {} for s in ("renderer", "distributor")]
            early += sum(1 for record in later if record.get("state") == "running")
    redelivered = (
        round(sum(v for k, v in writes.by_kind.items() if k.startswith("acks")) * writes.reports)
        - 3 * writes.reports
    )
    assert writes.by_kind["PRESSROOM"] == 4, shown  # requested, ready, rendered, delivered
    assert writes.by_kind["KV_pressroom_deliveries"] == 2, shown  # intent, outcome
    assert writes.by_kind["OBJ_pressroom_artefacts"] == 2, shown  # the HTML: chunk, meta record
    assert writes.by_kind["OBJ_pressroom_studio"] == 2, shown  # its recording, in its own bucket
    # fetcher claim + finish, renderer, distributor; plus the claims seen written on their own
    assert round(writes.ledger() * writes.reports) == 4 * writes.reports + early, (shown, early)
    assert round(writes.total * writes.reports) == 18 * writes.reports + early + redelivered, shown


class HeldHook(BaseHTTPRequestHandler):
    """A webhook receiver that answers only once the test lets it."""

    release = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.release.wait(120)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def held_hook() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), HeldHook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        HeldHook.release.set()
        server.shutdown()


async def test_a_long_piece_of_work_still_shows_who_is_on_it(
    quiet_stack: Stack, held_hook: str
) -> None:
    """The claim a quick stage folds into its finish is written, with the worker, for work
    that goes on: here a delivery to a webhook that has not answered yet."""
    nc = await quiet_stack.connect()
    outcomes = await Outcomes().start(nc)
    rid = unique("held")
    body: dict[str, Any] = {
        "request_id": rid,
        "template": "tiny",
        "formats": ["html"],
        "params": {"n": rid},
        "deliver": [{"channel": "webhook", "url": held_hook}],
    }
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    ledger = KvLedger(await nc.jetstream().key_value(LEDGER_BUCKET))

    async def distributor_on_it() -> str | None:
        assert rid not in outcomes.failed, outcomes.failed[rid]
        entry = await ledger.get(rid)
        record = entry.stages.get("distributor") if entry else None
        return record.worker if record and record.state == "running" else None

    worker = await eventually(distributor_on_it, timeout=60, every=0.05)
    pids = [p.pid for p in quiet_stack.procs["distributor"]]
    assert int(worker.rsplit(":", 1)[1]) in pids
    shown = quiet_stack.cli("status", rid, check=True).stdout
    assert "distributor" in shown and "running" in shown, shown
    HeldHook.release.set()
    await outcomes.delivered_event(rid)
    await nc.drain()
