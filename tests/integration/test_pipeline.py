"""The walking skeleton, as another system sees it: raw JSON in, a delivered PDF out."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import (
    REPO,
    Outcomes,
    Stack,
    dead_letter_count,
    dead_letters_beyond,
    delivered_file,
    eventually,
    unique,
)
from tests.pdftext import pdf_text

pytestmark = pytest.mark.integration

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())


async def test_a_raw_request_from_another_system_is_delivered_as_a_pdf(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    rid = unique("weekly")
    js = nc.jetstream()
    body = {"request_id": rid, "template": "weekly.html", "params": SAMPLE}
    ack = await js.publish("report.requested", json.dumps(body).encode())
    assert ack.stream == "PRESSROOM"

    delivered = await outcomes.delivered_event(rid)

    assert delivered["request_id"] == rid
    assert [c["channel"] for c in delivered["channels"]] == ["file"]
    pdf = delivered_file(stack.out, rid)
    # where it went, relative to the configured folder: no server layout on the bus
    assert delivered["channels"][0]["target"] == f"PRESSROOM_OUT_DIR/{pdf.name}"
    # A name a person recognises: the report's title, its date, a tag for this request.
    assert re.fullmatch(r"portfolio-status-report-\d{4}-\d{2}-\d{2}-[0-9a-f]{8}\.pdf", pdf.name)
    text = pdf_text(pdf)
    assert "Portfolio Status Report" in text
    assert "Project Cobalt" in text and "November 2026" in text
    assert delivered["artefacts"][0]["size"] == pdf.stat().st_size


async def test_any_template_added_to_the_folder_can_be_requested(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    (stack.templates / "hello.html").write_text(
        "<html><body><h1>Hello {{ who }}</h1><p>{{ request_id }}</p></body></html>"
    )
    rid = unique("hello")
    body = {
        "request_id": rid,
        "template": "hello.html",
        "formats": ["pdf", "html"],
        "params": {"who": "<Ops & Friends>"},
        "deliver": [{"channel": "file", "path": "greetings"}],
    }
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())

    await outcomes.delivered_event(rid)

    folder = stack.out / "greetings"
    assert "Hello <Ops & Friends>" in pdf_text(delivered_file(folder, rid))
    html = delivered_file(folder, rid, "html").read_text()
    assert "Hello &lt;Ops &amp; Friends&gt;" in html  # autoescaped, not markup


async def test_undefined_variable_fails_with_the_variable_named(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    rid = unique("undefined")
    body = {"request_id": rid, "template": "weekly.html", "params": {"report_title": "x"}}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())

    failed = await outcomes.failed_event(rid)

    assert failed["stage"] == "renderer"
    # Every missing variable at once, not one per fix-and-retry.
    assert "undefined variables" in failed["reason"]
    assert all(f"'{v}'" in failed["reason"] for v in ("reporting_period", "projects"))
    assert failed["attempts"] == 1  # permanent: not retried
    assert not delivered_file(stack.out, rid).exists()


async def test_invalid_json_is_dead_lettered_at_once_with_a_reason(stack: Stack, nc: Any) -> None:
    marker = unique("garbage")
    before = await dead_letter_count(nc)
    await nc.jetstream().publish("report.requested", f"{{not json {marker}".encode())
    await dead_letters_beyond(nc, before)

    async def find() -> dict[str, Any] | None:
        result = stack.cli("dlq", "ls", "--json", "--stage", "fetcher", check=True)
        rows = [r for r in json.loads(result.stdout) if marker in _payload(stack, r["id"])]
        return rows[0] if rows else None

    row = await eventually(find)
    assert "invalid payload" in row["reason"] and "JSON" in row["reason"]
    assert row["attempts"] == 1 and row["permanent"] is True


async def test_payload_failing_the_schema_names_the_field(stack: Stack, nc: Any) -> None:
    rid = unique("schema")
    body = {"request_id": rid, "template": "../../etc/passwd", "formats": ["docx"]}
    before = await dead_letter_count(nc)
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await dead_letters_beyond(nc, before)

    async def find() -> dict[str, Any] | None:
        rows = json.loads(stack.cli("dlq", "ls", "--json", check=True).stdout)
        return next((r for r in rows if r["request_id"] == rid), None)

    row = await eventually(find)
    assert "template" in row["reason"] and "formats" in row["reason"]


def _payload(stack: Stack, dead_letter_id: int) -> str:
    shown = stack.cli("dlq", "show", str(dead_letter_id), "--json", check=True)
    return str(json.loads(shown.stdout)["letter"]["payload"])


async def test_cli_request_waits_for_delivery_and_status_shows_the_stages(stack: Stack) -> None:
    rid = unique("cli")
    result = stack.cli(
        "request",
        "--template",
        "portfolio.html",
        "--data-file",
        str(REPO / "templates/samples/portfolio.json"),
        "--request-id",
        rid,
        "--wait",
        "--timeout",
        "60",
    )
    assert result.returncode == 0, result.stderr
    assert f"delivered {rid}" in result.stdout

    status = json.loads(stack.cli("status", rid, "--json", check=True).stdout)
    assert status["status"] == "delivered"
    assert set(status["stages"]) == {"fetcher", "renderer", "distributor"}
    assert all(s["state"] == "done" for s in status["stages"].values())
    assert status["template_version"]

    target = stack.root / "copy.pdf"
    stack.cli("get", rid, "--output", str(target), check=True)
    assert target.read_bytes() == delivered_file(stack.out, rid).read_bytes()


async def test_cli_request_for_a_missing_template_exits_non_zero_with_one_line(
    stack: Stack,
) -> None:
    result = stack.cli("request", "--template", "nope.html", "--wait", "--timeout", "60")
    assert result.returncode == 1
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert "nope.html" in result.stderr and "not found" in result.stderr
    assert "Traceback" not in result.stderr and len(lines) == 1


async def test_a_missing_template_is_dead_lettered_then_delivered_after_fix_and_replay(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    rid = unique("replay")
    name = f"{rid}.html"
    body = {"request_id": rid, "template": name, "params": {"n": 42}}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())

    failed = await outcomes.failed_event(rid)
    assert f"template '{name}' not found" in failed["reason"]
    rows = json.loads(stack.cli("dlq", "ls", "--json", "--reason", name, check=True).stdout)
    [row] = rows
    assert row["stage"] == "renderer" and row["request_id"] == rid and row["permanent"]

    (stack.templates / name).write_text("<h1>Answer {{ n }}</h1>")
    # By the request id the operator has at hand (the letter's id works as well).
    replayed = stack.cli("dlq", "replay", rid, "--json", check=True)
    assert json.loads(replayed.stdout)["replayed"] == [{"id": row["id"], "subject": "data.ready"}]

    delivered = await outcomes.delivered_event(rid, failed_before=1)
    assert delivered["request_id"] == rid
    assert "Answer 42" in pdf_text(delivered_file(stack.out, rid))
    left = json.loads(stack.cli("dlq", "ls", "--json", "--reason", name, check=True).stdout)
    assert left == []  # a replayed dead letter leaves the queue

    async def ledger_says_delivered() -> bool:
        status = json.loads(stack.cli("status", rid, "--json", check=True).stdout)
        return bool(status["status"] == "delivered")

    assert await eventually(ledger_says_delivered, timeout=10)


async def test_two_operators_replaying_one_dead_letter_at_once_send_it_once(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    from services.console.busaccess import Bus
    from services.console.deadletters import dead_letters_named, replay
    from shared.settings import Settings

    rid = unique("replay-race")
    name = f"{rid}.html"
    await nc.jetstream().publish(
        "report.requested", json.dumps({"request_id": rid, "template": name}).encode()
    )
    await outcomes.failed_event(rid)
    settings = Settings(nats_url=stack.url)  # type: ignore[call-arg]
    ops = [await stack.connect() for _ in range(2)]
    try:
        buses = [Bus(c, c.jetstream(timeout=10), settings) for c in ops]
        [record] = await dead_letters_named(buses[0], [rid])
        (stack.templates / name).write_text("<h1>once</h1>")
        first, second = await asyncio.gather(*(replay(bus, record) for bus in buses))
        assert sorted([first, second], key=str) == [None, "data.ready"]  # one sent, one told
        left = await dead_letters_named(buses[0], None)
        assert not [r for r in left if r.letter.request_id == rid]  # removed, and no error
        await outcomes.delivered_event(rid, failed_before=1)
        assert await stored_on("data.ready", rid, nc) == 2  # the fetcher's, and one replay
    finally:
        for c in ops:
            await c.close()


async def stored_on(subject: str, rid: str, nc: Any) -> int:
    """How many messages on `subject` the stream holds for request `rid` (read to its end)."""
    sub = await nc.jetstream().subscribe(subject, ordered_consumer=True)
    found = 0
    try:
        while True:
            msg = await sub.next_msg(timeout=30)
            request = json.loads(msg.data).get("request") or {}
            found += request.get("request_id") == rid
            if msg.metadata.num_pending == 0:
                return found
    finally:
        await sub.unsubscribe()


async def test_dlq_purge_removes_dead_letters_for_good(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    rid = unique("purge")
    body = {"request_id": rid, "template": f"{rid}.html"}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await outcomes.failed_event(rid)
    [row] = json.loads(stack.cli("dlq", "ls", "--json", "--reason", rid, check=True).stdout)
    purged = json.loads(stack.cli("dlq", "purge", str(row["id"]), "--json", check=True).stdout)
    assert purged == {"purged": 1}
    assert json.loads(stack.cli("dlq", "ls", "--json", "--reason", rid, check=True).stdout) == []
    assert stack.cli("dlq", "show", str(row["id"])).returncode == 1

    # By request id: every dead letter of that request; a request with none changes nothing.
    other = unique("purge")
    body = {"request_id": other, "template": f"{other}.html"}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await outcomes.failed_event(other)
    missing = stack.cli("dlq", "purge", other, unique("nothing"))
    assert missing.returncode == 1 and "no dead letter with request_id" in missing.stderr
    assert len(json.loads(stack.cli("dlq", "ls", "--json", "--reason", other).stdout)) == 1
    purged = json.loads(stack.cli("dlq", "purge", other, "--json", check=True).stdout)
    assert purged == {"purged": 1}


async def test_retention_sees_object_store_artefacts_with_their_age(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    rid = unique("aged")
    body = {"request_id": rid, "template": "weekly.html", "params": SAMPLE}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await outcomes.delivered_event(rid)
    young = json.loads(
        stack.cli("clean", "--older-than", "1h", "--dry-run", "--json", check=True).stdout
    )
    assert not any(rid in o["key"] for o in young["objects"])
    old = json.loads(
        stack.cli("clean", "--older-than", "0m", "--dry-run", "--json", check=True).stdout
    )
    assert any(o["key"].endswith(f"/{rid}.pdf") for o in old["objects"])


async def test_backup_and_restore_into_a_fresh_server(
    stack: Stack, nc: Any, outcomes: Outcomes, tmp_path: Path
) -> None:
    import tarfile

    rid = unique("backup")
    body = {"request_id": rid, "template": "weekly.html", "params": SAMPLE}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await outcomes.delivered_event(rid)

    async def recorded() -> bool:  # report.delivered goes out just before the ledger says so
        status = stack.cli("status", rid, "--json")
        return status.returncode == 0 and json.loads(status.stdout)["status"] == "delivered"

    await eventually(recorded, timeout=60)
    archive = tmp_path / "pressroom-backup.tar.gz"
    result = stack.cli("backup", str(archive))
    assert result.returncode == 0, result.stderr
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert {"manifest.json", "ledger.jsonl", "dead-letters.jsonl"} <= set(names)
        assert "templates/weekly.html" in names

    fresh = Stack(tmp_path / "fresh", workers={})
    try:
        await fresh.astart()
        restored = fresh.cli("restore", str(archive))
        assert restored.returncode == 0, restored.stderr

        async def delivered_in_fresh() -> bool:
            status = fresh.cli("status", rid, "--json")
            return status.returncode == 0 and json.loads(status.stdout)["status"] == "delivered"

        assert await eventually(delivered_in_fresh, timeout=60)
        letters = json.loads(fresh.cli("dlq", "ls", "--json", check=True).stdout)
        original = json.loads(stack.cli("dlq", "ls", "--json", check=True).stdout)
        assert len(letters) == len(original)
        again = fresh.cli("restore", str(archive))
        assert "restored 0 ledger entries and 0 dead letters" in again.stdout
    finally:
        fresh.stop()


async def test_the_same_data_in_another_request_is_rendered_for_that_request(
    stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    """A PDF carries its own request's dates, /ID and provenance (issue 30), so the render
    cache serves only the same request again (tests/unit/test_pdf_safety.py): another request
    with the same data is rendered, and prints the same pages."""
    # generation_time from the data: by default it is each request's own requested_at.
    data = {**SAMPLE, "reporting_period": unique("period"), "generation_time": "2026-11-23T08:00Z"}
    first, second, changed = unique("cache1"), unique("cache2"), unique("cache3")
    for rid, params in ((first, data), (second, data), (changed, {**data, "project_count": 99})):
        body = {"request_id": rid, "template": "weekly.html", "params": params}
        await nc.jetstream().publish("report.requested", json.dumps(body).encode())
        await outcomes.delivered_event(rid)

    async def ledger(rid: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            status = json.loads(stack.cli("status", rid, "--json", check=True).stdout)
            return status if status["status"] == "delivered" else None

        return await eventually(probe, timeout=10)

    one, two, three = await ledger(first), await ledger(second), await ledger(changed)
    assert one["render_seconds"] > 0 and two["render_seconds"] > 0 and three["render_seconds"] > 0
    assert pdf_text(delivered_file(stack.out, first)) == pdf_text(delivered_file(stack.out, second))
    assert two["artefacts"][0]["key"].endswith(f"/{second}.pdf")
    assert "99" in pdf_text(delivered_file(stack.out, changed))
