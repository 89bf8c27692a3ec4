"""What the operator sees is true (issue 26 items 1, 3, 4; issue 25: unreadable KV values).

One stack of its own (retries slow enough to watch, a scheduler, a config with schedules), the
CLI at 80 columns as the operator runs it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Outcomes, Stack, delivered_file, eventually, unique

pytestmark = pytest.mark.integration

SCHEDULES = ("poisoned-first", "healthy-second")


@pytest.fixture(scope="module")
async def own(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    root = tmp_path_factory.mktemp("truth")
    config = root / "pressroom.yaml"
    schedules = [
        {
            "name": name,
            "cron": "* * * * *",
            "request": {"template": "plain", "deliver": [{"channel": "file", "path": name}]},
        }
        for name in SCHEDULES
    ]
    config.write_text(json.dumps({"schedules": schedules}))
    stack = Stack(
        root,
        env_extra={
            "PRESSROOM_CONFIG": str(config),
            # Retries slow enough to be seen going on (the data source test).
            "PRESSROOM_RETRY_BACKOFF": "2,3",
            "PRESSROOM_MAX_ATTEMPTS": "40",
            "PRESSROOM_SCHEDULE_GRACE": "600",
        },
    )
    await stack.astart()
    (stack.templates / "plain.html").write_text("<h1>{{ template_name }}</h1>")
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
async def own_nc(own: Stack) -> AsyncIterator[Any]:
    connection = await own.connect()  # the ops identity
    yield connection
    await connection.drain()


@pytest.fixture(scope="module")
async def own_outcomes(own_nc: Any) -> Outcomes:
    return await Outcomes().start(own_nc)


def ls_json(stack: Stack, *args: str) -> list[dict[str, Any]]:
    shown = stack.cli("ls", "--json", "--limit", "100000", *args, check=True).stdout
    return list(json.loads(shown))


def cli_json(stack: Stack, *args: str) -> Any:
    return json.loads(stack.cli(*args, "--json", check=True).stdout)


async def publish(nc: Any, body: dict[str, Any]) -> None:
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())


async def test_failed_reports_are_failed_everywhere_and_a_replay_leaves_no_stale_error(
    own: Stack, own_nc: Any, own_outcomes: Outcomes
) -> None:
    """Twelve requests at a broken template (asked for with and without `.html`): `ls
    --status failed`, `stats` and `slo` agree on them; fixed and replayed, each is delivered
    with no error left over."""
    name = unique("broken")
    template = own.templates / f"{name}.html"
    template.write_text("<p>{{ broken( }}</p>")
    rids = [unique("twelve") for _ in range(12)]
    for n, rid in enumerate(rids):
        spelling = name if n % 2 else f"{name}.html"
        await publish(own_nc, {"request_id": rid, "template": spelling})
    for rid in rids:
        await own_outcomes.failed_event(rid)

    async def all_failed() -> list[dict[str, Any]] | None:
        rows = ls_json(own, "--status", "failed", "--template", name)
        return rows if {r["request_id"] for r in rows} == set(rids) else None

    failed_rows = await eventually(all_failed, timeout=60)
    assert all(r["template"] == f"{name}.html" for r in failed_rows)  # one canonical name
    assert all(r["failed_stage"] == "renderer" and r["error"] for r in failed_rows)
    assert ls_json(own, "--template", f"{name}.html") == ls_json(own, "--template", name)

    async def agree() -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        before = ls_json(own)
        stats = cli_json(own, "stats")
        after = ls_json(own)
        if before != after:
            return None  # something moved meanwhile: look again
        reports = [r for r in before if r["status"] != "conflict"]
        by_status = {s: sum(r["status"] == s for r in reports) for s in ("delivered", "failed")}
        moving = len(reports) - sum(by_status.values())
        seen = (stats["delivered"], stats["failed"], stats["in_flight"], stats["total"])
        if seen != (by_status["delivered"], by_status["failed"], moving, len(reports)):
            return None
        return stats, before

    stats, rows = await eventually(agree, timeout=60)
    assert not {r["request_id"] for r in rows if r["status"] not in ("delivered", "failed")} & set(
        rids
    )  # none of the twelve counted as in flight
    measured = own.cli("slo", "--json")
    assert measured.returncode == 1  # twelve failures miss the success rate: said by the code
    slo = {o["sli"]: o for o in json.loads(measured.stdout)["objectives"]}
    assert slo["Report generation success rate"]["met"] is False
    generated = slo["Report generation success rate"]
    assert generated["samples"] == stats["delivered"] + stats["failed"]
    assert slo["PDF rendering success rate"]["samples"] >= 12

    template.write_text("<p>fixed {{ template_name }}</p>")
    replayed = own.cli("dlq", "replay", *rids, "--json")
    assert replayed.returncode == 0, replayed.stderr
    for rid in rids:
        await own_outcomes.delivered_event(rid, failed_before=1)

    async def all_delivered() -> list[dict[str, Any]] | None:
        rows = ls_json(own, "--template", name)
        done = len(rows) == 12 and all(r["status"] == "delivered" for r in rows)
        return rows if done else None

    for entry in await eventually(all_delivered, timeout=60):
        assert entry["error"] is None and entry["failed_stage"] is None
        assert entry["last_error"] is None
        assert entry["stages"]["renderer"]["state"] == "done"
    text = own.cli("status", rids[0], check=True).stdout
    assert "delivered" in text and "error" not in text, text
    assert not ls_json(own, "--status", "failed", "--template", name)


def test_template_commands_take_the_name_requests_take(own: Stack) -> None:
    for args in (("templates", "vars", "plain"), ("templates", "validate", "plain")):
        result = own.cli(*args)
        assert result.returncode == 0, result.stderr
    variables = cli_json(own, "templates", "vars", "plain")
    assert variables["template"] == "plain.html" and "template_name" in variables["variables"]
    assert cli_json(own, "templates", "validate", "plain")["checked"] == ["plain.html"]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_reason_of_a_retried_stage_is_shown_while_retries_go_on(own: Stack) -> None:
    from tests.integration.test_cli_operator import run_on_a_terminal

    rid = unique("refused-source")
    url = f"http://127.0.0.1:{closed_port()}/"
    request = own.root / f"{rid}.json"
    request.write_text(
        json.dumps(
            {
                "request_id": rid,
                "template": "plain",
                "sources": [{"name": "sales", "kind": "http", "url": url}],
            }
        )
    )
    waited = own.cli("request", str(request), "--wait", "--timeout", "8", env={"COLUMNS": "80"})
    assert waited.returncode == 1
    said = " ".join(waited.stderr.split())
    assert "still running" in said and "last error" in said and "cannot reach" in said, said

    # The live line on a terminal (wide enough for the whole line) says why, too.
    code, screen = run_on_a_terminal(
        ["request", str(request), "--wait", "--timeout", "5"], {**own.env, "COLUMNS": "250"}
    )
    assert code == 1 and "last error" in screen and "cannot reach" in screen, screen

    status = own.cli("status", rid, env={"COLUMNS": "80"}, check=True).stdout
    assert "running" in status and "last error (attempt" in status, status
    assert "cannot reach" in " ".join(status.split()), status
    [row] = [r for r in ls_json(own) if r["request_id"] == rid]
    assert row["status"] == "requested" and "cannot reach" in row["last_error"]
    shown = own.cli("ls", "--limit", "100000", env={"COLUMNS": "80"}, check=True).stdout
    assert "cannot reach" in " ".join(shown.split()), shown


async def test_an_unreadable_ledger_value_is_a_conflict_row_and_never_a_crash(
    own: Stack, own_nc: Any, own_outcomes: Outcomes, tmp_path: Path
) -> None:
    js = own_nc.jetstream()
    ledger = await js.key_value("pressroom_ledger")
    poisoned = unique("poisoned")
    await ledger.put(poisoned, b'{"stream":"PRESSROOM","seq":7}')
    for args in (("ls",), ("stats",), ("status", poisoned), ("backup", str(tmp_path / "b.tgz"))):
        result = own.cli(*args, env={"COLUMNS": "80"})
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr
    shown = own.cli("ls", "--status", "conflict", env={"COLUMNS": "80"}, check=True).stdout
    assert poisoned in shown and "unreadable" in shown, shown
    status = own.cli("status", poisoned, check=True).stdout
    assert "conflict" in status and "not a Pressroom entry" in " ".join(status.split())
    slo = own.cli("slo")
    assert "Traceback" not in slo.stderr and "Report generation success rate" in slo.stdout
    assert "left out" in own.cli("backup", str(tmp_path / "c.tgz")).stderr

    # A request whose id already holds garbage: done, and its entry readable again.
    victim = unique("victim")
    await ledger.put(victim, b"\x00garbage")
    await publish(own_nc, {"request_id": victim, "template": "plain.html"})
    await own_outcomes.delivered_event(victim)

    async def readable() -> dict[str, Any] | None:
        entry = cli_json(own, "status", victim)
        return entry if entry["status"] == "delivered" else None

    await eventually(readable, timeout=60)


async def test_an_unreadable_fetch_cache_value_is_a_miss(
    own: Stack, own_nc: Any, own_outcomes: Outcomes
) -> None:
    from services.fetcher.cache import cache_key
    from shared.events import Source

    data = own.root / "data" / "numbers.json"
    data.write_text(json.dumps({"total": 3}))
    source = {"name": "numbers", "kind": "file", "path": "numbers.json", "cache": 60}
    cache = await own_nc.jetstream().key_value("pressroom_cache")
    await cache.put(cache_key(Source.model_validate(source)), b"not json at all")
    rid = unique("cached")
    await publish(own_nc, {"request_id": rid, "template": "plain", "sources": [source]})
    await own_outcomes.delivered_event(rid)


async def test_cache_ls_shows_a_cached_source_and_cache_clear_makes_the_next_request_fetch(
    own: Stack, own_nc: Any, own_outcomes: Outcomes
) -> None:
    # The legacy runbook's "clear specific cache patterns": by the source's name.
    (own.templates / "tally.html").write_text("<p>total {{ tally.total }}</p>")
    data = own.root / "data" / "tally.json"
    source = {"name": "tally", "kind": "file", "path": "tally.json", "cache": 600}

    async def total_in(body: dict[str, Any]) -> str:
        rid = unique("tally")
        request = {"request_id": rid, "template": "tally.html", "sources": [source]}
        await publish(own_nc, {**request, **body, "formats": ["html"]})
        await own_outcomes.delivered_event(rid)
        html = delivered_file(own.out / "tally", rid, "html").read_text()
        return html.split("total ", 1)[1].split("<", 1)[0]

    deliver = {"deliver": [{"channel": "file", "path": "tally"}]}
    data.write_text(json.dumps({"total": 1}))
    assert await total_in(deliver) == "1"
    data.write_text(json.dumps({"total": 2}))
    assert await total_in(deliver) == "1"  # served from the cache
    listed = cli_json(own, "cache", "ls")
    assert [r["source"] for r in listed["sources"]].count("tally") == 1
    shown = own.cli("cache", "ls", env={"COLUMNS": "80"}, check=True).stdout
    assert "tally" in shown and all(len(line) <= 80 for line in shown.splitlines())
    cleared = cli_json(own, "cache", "clear", "tally", "no-such-source")
    assert cleared == {"sources": 1, "renders": 0, "not_cached": ["no-such-source"]}
    assert "tally" not in [r["source"] for r in cli_json(own, "cache", "ls")["sources"]]
    assert await total_in(deliver) == "2"  # fetched afresh
    everything = cli_json(own, "cache", "clear", "--all", "--renders")
    assert everything["sources"] >= 1 and everything["not_cached"] == []
    assert cli_json(own, "cache", "ls") == {"sources": [], "renders": 0}
    audit = own.cli("audit", "--json", check=True).stdout
    assert any(e["action"] == "cache clear" for e in json.loads(audit))
    refused = own.cli("cache", "clear")
    assert refused.returncode == 1 and "--all" in refused.stderr


async def test_garbage_on_the_dead_letter_stream_is_listed_and_backed_up(
    own: Stack, own_nc: Any, tmp_path: Path
) -> None:
    await own_nc.jetstream().publish("dlq.report.requested", b"\xff not a dead letter")
    listed = own.cli("dlq", "ls", env={"COLUMNS": "80"})
    assert listed.returncode == 0 and "not a Pressroom dead letter" in " ".join(
        listed.stdout.split()
    ), listed.stdout + listed.stderr
    backup = own.cli("backup", str(tmp_path / "dlq.tgz"))
    assert backup.returncode == 0 and "Traceback" not in backup.stderr, backup.stderr


async def test_the_scheduler_fires_the_other_schedules_and_health_names_the_conflict(
    own: Stack, own_nc: Any
) -> None:
    """The first schedule's stored value is garbage; the second one is owed a fire (its last
    check 90 s ago): the second fires and is delivered, `health` shows the conflict."""
    kv = await own_nc.jetstream().key_value("pressroom_schedules")
    await kv.put(SCHEDULES[0], b"\x00 not a time")
    await kv.put(SCHEDULES[1], (datetime.now(UTC) - timedelta(seconds=90)).isoformat().encode())
    own.start_worker("scheduler")

    async def second_delivered() -> list[dict[str, Any]] | None:
        rows = [
            r
            for r in ls_json(own, "--status", "delivered")
            if r["requested_by"] == f"scheduler:{SCHEDULES[1]}"
        ]
        return rows or None

    await eventually(second_delivered, timeout=120)
    [url] = [u for name, u in own.health.items() if name.startswith("scheduler")]

    async def conflict_shown() -> str | None:
        report = own.cli("health", "--url", url, "--json")
        found = json.loads(report.stdout)["components"].get(f"worker {url}", {})
        return found["detail"] if "conflict" in found.get("detail", "") else None

    detail = await eventually(conflict_shown, timeout=60)
    assert SCHEDULES[0] in detail and "still firing" in detail
    shown = own.cli("health", "--url", url, env={"COLUMNS": "80"})
    assert "conflict" in shown.stdout and "Traceback" not in shown.stderr
