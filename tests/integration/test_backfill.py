"""Schedules on a real stack: `schedule backfill` publishes each fire of a range once, with the
scheduler's own ids (a second backfill of the same range sends nothing again), and a run whose
`skip_if_empty` data is empty is recorded as skipped with the reason, nothing delivered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.helpers import Stack, eventually

pytestmark = pytest.mark.integration

TINY = "<!doctype html><html><body><p>{{ orders | length }} orders</p></body></html>\n"


@pytest.fixture(scope="module")
def sched_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("backfill")
    config = root / "pressroom.yaml"
    request = {"template": "orders.html", "formats": ["html"]}
    config.write_text(
        yaml.safe_dump(
            {
                "schedules": [
                    {
                        "name": "daily-orders",
                        "cron": "0 8 * * *",
                        "jitter": 120,
                        "request": {
                            **request,
                            "params": {"orders": [1, 2]},
                            "deliver": [{"channel": "file", "path": "daily"}],
                        },
                    },
                    {
                        "name": "quiet-orders",
                        "cron": "0 9 * * *",
                        "skip_if_empty": "orders",
                        "request": {
                            **request,
                            "params": {"orders": []},
                            "deliver": [{"channel": "file", "path": "quiet"}],
                        },
                    },
                ]
            }
        )
    )
    stack = Stack(root, env_extra={"PRESSROOM_CONFIG": str(config)})
    try:
        stack.root.mkdir(parents=True, exist_ok=True)
        stack.start()
        (stack.templates / "orders.html").write_text(TINY)
        yield stack
    finally:
        stack.stop()


def status(stack: Stack, rid: str) -> dict[str, Any]:
    shown = stack.cli("status", rid, "--json")
    return json.loads(shown.stdout) if shown.returncode == 0 else {}


async def test_backfill_sends_each_fire_once_and_an_empty_run_is_skipped(
    sched_stack: Stack,
) -> None:
    stack = sched_stack
    first = stack.cli(
        "schedule",
        "backfill",
        "daily-orders",
        "--from",
        "2026-11-01",
        "--to",
        "2026-11-02T23:59",
        "--json",
    )
    assert first.returncode == 0, first.stderr
    fires = json.loads(first.stdout)
    assert [f["request_id"] for f in fires] == [
        "daily-orders-20261101T0800Z",
        "daily-orders-20261102T0800Z",
    ]
    assert {f["state"] for f in fires} == {"published"}
    again = stack.cli(
        "schedule", "backfill", "daily-orders", "--from", "2026-11-01", "--to", "2026-11-02T23:59"
    )
    assert again.returncode == 0, again.stderr

    async def delivered() -> bool:
        return all(status(stack, f["request_id"]).get("status") == "delivered" for f in fires)

    await eventually(delivered, timeout=90, every=0.5)
    assert len(list((stack.out / "daily").iterdir())) == 2  # each fire once
    later = stack.cli(
        "schedule", "backfill", "daily-orders", "--from", "2026-11-01", "--to", "2026-11-02T23:59"
    )
    assert "daily-orders-20261101T0800Z: already ran (delivered)" in later.stdout

    quiet = stack.cli(
        "schedule", "backfill", "quiet-orders", "--from", "2026-11-01", "--to", "2026-11-01T23:59"
    )
    assert quiet.returncode == 0, quiet.stderr
    rid = "quiet-orders-20261101T0900Z"

    async def skipped() -> dict[str, Any] | None:
        shown = status(stack, rid)
        return shown if shown.get("status") == "skipped" else None

    shown = await eventually(skipped, timeout=60, every=0.5)
    assert shown["skipped"] == "skipped: 'orders' is empty (skip_if_empty)"
    assert "renderer" not in shown["stages"]
    assert not (stack.out / "quiet").exists()
    bad = stack.cli(
        "schedule", "backfill", "quiet-orders", "--from", "2026-11-02", "--to", "2026-11-01"
    )
    assert bad.returncode == 1 and "is before --from" in bad.stderr
