"""The web console in a real browser (Debian's Chromium through Playwright) against a real
stack: nats-server, the three workers and `pressroom console`, each its own process.

Set PRESSROOM_CONSOLE_SHOTS=<folder> to keep a screenshot of each page at 1280 and 390 px
(docs/console/ holds the ones the README shows).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from shared.bus.names import OBJECT_BUCKET
from shared.downloadlinks import mint_token
from shared.events import Artefact
from tests.browser.oidc import OidcProvider
from tests.helpers import Console, Outcomes, Stack, eventually, stage_done, unique
from tests.servers import HttpReceiver

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"
PASSWORD = {"olga": "olga-operates-all-day", "vic": "vic-only-looks-around"}
WIDTHS = {"wide": 1280, "phone": 390}
SHOTS = os.environ.get("PRESSROOM_CONSOLE_SHOTS")


def console_config(stack: Stack) -> Path:
    """A schedule that never fires by itself while the tests run."""
    config = stack.root / "console-config.yaml"
    config.write_text(
        "schedules:\n  - name: yearly-summary\n    cron: '0 6 1 1 *'\n"
        f"    request: {{template: {SIMPLE}, deliver: [{{channel: file, path: yearly}}]}}\n"
    )
    return config


def operators(stack: Stack, **extra: str) -> Console:
    """`pressroom console` with ops olga and viewer vic."""
    return Console(
        stack,
        {name: (role, PASSWORD[name]) for name, role in (("olga", "ops"), ("vic", "viewer"))},
        PRESSROOM_DATA_DIR=str(stack.root / "console-state"),
        PRESSROOM_CONFIG=str(console_config(stack)),
        **extra,
    )


@pytest.fixture(scope="module")
def console(stack: Stack) -> Iterator[Console]:
    (stack.templates / SIMPLE).write_text(
        "<!doctype html><html lang='en'><body><h1>Console test</h1>"
        "<p>{{ reporting_period }}</p></body></html>"
    )
    running = operators(stack).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
async def browser(console: Console) -> AsyncIterator[Browser]:
    await console.wait_ready()
    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            await chromium.close()


class Watched:
    """A signed-in browser context whose pages' console errors are collected."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.errors: list[str] = []

    async def page(self, width: int = 1280) -> Page:
        page = await self.context.new_page()
        await page.set_viewport_size({"width": width, "height": 900})
        page.on(
            "console",
            lambda m: self.errors.append(f"{page.url}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))
        return page


async def signed_in(
    browser: Browser, console: Console, name: str, *, inject: bool = False
) -> Watched:
    """`inject`: the page's Content-Security-Policy let through, so axe-core can be added."""
    watched = Watched(await browser.new_context(base_url=console.url, bypass_csp=inject))
    page = await watched.page()
    await page.goto("/login")
    await page.fill("#username", name)
    await page.fill("#password", PASSWORD[name])
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r"/reports$"))
    await page.close()
    return watched


@pytest.fixture(scope="module")
async def olga(browser: Browser, console: Console) -> AsyncIterator[Watched]:
    watched = await signed_in(browser, console, "olga")
    yield watched
    await watched.context.close()
    assert not watched.errors, watched.errors


@pytest.fixture(scope="module")
async def vic(browser: Browser, console: Console) -> AsyncIterator[Watched]:
    watched = await signed_in(browser, console, "vic")
    yield watched
    await watched.context.close()
    assert not watched.errors, watched.errors


@pytest.fixture(scope="module")
async def seen(nc: Any) -> Outcomes:
    return await Outcomes().start(nc)


SIMPLE = "console-simple.html"


def request_body(rid: str, template: str = SIMPLE, folder: str = "") -> dict[str, Any]:
    return {
        "request_id": rid,
        "template": template,
        "formats": ["pdf"],
        "params": {"reporting_period": "November 2026"},
        "deliver": [{"channel": "file", "path": folder or rid}],
        "requested_by": "browser-test",
    }


