"""The studio (issue #32) in a real browser (Debian's Chromium through Playwright) against a
real stack: nats-server, the three workers and `pressroom console`, each its own process.

One story, in order (the tests share the stack and the console): an author edits a template
beside its live preview, meets the line of a typo, saves a version; a shadow render of that
version on the reports the template really produced finds the one that now fails and the
promotion is refused (ops may override, with a reason); a viewer sees no studio at all.

Set PRESSROOM_CONSOLE_SHOTS=<folder> to keep a screenshot of each studio page at 1280 and
390 px (docs/console/studio-*.png are those).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route, expect

from tests.browser import test_console as base
from tests.browser.test_console import (
    AXE,
    SHOTS,
    WIDTHS,
    Watched,
    layout_problems,
    operators,
    publish,
    signed_in,
)
from tests.helpers import Console, Outcomes, Stack, stage_done, unique

# Each test is a user's whole errand, render after render in capped workers: more than the
# default two minutes on a loaded machine (the stack's start is in the first one, too).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

# The console's fixtures (Chromium, the outcomes seen).
browser = base.browser
seen = base.seen

TEMPLATE = "studio-invoice.html"
SOURCE = """<!doctype html>
<html lang="en"><head><title>Invoice</title>
<style>h1 { color: #1d4ed8; } .overdue { color: #b91c1c; }</style></head>
<body>
<h1>Invoice for {{ customer }}</h1>
<p>Total: {{ total }} EUR</p>
{% if overdue %}
<p class="overdue">Overdue since {{ due_date }}</p>
{% endif %}
</body></html>
"""
SAMPLE = {"customer": "Sample GmbH", "total": 100, "overdue": False}
ACCOUNT = "DE89370400440532013000"  # masked by the operator: never shown whole
# What the pipeline rendered last week: one invoice overdue, two not.
PAST = [
    {"customer": "Acme", "total": 1200, "overdue": False, "account": ACCOUNT},
    {"customer": "Globex", "total": 830, "overdue": True, "due_date": "2026-11-01"},
    {"customer": "Initech", "total": 77, "overdue": False},
]
UPLOADED = b"customer: Uploaded AG\ntotal: 5\noverdue: false\n"
KEY = "studio-seal.pem"
AUTHOR = ("ann", "ann-writes-templates")
TIMEOUT = 90_000  # ms: a render in a capped worker on a busy 2-core machine


@pytest.fixture(scope="module")
def console(stack: Stack) -> Iterator[Console]:
    """`pressroom console` with ops olga and viewer vic, opening what the renderer records
    (the stack's renderer keeps its state, the studio's key among it, in .pressroom)."""
    (stack.templates / base.SIMPLE).write_text("<!doctype html><html lang='en'><p>x</p></html>")
    running = operators(
        stack,
        PRESSROOM_STUDIO_KEY_FILE=str(stack.root / ".pressroom" / KEY),
        PRESSROOM_STUDIO_MASK="account",
    ).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
async def recorded(console: Console, nc: Any, seen: Outcomes) -> list[str]:
    """The template, its sample, and three reports of it delivered through the pipeline."""
    (console.stack.templates / TEMPLATE).write_text(SOURCE)
    samples = console.stack.templates / "samples"
    samples.mkdir(exist_ok=True)
    (samples / "studio-invoice.json").write_text(json.dumps(SAMPLE))
    rids = []
    for params in PAST:
        rid = unique("invoice")
        await publish(
            nc,
            {
                "request_id": rid,
                "template": TEMPLATE,
                "formats": ["pdf", "html"],
                "params": params,
                "deliver": [{"channel": "file", "path": rid}],
                "requested_by": "billing",
            },
        )
        rids.append(rid)
    for rid in rids:
        await seen.delivered_event(rid)
        await stage_done(nc, rid, "renderer")  # its payload's record is stored by then
    return rids


@pytest.fixture(scope="module")
async def ann(browser: Browser, console: Console) -> AsyncIterator[Watched]:
    name, password = AUTHOR
    added = console.cli("console", "user", "add", name, "--role", "author", stdin=password)
    assert added.returncode == 0, added.stderr
    watched = Watched(await browser.new_context(base_url=console.url))
    page = await watched.page()
    await page.goto("/login")
    await page.fill("#username", name)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await page.wait_for_url(re.compile(r"/reports$"))
    await page.close()
    yield watched
    await watched.context.close()
    assert not watched.errors, watched.errors


async def rendered(page: Page) -> str:
    """Waits for a good preview; the preview's id (each render has its own)."""
    await expect(page.locator("#preview-state")).to_have_text(
        re.compile(r"^Rendered \d+ pages?"), timeout=TIMEOUT
    )
    return str(await page.locator("#studio-edit").get_attribute("data-preview"))


async def type_at(page: Page, line: int, text: str) -> None:
    """Puts the cursor at the end of `line` (1-based) and types there, as a person would."""
    await page.locator(".CodeMirror-code").click()
    await page.evaluate(
        "line => { const cm = window.studioEditor; cm.focus();"
        " cm.setCursor({line: line - 1, ch: cm.getLine(line - 1).length}); }",
        line,
    )
    await page.keyboard.type(text)


# ---- tests ----------------------------------------------------------------------------------
async def test_an_author_edits_beside_the_preview_meets_the_typo_line_and_saves(
    ann: Watched, recorded: list[str], console: Console
) -> None:
    page = await ann.page()
    await page.goto("/studio")
    listed = page.locator(f"#studio-list tr[data-template='{TEMPLATE}']")
    await expect(listed.locator(".recorded")).to_have_text(str(len(recorded)))
    # The live version as the delivered reports record it (and `templates ls` lists it).
    [version] = [
        t["version"]
        for t in json.loads(console.cli("templates", "ls", "--json").stdout)
        if t["name"] == TEMPLATE
    ]
    status = json.loads(console.cli("status", recorded[0], "--json").stdout)
    assert status["template_version"] == version
    await expect(listed.locator(".live")).to_have_text(version[:12])
    # The template's files are held back: until they are in, saving is disabled (a save
    # before stored the live version under the author's message).
    held: asyncio.Queue[Route] = asyncio.Queue()
    template_api = re.compile(rf"/api/studio/templates/{re.escape(TEMPLATE)}$")
    await page.route(template_api, held.put)
    await listed.get_by_role("link", name=TEMPLATE, exact=True).click()
    await page.wait_for_url(f"**/studio/edit/{TEMPLATE}")
    files = await asyncio.wait_for(held.get(), timeout=TIMEOUT / 1000)
    await expect(page.get_by_role("button", name="Save version")).to_be_disabled()
    await files.continue_()
    await page.unroute(template_api)
    first = await rendered(page)
    await expect(page.locator("#preview-pdf img")).to_have_count(1)
    frame = page.frame_locator("#html-frame")
    await expect(frame.locator("h1")).to_have_text("Invoice for Sample GmbH", timeout=TIMEOUT)

    # The data: a recorded report of the template instead of the sample.
    await page.get_by_label("A recorded report").check()
    acme = page.locator("#data-recorded option", has_text=recorded[0])
    await page.select_option("#data-recorded", await acme.get_attribute("value"))
    await expect(frame.locator("h1")).to_have_text("Invoice for Acme", timeout=TIMEOUT)
    shown = page.locator("#data-shown")
    await expect(shown).to_contain_text('"customer": "Acme"')
    await expect(shown).to_contain_text("••••")
    await expect(shown).not_to_contain_text(ACCOUNT[:-4])
    # ... or from a file of the author's.
    await page.get_by_label("Upload JSON or YAML").check()
    await page.set_input_files(
        "#data-file",
        files=[{"name": "march.yaml", "mimeType": "application/yaml", "buffer": UPLOADED}],
    )
    await expect(frame.locator("h1")).to_have_text("Invoice for Uploaded AG", timeout=TIMEOUT)
    await page.get_by_label("Sample file").check()
    await expect(frame.locator("h1")).to_have_text("Invoice for Sample GmbH", timeout=TIMEOUT)

    # An edit: the preview follows without a click.
    await type_at(page, 6, "\n<p>Payable within 30 days.</p>")
    await expect(frame.locator("body")).to_contain_text("Payable within 30 days.", timeout=TIMEOUT)
    assert await rendered(page) != first
    await expect(page.locator("#problems li")).to_have_count(0)

    # A typo: the error is shown at its line, in the editor and in the list.
    await type_at(page, 7, "\n<p>{{ total | }}</p>")
    problem = page.locator("#problems li.error").first
    await expect(problem).to_contain_text("line 8", timeout=TIMEOUT)
    await expect(page.locator("#preview-state")).to_contain_text("does not render")
    error_line = page.locator(".CodeMirror-code > div:has(.cm-error-line)")
    await expect(error_line).to_have_count(1)
    await expect(error_line.locator(".CodeMirror-linenumber")).to_have_text("8")
    await expect(page.locator(".cm-error-note")).to_be_visible()
    await page.keyboard.press("Control+D")  # the editor's "delete this line"
    await rendered(page)
    await expect(page.locator(".cm-error-line")).to_have_count(0)
    saved = page.locator("#saved")
    await page.fill("#save-message", "Payment terms")
    await page.get_by_role("button", name="Save version").click()
    await expect(saved).to_contain_text("Saved version", timeout=TIMEOUT)
    first_save = await saved.inner_text()

    # The risky change: a variable renamed, in a branch the sample never takes.
    await page.evaluate(
        "() => { const cm = window.studioEditor;"
        " const at = cm.getValue().indexOf('due_date');"
        " const from = cm.posFromIndex(at);"
        " cm.setCursor({line: from.line, ch: from.ch + 'due_date'.length}); cm.focus(); }"
    )
    await page.keyboard.press("Backspace")
    await page.keyboard.press("Backspace")
    await page.keyboard.press("Backspace")
    await page.keyboard.press("Backspace")
    await page.keyboard.type("on")  # due_date -> due_on
    await rendered(page)
    await expect(page.locator("#problems li")).to_have_count(0)  # the sample is not overdue

    await page.fill("#save-message", "Rename due_date to due_on")
    await page.get_by_role("button", name="Save version").click()
    await expect(saved).not_to_have_text(first_save, timeout=TIMEOUT)
    await expect(saved).to_contain_text("Saved version")
    await page.close()


async def test_versions_show_each_change_and_an_old_one_is_restored(ann: Watched) -> None:
    page = await ann.page()
    await page.goto(f"/studio/versions/{TEMPLATE}")
    rows = page.locator("#versions tbody tr")
    await expect(rows).to_have_count(2, timeout=TIMEOUT)
    await expect(rows.nth(0)).to_contain_text("Rename due_date to due_on")
    await expect(rows.nth(0)).to_contain_text("ann")
    await expect(rows.nth(1)).to_contain_text("Payment terms")
    diff = page.locator("#diff")  # the newest change, shown at once: the rename alone
    await expect(diff.locator(".d-del")).to_contain_text(["due_date"])
    await expect(diff.locator(".d-add")).to_contain_text(["due_on"])
    await expect(diff.locator(".d-add")).to_have_count(1)  # not the paragraph of before
    await rows.nth(0).get_by_role("button", name=re.compile("^Diff with live")).click()
    await expect(diff.locator(".d-add")).to_contain_text(["Payable within 30 days.", "due_on"])

    # Restore the first version: it is what the editor opens next.
    await rows.nth(1).get_by_role("button", name=re.compile("^Restore")).click()
    await expect(rows).to_have_count(3)
    await expect(rows.nth(0)).to_contain_text("restore")
    await page.goto(f"/studio/edit/{TEMPLATE}")
    await expect(page.locator("#editing")).to_contain_text("newest saved version")
    await rendered(page)
    source = await page.evaluate("() => window.studioEditor.getValue()")
    assert "Payable within 30 days." in source and "due_date" in source
    # ... and back to the rename, the version the next test tries on last week's reports.
    await page.goto(f"/studio/versions/{TEMPLATE}")
    renamed = rows.filter(has_text="Rename due_date to due_on")
    await renamed.get_by_role("button", name=re.compile("^Restore")).click()
    await expect(rows).to_have_count(4)
    await expect(rows.nth(0)).to_contain_text("restore")
    await page.close()


async def test_a_shadow_render_finds_the_report_that_now_fails_and_promotion_is_refused(
    ann: Watched, recorded: list[str]
) -> None:
    page = await ann.page()
    await page.goto(f"/studio/versions/{TEMPLATE}")
    shadow_link = page.locator("#versions tbody tr").first.get_by_role(
        "link", name=re.compile("^Shadow render")
    )
    await expect(shadow_link).to_be_visible()
    # The shadow page's list of versions is held back: until it is in, the button is disabled
    # (a click while it loaded did nothing, and a loaded machine once lost the run that way).
    held: asyncio.Queue[Route] = asyncio.Queue()
    versions_api = re.compile(r"/api/studio/templates/[^/]+/versions$")
    await page.route(versions_api, held.put)
    await shadow_link.click()
    await page.wait_for_url(re.compile(r"/studio/shadow/.+\?version="))
    await expect(page.locator("#shadow-last")).to_have_value("20")
    run = page.get_by_role("button", name="Run the shadow render")
    versions = await asyncio.wait_for(held.get(), timeout=TIMEOUT / 1000)
    await expect(run).to_be_disabled()
    await versions.continue_()
    await page.unroute(versions_api)
    await run.click()  # waits until it is enabled
    await expect(page.locator("#shadow-state")).to_contain_text("Done", timeout=TIMEOUT)

    rows = page.locator("#shadow-table tbody tr")
    await expect(rows).to_have_count(len(recorded))
    failed = page.locator("#shadow-table tbody tr[data-status=failed]")
    await expect(failed).to_have_count(1)
    await expect(failed).to_contain_text(recorded[1])  # Globex, the overdue one
    await expect(failed).to_contain_text("due_on")
    changed = page.locator("#shadow-table tbody tr[data-status=changed]")
    await expect(changed).to_have_count(2)  # the new paragraph, on every other report

    # A changed report, side by side, its changed regions boxed; its text diff.
    await changed.first.get_by_role("link", name="Show").click()
    result = page.locator("details.shadow-result[open]")
    await expect(result.locator("figure")).to_have_count(2)
    await expect(result.locator("svg rect.region").first).to_be_attached()
    for image in await result.locator("img").all():
        await expect(image).to_have_js_property("complete", True)
        assert await image.evaluate("i => i.naturalWidth") > 0
    await expect(result.locator("pre.diff .d-add")).to_contain_text(["Payable within 30 days."])

    # Promotion refused while one fails: the page says so, and the server agrees.
    await expect(page.locator("#promote-note")).to_contain_text("Promotion refused")
    await expect(page.locator("#promote-button")).to_be_disabled()
    await expect(page.locator("#override-form")).to_have_count(0)  # an author: no override
    version = await page.locator("#shadow-version").input_value()
    csrf = await page.locator("#studio-shadow").get_attribute("data-csrf")
    answer = await page.request.post(
        f"/api/studio/templates/{TEMPLATE}/promote",
        data={"version": version},
        headers={"X-CSRF-Token": str(csrf)},
    )
    assert answer.status == 409, await answer.text()
    await page.close()


async def test_a_late_answer_about_an_earlier_run_does_not_replace_the_new_one(
    ann: Watched,
) -> None:
    """The page follows the last run of the chosen version as it opens. When that answer comes
    only after a new run has been started and has finished, it must not be shown over it."""
    page = await ann.page()
    earlier: asyncio.Future[Route] = asyncio.get_running_loop().create_future()

    async def hold_the_first(route: Route) -> None:
        if earlier.done():
            await route.continue_()
        else:
            earlier.set_result(route)

    run_view = re.compile(r"/api/studio/shadow/[^/]+$")
    await page.route(run_view, hold_the_first)
    await page.goto(f"/studio/shadow/{TEMPLATE}")
    held = await asyncio.wait_for(earlier, timeout=TIMEOUT / 1000)  # the earlier run's state
    await page.get_by_role("button", name="Run the shadow render").click()
    state = page.locator("#shadow-state")
    await expect(state).to_contain_text("Done", timeout=TIMEOUT)
    # Now the earlier run's answer, made unmistakable: a run that stopped.
    stale = {"run": "earlier", "status": "error", "error": "STALE ANSWER", "results": []}
    async with page.expect_response(run_view):
        await held.fulfill(json=stale)
    # Two frames: the page has had its turn with that answer.
    await page.evaluate(
        "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
    )
    await expect(state).to_contain_text("Done")
    await expect(state).not_to_contain_text("STALE ANSWER")
    await page.unroute(run_view)
    await page.close()


async def test_with_no_sample_file_the_preview_opens_on_the_newest_recorded_report(
    ann: Watched, console: Console, nc: Any, seen: Outcomes
) -> None:
    unsampled, bare = f"{unique('nosample')}.html", f"{unique('bare')}.html"
    source = "<!doctype html><html lang='en'><body><h1>Card of {{ customer }}</h1></body></html>"
    for name in (unsampled, bare):
        (console.stack.templates / name).write_text(source)
    rids = []
    for customer in ("Older Ltd", "Newest SA"):
        rid = unique("card")
        await publish(
            nc,
            {
                "request_id": rid,
                "template": unsampled,
                "formats": ["pdf"],
                "params": {"customer": customer, "account": ACCOUNT},
                "deliver": [{"channel": "file", "path": rid}],
            },
        )
        await seen.delivered_event(rid)
        await stage_done(nc, rid, "renderer")
        rids.append(rid)
    page = await ann.page()
    await page.goto(f"/studio/edit/{unsampled}")
    frame = page.frame_locator("#html-frame")
    await expect(frame.locator("h1")).to_have_text("Card of Newest SA", timeout=TIMEOUT)
    await expect(page.get_by_label("A recorded report")).to_be_checked()
    await expect(page.get_by_label("Sample file")).to_be_disabled()
    chosen = page.locator("#data-recorded option:checked")
    await expect(chosen).to_contain_text(rids[1])
    shown = page.locator("#data-shown")
    await expect(shown).to_contain_text("••••")  # masked, as a recorded report always is
    await expect(shown).not_to_contain_text(ACCOUNT[:-4])
    await expect(page.locator("#preview-state")).not_to_contain_text("No preview")

    # Neither a sample nor a recorded report: the author's own file, and the page says so.
    await page.goto(f"/studio/edit/{bare}")
    await expect(page.locator("#preview-state")).to_contain_text(
        "Upload a JSON or YAML file", timeout=TIMEOUT
    )
    await expect(page.get_by_label("Upload JSON or YAML")).to_be_checked()
    await page.set_input_files(
        "#data-file",
        files=[
            {
                "name": "card.json",
                "mimeType": "application/json",
                "buffer": b'{"customer": "Own AG"}',
            }
        ],
    )
    await expect(frame.locator("h1")).to_have_text("Card of Own AG", timeout=TIMEOUT)
    await page.close()


async def test_a_viewer_sees_no_studio_and_no_editor(
    browser: Browser,
    console: Console,
) -> None:
    vic = await signed_in(browser, console, "vic")
    page = await vic.page()
    await page.goto("/reports")
    await expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    await expect(page.get_by_role("link", name="Studio")).to_have_count(0)
    for path in ("/studio", f"/studio/edit/{TEMPLATE}"):
        answer = await page.goto(path)
        assert answer is not None and answer.status == 403
        # The console's own page, header and navigation included, as every other error.
        await expect(page.get_by_role("navigation", name="Main")).to_be_visible()
        await expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
        await expect(page.get_by_role("alert")).to_contain_text("needs the author role")
        await expect(page.locator(".CodeMirror, textarea")).to_have_count(0)
    api = await page.request.get("/api/studio/templates")
    assert api.status == 403 and "author role" in (await api.json())["error"]
    await page.close()
    await vic.context.close()


async def test_studio_pages_at_both_widths_pass_axe_with_no_serious_violations(
    browser: Browser,
    console: Console,
    ann: Watched,
) -> None:
    name, password = AUTHOR
    watched = Watched(await browser.new_context(base_url=console.url, bypass_csp=True))
    login = await watched.page()
    await login.goto("/login")
    await login.fill("#username", name)
    await login.fill("#password", password)
    await login.click("button[type=submit]")
    await login.wait_for_url(re.compile(r"/reports$"))
    await login.close()
    axe = AXE.read_text()
    pages = {
        "studio": ("/studio", "table"),
        "studio-edit": (f"/studio/edit/{TEMPLATE}", "#preview-pdf img"),
        "studio-versions": (f"/studio/versions/{TEMPLATE}", "#versions tbody tr"),
        "studio-shadow": (f"/studio/shadow/{TEMPLATE}", "#shadow-table tbody tr"),
    }
    problems: list[str] = []
    for width in WIDTHS.values():
        for shot, (path, ready) in pages.items():
            tab = await watched.page(width)
            await tab.goto(path)
            await tab.locator(ready).first.wait_for(timeout=TIMEOUT)
            if shot == "studio-shadow":  # open the first report that changed
                await (
                    tab.locator("#shadow-table tbody tr[data-status=changed]")
                    .first.get_by_role("link", name="Show")
                    .click()
                )
                await tab.locator("details.shadow-result[open] img").first.wait_for()
            await tab.add_script_tag(content=axe)
            result = await tab.evaluate(
                "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
                ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.length,"
                " where: v.nodes.slice(0, 2).map(n => n.target.join(' '))}))"
            )
            problems += [
                f"{shot}@{width}: {v['id']} ({v['impact']}, {v['nodes']}: {v['where']})"
                for v in result
                if v["impact"] in ("serious", "critical")
            ]
            problems += [f"{shot}@{width}: {p}" for p in await layout_problems(tab)]
            if SHOTS:
                Path(SHOTS).mkdir(parents=True, exist_ok=True)
                await tab.screenshot(path=f"{SHOTS}/{shot}-{width}.png", full_page=True)
            await tab.close()
    await watched.context.close()
    assert not problems, problems
    assert not watched.errors, watched.errors


async def test_ops_promotes_over_the_failure_with_a_reason_in_the_audit_trail(
    browser: Browser, console: Console
) -> None:
    olga = await signed_in(browser, console, "olga")
    page = await olga.page()
    await page.goto(f"/studio/shadow/{TEMPLATE}")
    await expect(page.locator("#promote-note")).to_contain_text(
        "Promotion refused", timeout=TIMEOUT
    )
    await page.fill("#override-reason", "Globex is billed by hand this month")
    await page.get_by_role("button", name="Promote anyway").click()
    await expect(page.locator("#promote-state")).to_contain_text("live", timeout=TIMEOUT)
    assert "due_on" in (console.stack.templates / TEMPLATE).read_text()
    await page.goto("/audit")
    await expect(page.locator("table")).to_contain_text("Globex is billed by hand")
    await page.close()
    await olga.context.close()
    assert not olga.errors, olga.errors
