"""`make bench` cluster workload: a node of a 3-node R3 cluster fails under a steady load.

Measures, for each fault, the stall (the kill to the next report delivered, from the stream's own
timestamps), the latency of the reports in flight across it, and where the seconds went: the
Raft elections of the groups the node led (the server's 4–9 s election timeout, not ours) and the
clients' reconnects. Runs twice in one go: with the settings Pressroom had before it was tuned for
clusters, and with today's defaults, so the difference is measured on the same machine.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from services.console.cluster import topology_streams
from shared.bus.names import DELIVERIES_BUCKET, LEDGER_BUCKET, OBJECT_BUCKET, STAGES, STREAM
from shared.settings import Settings
from tests.cluster import Cluster, Node, delivered_events
from tests.helpers import REPO, Stack, eventually

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())

# What Pressroom ran with before the cluster work: nats-py / FastStream timings as we had them.
UNTUNED = {
    "PRESSROOM_FAILOVER_PATIENCE": "0",
    "PRESSROOM_BUS_REQUEST_TIMEOUT": "5",
    "PRESSROOM_PULL_TIMEOUT": "2",
    "PRESSROOM_BUS_PING_INTERVAL": "120",
    "PRESSROOM_ACK_WAIT": "30",
}
CONFIGS: dict[str, dict[str, str]] = {"before tuning": UNTUNED, "tuned (defaults)": {}}
# kill: SIGKILL (a crash; the kernel closes its sockets). freeze: SIGSTOP (a hung machine:
# sockets stay open, nothing answers) until the pipeline delivers again, then SIGCONT.
# stop: SIGTERM (a rolling restart: nats-server hands its leaderships over, then exits).
FAULTS = [
    ("kill", "leader"),
    ("kill", "first"),
    ("kill", "leader"),
    ("freeze", "leader"),
    ("stop", "leader"),
]
FAULT_DEADLINE = 150.0  # seconds without a delivery before a fault is reported as "> deadline"


def log(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


@dataclass
class Load:
    """One request every `period` seconds, each retried (same id) until it is acknowledged.

    Each request is its own task, so the rate holds while a publish waits out an election:
    the reports in flight across a fault are the ones a steady stream of clients would send.
    """

    js: Any
    period: float
    published: dict[str, float] = field(default_factory=dict)  # request_id -> first attempt
    failed_attempts: int = 0
    running: bool = True
    count: int = 0

    async def publish(self, rid: str) -> None:
        body = {"request_id": rid, "template": "portfolio.html", "params": SAMPLE}
        data = json.dumps({**body, "formats": ["html"]}).encode()
        self.published[rid] = time.time()
        while True:
            try:
                await self.js.publish(
                    "report.requested", data, headers={"Nats-Msg-Id": f"{rid}:request"}, timeout=2
                )
                return
            except Exception:
                self.failed_attempts += 1
                await asyncio.sleep(0.1)

    async def run(self) -> None:
        tasks = []
        next_at = time.time()
        while self.running:
            tasks.append(asyncio.create_task(self.publish(f"load-{self.count:04d}")))
            self.count += 1
            next_at += self.period
            await asyncio.sleep(max(0.0, next_at - time.time()))
        await asyncio.gather(*tasks)


async def delivered(
    cluster: Cluster, *, until: Callable[[list[tuple[str, float]]], bool], timeout: float
) -> list[tuple[str, float]]:
    """Every report.delivered in the stream as (request_id, when it was stored by the stream's
    clock, which survives client failover), read again until `until` is satisfied."""
    nc = await cluster.connect()
    try:
        js = nc.jetstream(timeout=5)
        records: list[tuple[str, float]] = []

        async def read() -> bool:
            try:
                records[:] = await delivered_events(js)
            except Exception:  # the cluster is still electing, or the read stalled: ask again
                return False
            return until(records)

        await eventually(read, timeout=timeout, every=1.0)
        return records
    finally:
        await nc.close()


async def delivered_times(cluster: Cluster, rids: set[str]) -> dict[str, float]:
    """When each report was first delivered, once every one of `rids` is."""
    records = await delivered(
        cluster, until=lambda found: rids <= {rid for rid, _ in found}, timeout=300
    )
    first: dict[str, float] = {}
    for rid, stamp in records:
        first.setdefault(rid, stamp)
    return first


async def watch_elections(cluster: Cluster, dead: str, since: float) -> dict[str, float]:
    """Seconds after `since` at which each group the dead node led had another leader."""
    nc = await cluster.connect()
    js = nc.jetstream(timeout=0.5)
    path = (STREAM, f"KV_{LEDGER_BUCKET}", f"KV_{DELIVERIES_BUCKET}", f"OBJ_{OBJECT_BUCKET}")
    groups: dict[str, Any] = {f"stream {s}": (s, None) for s in path}
    groups.update({f"consumer {c}": (STREAM, c) for c in STAGES})
    elected: dict[str, float] = {}
    try:
        while len(elected) < len(groups) and time.time() - since < FAULT_DEADLINE:
            for label, (stream, consumer) in groups.items():
                if label in elected:
                    continue
                try:
                    info = await (
                        js.consumer_info(stream, consumer) if consumer else js.stream_info(stream)
                    )
                except Exception:
                    continue
                leader = info.cluster.leader if info.cluster else None
                if leader and leader != dead:
                    elected[label] = time.time() - since
            await asyncio.sleep(0.1)
        return elected
    finally:
        await nc.close()


def reconnects(stack: Stack, since: float) -> list[float]:
    """Seconds each worker was without a server after `since` (from its 'bus reconnected' line)."""
    found = []
    for path in (stack.root / "logs").glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"bus reconnected"' not in line:
                continue
            data = json.loads(line)
            stamp = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00")).timestamp()
            if stamp >= since and data.get("after_seconds") is not None:
                found.append(float(data["after_seconds"]))
    return found


def redone(stack: Stack, since: float, until: float) -> int:
    """Stage attempts handed back (nak'ed) during a fault: work that will be done again."""
    count = 0
    pattern = re.compile(r'"timestamp": "([^"]+)"')
    for path in (stack.root / "logs").glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"transient failure, will retry"' not in line and '"ledger unavailable' not in line:
                continue
            match = pattern.search(line)
            if match:
                stamp = datetime.fromisoformat(match.group(1).replace("Z", "+00:00")).timestamp()
                count += since <= stamp <= until
    return count


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(len(ordered) * q / 100 + 0.5) - 1))]


