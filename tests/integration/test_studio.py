"""The studio against a real stack (the session's nats-server and workers): the renderer
records real reports' payloads, `pressroom templates shadow` renders candidates on them and
exits by what it finds, and the console's /api/studio answers over real HTTP — masked fields
never in what it sends, viewers refused, promotion refused while a payload fails."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.helpers import Console, Outcomes, Stack, eventually, stage_done, unique

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ACCOUNT = "DE44500105175407324931"
TEMPLATE = """<!doctype html>
<html lang="en"><head><style>
  body { font-family: sans-serif; } .total { font-size: 20pt; margin-top: 12mm; }
</style></head><body>
<h1>Statement for {{ client }}</h1>
<p>Account {{ account.number }}</p>
<p class="total">Total: {{ total }}</p>
</body></html>
"""
PASSWORDS = {
    "ann": "ann-writes-templates",
    "olga": "olga-operates-all-day",
    "vic": "vic-only-looks",
}
ROLES = {"ann": "author", "olga": "ops", "vic": "viewer"}
MASK = {"PRESSROOM_STUDIO_MASK": "account.number", "COLUMNS": "80"}


@pytest.fixture(scope="module")
def name() -> str:
    return f"{unique('studio')}.html"


@pytest.fixture(scope="module")
async def recorded(stack: Stack, nc: Any, outcomes: Outcomes, name: str) -> list[str]:
    """Three real reports of the template, delivered, and their payloads recorded."""
    (stack.templates / name).write_text(TEMPLATE)
    rids = []
    for index, total in enumerate((1234, 5678, 91011)):
        rid = unique("studio")
        body = {
            "request_id": rid,
            "template": name,
            "params": {"client": f"Client {index}", "account": {"number": ACCOUNT}, "total": total},
        }
        await nc.jetstream().publish("report.requested", json.dumps(body).encode())
        rids.append(rid)
    for rid in rids:
        await outcomes.delivered_event(rid)
        # The renderer's record of the payload goes out beside report.rendered: stored once
        # its stage is recorded done.
        await stage_done(nc, rid, "renderer")
    return rids


def shadow(stack: Stack, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return stack.cli("templates", "shadow", name, *args, env=MASK, timeout=300)


def candidate(stack: Stack, name: str, old: str, new: str) -> Path:
    path = stack.root / f"candidate-{unique()}.html"
    path.write_text(TEMPLATE.replace(old, new))
    return path


def test_shadow_of_an_unchanged_template_is_all_same_and_exits_0(
    stack: Stack, recorded: list[str], name: str
) -> None:
    result = shadow(stack, name, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["status"] for r in report["results"]] == ["same"] * 3
    assert {r["request_id"] for r in report["results"]} == set(recorded)
    assert report["summary"]["verdict"] == "pass"
    assert report["candidate"] == report["live"]


def test_a_changed_number_is_a_changed_region_and_exits_1(
    stack: Stack, recorded: list[str], name: str, tmp_path: Path
) -> None:
    changed = candidate(stack, name, "Total: {{ total }}", "Total: {{ total + 1 }}")
    images = tmp_path / "images"
    result = shadow(stack, name, "--candidate", str(changed), "--json", "--images", str(images))
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["summary"]["verdict"] == "changed"
    first = next(r for r in report["results"] if r["request_id"] == recorded[0])
    assert first["status"] == "changed"
    assert first["pages"] == {"before": 1, "after": 1}
    [page] = first["changed_pages"]
    assert page["page"] == 1 and 0 < page["ratio"] < 0.05
    # One region, around the total's line: below the heading and the account line.
    [region] = page["regions"]
    assert region["y"] > page["size"]["h"] * 0.05 and region["h"] < page["size"]["h"] * 0.2
    assert "-Total: 1234" in first["text_diff"] and "+Total: 1235" in first["text_diff"]
    for kind in ("delivered", "candidate", "diff"):
        png = Image.open(images / f"{first['index'] + 1}-page1-{kind}.png").convert("RGB")
        colours = {colour for _, colour in png.getcolors(maxcolors=1 << 20) or []}
        assert (90, 90, 90) in colours, kind  # the masked account number, covered
        if kind == "diff":
            assert (220, 0, 0) in colours  # the changed pixels, red
    # The masked account number is in the diff's context lines — hidden.
    at = result.stdout.find(ACCOUNT)
    assert at == -1, result.stdout[max(at - 400, 0) : at + 100]
    # A threshold above the change lets it pass.
    allowed = shadow(stack, name, "--candidate", str(changed), "--threshold", "0.2")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "pass:" in allowed.stdout and "3 changed" in allowed.stdout
    assert all(len(line) <= 80 for line in allowed.stdout.splitlines()), allowed.stdout


def test_a_renamed_variable_fails_every_payload_at_its_line(
    stack: Stack, recorded: list[str], name: str
) -> None:
    renamed = candidate(stack, name, "{{ total }}", "{{ grand_total }}")
    result = shadow(stack, name, "--candidate", str(renamed))
    assert result.returncode == 1
    assert "FAIL:" in result.stdout and "3 failed" in result.stdout
    # Each payload's line says where: the file and line of the renamed variable.
    assert result.stdout.count(f"{name}:7:") == 3, result.stdout
    assert "grand_total" in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout


def test_shadow_of_an_unknown_template_is_one_line(stack: Stack) -> None:
    result = shadow(stack, "no-such-template.html")
    assert result.returncode == 1
    assert result.stderr.startswith("error:") and "Traceback" not in result.stderr


# ---- the console's /api/studio -------------------------------------------------------------
@pytest.fixture(scope="module")
def console(stack: Stack) -> Iterator[Console]:
    """The console's default data folder is the stack's: it opens what the renderer sealed."""
    users = {user: (role, PASSWORDS[user]) for user, role in ROLES.items()}
    running = Console(stack, users, name="studio-console", **MASK).start()
    try:
        yield running
    finally:
        running.stop()


class Session:
    """A signed-in user over plain HTTP (the session cookie is `Secure`: sent by hand)."""

    def __init__(self, client: httpx.AsyncClient, cookie: str, csrf: str) -> None:
        self.client, self.cookie, self.csrf = client, cookie, csrf

    async def get(self, path: str) -> httpx.Response:
        return await self.client.get(path, headers={"Cookie": self.cookie})

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return await self.client.post(
            path, json=body, headers={"Cookie": self.cookie, "X-CSRF-Token": self.csrf}
        )


async def sign_in(client: httpx.AsyncClient, user: str) -> Session:
    client.cookies.clear()  # the shared client's jar holds the last user's session
    form = await client.get("/login")
    cookie = form.headers["set-cookie"].split(";")[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, form.text
    done = await client.post(
        "/login",
        data={"username": user, "password": PASSWORDS[user], "csrf_token": token.group(1)},
        headers={"Cookie": cookie},
    )
    assert done.status_code == 303, done.text
    cookie = done.headers["set-cookie"].split(";")[0]
    me = await client.get("/api/studio/me", headers={"Cookie": cookie})
    csrf = me.json()["csrf_token"] if me.status_code == 200 else ""
    return Session(client, cookie, csrf)


@pytest.fixture(scope="module")
async def http(console: Console) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=console.url, timeout=120) as client:
        await console.wait_ready()
        yield client


async def test_the_studio_names_the_live_version_as_a_delivered_report_records_it(
    stack: Stack, http: httpx.AsyncClient, recorded: list[str], name: str
) -> None:
    status = json.loads(stack.cli("status", recorded[0], "--json", check=True).stdout)
    listed = json.loads(stack.cli("templates", "ls", "--json", check=True).stdout)
    [cli_version] = [t["version"] for t in listed if t["name"] == name]
    assert status["template_version"] == cli_version

    ann = await sign_in(http, "ann")
    [row] = [
        t for t in (await ann.get("/api/studio/templates")).json()["templates"] if t["name"] == name
    ]
    assert row["live_report_version"] == cli_version
    one = (await ann.get(f"/api/studio/templates/{name}")).json()
    assert one["live_report_version"] == cli_version
    # The studio's own id (assets counted) names its history, labelled apart.
    history = (await ann.get(f"/api/studio/templates/{name}/versions")).json()
    assert history["live_report_version"] == cli_version
    assert history["live_version"] == row["live_version"] != cli_version


async def test_the_studio_api_masks_refuses_viewers_and_gates_promotion(
    stack: Stack, console: Console, http: httpx.AsyncClient, recorded: list[str], name: str
) -> None:
    vic = await sign_in(http, "vic")
    assert (await vic.get("/api/studio/templates")).status_code == 403
    assert (await vic.get("/api/studio")).status_code == 403
    assert (await vic.get(f"/api/studio/templates/{name}/payloads")).status_code == 403

    ann = await sign_in(http, "ann")
    listed = await ann.get(f"/api/studio/templates/{name}/payloads")
    assert listed.status_code == 200, listed.text
    payloads = listed.json()["payloads"]
    assert {p["request_id"] for p in payloads} == set(recorded)
    one = await ann.get(f"/api/studio/templates/{name}/payloads/{payloads[0]['id']}")
    assert one.json()["data"]["account"]["number"] == "••••"
    assert one.json()["data"]["total"] in (1234, 5678, 91011)
    assert ACCOUNT not in one.text

    # A preview on a recorded payload: rendered on the masked data.
    shown = await ann.post(
        f"/api/studio/templates/{name}/preview",
        {"data": {"source": "payload", "id": payloads[0]["id"]}},
    )
    assert shown.status_code == 200 and shown.json()["ok"], shown.text
    html = await ann.get(shown.json()["html_url"])
    assert "Account ••••" in html.text and ACCOUNT not in html.text
    page = await ann.get(shown.json()["images"][0])
    assert page.headers["content-type"] == "image/png" and page.content[:4] == b"\x89PNG"

    # A typo: the error at its line, no page.
    typo = await ann.post(
        f"/api/studio/templates/{name}/preview",
        {
            "files": {name: TEMPLATE.replace("{{ total }}", "{{ total }")},
            "data": {"source": "payload", "id": payloads[0]["id"]},
        },
    )
    assert typo.status_code == 200 and not typo.json()["ok"]
    assert typo.json()["errors"][0]["line"] == 7 and typo.json()["pages"] == 0

    # The template as it is, saved as a first version; then one with the variable renamed.
    listed = (await ann.get("/api/studio/templates")).json()["templates"]
    # /studio's JSON twin (DESIGN.md) lists the same
    assert (await ann.get("/api/studio")).json()["templates"] == listed
    [row] = [t for t in listed if t["name"] == name]
    assert row["payloads"] == 3 and row["head_version"] is None
    first = await ann.post(
        f"/api/studio/templates/{name}/versions", {"files": {}, "message": "as is"}
    )
    assert first.status_code == 201 and first.json()["id"] == row["live_version"], first.text
    # Saved as is, reports rendered from it would record the live template's version.
    assert first.json()["report_version"] == row["live_report_version"]
    saved = await ann.post(
        f"/api/studio/templates/{name}/versions",
        {
            "files": {name: TEMPLATE.replace("{{ total }}", "{{ grand_total }}")},
            "message": "rename",
        },
    )
    assert saved.status_code == 201, saved.text
    vid = saved.json()["id"]
    diff = (await ann.get(f"/api/studio/templates/{name}/diff?from=live&to={vid}")).json()
    [change] = diff["files"]
    assert (
        change["path"] == name
        and '+<p class="total">Total: {{ grand_total }}</p>' in (change["diff"])
    )
    # Its shadow run fails on every payload, so promotion is refused.
    refused = await ann.post(f"/api/studio/templates/{name}/promote", {"version": vid})
    assert refused.status_code == 409 and "no finished shadow run" in refused.json()["error"]
    started = await ann.post(f"/api/studio/templates/{name}/shadow", {"version": vid, "last": 20})
    assert started.status_code == 202, started.text

    async def finished() -> dict[str, Any] | None:
        view = (await ann.get(f"/api/studio/shadow/{started.json()['run']}")).json()
        return view if view["status"] != "running" else None

    run = await eventually(finished, timeout=240, every=0.5)
    assert run["status"] == "done" and run["summary"]["failed"] == 3, run
    assert ACCOUNT not in json.dumps(run)
    refused = await ann.post(f"/api/studio/templates/{name}/promote", {"version": vid})
    assert refused.status_code == 409 and refused.json()["failed"] == 3
    # An author cannot override; ops can, with a reason — and the audit trail says so.
    overridden = {"version": vid, "override_reason": "the data feed renames it tonight"}
    assert (await ann.post(f"/api/studio/templates/{name}/promote", overridden)).status_code == 403
    olga = await sign_in(http, "olga")
    promoted = await olga.post(f"/api/studio/templates/{name}/promote", overridden)
    assert promoted.status_code == 200 and promoted.json()["mode"] == "written", promoted.text
    assert "grand_total" in (stack.templates / name).read_text()
    trail = console.cli("audit", "--json")
    assert "studio promote override" in trail.stdout and "renames it tonight" in trail.stdout

    # Restore: the first version is the head again; the history says who did what.
    restored = await ann.post(
        f"/api/studio/templates/{name}/versions/{first.json()['id']}/restore", {}
    )
    assert restored.status_code == 200, restored.text
    history = (await ann.get(f"/api/studio/templates/{name}/versions")).json()
    assert history["live_version"] == vid
    events = [(v["event"], v["id"], v["author"]) for v in history["versions"]]
    assert events == [
        ("restore", first.json()["id"], "ann"),
        ("promote", vid, "olga"),
        ("save", vid, "ann"),
        ("save", first.json()["id"], "ann"),
    ]
    assert history["versions"][2]["shadow"] == {"run": run["run"], "status": "fail"}
    (stack.templates / name).write_text(TEMPLATE)
