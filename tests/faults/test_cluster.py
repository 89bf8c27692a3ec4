"""Past one machine: a 3-node NATS cluster with R3 streams loses a node, and nothing else.

Three real nats-servers on loopback (own stores, routed), every stream and bucket R3, and the
workers and clients given the comma-separated URL list. Reports are in flight while a node is
SIGKILLed, stopped or restarted; each time every report is delivered exactly once, every
publish that got a PubAck ends delivered, the ledger agrees and nothing is dead-lettered.

Reports are rendered as HTML: the bus, ledger, object store and file delivery all take part,
and a PDF render would only make the suite slower, not the failover different.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.console.cluster import cluster_components, topology_streams
from shared.adapters.ledger import KvLedger
from shared.bus.names import DLQ_STREAM, LEDGER_BUCKET, STAGES, STREAM
from shared.settings import Settings
from tests.cluster import Cluster, delivered_events
from tests.helpers import REPO, Stack, delivered_tags, eventually, tags, unique

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
STREAMS = list(topology_streams().values())
REPORTS = 30


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("cluster")
    cluster = Cluster(root / "nats").start()
    stack = Stack(
        root / "stack",
        cluster=cluster,
        env_extra={
            "PRESSROOM_STREAM_REPLICAS": "3",
            "PRESSROOM_MAX_ATTEMPTS": "6",
            "PRESSROOM_RETRY_BACKOFF": "0.5,1,2",
        },
        workers={"fetcher": 1, "renderer": 2, "distributor": 1},
    )
    try:
        stack.start()
        asyncio.run(cluster.wait_current(STREAMS))
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def stack(cluster_stack: Stack) -> Iterator[Stack]:
    """The shared stack, made whole again after each test (every node up and current)."""
    yield cluster_stack
    cluster = cluster_stack.cluster
    assert cluster is not None
    for node in cluster.nodes:
        if node.proc is not None and node.proc.poll() is None:
            node.proc.send_signal(signal.SIGCONT)
        if not node.running:
            cluster.start_node(node)
    asyncio.run(cluster.wait_current(STREAMS))


def the_cluster(stack: Stack) -> Cluster:
    assert stack.cluster is not None
    return stack.cluster


class Requests:
    """Publishes report requests like a careful client: retried, same id, until a PubAck."""

    def __init__(self, stack: Stack, folder: str) -> None:
        self.stack = stack
        self.folder = folder
        self.acked: set[str] = set()
        self.failed_attempts = 0

    def body(self, rid: str) -> bytes:
        return json.dumps(
            {
                "request_id": rid,
                "template": "portfolio.html",
                "params": SAMPLE,
                "formats": ["html"],
                "deliver": [{"channel": "file", "path": self.folder}],
            }
        ).encode()

    def file(self, rid: str) -> str:
        """The request as a file, for `pressroom request FILE`."""
        path = self.stack.root / f"{rid}.json"
        path.write_bytes(self.body(rid))
        return str(path)

    async def publish(self, rids: list[str]) -> None:
        nc = await self.stack.connect()
        js = nc.jetstream()

        async def one(rid: str) -> None:
            async def acked() -> bool:
                try:
                    await js.publish(
                        "report.requested",
                        self.body(rid),
                        headers={"Nats-Msg-Id": f"{rid}:request"},
                        timeout=2,
                    )
                except Exception:  # no stream leader yet: the same id again, later
                    self.failed_attempts += 1
                    return False
                self.acked.add(rid)
                return True

            await eventually(acked, timeout=90, every=0.2)

        try:
            await asyncio.gather(*(one(rid) for rid in rids))
        finally:
            await nc.close()


async def delivered(stack: Stack) -> Counter[str]:
    """report.delivered events by request_id, read back from the (replicated) stream."""
    nc = await stack.connect()
    try:
        return Counter(rid for rid, _ in await delivered_events(nc.jetstream(timeout=2)))
    finally:
        await nc.close()


async def all_delivered(stack: Stack, rids: list[str], timeout: float = 180) -> Counter[str]:
    seen: Counter[str] = Counter()
    errors: list[str] = []

    async def probe() -> Counter[str] | None:
        nonlocal seen
        try:
            seen = await delivered(stack)
        except Exception as error:  # a stream leader being elected: ask again
            errors.append(repr(error))
            return None
        return seen if all(seen[r] for r in rids) else None

    try:
        return await eventually(probe, timeout=timeout, every=0.5)
    except AssertionError:
        missing = [r for r in rids if not seen[r]]
        diagnosis = await where_they_are(stack, missing)
        raise AssertionError(f"{diagnosis}\nlast read errors: {errors[-3:]}") from None


async def where_they_are(stack: Stack, missing: list[str]) -> str:
    """What a failed wait shows: the reports not delivered, where the ledger has them, what
    each stage's consumer holds, and what the workers logged about them."""
    lines = [f"{len(missing)} not delivered: {missing[:10]}"]
    for name, procs in stack.procs.items():
        lines.append(f"{name} workers' exit codes (None: running): {[p.poll() for p in procs]}")
    try:
        nc = await stack.connect()
        try:
            js = nc.jetstream(timeout=5)
            ledger = KvLedger(await js.key_value(LEDGER_BUCKET))
            for rid in missing[:5]:
                entry = await ledger.get(rid)
                lines.append(f"ledger {rid}: {entry.model_dump_json() if entry else None}")
            for spec in STAGES.values():
                info = await js.consumer_info(STREAM, spec.durable)
                lines.append(
                    f"consumer {spec.durable}: pending={info.num_pending} "
                    f"ack_pending={info.num_ack_pending} redelivered={info.num_redelivered} "
                    f"waiting={info.num_waiting} delivered={info.delivered} "
                    f"ack_floor={info.ack_floor} cluster={info.cluster}"
                )
        finally:
            await nc.close()
    except Exception as error:  # the diagnosis must not hide the failure
        lines.append(f"(bus not readable: {error!r})")
    for log in sorted((stack.root / "logs").glob("*.log")):
        text = log.read_text(errors="replace").splitlines()
        about = [line for line in text if any(r in line for r in missing[:5])]
        lines.append(f"== {log.name}: {len(text)} lines")
        lines.extend(about[-15:] + text[-15:])
    return "\n".join(lines)