async def one_config(root: Path, label: str, env: dict[str, str]) -> dict[str, Any]:
    cluster = Cluster(root / "nats").start()
    stack = Stack(
        root / "stack",
        cluster=cluster,
        env_extra={
            "PRESSROOM_STREAM_REPLICAS": "3",
            "PRESSROOM_LOG_LEVEL": "INFO",
            "PRESSROOM_RENDER_CACHE": "false",
            # Production's retries and ack wait, not the tests' short ones.
            "PRESSROOM_ACK_WAIT": str(Settings().ack_wait),
            "PRESSROOM_RETRY_BACKOFF": Settings().retry_backoff,
            "PRESSROOM_MAX_ATTEMPTS": str(Settings().max_attempts),
            **env,
        },
        workers={"fetcher": 1, "renderer": 2, "distributor": 1},
    )
    await stack.astart()
    await cluster.wait_current(topology_streams().values())
    nc = await cluster.connect()
    js = nc.jetstream()
    try:
        # Calibrate the load to about a third of what this machine renders: latency, not queueing.
        warm = Load(js, period=0.0)
        await asyncio.gather(*(warm.publish(f"warm-{i}") for i in range(6)))
        times = await delivered_times(cluster, set(warm.published))
        per_report = (max(times.values()) - min(times.values())) / (len(times) - 1)
        load = Load(js, period=max(0.05, 3 * per_report))
        load.count = 100
        log(f"  {label}: one request every {load.period:.2f} s")
        task = asyncio.create_task(load.run())
        started = time.time()
        await asyncio.sleep(10)  # the no-fault reference window (load generator pacing)
        faults: list[dict[str, Any]] = []
        for kind, which in FAULTS:
            # Each fault starts from a pipeline that has caught up with the load, so no fault's
            # backlog is counted as the next one's latency.
            now = time.time()
            await delivered_times(cluster, {r for r, t in load.published.items() if t < now - 1})
            target: Node = (await cluster.leader(STREAM)) if which == "leader" else cluster.nodes[0]
            led = (await cluster.leader(STREAM)).name == target.name
            at = time.time()
            watch = asyncio.create_task(watch_elections(cluster, target.name, at))
            if kind == "freeze":
                cluster.freeze(target)
            else:
                cluster.kill(target, signal.SIGKILL if kind == "kill" else signal.SIGTERM)
            # The next delivery after the fault, from the stream (client-independent).
            first: float | None = None
            while first is None and time.time() < at + FAULT_DEADLINE:
                first = await delivered_times_quick(cluster, at)
                if first is None:
                    await asyncio.sleep(0.5)
            if kind == "freeze":
                cluster.thaw(target)
            else:
                cluster.start_node(target)
            elections = await watch
            await cluster.wait_current(topology_streams().values(), timeout=180)
            until = time.time()
            faults.append(
                {
                    "fault": f"{kind} {which}",
                    "node": target.name,
                    "led_stream": led,
                    "at": at,
                    "stall": (first - at) if first else None,
                    "elections": elections,
                    "reconnects": reconnects(stack, at),
                    "handed_back": redone(stack, at, until),
                }
            )
            log(f"  {label}: {kind} {which} ({target.name}) stall {faults[-1]['stall']}")
        load.running = False
        await task
        ended = time.time()
        times = await delivered_times(cluster, set(load.published))
        latency = {r: times[r] - t for r, t in load.published.items()}
        reference = [v for r, v in latency.items() if times[r] < faults[0]["at"]]
        for fault in faults:
            stall_end = fault["at"] + (fault["stall"] or FAULT_DEADLINE)
            in_flight = [
                v
                for r, v in latency.items()
                if load.published[r] <= stall_end and times[r] >= fault["at"]
            ]
            fault["in_flight"] = {
                "reports": len(in_flight),
                "p50": pct(in_flight, 50) if in_flight else None,
                "p99": pct(in_flight, 99) if in_flight else None,
            }
        counts = await delivered_counts(cluster)
        return {
            "config": env,
            "period": load.period,
            "reports": len(load.published),
            "seconds": ended - started,
            "duplicates": sum(1 for r in load.published if counts.get(r, 0) > 1),
            "publish_retries": load.failed_attempts,
            "reference": {"p50": pct(reference, 50), "p99": pct(reference, 99)},
            "faults": faults,
        }
    finally:
        await nc.close()
        stack.stop()