async def publish(nc: Any, body: dict[str, Any]) -> None:
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())


# What a page must never look like, at any width: a word of a link or a button broken over
# two lines ("Shado / w render"), a heading with nothing under it (an empty "Actions").
LAYOUT_PROBLEMS = """() => {
  const seen = (e) => e.offsetParent !== null || getComputedStyle(e).position === "fixed";
  const problems = [];
  for (const control of document.querySelectorAll("a, button")) {
    if (!seen(control)) continue;
    const walker = document.createTreeWalker(control, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      // A word: between spaces, or an id's parts between "-", "/", "_" and "." (a line
      // may break after those, as it does in "sample-portfolio-2026…").
      for (const word of node.data.matchAll(/[^\\s\\-\\/_.]+/g)) {
        const range = document.createRange();
        range.setStart(node, word.index);
        range.setEnd(node, word.index + word[0].length);
        const rects = [...range.getClientRects()].filter((r) => r.width > 0);
        const lines = new Set(rects.map((r) => Math.round(r.top)));
        const kind = control.tagName.toLowerCase();
        if (lines.size > 1) problems.push(`word broken in a ${kind}: "${word[0]}"`);
      }
    }
  }
  for (const heading of document.querySelectorAll("main h2, main h3")) {
    if (!seen(heading)) continue;
    let next = heading.nextElementSibling;
    while (next && !seen(next)) next = next.nextElementSibling;
    const media = "img, svg, iframe, input, select, textarea";
    const filled = next && (next.innerText.trim() || next.querySelector(media));
    if (!filled) problems.push(`empty heading: "${heading.innerText.trim()}"`);
  }
  return problems;
}"""


async def layout_problems(page: Page) -> list[str]:
    return list(await page.evaluate(LAYOUT_PROBLEMS))


async def csrf_of(page: Page) -> str:
    return str(await page.locator("input[name=csrf_token]").first.get_attribute("value"))


# ---- tests ----------------------------------------------------------------------------------
async def test_closed_by_default_and_wrong_password_refused(
    browser: Browser, console: Console
) -> None:
    context = await browser.new_context(base_url=console.url)
    page = await context.new_page()
    answer = await page.goto("/dead-letters")
    assert answer is not None
    assert page.url.endswith("/login?next=%2Fdead-letters")
    async with httpx.AsyncClient(base_url=console.url) as client:
        assert (await client.get("/api/reports")).status_code == 401
    await page.fill("#username", "olga")
    await page.fill("#password", "not-her-password-at-all")
    await page.click("button[type=submit]")
    await page.wait_for_selector("p.error")
    assert "wrong user name or password" in await page.inner_text("p.error")
    cookie = next(c for c in await context.cookies() if c["name"] == "pressroom_session")
    # Over plain HTTP (loopback) not `Secure`, so scripts can sign in too; over HTTPS it is
    # (tests/integration/test_console_rest.py).
    assert cookie["httpOnly"] and not cookie["secure"] and cookie["sameSite"] == "Lax"
    await context.close()


async def test_a_request_on_the_bus_appears_live_and_reaches_delivered(
    olga: Watched, nc: Any, seen: Outcomes
) -> None:
    page = await olga.page()
    await page.goto("/reports")
    await page.evaluate("window.__stayed = true")  # gone if the page reloads
    rid = unique("live")
    await publish(nc, request_body(rid))
    row = page.locator(f"tr[data-id='{rid}']")
    await row.wait_for(timeout=60_000)
    await page.locator(f"tr[data-id='{rid}'] .s-delivered").wait_for(timeout=120_000)
    assert await page.evaluate("window.__stayed") is True
    await seen.delivered_event(rid)
    await page.close()


