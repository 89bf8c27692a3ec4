"""Issue 33's figures: a burst against the same number of single requests, and the latency of
an interactive request during a bulk flood against an idle stack.

`BENCH_ONLY=burst make bench` (or `python -m bench.burst`): a real stack on loopback with 2
renderer processes, a one-page template, file deliveries. Each figure is one run, written to
docs/benchmarks-burst.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.helpers import REPO, Outcomes, Stack, unique

BURST_N = int(os.environ.get("BENCH_BURST", "2000"))
FLOOD_N = int(os.environ.get("BENCH_FLOOD", "2000"))
PROBES = int(os.environ.get("BENCH_PROBES", "20"))
CARD = """<!doctype html><html><body>
<h1>Statement {{ item.id }}</h1><p>Owner {{ item.owner }}, balance {{ item.balance }}</p>
</body></html>
"""
SINGLE = """<!doctype html><html><body>
<h1>Statement {{ id }}</h1><p>Owner {{ owner }}, balance {{ balance }}</p></body></html>
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def items(tag: str, n: int) -> list[dict[str, Any]]:
    return [{"id": f"{tag}{i:05d}", "owner": f"o{i}", "balance": i} for i in range(n)]


async def bench_stack(root: Path) -> Stack:
    stack = Stack(
        root,
        env_extra={
            "PRESSROOM_LOG_LEVEL": "WARNING",
            "PRESSROOM_RENDER_CACHE": "false",
            "PRESSROOM_PRIORITY_CAP": "interactive",
        },
        workers={"fetcher": 1, "renderer": 2, "distributor": 1},
    )
    await stack.astart()
    (stack.templates / "card.html").write_text(CARD)
    (stack.templates / "single.html").write_text(SINGLE)
    return stack


async def burst_vs_singles(stack: Stack, n: int) -> dict[str, Any]:
    nc = await stack.connect()
    outcomes = await Outcomes().start(nc)
    js = nc.jetstream()
    tag = unique("bb")[-6:]
    rid = unique("burst")
    body = {
        "request_id": rid,
        "template": "card.html",
        "params": {"accounts": items(tag, n)},
        "burst": {"over": "accounts", "key": "id", "deliver": [{"channel": "file", "path": rid}]},
    }
    started = time.perf_counter()
    await js.publish("report.requested", json.dumps(body).encode())
    await outcomes.delivered_event(rid, timeout=3600)
    burst_s = time.perf_counter() - started
    log(f"burst of {n}: {burst_s:.1f}s")

    rids = [unique("single") for _ in range(n)]
    started = time.perf_counter()
    acks = []
    for i, single in enumerate(rids):
        one = {
            "request_id": single,
            "template": "single.html",
            "params": {"id": f"s{i}", "owner": f"o{i}", "balance": i},
            "priority": "bulk",  # as a burst's children run
            "deliver": [{"channel": "file", "path": "singles"}],
        }
        acks.append(await js.publish_async("report.requested", json.dumps(one).encode()))
    await asyncio.gather(*acks)
    while not all(r in outcomes.delivered or r in outcomes.failed for r in rids):
        await asyncio.sleep(0.2)
    singles_s = time.perf_counter() - started
    log(f"{n} single requests: {singles_s:.1f}s")
    await nc.close()
    return {
        "reports": n,
        "renderers": 2,
        "burst_seconds": round(burst_s, 1),
        "burst_reports_per_s": round(n / burst_s, 1),
        "singles_seconds": round(singles_s, 1),
        "singles_reports_per_s": round(n / singles_s, 1),
    }


def pcts(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000), "p95_ms": round(p95 * 1000)}


async def probe(js: Any, outcomes: Outcomes, count: int) -> list[float]:
    """`count` interactive requests one after another: publish to delivered, each."""
    seconds = []
    for _ in range(count):
        rid = unique("probe")
        body = {
            "request_id": rid,
            "template": "single.html",
            "params": {"id": rid, "owner": "me", "balance": 1},
            "priority": "interactive",
            "deliver": [{"channel": "file", "path": "probes"}],
        }
        started = time.perf_counter()
        await js.publish("lane.interactive.report.requested", json.dumps(body).encode())
        await outcomes.delivered_event(rid, timeout=600)
        seconds.append(time.perf_counter() - started)
    return seconds


async def interactive_latency(stack: Stack, flood: int, probes: int) -> dict[str, Any]:
    nc = await stack.connect()
    outcomes = await Outcomes().start(nc)
    js = nc.jetstream()
    idle = await probe(js, outcomes, probes)
    log(f"idle: {pcts(idle)}")
    rids = [unique("flood") for _ in range(flood)]
    acks = []
    for i, rid in enumerate(rids):
        body = {
            "request_id": rid,
            "template": "single.html",
            "params": {"id": f"f{i}", "owner": "flood", "balance": i},
            "priority": "bulk",
            "deliver": [{"channel": "file", "path": "flood"}],
        }
        acks.append(await js.publish_async("report.requested", json.dumps(body).encode()))
    await asyncio.gather(*acks)
    busy = await probe(js, outcomes, probes)
    left = sum(1 for r in rids if r not in outcomes.delivered)
    log(f"during the flood: {pcts(busy)} ({left} of the flood still queued after the probes)")
    while not all(r in outcomes.delivered or r in outcomes.failed for r in rids):
        await asyncio.sleep(0.5)
    await nc.close()
    return {
        "flood": flood,
        "probes": probes,
        "idle": pcts(idle),
        "during_flood": pcts(busy),
        "flood_left_after_probes": left,
    }


async def main() -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="pressroom-bench-burst-"))
    stack = await bench_stack(root)
    try:
        result = {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "cpus": os.cpu_count(),
            "load_before": os.getloadavg()[0],
            "burst": await burst_vs_singles(stack, BURST_N),
            "interactive": await interactive_latency(stack, FLOOD_N, PROBES),
        }
    finally:
        stack.stop()
    text = json.dumps(result, indent=2)
    (REPO / "docs" / "benchmarks-burst.json").write_text(text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    asyncio.run(main())
