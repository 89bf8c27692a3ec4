"""Schedules as an operator meets them: `make run` has a working one, the CLI fires only what the
running stack knows, and `pause`/`resume` are obeyed by a real scheduler process."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, Stack, delivered_file, eventually, pressroom, up_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

EVERY_MINUTE = {
    "name": "every-minute",
    "cron": "* * * * *",
    "request": {
        "template": "weekly.html",
        "sources": [{"name": "inventory", "kind": "file", "path": "portfolio.json", "merge": True}],
        "deliver": [{"channel": "file", "path": "scheduled"}],
    },
}


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    """`pressroom up --sample` as `make run` starts it: no PRESSROOM_CONFIG anywhere."""
    root = tmp_path_factory.mktemp("make-run")
    env = up_env(root, COLUMNS="80")
    up = subprocess.Popen(
        [sys.executable, "-m", "services.console.cli", "up", "--sample"],
        env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((root / "out").glob("*.pdf")):
            assert up.poll() is None, up.stdout.read().decode() if up.stdout else ""
            time.sleep(0.2)
        yield env, root
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)


def test_make_run_has_a_sample_schedule_the_cli_sees_and_fires(
    make_run: tuple[dict[str, str], Path],
) -> None:
    env, root = make_run

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return pressroom(*args, env=env, cwd=root, timeout=180)

    listed = cli("schedule", "ls")
    assert listed.returncode == 0, listed.stderr
    sample = str(REPO / "templates" / "samples" / "pressroom.yaml")
    assert (
        "the running stack's schedules, from" in listed.stderr and "pressroom.yaml" in listed.stderr
    )
    [row] = [line for line in listed.stdout.splitlines() if "sample-folder" in line]
    assert "*/5 * * * *" in row and "weekly.html" in row
    assert all(len(line) <= 80 for line in listed.stdout.splitlines())
    fired = cli("schedule", "run", "sample-folder", "--wait")
    assert fired.returncode == 0, fired.stdout + fired.stderr
    rid = fired.stdout.split(" as ")[1].strip()
    assert delivered_file(root / "out" / "scheduled", rid).read_bytes().startswith(b"%PDF")
    assert json.loads(cli("status", rid, "--json").stdout)["status"] == "delivered"
    # The production example carries the same schedule, switched off.
    shipped = yaml.safe_load((REPO / "deploy/pressroom.yaml").read_text())["schedules"]
    [off] = [s for s in shipped if s["name"] == "sample-folder"]
    assert off["enabled"] is False
    assert yaml.safe_load(Path(sample).read_text())["schedules"][0]["request"] == off["request"]


def test_a_cli_config_the_stack_does_not_run_is_never_fired(
    make_run: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, root = make_run
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"schedules": [{**EVERY_MINUTE, "name": "only-here"}]}))
    # The stack's file is readable here: the CLI uses it, and names what it has.
    other = pressroom("schedule", "run", "only-here", env={**env, "PRESSROOM_CONFIG": str(mine)},
                      cwd=root)  # fmt: skip
    assert other.returncode == 1 and "fired" not in other.stdout
    assert "no schedule 'only-here' in the stack's config (known: sample-folder)" in other.stderr
    # A stack with no config at all, and a CLI with one: said, not fired.
    stack = Stack(tmp_path / "bare", workers={"scheduler": 1}).start()
    try:

        async def recorded() -> bool:
            listed = stack.cli("schedule", "ls")
            return "no scheduler has said" not in listed.stderr

        asyncio.run(eventually(recorded, timeout=60))
        refused = stack.cli("schedule", "run", "only-here", env={"PRESSROOM_CONFIG": str(mine)})
        assert refused.returncode == 1 and "fired" not in refused.stdout
        assert "the running stack has no schedules (no config file), not this" in refused.stderr
        assert refused.stderr.strip().count("\n") == 0
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, datetime]]:
    """A stack with a schedule every minute, and when it started (no fire before that)."""
    root = tmp_path_factory.mktemp("paused")
    config = root / "pressroom.yaml"
    config.write_text(yaml.safe_dump({"schedules": [EVERY_MINUTE]}))
    started = datetime.now(UTC)
    stack = Stack(
        root,
        env_extra={
            "PRESSROOM_CONFIG": str(config),
            "PRESSROOM_DATA_FILES_DIR": str(REPO / "templates" / "samples"),
        },
        workers={"fetcher": 1, "renderer": 1, "distributor": 1, "scheduler": 1},
    ).start()
    yield stack, started
    stack.stop()


async def last_checked(stack: Stack, name: str) -> datetime | None:
    """When the running scheduler last looked at `name` (its clock in the schedules bucket)."""
    nc = await stack.connect()
    try:
        kv = await nc.jetstream().key_value("pressroom_schedules")
        entry = await kv.get(name)
        return datetime.fromisoformat(entry.value.decode())
    except Exception:
        return None
    finally:
        await nc.close()


async def set_last_checked(stack: Stack, name: str, when: datetime) -> None:
    """The scheduler's clock for `name`, as a scheduler that last looked at `when` left it."""
    nc = await stack.connect()
    try:
        kv = await nc.jetstream().key_value("pressroom_schedules")
        await kv.put(name, when.isoformat().encode())
    finally:
        await nc.close()