async def test_broken_template_dead_letter_fixed_and_replayed_from_the_page(
    olga: Watched, nc: Any, seen: Outcomes, stack: Stack
) -> None:
    name = f"{unique('broken')}.html"
    template = stack.templates / name
    template.write_text("<h1>{{ no_such_variable.field }}</h1>")
    rid = unique("dlq")
    await publish(nc, request_body(rid, template=name))
    await seen.failed_event(rid)
    page = await olga.page()
    await page.goto(f"/dead-letters?template={name}")
    row = page.locator("tr", has=page.locator(f"a[href='/reports/{rid}']"))
    await row.wait_for()
    assert "no_such_variable" in await row.inner_text()
    template.write_text("<h1>Fixed {{ reporting_period }}</h1>")
    await row.get_by_role("button", name=re.compile("Replay dead letter")).click()
    await page.wait_for_selector("p.flash")
    assert "replayed dead letter" in await page.inner_text("p.flash")
    await seen.delivered_event(rid, failed_before=1)
    folder = stack.out / rid

    async def delivered_files() -> list[Path] | None:
        return sorted(folder.glob("*.pdf")) or None

    files = await eventually(delivered_files, timeout=60)
    assert len(files) == 1
    assert len(seen.delivered[rid]) == 1
    await stage_done(nc, rid, "distributor")  # the delivery's outcome record is stored by then
    await page.goto(f"/api/reports/{rid}")
    detail = json.loads(await page.inner_text("body"))
    assert [d["ok"] for d in detail["deliveries"]] == [True]
    assert detail["dead_letters"] == []
    await page.close()


async def test_viewer_sees_no_replay_and_a_replay_post_is_refused(
    vic: Watched, nc: Any, seen: Outcomes, stack: Stack
) -> None:
    rid, good = unique("viewer"), unique("viewer-ok")
    await publish(nc, request_body(rid, template="no-such-template.html"))
    await publish(nc, request_body(good))
    await seen.failed_event(rid)
    await seen.delivered_event(good)
    page = await vic.page()
    await page.goto(f"/api/reports/{good}")
    shown = json.loads(await page.inner_text("body"))
    assert shown["request"] is None  # bodies and delivery targets: ops only
    assert [d["target"] for d in shown["deliveries"]] == ["(ops only)"]
    assert [c["target"] for c in shown["entry"]["channels"]] == ["(ops only)"]
    await page.goto("/dead-letters")
    link = page.locator(f"a[href='/reports/{rid}']").first
    await link.wait_for()
    assert await page.get_by_role("button", name=re.compile("Replay")).count() == 0
    letter = await page.locator("tr", has=link).locator("a").first.inner_text()
    seq = letter.lstrip("#")
    token = await csrf_of(page)
    answer = await page.request.post(f"/dead-letters/{seq}/replay", form={"csrf_token": token})
    assert answer.status == 403
    await page.goto(f"/dead-letters/{seq}")
    assert await page.get_by_role("button", name=re.compile("Replay")).count() == 0
    assert "shown to the ops role" in await page.inner_text("pre.body")
    await page.close()


async def test_post_without_csrf_token_is_refused(olga: Watched, nc: Any, seen: Outcomes) -> None:
    rid = unique("csrf")
    await publish(nc, request_body(rid, template="no-such-template.html"))
    await seen.failed_event(rid)
    page = await olga.page()
    await page.goto("/dead-letters?reason=&since=&stage=&template=")
    link = page.locator(f"a[href='/reports/{rid}']").first
    await link.wait_for()
    seq = (await page.locator("tr", has=link).locator("a").first.inner_text()).lstrip("#")
    answer = await page.request.post(f"/dead-letters/{seq}/replay", form={"x": "1"})
    assert answer.status == 403
    forged = await page.request.post(
        f"/dead-letters/{seq}/replay", form={"csrf_token": "guessed-token"}
    )
    assert forged.status == 403
    await page.goto(f"/api/dead-letters/{seq}")  # still there: nothing was replayed
    assert json.loads(await page.inner_text("body"))["request_id"] == rid
    await page.close()


