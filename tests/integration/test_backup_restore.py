"""`pressroom backup` / `restore` as an operator runs them, and as a hostile archive attacks them.

Restore never doubles a dead letter (twice, or onto a live stack), dead letters keep when they
failed, `--artefacts` brings reports back after a disaster, templates and config come back
(changed files kept unless `--force`), a default backup holds no secret whatever the size of the
request, and a crafted archive can neither skip a future scheduled run nor exhaust memory.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from shared.events import ReportRequested
from tests.helpers import REPO, Outcomes, Stack, delivered_file, eventually, unique

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
CANARY = "canary-5e1f0c"
SCHEDULE = {
    "name": "every-minute",
    "cron": "* * * * *",
    "request": {
        "template": "weekly.html",
        "params": SAMPLE,
        "deliver": [{"channel": "file", "path": "scheduled"}],
    },
}


@pytest.fixture(scope="module")
def bstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    import yaml

    root = tmp_path_factory.mktemp("backup")
    config = root / "pressroom.yaml"
    config.write_text(yaml.safe_dump({"schedules": [SCHEDULE]}))
    stack = Stack(
        root,
        env_extra={"PRESSROOM_CONFIG": str(config)},
        workers={"fetcher": 1, "renderer": 1, "distributor": 1, "scheduler": 1},
    ).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def bouts(bstack: Stack) -> AsyncIterator[Outcomes]:
    nc = await bstack.connect()
    outcomes = await Outcomes().start(nc)
    yield outcomes
    await nc.close()


async def publish(stack: Stack, body: dict[str, Any]) -> None:
    nc = await stack.connect()
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await nc.close()


def letters(stack: Stack) -> list[dict[str, Any]]:
    listed = stack.cli("dlq", "ls", "--json", check=True, env={"COLUMNS": "80"})
    return list(json.loads(listed.stdout))


def archived(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


async def test_restore_twice_onto_a_live_stack_never_doubles_and_keeps_when_they_failed(
    bstack: Stack, bouts: Outcomes
) -> None:
    failing = [unique("dl") for _ in range(3)]
    for rid in failing:
        await publish(bstack, {"request_id": rid, "template": "no-such-template.html"})
    for rid in failing:
        await bouts.failed_event(rid)
    before = [r for r in letters(bstack) if r["request_id"] in failing]
    assert len(before) == 3
    archive = bstack.root / "live.tar.gz"
    assert bstack.cli("backup", str(archive)).returncode == 0
    for _ in range(2):  # onto the live stack, twice: everything is already there
        again = bstack.cli("restore", str(archive), env={"COLUMNS": "80"})
        assert again.returncode == 0, again.stderr
        assert "restored 0 ledger entries and 0 dead letters" in again.stdout
        assert f"dead letters: {len(letters(bstack))} already there" in again.stdout
    assert [r for r in letters(bstack) if r["request_id"] in failing] == before
    # One is purged, then restored: it comes back once, showing when it failed.
    gone = before[0]
    assert bstack.cli("dlq", "purge", str(gone["id"])).returncode == 0
    back = bstack.cli("restore", str(archive))
    assert "restored 0 ledger entries and 1 dead letters" in back.stdout, back.stdout
    assert bstack.cli("restore", str(archive)).stdout.startswith(
        "restored 0 ledger entries and 0 dead letters"
    )
    [restored] = [r for r in letters(bstack) if r["request_id"] == gone["request_id"]]
    assert restored["id"] != gone["id"] and restored["time"] == gone["time"]
    assert restored["reason"] == gone["reason"] and restored["stage"] == gone["stage"]


async def test_after_a_disaster_reports_templates_and_config_come_back(
    bstack: Stack, bouts: Outcomes, tmp_path: Path
) -> None:
    rid = unique("disaster")
    await publish(bstack, {"request_id": rid, "template": "weekly.html", "params": SAMPLE})
    await bouts.delivered_event(rid)

    async def settled() -> bool:
        status = bstack.cli("status", rid, "--json")
        return status.returncode == 0 and json.loads(status.stdout)["status"] == "delivered"

    await eventually(settled, timeout=60)
    (bstack.templates / "house.html").write_text("<p>{{ title }}</p>\n")
    plain, full = tmp_path / "plain.tar.gz", tmp_path / "full.tar.gz"
    assert bstack.cli("backup", str(plain)).returncode == 0
    made = bstack.cli("backup", str(full), "--artefacts", "--since", "7d")
    assert made.returncode == 0 and " reports, templates" in made.stdout, made
    assert not any(n.startswith("artefacts/") for n in archived(plain))
    assert any(n.endswith(f"/{rid}.pdf") for n in archived(full))

    config = tmp_path / "fresh" / "pressroom.yaml"  # the new machine has no config yet
    fresh = Stack(tmp_path / "fresh", workers={})
    try:
        await fresh.astart()
        (fresh.templates / "weekly.html").write_text("<p>changed here</p>\n")
        (fresh.templates / "daily.html").unlink()
        restored = fresh.cli("restore", str(full), "--config", str(config))
        assert restored.returncode == 0, restored.stderr
        said = restored.stdout
        assert "reports: " in said and "put back" in said
        assert "templates: 2 written, " in said
        assert "1 kept (they differ here; --force overwrites)" in said
        assert f"kept: {fresh.templates / 'weekly.html'}" in said
        assert f"config: written to {config} (fill in the REDACTED secrets)" in said
        assert (fresh.templates / "house.html").read_text() == "<p>{{ title }}</p>\n"
        assert (fresh.templates / "daily.html").read_bytes() == (
            bstack.templates / "daily.html"
        ).read_bytes()
        assert (fresh.templates / "weekly.html").read_text() == "<p>changed here</p>\n"
        assert "every-minute" in config.read_text()
        got = fresh.cli("get", rid, "--output", str(tmp_path / "got.pdf"))
        assert got.returncode == 0, got.stderr
        assert (tmp_path / "got.pdf").read_bytes() == delivered_file(bstack.out, rid).read_bytes()
        # A file that cannot be written here (a read-only mount; as root, a folder in its
        # way): the rest is restored, the file named, and the command fails.
        (fresh.templates / "house.html").unlink()
        (fresh.templates / "house.html").mkdir()
        forced = fresh.cli("restore", str(full), "--force", env={"COLUMNS": "80"})
        assert forced.returncode == 1, forced
        assert "templates: 1 written, " in forced.stdout, forced.stdout
        assert ", 0 kept, 1 not written" in forced.stdout
        assert f"not written: {fresh.templates / 'house.html'} (Is a directory)" in forced.stdout
        assert forced.stderr.startswith("error: some files could not be written here")
        assert "Traceback" not in forced.stderr and "not a pressroom backup" not in forced.stderr
        assert (fresh.templates / "weekly.html").read_bytes() == (
            bstack.templates / "weekly.html"
        ).read_bytes()
        assert not list(fresh.templates.glob(".*restore-*"))  # no half-written file left
    finally:
        fresh.stop()


async def test_a_big_request_keeps_no_secret_in_a_default_backup(
    bstack: Stack, bouts: Outcomes
) -> None:
    rid, victim = unique("big-secret"), unique("victim")
    body = {
        "request_id": rid,
        "template": "weekly.html",
        "sources": [
            {
                "name": "remote",
                "kind": "http",
                "url": f"https://blocked.example/data?token={CANARY}1&sig={CANARY}2&page=1",
                "headers": {"Authorization": f"Bearer {CANARY}3", "X-Api-Key": f"{CANARY}4"},
            },
            {"name": "db", "kind": "http", "url": f"https://u:{CANARY}5@blocked.example/x"},
        ],
        "params": {"pwd": f"{CANARY}6", "login": {"passwd": f"{CANARY}7"}, "pad": "x" * 300_000},
    }
    await publish(bstack, body)
    await bouts.failed_event(rid)
    await publish(bstack, {"request_id": victim, "template": "weekly.html", "params": SAMPLE})
    await bouts.delivered_event(victim)
    plain, full = bstack.root / "secrets.tar.gz", bstack.root / "with-secrets.tar.gz"
    assert bstack.cli("backup", str(plain)).returncode == 0
    assert bstack.cli("backup", str(full), "--include-secrets").returncode == 0
    files = archived(plain)
    [letter] = [
        json.loads(line)
        for line in files["dead-letters.jsonl"].splitlines()
        if json.loads(line)["request_id"] == rid
    ]
    assert letter["payload_size"] > 256 * 1024 and letter["payload"].startswith("{")  # a preview
    assert not any(CANARY.encode() in data for data in files.values())
    assert "blocked.example" in letter["payload"]  # what is not secret is kept
    assert CANARY.encode() in archived(full)["dead-letters.jsonl"]  # the test can fail


def craft(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@dataclass
class Forged:
    request: ReportRequested  # the schedule's next fire, which the archive says was delivered
    restored: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module", autouse=True)
def forged(bstack: Stack) -> Forged:
    """A crafted archive restored as the file's stack starts: its ledger says the schedule's
    next fire was delivered an hour ago. (First of all, so that the fire falls due while the
    other tests run, not in a minute's wait of its own.)"""
    from shared.adapters.ledger import LedgerEntry
    from shared.events import request_fingerprint
    from shared.schedules import load_schedules

    [schedule] = load_schedules([SCHEDULE])
    fire = schedule.next_fire(datetime.now(UTC) + timedelta(seconds=20))
    request = schedule.request_for(fire)
    past = datetime.now(UTC) - timedelta(hours=1)
    entry = LedgerEntry(
        request_id=request.request_id,
        status="delivered",
        template="weekly.html",
        requested_by=request.requested_by,
        requested_at=past,
        updated_at=past,
        fingerprint=request_fingerprint(request),
        settled="delivered",
        settled_at=past,
    )
    archive = craft(
        bstack.root / "crafted.tar.gz",
        {"manifest.json": b"{}", "ledger.jsonl": entry.model_dump_json().encode() + b"\n"},
    )
    return Forged(request, bstack.cli("restore", str(archive), env={"COLUMNS": "80"}))


def test_a_restore_archive_is_read_as_a_bounded_stream(bstack: Stack, tmp_path: Path) -> None:
    # 1. A member whose header claims 3.7 GB is refused before a byte of it is read.
    header = tarfile.TarInfo("ledger.jsonl")
    header.size = 3_700_000_000
    with tarfile.open(tmp_path / "huge.tar.gz", "w:gz") as tar:
        tar.fileobj.write(header.tobuf())  # type: ignore[union-attr]
        tar.fileobj.write(b"{" * 4096)  # type: ignore[union-attr]
    huge = bstack.cli("restore", str(tmp_path / "huge.tar.gz"), env={"COLUMNS": "80"})
    assert huge.returncode == 1 and "over the" in huge.stderr and "refused" in huge.stderr
    assert huge.stderr.strip().count("\n") == 0 and "Traceback" not in huge.stderr
    # 2. A gzip bomb: 512 MiB of one line in a member of a few hundred KB.
    bomb = tmp_path / "bomb.tar.gz"
    size = 512 * 1024**2
    with tarfile.open(bomb, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("dead-letters.jsonl")
        info.size = size
        tar.addfile(info, Zeros(size))
    assert bomb.stat().st_size < 4 * 1024**2
    measured = subprocess.run(
        [sys.executable, "-c", MAXRSS, sys.executable, "-m", "services.console.cli",
         "restore", str(bomb)],
        env={**bstack.env, "COLUMNS": "80"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    *said, rss_kb = measured.stderr.strip().splitlines()
    assert measured.returncode == 1 and len(said) == 1, measured.stderr
    assert "line over 8 MiB" in said[0]
    assert int(rss_kb) < 400 * 1024, f"restore held {int(rss_kb) // 1024} MB"
    # 3. Names that leave the templates folder are never written.
    escape = craft(
        tmp_path / "escape.tar.gz",
        {"templates/../../escaped.html": b"x", "templates/.env": b"SECRET=1"},
    )
    assert bstack.cli("restore", str(escape)).returncode == 0
    assert not (bstack.root / "escaped.html").exists() and not (bstack.templates / ".env").exists()
    # The victim: an honest backup still restores.
    honest = tmp_path / "honest.tar.gz"
    assert bstack.cli("backup", str(honest)).returncode == 0
    assert bstack.cli("restore", str(honest)).returncode == 0


async def test_a_crafted_archive_cannot_make_a_future_scheduled_run_a_duplicate(
    bstack: Stack, forged: Forged
) -> None:
    refused, request = forged.restored, forged.request
    assert refused.returncode == 0, refused.stderr
    assert "1 refused (a scheduled fire that is not due)" in refused.stdout
    # The real fire comes and is delivered, not skipped as a duplicate.

    async def delivered() -> dict[str, Any] | None:
        status = bstack.cli("status", request.request_id, "--json")
        entry = json.loads(status.stdout) if status.returncode == 0 else {}
        pdf = delivered_file(bstack.out / "scheduled", request.request_id)
        return entry if entry.get("status") == "delivered" and pdf.exists() else None

    entry = await eventually(delivered, timeout=200, every=1)
    assert "distributor" in entry["stages"]


MAXRSS = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


class Zeros(io.RawIOBase):
    """`size` bytes of 'a' with no newline, made as they are read."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = b"a" * n
        self.left -= n
        return n
