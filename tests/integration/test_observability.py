"""Scheduler replicas, SLOs from real runs: knowing what happened and how fast."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.bus.names import RENDERER, SCHEDULES_BUCKET, STAGES, STREAM
from shared.events import DATA_READY, lane_subject
from tests.helpers import REPO, Outcomes, Stack, delivered_file, eventually

pytestmark = pytest.mark.integration
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
PENDING_BULK = 'pressroom_consumer_pending{consumer="renderer-bulk",stage="renderer"} 10.0'


@pytest.mark.timeout(240)
async def test_two_scheduler_replicas_deliver_one_report_per_fire(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("scheduled")
    config = root / "schedules.yaml"
    config.write_text(
        json.dumps(
            {
                "schedules": [
                    {
                        "name": "every-minute",
                        "cron": "* * * * *",
                        "timezone": "Europe/Berlin",
                        "request": {
                            "template": "daily.html",
                            "params": SAMPLE,
                            "deliver": [{"channel": "file", "path": "scheduled"}],
                        },
                    }
                ]
            }
        )
    )
    # Every service shares the scheduler's config: the fetcher verifies scheduled requests.
    stack = await Stack(root, env_extra={"PRESSROOM_CONFIG": str(config)}).astart()
    nc = await stack.connect()
    outcomes = await Outcomes().start(nc)
    # The schedule's clock says it was last looked at just before the last minute's fire, as
    # a stack whose schedulers were down across it leaves it: both replicas come up owing
    # that fire (caught up within the grace), without waiting for the next minute.
    now = datetime.now(UTC)
    owed = now.replace(second=0, microsecond=0)
    kv = await nc.jetstream().key_value(SCHEDULES_BUCKET)
    await kv.put("every-minute", (owed - timedelta(seconds=1)).isoformat().encode())
    replicas = [stack.start_worker("scheduler") for _ in range(2)]
    rid = f"every-minute-{owed:%Y%m%dT%H%MZ}"
    try:
        await outcomes.delivered_event(rid, timeout=150)
    finally:
        for proc in replicas:
            proc.send_signal(signal.SIGTERM)
        for proc in replicas:
            proc.wait(timeout=20)

    try:
        js = nc.jetstream()
        sub = await js.subscribe("report.requested", ordered_consumer=True)
        copies: dict[str, int] = {}
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except Exception:
                break
            fired = json.loads(msg.data).get("request_id", "")
            copies[fired] = copies.get(fired, 0) + 1
        await sub.unsubscribe()
        # Each fire once (the second replica's publish was de-duplicated): the owed one, and
        # any minute that passed while the replicas ran.
        assert rid in copies and set(copies.values()) == {1}, copies
        for fired in copies:
            await outcomes.delivered_event(fired)
        assert {r: len(d) for r, d in outcomes.delivered.items()} == dict.fromkeys(copies, 1)
        assert sorted(p.name for p in (stack.out / "scheduled").glob("*.pdf")) == sorted(
            delivered_file(stack.out / "scheduled", fired).name for fired in copies
        )
        status = json.loads(stack.cli("status", rid, "--json", check=True).stdout)
        assert status["requested_by"] == "scheduler:every-minute"
    finally:
        await nc.close()
        stack.stop()


async def test_slo_and_stats_show_figures_from_real_runs(
    stack: Stack, outcomes: Outcomes, nc: Any
) -> None:
    for n in range(3):
        body = {"request_id": f"slo-{n}-{id(stack)}", "template": "weekly.html", "params": SAMPLE}
        await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    for n in range(3):
        await outcomes.delivered_event(f"slo-{n}-{id(stack)}")

    result = stack.cli("slo", "--json")
    rows = {r["sli"]: r for r in json.loads(result.stdout)["objectives"]}
    assert rows["Report generation time (p95)"]["samples"] >= 3
    assert rows["Report generation time (p95)"]["met"] is True
    assert rows["PDF rendering success rate"]["samples"] >= 3
    assert rows["Report file size (p95)"]["met"] is True
    assert rows["Template validation success"]["samples"] >= 6

    data = json.loads(stack.cli("stats", "--json", check=True).stdout)
    assert data["delivered"] >= 3 and data["templates"]["weekly.html"] >= 3
    assert data["stage_seconds"]["renderer"]["p50"] > 0
    human = stack.cli("slo")
    assert "Report generation success rate" in human.stdout


async def test_workers_answer_liveness_and_readiness(stack: Stack) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        for name in ("fetcher-1", "renderer-1", "distributor-1"):
            live = await client.get(stack.health[name] + "/livez")
            assert live.status_code == 200 and live.json()["status"] == "healthy"
            ready = (await client.get(stack.health[name] + "/readyz")).json()
            assert ready["status"] == "healthy", ready
            assert set(ready["checks"]) == {"bus", "store", "consumer", "config"}
            assert ready["service"] == f"pressroom-{name[:-2]}"


def test_pressroom_health_shows_the_whole_stack(stack: Stack) -> None:
    urls = [
        a
        for name in ("fetcher-1", "renderer-1", "distributor-1")
        for a in ("--url", stack.health[name])
    ]
    stack.out.mkdir(exist_ok=True)  # as the first file delivery makes it
    result = stack.cli("health", "--json", *urls)
    report = json.loads(result.stdout)
    assert result.returncode == 0, report
    assert report["components"]["nats"]["status"] == "healthy"
    for stage in ("fetcher", "renderer", "distributor"):
        assert report["components"][f"consumer {stage}"]["status"] == "healthy"
    assert report["components"][f"worker {stack.health['renderer-1']}"]["status"] == "healthy"
    assert report["components"]["artefact store"]["status"] == "healthy"
    # the legacy `df` check of the reports folder
    out = report["components"]["storage out"]
    assert out["detail"].startswith(f"{stack.out}: ") and "% used" in out["detail"], out

    down = stack.cli("health", "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "unhealthy" in down.stdout


@pytest.mark.timeout(240)
async def test_a_backlog_on_a_bulk_lane_shows_in_health_readiness_and_the_metric(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A burst's children wait on `renderer-bulk`, not `renderer`: `pressroom health`, the
    renderer's /readyz and pressroom_consumer_pending (behind PressroomConsumerLag) say so."""
    import httpx

    stack = await Stack(
        tmp_path_factory.mktemp("lanes"), env_extra={"PRESSROOM_HEALTH_MAX_PENDING": "3"}
    ).astart()
    nc = await stack.connect()
    try:
        # The bulk lane's renderer takes nothing more (its consumer paused, its worker still
        # pulling), as when every bulk slot is busy: what arrives on the lane waits.
        until = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
        await nc.jsm().pause_consumer(STREAM, RENDERER.in_lane("bulk").durable, until)
        for _ in range(10):
            await nc.jetstream().publish(lane_subject(DATA_READY, "bulk"), b"{}")
        renderer = stack.health["renderer-1"]

        async with httpx.AsyncClient() as client:

            async def gauged() -> str | None:
                text = (await client.get(renderer + "/metrics")).text
                return text if PENDING_BULK in text else None

            text = await eventually(gauged, timeout=30, every=0.5)
            assert 'pressroom_consumer_pending{consumer="renderer",stage="renderer"} 0.0' in text
            ready = (await client.get(renderer + "/readyz")).json()
        assert ready["status"] == "degraded", ready
        assert ready["checks"]["consumer"]["detail"] == (
            "renderer-bulk: 10 waiting (over 3), 0 in progress"
        )

        report = json.loads(stack.cli("health", "--json").stdout)
        consumers = {
            name.removeprefix("consumer "): item
            for name, item in report["components"].items()
            if name.startswith("consumer ")
        }
        assert list(consumers) == [lane.durable for s in STAGES.values() for lane in s.lanes]
        assert consumers["renderer-bulk"]["status"] == "degraded"
        assert consumers["renderer-bulk"]["detail"].startswith("10 waiting (over 3)")
        assert {n for n, c in consumers.items() if c["status"] != "healthy"} == {"renderer-bulk"}
        assert report["status"] == "degraded"

        human = stack.cli("health", env={"COLUMNS": "80"}).stdout.splitlines()
        assert max(len(line) for line in human) <= 80, human
        [row] = [line for line in human if "consumer renderer-bulk" in line]
        assert "degraded" in row and "10 waiting" in row
    finally:
        await nc.close()
        stack.stop()