async def test_download_link_gives_the_exact_bytes_and_a_tampered_one_is_refused(
    olga: Watched, console: Console, nc: Any, seen: Outcomes
) -> None:
    rid = unique("link")
    await publish(nc, request_body(rid))
    await seen.delivered_event(rid)
    minted = console.cli("get", rid, "--url", "--expires", "1h")
    assert minted.returncode == 0, minted.stderr
    link = minted.stdout.strip()
    assert link.startswith(f"{console.url}/a/")
    page = await olga.page()
    await page.goto(f"/api/reports/{rid}")
    artefact = json.loads(await page.inner_text("body"))["entry"]["artefacts"][0]
    async with httpx.AsyncClient() as client:
        whole = await client.get(link)
        assert whole.status_code == 200
        assert hashlib.sha256(whole.content).hexdigest() == artefact["sha256"]
        part = await client.get(link, headers={"Range": "bytes=10-99"})
        assert part.status_code == 206 and part.content == whole.content[10:100]
        body, _, signature = link.rpartition(".")
        # The first character, not the last: base64's last character may carry unused bits, and
        # changing only those changes nothing in the decoded signature.
        flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
        assert (await client.get(f"{body}.{flipped}")).status_code == 403
        # Another artefact's key in a token signed with someone else's secret: refused too.
        other = Artefact.model_validate({**artefact, "key": "reports/elsewhere.pdf"})
        forged = mint_token(b"a guessed secret", other, datetime.now(UTC) + timedelta(hours=1))
        assert (await client.get(f"{console.url}/a/{forged}")).status_code == 403
        past = datetime.now(UTC) - timedelta(seconds=1)
        expired = mint_token(console.secret, Artefact.model_validate(artefact), past)
        assert (await client.get(f"{console.url}/a/{expired}")).status_code == 403
        await (await nc.jetstream().object_store(OBJECT_BUCKET)).delete(artefact["key"])
        assert (await client.get(link)).status_code == 404  # purged: the link is dead
    await page.goto("/audit")
    trail = await page.inner_text("table")
    assert "download refused" in trail and "signature does not match" in trail
    assert "expired" in trail and "404: no longer stored" in trail
    await page.close()


async def test_pages_at_both_widths_pass_axe_with_no_serious_violations(
    browser: Browser, console: Console, nc: Any, seen: Outcomes
) -> None:
    olga = await signed_in(browser, console, "olga", inject=True)
    rid = unique("shot")
    await publish(nc, request_body(rid))
    await seen.delivered_event(rid)
    axe = AXE.read_text()
    pages = {
        "reports": "/reports",
        "report": f"/reports/{rid}",
        "pages": f"/reports/{rid}/pages",
        "dead-letters": "/dead-letters",
        "schedules": "/schedules",
        "slo": "/slo",
        "health": "/health",
        "audit": "/audit",
    }
    problems: list[str] = []
    stranger = Watched(await browser.new_context(base_url=console.url, bypass_csp=True))
    for width in WIDTHS.values():
        page = await olga.page(width)
        visits = [(await stranger.page(width), "login", "/login")]
        visits += [(page, name, path) for name, path in pages.items()]
        for tab, name, path in visits:
            await tab.goto(path)
            await tab.add_script_tag(content=axe)
            result = await tab.evaluate(
                "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length}))"
            )
            problems += [
                f"{name}@{width}: {v['id']} ({v['impact']}, {v['nodes']})"
                for v in result
                if v["impact"] in ("serious", "critical")
            ]
            problems += [f"{name}@{width}: {p}" for p in await layout_problems(tab)]
            if SHOTS:
                Path(SHOTS).mkdir(parents=True, exist_ok=True)
                await tab.screenshot(path=f"{SHOTS}/{name}-{width}.png", full_page=True)
        await page.close()
        await visits[0][0].close()
    await olga.context.close()
    await stranger.context.close()
    assert not problems, problems
    assert not olga.errors, olga.errors
    assert not stranger.errors, stranger.errors


