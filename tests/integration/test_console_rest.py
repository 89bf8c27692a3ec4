"""The rest of the console (#31) on a real stack: the SLO index that `pressroom slo` and the
console's /slo page both read agrees with a count over the ledger itself — through a failure
replayed into a delivery, a backfill from nothing, and a crash in the middle of a batch —
and every CLI command that changes state or reveals data is in `pressroom audit`.

One stack (the session's) and one `pressroom console` process for the whole file.
"""

from __future__ import annotations

import getpass
import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.console import sloindex
from services.console.busaccess import Bus
from services.console.embedded import free_port
from services.console.slo import MIB, Tally, quantize
from shared.adapters.ledger import LedgerEntry, parse_entry
from shared.bus.names import LEDGER_BUCKET, SLO_BUCKET
from shared.bus.topology import kv_snapshot
from shared.settings import Settings
from tests.helpers import Console, Outcomes, Stack, eventually, unique

pytestmark = pytest.mark.integration

PASSWORD = "olga-operates-all-day"
GOOD = "rest-good.html"
BROKEN = "rest-broken.html"
COMMON = (  # the SLIs counted from the ledger (both faces also show the templates' own check)
    "Report generation success rate",
    "Report generation time (p95)",
    "Scheduled report delivery (on time)",
    "PDF rendering success rate",
    "Data aggregation latency (p95)",
    "Report file size (p95)",
)


class RestConsole(Console):
    """`pressroom console` as its own process, and a signed-in client (its cookies kept by
    hand, so any httpx client of a test can use them)."""

    def __init__(self, stack: Stack) -> None:
        config = stack.root / "rest-config.yaml"
        config.write_text(  # a schedule that never fires by itself while the tests run
            "schedules:\n  - name: rest-yearly\n    cron: '0 6 1 1 *'\n"
            f"    request: {{template: {GOOD}, deliver: [{{channel: file, path: yearly}}]}}\n"
        )
        super().__init__(
            stack,
            {"olga": ("ops", PASSWORD)},
            name="console-rest",
            PRESSROOM_DATA_DIR=str(stack.root / "rest-state"),
            PRESSROOM_CONFIG=str(config),
        )
        self.cookies: dict[str, str] = {}

    async def get(self, client: httpx.AsyncClient, path: str) -> httpx.Response:
        header = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return self._keep(await client.get(f"{self.url}{path}", headers={"cookie": header}))

    def _keep(self, answer: httpx.Response) -> httpx.Response:
        for value in answer.headers.get_list("set-cookie"):
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";")[0]
        return answer

    async def login(self) -> None:
        await self.wait_ready()
        async with httpx.AsyncClient(timeout=60) as client:
            form = (await self.get(client, "/login")).text
            token = re.search(r'name="csrf_token" value="([^"]+)"', form)
            assert token is not None
            header = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            answer = self._keep(
                await client.post(
                    f"{self.url}/login",
                    data={"username": "olga", "password": PASSWORD, "csrf_token": token[1]},
                    headers={"cookie": header},
                )
            )
            assert answer.status_code == 303, answer.text


@pytest.fixture(scope="module")
def console(stack: Stack) -> Iterator[RestConsole]:
    (stack.templates / GOOD).write_text(
        "<!doctype html><html lang='en'><body><h1>{{ title }}</h1></body></html>"
    )
    running = RestConsole(stack).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
async def signed_in(console: RestConsole) -> RestConsole:
    await console.login()
    return console


