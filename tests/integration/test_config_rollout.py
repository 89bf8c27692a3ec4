"""Config rollouts: a worker whose config file changed under it, or whose config differs from
the other workers', says so in its /readyz and in `pressroom health` (README "Deployment",
docs/operations.md "Config rollouts")."""

from __future__ import annotations

import json
import signal
from typing import Any

import httpx
import pytest
import yaml

from tests.helpers import Stack, eventually

pytestmark = pytest.mark.integration


def schedule(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "cron": "0 7 * * *",
        "timezone": "Europe/Berlin",
        "request": {"template": "daily.html", "deliver": [{"channel": "file", "path": name}]},
    }


async def readiness(base: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        body: dict[str, Any] = (await client.get(base + "/readyz")).json()
        return body


def health(stack: Stack, *names: str) -> dict[str, Any]:
    urls = [arg for name in names for arg in ("--url", stack.health[name])]
    result = stack.cli("health", "--json", *urls)
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.mark.timeout(240)
async def test_a_worker_on_an_edited_or_different_config_says_so_in_health(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("rollout")
    config = root / "pressroom.yaml"
    config.write_text(yaml.safe_dump({"schedules": [schedule("daily-a")]}))
    stack = await Stack(
        root, env_extra={"PRESSROOM_CONFIG": str(config)}, workers={"fetcher": 1}
    ).astart()
    try:
        # One worker, its file as loaded: healthy, and its fingerprint is published.
        first = await readiness(stack.health["fetcher-1"])
        assert first["checks"]["config"]["status"] == "healthy", first
        old = first["checks"]["config"]["fingerprint"]
        agreed = health(stack, "fetcher-1")["components"]["config"]
        assert agreed == {"status": "healthy", "detail": f"1 worker(s) run config {old}"}

        # The operator edits the shared file (a new schedule) and restarts nothing yet:
        # the running worker says its file changed under it and it still runs the old one.
        config.write_text(yaml.safe_dump({"schedules": [schedule("daily-a"), schedule("b")]}))

        async def stale() -> dict[str, Any] | None:
            check = (await readiness(stack.health["fetcher-1"]))["checks"]["config"]
            return check if check["status"] == "degraded" else None

        check = await eventually(stale, timeout=30, every=0.5)
        assert "changed since this worker started" in check["detail"], check
        assert f"still runs config {old}: restart it to apply" in check["detail"], check

        # A second worker starts on the new file: the two disagree, and health names both.
        stack.start_worker("fetcher")
        await stack.wait_ready()

        async def second_up() -> dict[str, Any] | None:
            try:
                body = await readiness(stack.health["fetcher-2"])
            except httpx.HTTPError:
                return None
            return body if body["checks"]["config"]["status"] == "healthy" else None

        new = (await eventually(second_up, timeout=90, every=0.5))["checks"]["config"]
        assert new["fingerprint"] != old
        report = health(stack, "fetcher-1", "fetcher-2")
        differ = report["components"]["config"]
        assert differ["status"] == "degraded", report  # (the stack: only fetchers run here)
        assert "workers run different configs" in differ["detail"], differ
        assert stack.health["fetcher-1"] in differ["detail"].split(old + ": ")[1], differ
        assert stack.health["fetcher-2"] in differ["detail"].split(new["fingerprint"] + ": ")[1]

        # After a restart of the stale worker, all run the new config again.
        stale_proc = stack.procs["fetcher"][0]
        stale_proc.send_signal(signal.SIGTERM)
        stale_proc.wait(timeout=30)
        stack.start_worker("fetcher")

        async def agreed_again() -> dict[str, Any] | None:
            try:
                component = health(stack, "fetcher-2", "fetcher-3")["components"].get("config")
            except json.JSONDecodeError:
                return None
            # both answering (a worker that does not answer yet has no fingerprint to compare)
            return component if component and component["detail"].startswith("2 ") else None

        component = await eventually(agreed_again, timeout=90, every=1.0)
        assert component == {
            "status": "healthy",
            "detail": f"2 worker(s) run config {new['fingerprint']}",
        }
    finally:
        stack.stop()


@pytest.mark.timeout(180)
async def test_a_worker_sending_s3_keys_over_plain_http_to_another_host_warns_at_start(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = tmp_path_factory.mktemp("plain-s3")
    stack = await Stack(root, workers={}).astart()
    insecure = {
        "PRESSROOM_S3_ENDPOINT": "s3.invalid:9000",
        "PRESSROOM_S3_SECURE": "false",
        "PRESSROOM_S3_ACCESS_KEY": "pressroom",
        "PRESSROOM_S3_SECRET_KEY": "not-a-real-key",
    }
    try:
        stack.start_worker("renderer", extra_env=insecure)
        log = root / "logs" / "renderer-1.log"

        async def warned() -> str | None:
            text = log.read_text(errors="replace") if log.exists() else ""
            lines = [line for line in text.splitlines() if "over plain HTTP" in line]
            return lines[0] if lines else None

        line = await eventually(warned, timeout=90, every=0.5)
        assert "s3.invalid:9000" in line and "PRESSROOM_S3_SECURE=true" in line, line
        assert "not-a-real-key" not in log.read_text(errors="replace")
    finally:
        stack.stop()