async def test_keyboard_reaches_the_navigation_and_the_filters(olga: Watched) -> None:
    page = await olga.page()
    await page.goto("/reports")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.className") == "skip"
    await page.keyboard.press("Enter")
    reached = []
    for _ in range(12):
        await page.keyboard.press("Tab")
        reached.append(
            await page.evaluate(
                "document.activeElement.id || document.activeElement.textContent.trim()"
            )
        )
    assert "q" in reached and "status" in reached, reached
    await page.close()


async def test_the_audit_trail_shows_console_and_cli_actions(
    olga: Watched, console: Console, nc: Any, seen: Outcomes
) -> None:
    rid = unique("audit")
    await publish(nc, request_body(rid, template="no-such-template.html"))
    await seen.failed_event(rid)
    purged = console.cli("dlq", "purge", rid)
    assert purged.returncode == 0, purged.stderr
    page = await olga.page()
    await page.goto("/dead-letters?stage=nothing-matches")
    await page.goto("/audit")
    row = page.locator("tr", has=page.get_by_text(rid, exact=True))
    await row.wait_for()
    assert "purge dead letters" in await row.inner_text()
    printed = console.cli("audit", "--since", "1h", "--json")
    assert printed.returncode == 0, printed.stderr
    records = json.loads(printed.stdout)
    mine = [r for r in records if r["target"] == rid]
    assert mine and mine[0]["action"] == "purge dead letters"
    assert mine[0]["source"].startswith("cli@") and mine[0]["outcome"] == "1"
    logins = [r for r in records if r["action"] == "login" and r["who"] == "olga"]
    assert logins and logins[0]["source"].startswith("console 127.0.0.1")
    await page.close()


async def test_a_schedule_is_paused_and_resumed_from_the_page(olga: Watched, vic: Watched) -> None:
    page = await olga.page()
    await page.goto("/schedules")
    row = page.locator("tr", has=page.get_by_role("rowheader", name="yearly-summary"))
    assert "01-01 06:00" in await row.inner_text()  # the next fire, from the cron
    await row.get_by_role("button", name="Pause yearly-summary").click()
    await page.wait_for_selector("p.flash")
    assert "paused" in await row.inner_text()
    await row.get_by_role("button", name="Resume yearly-summary").click()
    await page.wait_for_selector("text=resumed yearly-summary")
    await row.get_by_role("button", name="Pause yearly-summary").wait_for()
    viewer = await vic.page()
    await viewer.goto("/schedules")
    await viewer.get_by_role("rowheader", name="yearly-summary").wait_for()
    assert await viewer.get_by_role("button").filter(has_text="Pause").count() == 0
    await viewer.close()
    await page.close()


async def test_filtered_dead_letters_dry_run_then_purge_after_confirmation(
    olga: Watched, nc: Any, seen: Outcomes, stack: Stack
) -> None:
    missing = f"{unique('gone')}.html"  # a template name only these two requests use
    rids = [unique("purge"), unique("purge")]
    for rid in rids:
        await publish(nc, request_body(rid, template=missing))
    for rid in rids:
        await seen.failed_event(rid)
    page = await olga.page()
    await page.goto(f"/dead-letters?template={missing}")
    await page.get_by_role("button", name="Dry run: what would be replayed").click()
    await page.get_by_role("heading", name="Dry run: replay").wait_for()
    listed = await page.inner_text("ul.letters")
    assert all(rid in listed for rid in rids) and len(listed.splitlines()) == 2
    await page.goto(f"/dead-letters?template={missing}")
    await page.get_by_role("button", name="Purge these 2…").click()
    await page.get_by_role("heading", name="Purge?").wait_for()
    await page.get_by_role("button", name="Yes, purge 2").click()
    await page.wait_for_selector("p.flash")
    assert "purged 2 dead letter(s)" in await page.inner_text("p.flash")
    await page.goto(f"/api/dead-letters?template={missing}")
    assert json.loads(await page.inner_text("body"))["dead_letters"] == []
    await page.close()