async def test_a_script_signs_in_over_plain_http_with_an_ordinary_cookie_jar(
    console: RestConsole,
) -> None:
    # On the default loopback address over HTTP, a client that keeps cookies as browsers'
    # standards say (httpx's jar, like requests' and Python's) gets its session back: a
    # `Secure` cookie would never be sent over HTTP, and every /api/ call would answer 401.
    await console.wait_ready()
    async with httpx.AsyncClient(base_url=console.url, timeout=60) as client:
        form = await client.get("/login")
        assert "secure" not in form.headers["set-cookie"].lower()
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        answer = await client.post(
            "/login", data={"username": "olga", "password": PASSWORD, "csrf_token": token[1]}
        )
        assert answer.status_code == 303, answer.text
        reports = await client.get("/api/reports")
        assert reports.status_code == 200, reports.text
    async with httpx.AsyncClient(base_url=console.url, timeout=60) as client:
        # Reached over HTTPS through a proxy on this host, the cookie is `Secure`.
        behind = await client.get("/login", headers={"x-forwarded-proto": "https"})
        assert behind.status_code == 200
        assert "secure" in behind.headers["set-cookie"].lower()
        # Over plain HTTP from elsewhere too (a console bound to 0.0.0.0 without TLS): the
        # session never travels the network in clear, and the page says to use HTTPS.
        remote = await client.get("/login", headers={"host": f"10.0.0.5:{console.port}"})
        assert "secure" in remote.headers["set-cookie"].lower()
        assert "Reach the console through HTTPS" in remote.text
        # Through a proxy that calls the console by 127.0.0.1 for users anywhere: Secure.
        proxied = await client.get("/login", headers={"x-forwarded-for": "203.0.113.9"})
        assert "secure" in proxied.headers["set-cookie"].lower()