async def delivered_times_quick(cluster: Cluster, after: float) -> float | None:
    """The stream timestamp of the first report.delivered stored after `after`, if any yet."""
    nc = await cluster.connect()
    try:
        js = nc.jetstream(timeout=1)
        try:
            sub = await js.subscribe(
                "report.delivered",
                ordered_consumer=True,
                config=_by_start_time(after),
            )
        except Exception:
            return None
        try:
            msg = await sub.next_msg(timeout=0.5)
            return float(msg.metadata.timestamp.timestamp())
        except Exception:
            return None
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


def _by_start_time(after: float) -> Any:
    from datetime import UTC

    from nats.js import api

    start = datetime.fromtimestamp(after, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_TIME, opt_start_time=start)


async def delivered_counts(cluster: Cluster) -> dict[str, int]:
    """How many times each report was delivered."""
    records = await delivered(cluster, until=lambda _: True, timeout=120)
    return dict(Counter(rid for rid, _ in records))


async def cluster_failover(root: Path) -> dict[str, Any]:
    runs = {}
    for label, env in CONFIGS.items():
        log(f"cluster failover, {label} …")
        runs[label] = await one_config(root / label.split()[0], label, env)
    return {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": runs}


def _s(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else f"> {FAULT_DEADLINE:.0f} s"


def markdown(result: dict[str, Any]) -> list[str]:
    lines = [
        "## Cluster failover (3 nodes, R3, a node fails under load)",
        "",
        "A 3-node cluster on loopback (`sync_interval: always`), every stream and bucket R3, "
        "the services given the URL list. The load is the bundled report as HTML (bus, ledger, "
        "object store and delivery all take part; a PDF render would only add its own seconds), "
        "published at about a third of what the pipeline keeps up with. *Stall*: from the fault "
        "to the next `report.delivered` stored in the stream. *In flight*: reports published "
        "before the stall ended and delivered after the fault. *Elections*: when the slowest "
        "Raft group the node led had a new leader (nats-server's 4–9 s election timeout after a "
        "crash: not configurable, the floor of every stall; the groups a report passes through). "
        "Each fault starts once the pipeline has caught up with the load. *Handed back*: stage "
        "attempts nak'ed (their work is done again). Measured {when}, one run, on a machine "
        "shared with other work: elections are random, so each row is one sample.".format(
            when=result["when"]
        ),
        "",
        "| settings | fault | stall | elections (slowest) | reconnect (max) | in flight: n, p50, "
        "p99 | handed back |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, run in result["runs"].items():
        for fault in run["faults"]:
            elections = fault["elections"]
            slowest = max(elections.values()) if elections else None
            rec = max(fault["reconnects"]) if fault["reconnects"] else None
            flight = fault["in_flight"]
            lines.append(
                f"| {label} | {fault['fault']} ({fault['node']}"
                f"{', led PRESSROOM' if fault['led_stream'] else ''}) | "
                f"**{_s(fault['stall'])}** | {_s(slowest) if elections else '—'} | "
                f"{f'{rec:.2f} s' if rec is not None else '—'} | "
                f"{flight['reports']}, {_s(flight['p50'])}, {_s(flight['p99'])} | "
                f"{fault['handed_back']} |"
            )
    lines.append("")
    for label, run in result["runs"].items():
        ref = run["reference"]
        lines.append(
            f"- {label}: {run['reports']} reports, one every {run['period']:.2f} s; without a "
            f"fault p50 {ref['p50']:.2f} s, p99 {ref['p99']:.2f} s; duplicates delivered: "
            f"{run['duplicates']}; client publish retries: {run['publish_retries']}."
        )
    lines.append("")
    return lines