async def test_re_deliver_from_the_report_page(
    olga: Watched, nc: Any, seen: Outcomes, stack: Stack
) -> None:
    rid = unique("again")
    await publish(nc, request_body(rid))
    await seen.delivered_event(rid)
    page = await olga.page()
    await page.goto(f"/reports/{rid}")
    await page.get_by_role("button", name="Re-deliver").click()
    await page.wait_for_url(re.compile(rf"/reports/{rid}$"))
    await page.goto("/audit")
    row = page.locator("tr", has=page.get_by_text(rid, exact=True)).first
    assert "re-deliver" in await row.inner_text() and "file: ok" in await row.inner_text()
    await page.close()


async def test_a_burst_parent_shows_its_tally_and_its_children_at_both_widths(
    olga: Watched, nc: Any, seen: Outcomes, stack: Stack
) -> None:
    template = "console-burst.html"
    (stack.templates / template).write_text(
        "<!doctype html><html lang='en'><body><h1>Card {{ item.id }}</h1></body></html>"
    )
    rid = unique("burst")
    keys = ["north", "south", "east"]
    await publish(
        nc,
        {
            "request_id": rid,
            "template": template,
            "formats": ["pdf"],
            "params": {"accounts": [{"id": k} for k in keys]},
            "burst": {
                "over": "accounts",
                "key": "id",
                "deliver": [{"channel": "file", "path": rid + "/{{ item.id }}"}],
            },
            "requested_by": "browser-test",
        },
    )
    await seen.delivered_event(rid, timeout=120)
    status = stack.cli("status", rid, check=True).stdout
    assert "burst of 3: delivered 3, failed 0" in status  # what the page must say too
    for width in WIDTHS.values():
        page = await olga.page(width)
        await page.goto(f"/reports/{rid}")
        summary = page.locator("#burst-summary")
        assert await summary.inner_text() == "Burst of 3: delivered 3, failed 0"
        children = page.locator("#children tbody tr")
        assert await children.count() == 3
        for key in keys:
            link = page.get_by_role("link", name=f"{rid}/{key}", exact=True)
            assert await link.get_attribute("href") == f"/reports/{rid}/{key}"
        # Delivered, nothing to replay or cancel, no artefacts of its own: no "Actions".
        assert await page.locator("#actions-h").count() == 0
        assert await layout_problems(page) == []
        if SHOTS:
            await page.screenshot(path=f"{SHOTS}/burst-{width}.png", full_page=True)
        await page.close()
    page = await olga.page()
    await page.goto(f"/reports/{rid}")
    await page.get_by_role("link", name=f"{rid}/south", exact=True).click()
    await page.wait_for_url(re.compile(rf"/reports/{re.escape(rid)}/south$"))
    assert await page.locator("h1").inner_text() == f"{rid}/south"
    twin = await page.request.get(f"/api/reports/{rid}")
    view = await twin.json()
    assert view["burst"] == "burst of 3: delivered 3, failed 0"
    assert sorted(c["request_id"] for c in view["children"]) == sorted(f"{rid}/{k}" for k in keys)
    await page.close()