async def first_delivery(stack: Stack, rids: list[str]) -> None:
    async def probe() -> bool:
        seen = await delivered(stack)
        return any(seen[r] for r in rids)

    await eventually(probe, timeout=60, every=0.05)


async def assert_exactly_once(
    stack: Stack, requests: Requests, rids: list[str], *, unsure: frozenset[str] = frozenset()
) -> None:
    """Each of `rids` delivered once; each of `unsure` (a publish that got no answer, which the
    cluster may still have stored) at most once."""
    seen = await all_delivered(stack, rids)
    assert requests.acked == set(rids), "a request never got its PubAck"
    assert {r: seen[r] for r in rids} == dict.fromkeys(rids, 1), stack.logs()
    files = delivered_tags(stack.out / requests.folder, "html")
    assert sorted(set(files) - set(tags(unsure))) == tags(rids) and len(files) == len(set(files))
    assert all(seen[r] <= 1 for r in unsure), seen
    nc = await stack.connect()
    try:
        js = nc.jetstream(timeout=5)
        ledger = KvLedger(await js.key_value(LEDGER_BUCKET))
        done = dict.fromkeys(("fetcher", "renderer", "distributor"), "done")

        async def ledger_agrees() -> list[str] | None:
            # The ledger records each stage just after its event: give it that moment.
            behind = []
            for rid in rids:
                entry = await ledger.get(rid)
                states = {s: r.state for s, r in entry.stages.items()} if entry else {}
                if entry is None or entry.status != "delivered" or states != done:
                    behind.append(f"{rid}: {entry.status if entry else None} {states}")
            return None if behind else ["agrees"]

        await eventually(ledger_agrees, timeout=30, every=0.2)
        dead = await js.stream_info(DLQ_STREAM)
        assert dead.state.messages == 0, stack.cli("dlq", "ls").stdout
    finally:
        await nc.close()


