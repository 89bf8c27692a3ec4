"""Scheduler replicas, SLOs from real runs: knowing what happened and how fast."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.bus.names import SCHEDULES_BUCKET
from tests.helpers import REPO, Outcomes, Stack, delivered_file

pytestmark = pytest.mark.integration
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())


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
    result = stack.cli("health", "--json", *urls)
    report = json.loads(result.stdout)
    assert result.returncode == 0, report
    assert report["components"]["nats"]["status"] == "healthy"
    for stage in ("fetcher", "renderer", "distributor"):
        assert report["components"][f"consumer {stage}"]["status"] == "healthy"
    assert report["components"][f"worker {stack.health['renderer-1']}"]["status"] == "healthy"
    assert report["components"]["artefact store"]["status"] == "healthy"

    down = stack.cli("health", "--url", "http://127.0.0.1:9")
    assert down.returncode == 1 and "unhealthy" in down.stdout
