"""Nothing frozen, nothing lost: hostile templates and payloads against a real stack.

Every message a stage receives must end delivered, dead-lettered or failed — at once when
retrying cannot help — while other reports keep flowing.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pypdf import PdfReader

from tests import cliproc
from tests.helpers import REPO, Outcomes, Stack, delivered_file, eventually, unique

pytestmark = pytest.mark.integration

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
TOKEN = "ghp_backup_canary_1234"


@pytest.fixture(scope="module")
def lstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("limits")
    config = root / "pressroom.yaml"
    config.write_text(
        yaml.safe_dump(
            {"source_credentials": {"github": {"token": TOKEN, "api_url": "https://x.test"}}}
        )
    )
    stack = Stack(root, env_extra={"PRESSROOM_CONFIG": str(config)})
    stack.root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "templates", stack.templates)
    # Folded at compile time (filters with constant arguments): 10 GB if ever compiled uncapped.
    (stack.templates / "fold_bomb.html").write_text(
        '{{ "xxxxxxxxxx"' + '|replace("x", "xxxxxxxxxx")' * 9 + " }}"
    )
    stack.start()
    (stack.templates / "bomb_mul.html").write_text('{{ "x" * 5000000000 }}')
    (stack.templates / "bomb_pow.html").write_text("{{ 7 ** 12000000 }}")
    (stack.templates / ".git").mkdir()
    (stack.templates / ".git" / "config").write_text(f"token = {TOKEN}")
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def louts(lstack: Stack) -> Any:
    nc = await lstack.connect()
    outcomes = await Outcomes().start(nc)
    yield outcomes
    await nc.close()


async def publish(
    stack: Stack, body: bytes, subject: str = "report.requested", **headers: str
) -> None:
    nc = await stack.connect()
    await nc.jetstream().publish(subject, body, headers=headers or None)
    await nc.close()


def dead_letters(stack: Stack) -> list[dict[str, Any]]:
    return list(json.loads(stack.cli("dlq", "ls", "--json", check=True).stdout))


async def test_template_bombs_fail_at_once_while_another_report_is_delivered(
    lstack: Stack, louts: Outcomes
) -> None:
    bombs = {unique("mul"): "bomb_mul.html", unique("pow"): "bomb_pow.html"}
    normal = unique("normal")
    for rid, template in bombs.items():
        await publish(lstack, json.dumps({"request_id": rid, "template": template}).encode())
    await publish(
        lstack,
        json.dumps({"request_id": normal, "template": "weekly.html", "params": SAMPLE}).encode(),
    )
    await louts.delivered_event(normal)
    for rid in bombs:
        failed = await louts.failed_event(rid)
        assert failed["attempts"] == 1 and failed["stage"] == "renderer"
        assert "unsafe operation" in failed["reason"]
        assert "a template expression may not produce that much" in failed["reason"]
    async with httpx.AsyncClient() as client:  # the renderer service never stalled
        live = await client.get(lstack.health["renderer-1"] + "/livez", timeout=5)
    assert live.status_code == 200


async def test_a_request_too_big_for_its_dead_letter_is_parked_whole_and_can_be_replayed(
    lstack: Stack, louts: Outcomes
) -> None:
    rid = unique("huge")
    body = {"request_id": rid, "template": "later.html", "params": {"blob": "x" * 900_000}}
    await publish(lstack, json.dumps(body).encode())
    failed = await louts.failed_event(rid)
    assert "'later.html' not found" in failed["reason"] and failed["attempts"] == 1
    [row] = [r for r in dead_letters(lstack) if r["request_id"] == rid]
    shown = json.loads(lstack.cli("dlq", "show", str(row["id"]), "--json", check=True).stdout)
    letter = shown["letter"]
    assert letter["payload_ref"] and letter["payload_size"] > 900_000
    assert len(letter["payload"]) < 20_000  # a preview travels, the whole is in the store
    status = json.loads(lstack.cli("status", rid, "--json", check=True).stdout)
    assert status["status"] == "failed"  # never stuck at "running"

    (lstack.templates / "later.html").write_text("<p>{{ blob | length }} characters</p>")
    replayed = lstack.cli("dlq", "replay", str(row["id"]))
    assert replayed.returncode == 0, replayed.stderr
    await louts.delivered_event(rid, failed_before=1)

    async def pdf() -> Path | None:
        path = delivered_file(lstack.out, rid)
        return path if path.exists() else None

    text = PdfReader(BytesIO((await eventually(pdf)).read_bytes())).pages[0].extract_text()
    assert "900000 characters" in text


BAD_BODIES = {
    "binary": b"\xff\xfe\x00\x9c garbage",
    "malformed": b'{"request_id": "x", "template": ',
    "deep array": b"[" * 50_000 + b"]" * 50_000,
    "deep object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "oversized": b'{"junk": "' + b"y" * 900_000 + b'"}',
    "wrong schema": b'{"template": 5, "formats": "pdf"}',
    "not an object": b'"just a string"',
}


async def test_every_hostile_message_ends_as_a_dead_letter_at_once(lstack: Stack) -> None:
    before = {r["id"] for r in dead_letters(lstack)}
    sent = 0
    for subject in ("report.requested", "data.ready", "report.rendered"):
        for body in BAD_BODIES.values():
            await publish(lstack, body, subject)
            await publish(lstack, body, subject, **{"content-type": "application/json"})
            sent += 2

    async def all_parked() -> list[dict[str, Any]] | None:
        new = [r for r in dead_letters(lstack) if r["id"] not in before]
        return new if len(new) >= sent else None

    new = await eventually(all_parked, timeout=120, every=0.5)
    assert len(new) == sent  # each exactly once
    assert [r for r in new if r["attempts"] != 1 or not r["permanent"]] == []
    assert all(r["reason"].startswith("invalid payload") for r in new), new
    assert {r["subject"] for r in new} == {"report.requested", "data.ready", "report.rendered"}
    # The stages are still working.
    marker = unique("after-hostile")
    nc = await lstack.connect()
    outcomes = await Outcomes().start(nc)
    body = {"request_id": marker, "template": "weekly.html", "params": SAMPLE}
    await publish(lstack, json.dumps(body).encode())
    await outcomes.delivered_event(marker)
    await nc.close()


async def test_backups_are_private_and_hold_no_secrets_unless_asked(
    lstack: Stack, louts: Outcomes
) -> None:
    rid = unique("backup")
    await publish(
        lstack,
        json.dumps({"request_id": rid, "template": "weekly.html", "params": SAMPLE}).encode(),
    )
    await louts.delivered_event(rid)
    plain, full = lstack.root / "plain.tar.gz", lstack.root / "full.tar.gz"
    full.write_bytes(b"")
    os.chmod(full, 0o644)  # an existing, world-readable file is tightened too
    assert lstack.cli("backup", str(plain)).returncode == 0
    assert lstack.cli("backup", str(full), "--include-secrets").returncode == 0
    for archive in (plain, full):
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600

    def archived(archive: Path) -> dict[str, bytes]:
        with tarfile.open(archive) as tar:
            return {
                m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers()
                if m.isfile()
            }

    files = archived(plain)
    assert not any(TOKEN.encode() in data for data in files.values())
    assert b"REDACTED" in files["config.yaml"] and "templates/weekly.html" in files
    assert not any(".git" in name for name in files)
    assert TOKEN.encode() in archived(full)["config.yaml"]
    manifest = json.loads(files["manifest.json"])
    entries = [json.loads(line) for line in files["ledger.jsonl"].splitlines()]
    assert manifest["ledger_entries"] == len(entries) and rid in {e["request_id"] for e in entries}


async def test_listings_are_complete_every_time(lstack: Stack, louts: Outcomes) -> None:
    rids = [unique("listed") for _ in range(12)]
    for rid in rids:
        body = {"request_id": rid, "template": "weekly.html", "params": SAMPLE}
        await publish(lstack, json.dumps(body).encode())
    for rid in rids:
        await louts.delivered_event(rid)
    nc = await lstack.connect()
    total = (await nc.jetstream().stream_info("KV_pressroom_ledger")).state.messages
    await nc.close()
    for _ in range(5):
        listed = json.loads(lstack.cli("ls", "--json", "--limit", "100000", check=True).stdout)
        assert len(listed) == total and set(rids) <= {e["request_id"] for e in listed}


def test_pressroom_render_uses_the_same_caps_and_says_one_line(tmp_path: Path) -> None:
    import subprocess

    (tmp_path / "bomb.html").write_text("{{ 7 ** 12000000 }}")
    (tmp_path / "spin.html").write_text(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    )
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
        "PRESSROOM_RENDER_TIMEOUT": "3",
        "COLUMNS": "80",
    }

    def render(template: str) -> subprocess.CompletedProcess[str]:
        return cliproc.run(
            ["render", "--template", str(tmp_path / template), "--output", str(tmp_path / "o.pdf")],
            env=env, timeout=120,
        )  # fmt: skip

    bomb, spin = render("bomb.html"), render("spin.html")
    assert bomb.returncode == 1 and "digits" in bomb.stderr
    assert spin.returncode == 1 and "took longer than 3s and was stopped" in spin.stderr
    for result in (bomb, spin):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "o.pdf").exists()


def test_a_worker_with_a_missing_config_file_stops_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "services.console.cli", "worker", "fetcher"],
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(REPO),
            "PRESSROOM_CONFIG": str(tmp_path / "missing.yaml"),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: PRESSROOM_CONFIG names '{tmp_path / 'missing.yaml'}', which is not a file "
        "(fix the path, or unset PRESSROOM_CONFIG)"
    )


async def test_validating_a_compile_time_bomb_never_touches_the_renderer_service(
    lstack: Stack,
) -> None:
    # The renderer validates every template at start (the template-health SLI): in a capped
    # render process. Its own process stays small and answers all along.
    health = lstack.health["renderer-1"]

    async def judged() -> str | None:
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(health + "/metrics", timeout=5)).text
        lines = [  # every series of the template exists from the start; this one is its verdict
            ln
            for ln in metrics.splitlines()
            if ln.startswith("pressroom_template_problems") and 'template="fold_bomb.html"' in ln
        ]
        return lines[0] if lines else None

    line = await eventually(judged, timeout=120, every=0.5)
    assert float(line.split()[-1]) >= 1  # counted as a template with a problem
    [service] = [p for p in lstack.procs["renderer"] if p.poll() is None]
    rss_kb = next(
        int(ln.split()[1])
        for ln in Path(f"/proc/{service.pid}/status").read_text().splitlines()
        if ln.startswith("VmHWM:")  # the peak, not just now
    )
    assert rss_kb < 600 * 1024, f"the renderer service peaked at {rss_kb // 1024} MiB"