async def cluster_rows(stack: Stack) -> dict[str, Any]:
    """What `pressroom health` shows of the cluster (the same function, without a process)."""
    settings = Settings(nats_url=stack.url, nats_credentials_dir=stack.auth_dir, stream_replicas=3)
    return await cluster_components(settings)


async def test_thirty_reports_survive_a_sigkill_of_the_stream_leader(stack: Stack) -> None:
    cluster = the_cluster(stack)
    rids = [unique("leader") for _ in range(REPORTS)]
    requests = Requests(stack, "leader-kill")
    await requests.publish(rids[: REPORTS // 2])
    await first_delivery(stack, rids)

    leader = await cluster.leader(STREAM)
    cluster.kill(leader)
    # Published while the stream has no leader: each lands once the election is over.
    await requests.publish(rids[REPORTS // 2 :])

    # Once every group has a new leader, `health` says degraded (not healthy, not down) and
    # names the missing node and the replica it held.
    async def degraded() -> dict[str, Any] | None:
        rows = await cluster_rows(stack)
        seen.append({label: row["status"] for label, row in rows.items()})
        statuses = {row["status"] for row in rows.values()}
        ours = (rows["nats servers"]["status"], rows["stream PRESSROOM"]["status"])
        return rows if statuses <= {"healthy", "degraded"} and ours == ("degraded",) * 2 else None

    seen: list[dict[str, str]] = []

    try:
        rows = await eventually(degraded, timeout=120, every=0.5)
    except AssertionError:
        raise AssertionError(f"health never said degraded: {seen[-3:]}") from None
    assert rows["nats servers"]["status"] == "degraded"
    assert rows["stream PRESSROOM"]["status"] == "degraded"
    assert f"{leader.url} does not answer" in rows["nats servers"]["detail"]
    [away] = [f for f in rows["stream PRESSROOM"]["followers"] if not f["current"]]
    assert away["name"] == leader.name and away["name"] in rows["stream PRESSROOM"]["detail"]
    assert rows["stream PRESSROOM"]["leader"] != leader.name

    await assert_exactly_once(stack, requests, rids)

    cluster.start_node(leader)
    await cluster.wait_current(STREAMS)
    result = stack.cli("health", "--json", timeout=90)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["status"] == "healthy", report
    assert "3/3 answer" in report["components"]["nats servers"]["detail"]
    assert all(report["components"][label]["leader"] for label in topology_streams())


async def test_thirty_reports_survive_a_sigkill_of_the_first_listed_node(stack: Stack) -> None:
    cluster = the_cluster(stack)
    first = cluster.nodes[0]
    assert stack.env["PRESSROOM_NATS_URL"].startswith(first.url + ",")
    rids = [unique("first") for _ in range(REPORTS)]
    requests = Requests(stack, "first-kill")
    await requests.publish(rids[: REPORTS // 2])
    await first_delivery(stack, rids)

    cluster.kill(first)
    await requests.publish(rids[REPORTS // 2 :])
    # With the first-listed server gone, a worker still starts and the CLI still works.
    late = stack.start_worker("fetcher")
    readyz = stack.health[f"fetcher-{len(stack.procs['fetcher'])}"] + "/readyz"

    async def late_worker_ready() -> bool:
        async with httpx.AsyncClient(timeout=5) as client:
            try:
                response = await client.get(readyz)
            except httpx.HTTPError:
                return False
        return response.status_code == 200 and response.json()["status"] == "healthy"

    await eventually(late_worker_ready, timeout=90, every=0.5)
    rid = unique("cli")
    result = stack.cli("request", requests.file(rid), "--wait", timeout=120)
    assert result.returncode == 0 and f"delivered {rid}" in result.stdout, result.stderr
    requests.acked.add(rid)
    await assert_exactly_once(stack, requests, [*rids, rid])

    # Its disk is lost too: a replacement under the same name is rebuilt from the other two.
    shutil.rmtree(first.root / "jetstream")
    cluster.start_node(first)
    await cluster.wait_current(STREAMS)

    async def all_healthy() -> dict[str, str] | None:
        rows = await cluster_rows(stack)
        statuses = {label: rows[label]["status"] for label in topology_streams()}
        return statuses if set(statuses.values()) == {"healthy"} else None

    await eventually(all_healthy, timeout=120, every=0.5)
    late.send_signal(signal.SIGTERM)
    late.wait(timeout=30)


async def test_a_rolling_restart_of_every_node_loses_nothing(stack: Stack) -> None:
    cluster = the_cluster(stack)
    rids = [unique("rolling") for _ in range(REPORTS)]
    requests = Requests(stack, "rolling")
    batches = [rids[i :: len(cluster.nodes)] for i in range(len(cluster.nodes))]
    for node, batch in zip(cluster.nodes, batches, strict=True):
        await requests.publish(batch)
        cluster.kill(node, signal.SIGTERM)  # a clean stop: it hands its leaderships on
        await cluster.leader(STREAM, all_current=False)
        cluster.start_node(node)
        await cluster.wait_current(STREAMS)  # caught up before the next one goes
    await assert_exactly_once(stack, requests, rids)


async def test_without_a_majority_publishing_fails_loudly_and_work_resumes_after(
    stack: Stack,
) -> None:
    cluster = the_cluster(stack)
    rids = [unique("quorum") for _ in range(10)]
    requests = Requests(stack, "quorum")
    await requests.publish(rids)
    survivor, *gone = cluster.nodes
    for node in gone:
        cluster.kill(node)

    # A request now is refused in one line, not accepted and silently lost.
    refused = unique("refused")
    result = stack.cli("request", requests.file(refused))
    assert result.returncode == 1, result.stdout
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "majority" in line and "Traceback" not in line
    # A client publishing directly gets an error, never a PubAck. (Its message may still be
    # stored once the majority is back: a careful client sends it again with the same id.)
    unsure = unique("unsure")
    careful = Requests(stack, "quorum-unsure")
    nc = await stack.connect()
    try:
        with pytest.raises(Exception):  # noqa: B017 - any error will do, but there must be one
            await nc.jetstream().publish(
                "report.requested",
                careful.body(unsure),
                headers={"Nats-Msg-Id": f"{unsure}:request"},
                timeout=2,
            )
    finally:
        await nc.close()

    async def no_majority() -> dict[str, Any] | None:
        rows = await cluster_rows(stack)
        return rows if rows["stream PRESSROOM"]["status"] == "unhealthy" else None

    rows = await eventually(no_majority, timeout=60, every=0.5)
    assert rows["nats servers"]["detail"].startswith("1/3 answer")

    # One node back is a majority again: the pipeline carries on by itself...
    cluster.start_node(gone[0])
    # The refused request was not acknowledged, but its publish may have reached the leader
    # before it lost its majority: then it is stored and delivered once the majority is back.
    await assert_exactly_once(stack, requests, rids, unsure=frozenset({refused}))
    assert survivor.running

    # ... and what was refused, sent again with the same id, is delivered once. (Until the
    # cluster's own leader is back too, the CLI may still refuse: then it is sent again.)
    def resent() -> subprocess.CompletedProcess[str] | None:
        result = stack.cli("request", requests.file(refused), "--wait", timeout=120)
        if result.returncode and (
            "does not answer" in result.stderr or "majority" in result.stderr
        ):
            return None
        return result

    result = await eventually(lambda: asyncio.to_thread(resent), timeout=90, every=1)
    assert result.returncode == 0, result.stderr
    requests.acked.add(refused)
    await assert_exactly_once(stack, requests, [*rids, refused])
    await careful.publish([unsure])
    await assert_exactly_once(stack, careful, [unsure])