async def test_pause_and_resume_are_obeyed_by_the_running_scheduler(
    scheduled: tuple[Stack, datetime],
) -> None:
    stack, started = scheduled
    folder = stack.out / "scheduled"
    paused = stack.cli("schedule", "pause", "every-minute", env={"COLUMNS": "80"})
    assert paused.returncode == 0, paused.stderr
    assert "paused every-minute" in paused.stdout
    listed = stack.cli("schedule", "ls", "--json", check=True)
    assert json.loads(listed.stdout)[0]["paused"] is True
    table = stack.cli("schedule", "ls", env={"COLUMNS": "80"}).stdout.splitlines()
    [row] = [line for line in table if "every-minute" in line]
    assert "paused" in row and all(len(line) <= 80 for line in table)
    # A fire falls due while paused, without waiting for a minute to pass: the scheduler comes
    # back to a clock from before a fire no scheduler of this stack has seen (its last look
    # before an outage). Unpaused, it would catch that fire up at once (within the grace).
    skipped_at = (started - timedelta(seconds=2)).replace(second=0, microsecond=0)
    [running] = stack.procs["scheduler"]
    running.send_signal(signal.SIGTERM)
    running.wait(timeout=60)
    rewound = skipped_at - timedelta(seconds=30)
    await set_last_checked(stack, "every-minute", rewound)
    stack.start_worker("scheduler")

    async def looked_again() -> bool:  # the paused scheduler has ticked past that clock
        seen = await last_checked(stack, "every-minute")
        return seen is not None and seen > rewound

    await eventually(looked_again, timeout=120, every=0.5)
    skipped = f"every-minute-{skipped_at:%Y%m%dT%H%MZ}"
    assert stack.cli("status", skipped).returncode == 1  # never fired
    # `schedule ls` says the newest fire did not run (paused): not a next fire time alone.
    [row] = json.loads(stack.cli("schedule", "ls", "--json", check=True).stdout)
    assert row["last_run"] in ("due", "not run"), row
    resuming = datetime.now(UTC)
    resumed = stack.cli("schedule", "resume", "every-minute")
    assert resumed.returncode == 0 and "resumed every-minute: next fire" in resumed.stdout
    assert (
        json.loads(stack.cli("schedule", "ls", "--json", check=True).stdout)[0]["paused"] is False
    )

    # Fires again from the next minute on; what was due while paused is not caught up.
    first = (resuming + timedelta(minutes=1)).replace(second=0, microsecond=0)
    later = [f"every-minute-{first + timedelta(minutes=n):%Y%m%dT%H%MZ}" for n in range(3)]

    async def fired_again() -> list[Path]:
        return [p for p in (delivered_file(folder, rid) for rid in later) if p.exists()]

    await eventually(fired_again, timeout=150, every=1)
    assert not delivered_file(folder, skipped).exists()

    # What became of the newest fire (delivered, or still under way at a minute's turn): not
    # "not run" once the schedule fires again.
    [row] = json.loads(stack.cli("schedule", "ls", "--json", check=True).stdout)
    assert row["last_run"] != "not run", row
    table = stack.cli("schedule", "ls", env={"COLUMNS": "80"}).stdout.splitlines()
    assert "last fire" in table[0] and all(len(line) <= 80 for line in table), table
    assert stack.cli("status", skipped).returncode == 1
    again = stack.cli("schedule", "resume", "every-minute")
    assert again.returncode == 0 and "was not paused" in again.stdout
    unknown = stack.cli("schedule", "pause", "nope")
    assert unknown.returncode == 1 and "known: every-minute" in unknown.stderr


def test_a_schedule_that_emails_without_smtp_is_named_before_it_fails(tmp_path: Path) -> None:
    shipped = {"PRESSROOM_CONFIG": str(REPO / "deploy/pressroom.yaml")}
    checked = pressroom("config", "check", env=shipped, cwd=REPO)
    assert checked.returncode == 0, checked.stderr
    named = [line for line in checked.stderr.splitlines() if "PRESSROOM_SMTP_HOST is unset" in line]
    assert [line.split("'")[1] for line in named] == [
        "daily-portfolio",
        "weekly-portfolio",
        "monthly-portfolio",
    ]
    with_smtp = pressroom(
        "config", "check", env={**shipped, "PRESSROOM_SMTP_HOST": "mail"}, cwd=REPO
    )
    assert with_smtp.returncode == 0 and "SMTP" not in with_smtp.stderr
    # make run's sample config delivers into a folder: nothing to warn about.
    sample = {"PRESSROOM_CONFIG": str(REPO / "templates/samples/pressroom.yaml")}
    quiet = pressroom("config", "check", env=sample, cwd=REPO)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_config_check_refuses_the_webhook_secrets_the_distributor_would_refuse() -> None:
    """A calling system's webhook secret equal to the shared one stops the distributor at start:
    `config check` says so first, without showing the secret."""
    shared = "whsec_" + "c2hhcmVkLXNlY3JldC1zaGFyZWQtc2VjcmV0LTAxMjM0NQ=="
    env = {"PRESSROOM_WEBHOOK_SECRET": shared, "PRESSROOM_WEBHOOK_SECRETS": f"alpha={shared}"}
    checked = pressroom("config", "check", env=env, cwd=REPO)
    assert checked.returncode == 1, checked.stdout
    assert "alpha" in checked.stderr and shared not in checked.stderr + checked.stdout