async def test_get_url_mints_a_working_link_on_the_embedded_store_without_a_public_url(
    console: RestConsole, stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    # DESIGN.md: `get ID --url` "mints one on every store". The JetStream object store has
    # no links of its own, so with PRESSROOM_PUBLIC_URL unset the link goes to the console
    # this machine runs, where it listens (recorded by `pressroom console` in the data
    # folder: here on another port than PRESSROOM_CONSOLE_PORT's default).
    rid = unique("rest-link")
    await publish(nc, body(rid))
    await outcomes.delivered_event(rid)
    await console.wait_ready()
    here = {"PRESSROOM_PUBLIC_URL": ""}
    minted = console.cli("get", rid, "--url", "--expires", "20d", env=here)
    assert minted.returncode == 0, minted.stderr
    link = minted.stdout.strip()
    assert link.startswith(f"http://127.0.0.1:{console.port}/a/")
    assert "console on this machine" in minted.stderr
    # No console started with this data folder, and the bus is not the embedded one: no
    # link can be made that anyone could open — the error says what to set.
    elsewhere = {**here, "PRESSROOM_DATA_DIR": str(stack.root / "no-console-here")}
    refused = console.cli("get", rid, "--url", env=elsewhere)
    assert refused.returncode == 1 and "PRESSROOM_PUBLIC_URL" in refused.stderr
    fetched = console.cli("get", rid, "-o", str(stack.root / f"{rid}.pdf"))
    assert fetched.returncode == 0, fetched.stderr
    async with httpx.AsyncClient(timeout=60) as client:
        answer = await client.get(link)
    assert answer.status_code == 200
    assert answer.content == (stack.root / f"{rid}.pdf").read_bytes()


@pytest.fixture
async def bus(stack: Stack, nc: Any) -> AsyncIterator[Bus]:
    yield Bus(nc, nc.jetstream(timeout=10), Settings(nats_url=stack.url))  # type: ignore[call-arg]


def body(rid: str, template: str = GOOD) -> dict[str, Any]:
    return {
        "request_id": rid,
        "template": template,
        "params": {"title": rid},
        "deliver": [{"channel": "file", "path": "rest"}],
        "requested_by": "console-rest-test",
    }


async def publish(nc: Any, payload: dict[str, Any]) -> None:
    await nc.jetstream().publish("report.requested", json.dumps(payload).encode())


# ---- the brute-force count ----------------------------------------------------------------
def p95(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = -(-len(ordered) * 95 // 100)  # nearest rank: ceil(n · 0.95)
    return ordered[int(rank) - 1]


async def counted(nc: Any, since: datetime) -> dict[str, tuple[float | None, int]]:
    """Each SLI as (value, samples), counted from every ledger entry requested since `since`
    (an hour's start) — no index, no code of the SLO modules but the documented rounding."""
    entries: list[LedgerEntry] = [
        parse_entry(k, v) for k, v in (await kv_snapshot(nc.jetstream(), LEDGER_BUCKET)).items()
    ]
    mine = [
        e for e in entries if e.status != "conflict" and (e.requested_at or e.updated_at) >= since
    ]
    finished = [e for e in mine if e.status in ("delivered", "failed")]
    delivered = [e for e in finished if e.status == "delivered"]
    totals = [t for e in delivered if (t := e.total_seconds) is not None]
    scheduled = [e for e in finished if (e.requested_by or "").startswith("scheduler:")]
    on_time = [
        e
        for e in scheduled
        if e.status == "delivered" and (t := e.total_seconds) is not None and t <= 900
    ]
    rendered = sum(1 for e in mine if (r := e.stages.get("renderer")) and r.state == "done")
    render_failed = sum(1 for e in mine if e.status == "failed" and e.failed_stage == "renderer")
    fetches = [e.fetch_seconds for e in mine if e.fetch_seconds is not None]
    sizes = [
        float(max(sizes))
        for e in mine
        if (
            sizes := [a.size for a in e.artefacts if a.format == "pdf"]
            or [a.size for a in e.artefacts]
        )
    ]

    def rate(part: int, whole: int) -> float | None:
        return part / whole * 100 if whole else None

    size_p95 = p95(sizes)
    return {
        "Report generation success rate": (rate(len(delivered), len(finished)), len(finished)),
        "Report generation time (p95)": (p95(totals), len(totals)),
        "Scheduled report delivery (on time)": (
            rate(len(on_time), len(scheduled)),
            len(scheduled),
        ),
        "PDF rendering success rate": (
            rate(rendered, rendered + render_failed),
            rendered + render_failed,
        ),
        "Data aggregation latency (p95)": (p95(fetches), len(fetches)),
        "Report file size (p95)": (None if size_p95 is None else size_p95, len(sizes)),
    }


def matches(shown: dict[str, Any], count: tuple[float | None, int], sli: str) -> bool:
    """An SLI as shown against the count: samples exactly; a rate exactly; a percentile as
    the index keeps it (rounded up to three significant digits)."""
    value, samples = count
    if shown["samples"] != samples:
        return False
    if value is None or shown["value"] is None:
        return value is None and shown["value"] is None
    if sli == "Report file size (p95)":
        return bool(shown["value"] == pytest.approx(quantize(value) / MIB))
    if "(p95)" in sli:
        return bool(shown["value"] == pytest.approx(quantize(value)))
    return bool(shown["value"] == pytest.approx(value))


async def agree(console: RestConsole, nc: Any, window: str = "24h") -> dict[str, Any]:
    """`pressroom slo --json`, /api/slo and the count over the ledger, once they agree (the
    session's stack may still be settling other tests' reports: read until it holds still)."""
    seen: dict[str, Any] = {}

    async def same() -> bool:
        cli = console.cli("slo", "--window", window, "--json")
        assert cli.returncode in (0, 1), cli.stderr  # 1: an objective is missed
        async with httpx.AsyncClient(timeout=60) as client:
            answer = await console.get(client, f"/api/slo?window={window}")
        assert answer.status_code == 200, answer.text
        shown, page = json.loads(cli.stdout), answer.json()
        since = datetime.fromisoformat(shown["from"])
        count = await counted(nc, since)
        cli_rows = {r["sli"]: r for r in shown["objectives"]}
        page_rows = {r["sli"]: r for r in page["objectives"]}
        seen.update(cli=cli_rows, page=page_rows, count=count, page_view=page)
        return (
            page["from"] == shown["from"]
            and shown["objectives"] == page["objectives"]  # one table: every row, in order
            and all(matches(cli_rows[s], count[s], s) for s in COMMON)
        )

    try:
        await eventually(same, timeout=120, every=1)
    except AssertionError:
        raise AssertionError(f"never agreed: {json.dumps(seen, default=str)[:3000]}") from None
    return seen


# ---- tests --------------------------------------------------------------------------------
async def test_slo_page_cli_and_a_count_of_the_ledger_agree_through_a_replay(
    signed_in: Console, stack: Stack, nc: Any, outcomes: Outcomes
) -> None:
    good = [unique("slo-ok") for _ in range(4)]
    broken = unique("slo-broken")
    (stack.templates / BROKEN).write_text("<p>{{ no_such_variable.inner }}</p>")
    for rid in good:
        await publish(nc, body(rid))
    await publish(nc, body(broken, BROKEN))
    for rid in good:
        await outcomes.delivered_event(rid)
    await outcomes.failed_event(broken)

    seen = await agree(signed_in, nc)
    assert list(seen["page"]) == list(seen["cli"])
    assert "Template validation success" in seen["page"]
    assert seen["page"]["Template validation success"]["samples"] >= 2  # GOOD and BROKEN
    assert seen["cli"]["Report generation success rate"]["samples"] >= 5
    assert seen["count"]["PDF rendering success rate"][1] >= 5
    page = seen["page_view"]
    assert page["index"]["seq"] <= page["index"]["ledger_seq"]
    assert len(page["series"]["labels"]) == len(page["series"]["success"]) >= 24
    failed_before = seen["count"]["Report generation success rate"]

    # Fixed and replayed, the failure becomes a delivery: the index moves it, not adds it.
    (stack.templates / BROKEN).write_text("<p>fixed</p>")
    replayed = signed_in.cli("dlq", "replay", broken)
    assert replayed.returncode == 0, replayed.stderr
    await outcomes.delivered_event(broken, failed_before=1)
    seen = await agree(signed_in, nc)
    after = seen["count"]["Report generation success rate"]
    assert after[1] >= failed_before[1]  # the replayed report is counted once, not twice
    async with httpx.AsyncClient(timeout=60) as client:
        html = await signed_in.get(client, "/slo?window=30d")
    assert html.status_code == 200 and "<svg" in html.text
    for row in seen["cli"]:  # the page's table has each row the CLI prints
        assert f'<th scope="row">{row}</th>' in html.text


async def test_the_index_is_backfilled_from_nothing_and_recovers_a_batch_cut_short(
    signed_in: Console, nc: Any, bus: Bus, outcomes: Outcomes
) -> None:
    console = signed_in
    rid = unique("slo-backfill")
    await publish(nc, body(rid))
    await outcomes.delivered_event(rid)

    # A stack upgraded from a version without the index: the bucket is not there at all.
    await nc.jetstream().delete_key_value(SLO_BUCKET)
    await agree(console, nc)

    # Done once: with nothing new in the ledger, catching up again writes nothing.
    async def idle_catch_up_writes_nothing() -> bool:
        js = nc.jetstream()
        before = (await js.stream_info(f"KV_{SLO_BUCKET}")).state.last_seq
        ledger = (await js.stream_info(f"KV_{LEDGER_BUCKET}")).state.last_seq
        seq, last = await sloindex.catch_up(bus)
        after = (await js.stream_info(f"KV_{SLO_BUCKET}")).state.last_seq
        return bool(seq == last == ledger and before == after)

    await eventually(idle_catch_up_writes_nothing, timeout=60, every=0.5)

    # A process that dies in the middle of a batch: its journal is in the state and only the
    # hours took it (twice even) — the next catch-up finishes it without counting twice.
    kv = await sloindex.bucket(bus)
    await kv.delete(sloindex.STATE)
    await sloindex.catch_up(bus)  # a new generation, fully indexed
    js = nc.jetstream()

    async def cut_short() -> bool:
        """Back to an empty index of this generation with one batch journaled (the console
        keeps the index too: when it writes first, start over)."""
        state, revision = await sloindex._get(kv, sloindex.STATE)
        assert state is not None and not state["journal"]
        await js.purge_stream(f"KV_{SLO_BUCKET}", subject=f"$KV.{SLO_BUCKET}.*.{state['gen']}.>")
        last = (await js.stream_info(f"KV_{LEDGER_BUCKET}")).state.last_seq
        changes = await sloindex._changes(bus, 1, last)
        journal = await sloindex._batch(kv, state["gen"], changes, fresh=True)
        crashed = {**state, "seq": 0, "journal": journal}
        if not await sloindex._put(kv, sloindex.STATE, crashed, revision):
            return False
        for _ in range(2):
            for hour, change in journal["hours"].items():
                tally = Tally.from_dict(change)
                await sloindex._take_hour(kv, f"h.{state['gen']}.{hour}", tally, journal["to"])
        return True

    await eventually(cut_short, timeout=60, every=0.1)
    # … and the next reader finishes the batch and the rest of the ledger (days too).
    await agree(console, nc, "30d")


@pytest.mark.timeout(300)  # a dozen CLI processes, each a Python start: slow on a busy machine
async def test_every_state_changing_cli_command_is_in_the_audit_trail(
    console: RestConsole, stack: Stack, nc: Any, outcomes: Outcomes, tmp_path: Path
) -> None:
    rid = unique("audit-cli")
    submitted = console.cli(
        "request", "--template", GOOD, "--param", "title=audited", "--request-id", rid,
        "--to-folder", "audit", "--wait",
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    broken = unique("audit-dlq")
    (stack.templates / "rest-audit-broken.html").write_text("<p>{{ nothing.here }}</p>")
    await publish(nc, body(broken, "rest-audit-broken.html"))
    await outcomes.failed_event(broken)
    ran: list[tuple[list[str], str, str, bool]] = [  # command, action, target, succeeds
        (["get", rid, "--url"], "get", f"{rid} --url", True),
        (["deliver", "no-such-report", "--folder", "x"], "re-deliver", "no-such-report", False),
        (["dlq", "purge", broken], "purge dead letters", broken, True),
        (["schedule", "pause", "rest-yearly"], "schedule pause", "rest-yearly", True),
        (["schedule", "resume", "rest-yearly"], "schedule resume", "rest-yearly", True),
        (["cancel", rid], "cancel", rid, True),
        (["clean", "--older-than", "3650d", "--dry-run"], "clean", "--older-than 3650d", True),
        (["bus", "auth", "--out", str(tmp_path / "ids")], "bus auth", "--out", True),
    ]
    started = datetime.now(UTC) - timedelta(seconds=1)
    for args, _, _, succeeds in ran:
        done = console.cli(*args)
        assert (done.returncode == 0) == succeeds or args[0] == "cancel", (args, done.stderr)
    # Run while the bus was out of reach: kept on disk, in the trail once it is back.
    offline = console.cli(
        "console", "user", "add", "offline", "--role", "viewer",
        stdin="offline-password-long", env={"PRESSROOM_NATS_URL": f"nats://127.0.0.1:{free_port()}"},
    )  # fmt: skip
    assert offline.returncode == 0, offline.stderr

    listed = console.cli("audit", "--since", "1h", "--json")
    assert listed.returncode == 0, listed.stderr
    records = [r for r in json.loads(listed.stdout) if datetime.fromisoformat(r["at"]) >= started]
    for args, action, target, succeeds in ran:
        found = [
            r
            for r in records
            if r["action"] == action and target in r["target"] and r["source"].startswith("cli@")
        ]
        assert found, (args, [(r["action"], r["target"]) for r in records])
        record = found[-1]
        assert record["who"] == getpass.getuser() and record["source"].endswith(" as ops")
        if succeeds and args[0] != "cancel":
            assert not record["outcome"].startswith(("error", "exit")), record
    failed = [r for r in records if r["target"].startswith("no-such-report")]
    assert failed and "no-such-report" in failed[0]["outcome"]  # the one-line reason
    purged = [r for r in records if r["action"] == "purge dead letters"]
    assert purged[0]["outcome"] == "1"
    late = [r for r in records if r["action"] == "console user add" and "offline" in r["target"]]
    assert late and datetime.fromisoformat(late[0]["at"]) >= started
    # What is read-only metadata is not recorded.
    assert not any(r["action"] in ("ls", "slo", "stats", "audit") for r in records)


async def test_a_report_pages_live_stream_says_changed_once_it_listens(
    signed_in: RestConsole,
) -> None:
    """A change between the page being served and its stream opening is not lost: the stream's
    first event, once it listens, has the page look again (the browser test of a cancel
    relies on it)."""
    header = "; ".join(f"{k}={v}" for k, v in signed_in.cookies.items())
    url = f"{signed_in.url}/reports/{unique('quiet')}/events"
    async with (
        httpx.AsyncClient(timeout=60) as client,
        client.stream("GET", url, headers={"cookie": header}) as answer,
    ):
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        said = ""
        async for chunk in answer.aiter_text():
            said += chunk
            if "event: changed" in said or ": keep-alive" in said:  # 15 s of nothing
                break
    assert said.startswith("retry: 2000\n\nevent: changed\n"), said