async def test_an_operator_cancels_a_report_from_its_page_and_a_viewer_sees_it_live(
    olga: Watched, vic: Watched, nc: Any, stack: Stack
) -> None:
    # Its data source takes every connection and never answers: the report stays in its fetch
    # (each attempt until PRESSROOM_FETCH_TIMEOUT, then retried) without costing any CPU, where
    # a long render finished before the click on a fast moment.
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    silent = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    rid = unique("stop")
    body = request_body(rid, folder=rid)
    body["sources"] = [{"name": "slow", "kind": "http", "url": f"http://127.0.0.1:{port}/x"}]
    await publish(nc, body)
    watcher, page = await vic.page(), await olga.page()

    async def shown(on: Page) -> bool:
        answer = await on.goto(f"/reports/{rid}")
        return answer is not None and answer.ok

    await eventually(lambda: shown(watcher), timeout=60, every=0.5)
    assert await watcher.get_by_role("button", name="Cancel…").count() == 0  # ops only
    await page.goto(f"/reports/{rid}")
    await page.get_by_role("button", name="Cancel…").click()
    await page.get_by_role("heading", name=f"Cancel {rid}?").wait_for()
    await page.get_by_role("button", name="Yes, cancel it").click()
    await page.wait_for_selector("p.flash")
    assert f"{rid}: cancelled" in await page.inner_text("p.flash")
    await watcher.locator("#status.s-cancelled").wait_for(timeout=60_000)  # no reload
    await page.goto("/audit")
    row = page.locator("tr", has=page.get_by_text(rid, exact=True)).first
    assert "cancel" in await row.inner_text() and "olga" in await row.inner_text()
    assert not (stack.out / rid).exists()
    assert held  # the fetch did reach the silent source
    for each in (watcher, page):
        await each.close()
    silent.close()
    for writer in held:
        writer.close()


async def test_a_webhook_on_the_object_store_carries_a_link_that_downloads_the_report(
    console: Console, nc: Any, seen: Outcomes
) -> None:
    """Issue #28: `artefacts[].url` was null on the default store. With PRESSROOM_PUBLIC_URL the
    distributor's webhook channel (here through `pressroom deliver`) signs a console link."""
    rid = unique("hook")
    await publish(nc, request_body(rid))
    await seen.delivered_event(rid)
    hooks = HttpReceiver().start()
    try:
        secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
        sent = console.cli(
            "deliver",
            rid,
            "--webhook",
            f"{hooks.url}/hook",
            "--json",
            env={"PRESSROOM_WEBHOOK_SECRET": secret, "PRESSROOM_WEBHOOK_ALLOW": "127.0.0.1"},
        )
        assert sent.returncode == 0, sent.stderr
        [hit] = hooks.on("/hook")
        [artefact] = hit.json()["artefacts"]
        assert artefact["url"].startswith(f"{console.url}/a/")
        async with httpx.AsyncClient() as client:
            answer = await client.get(artefact["url"])
        assert answer.status_code == 200
        assert hashlib.sha256(answer.content).hexdigest() == artefact["sha256"]
    finally:
        hooks.stop()


async def test_single_sign_on_lets_in_whom_the_users_file_names(
    browser: Browser, stack: Stack
) -> None:
    provider = OidcProvider("sam@example.com", "pressroom-console", "client-secret-1").start()
    sso = operators(
        stack,
        name="console-sso",
        PRESSROOM_OIDC_ISSUER=provider.issuer,
        PRESSROOM_OIDC_CLIENT_ID="pressroom-console",
        PRESSROOM_OIDC_CLIENT_SECRET="client-secret-1",
    )
    try:
        sso.start()
        await sso.wait_ready()
        context = await browser.new_context(base_url=sso.url)
        page = await context.new_page()
        await page.goto("/login")
        await page.get_by_role("link", name="Sign in with single sign-on").click()
        await page.wait_for_load_state()
        assert "does not name them" in await page.inner_text("body")  # nobody let sam in yet
        added = sso.cli(
            "console",
            "user",
            "add",
            "sam@example.com",
            "--role",
            "viewer",
            stdin="a password sam never uses",
        )
        assert added.returncode == 0, added.stderr
        await page.goto("/login")
        await page.get_by_role("link", name="Sign in with single sign-on").click()
        await page.wait_for_url(re.compile(r"/reports$"))
        assert "sam@example.com" in await page.inner_text("header")
        assert provider.token_requests == 2
        await context.close()
    finally:
        sso.stop()
        provider.stop()
