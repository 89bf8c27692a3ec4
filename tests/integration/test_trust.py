"""The trust model, tried as a hostile publisher would: each attack against real servers.

Anyone who can publish `report.requested` is the attacker here. Canary credentials sit in the
operator's config; loopback listeners play the attacker's server, an internal service and the
legitimate API; moto plays S3 and aiosmtpd the mail server. Each test attempts the attack and
asserts that the canary never arrives and that the failure says why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
import yaml
from pypdf import PdfReader

from shared.filenames import request_tag
from tests.helpers import REPO, Outcomes, Stack, delivered_file, eventually, unique
from tests.servers import HttpReceiver, S3Server, SmtpServer

pytestmark = pytest.mark.integration

CANARY = "canary-5f2c9e"
INTERNAL = "INTERNAL-ONLY-7d1a"
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())


@dataclass
class Net:
    legit: HttpReceiver  # the API the operator's credentials belong to (allow-listed)
    attacker: HttpReceiver  # a server of the attacker's choosing
    internal: HttpReceiver  # an internal service nobody allowed requests to reach
    s3: S3Server
    smtp: SmtpServer

    def canary_sent_to_attacker(self) -> bool:
        return any(CANARY in json.dumps(h.headers) + h.path for h in self.attacker.hits)


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    attacker = HttpReceiver().start()
    internal = HttpReceiver(
        lambda path, n: (200, json.dumps({"secret": INTERNAL}).encode(), {})
    ).start()

    def legit_api(path: str, count: int) -> tuple[int, bytes, dict[str, str]]:
        if path.startswith("/repos/org/hop/pulls"):
            link = f'<{attacker.url}/repos/org/hop/pulls?page=2>; rel="next"'
            return 200, b'[{"number": 1}]', {"Link": link}
        if path.startswith("/repos/"):
            return 200, b'[{"number": 1}]', {}
        if path.startswith("/redirect-out"):
            return 302, b"", {"Location": f"{attacker.url}/stolen"}
        if path.startswith("/redirect-in"):
            return 302, b"", {"Location": "/inventory"}
        if path.startswith("/huge"):
            return 200, b'{"x": "' + b"a" * 2_000_000 + b'"}', {}
        if path.startswith("/deep"):
            return 200, b"[" * 5000 + b"]" * 5000, {}
        return 200, json.dumps({"projects": [{"name": "Atlas"}]}).encode(), {}

    legit = HttpReceiver(legit_api).start()
    s3, smtp = S3Server().start(), SmtpServer().start()
    for bucket in ("deliveries", "artefacts"):
        s3.client().make_bucket(bucket)
    yield Net(legit, attacker, internal, s3, smtp)
    for server in (legit, attacker, internal, smtp, s3):
        server.stop()


SHOW = "<h1>{{ title }}</h1><pre>{{ payload | tojson }}</pre>"
TENANT = '<h1>Statement</h1>{% include "parts/" ~ section ~ ".html" %}'


@pytest.fixture(scope="module")
def tstack(tmp_path_factory: pytest.TempPathFactory, net: Net) -> Iterator[tuple[Stack, Path]]:
    root = tmp_path_factory.mktemp("trust")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "environ").write_text(f"AWS_SECRET={CANARY}")
    config = root / "pressroom.yaml"
    legit = net.legit.url
    config.write_text(
        yaml.safe_dump(
            {
                "source_credentials": {
                    "github": {"token": f"gh-{CANARY}", "api_url": legit},
                    "jira": {"user": "bot", "token": f"jira-{CANARY}", "url": legit},
                    "inventory": {"token": f"inv-{CANARY}", "base_url": legit},
                },
                "sources": {
                    "internal-status": {"kind": "http", "url": f"{net.internal.url}/status"},
                    "portfolio-prs": {
                        "kind": "github",
                        "repo": "org/app",
                        "endpoint": "pulls",
                        "credentials": "github",
                    },
                    "billing": {
                        "kind": "http",
                        "url": f"{legit}/billing",
                        "credentials": "inventory",
                        "headers": {"X-Api-Key": f"named-{CANARY}"},
                    },
                },
                "schedules": [
                    {
                        "name": "nightly",
                        "cron": "0 3 1 1 *",
                        "request": {
                            "template": "show.html",
                            "params": {"title": "Nightly", "payload": "real"},
                            "deliver": [{"channel": "file", "path": "nightly"}],
                        },
                    }
                ],
            }
        )
    )
    stack = Stack(
        root,
        env_extra={
            **net.s3.env(),
            **net.smtp.env(),
            "PRESSROOM_CONFIG": str(config),
            "PRESSROOM_ARTEFACT_BUCKET": "artefacts",
            "PRESSROOM_SOURCE_ALLOW": f"127.0.0.1:{net.legit.port}",
            "PRESSROOM_FETCH_MAX_BYTES": "1000000",
            "PRESSROOM_EMAIL_ALLOW": "example.com",
            "PRESSROOM_S3_DELIVERY_ALLOW": "deliveries/ok,fresh",
        },
    )
    stack.root.mkdir(parents=True, exist_ok=True)
    stack.start()
    templates = stack.templates
    (templates / "show.html").write_text(SHOW)
    (templates / "tenant.html").write_text(TENANT)
    (templates / "parts").mkdir()
    (templates / "parts" / "balance.html").write_text("<p>Balance: {{ secret }}</p>")
    (templates / ".git").mkdir()
    (templates / ".git" / "config").write_text(f"[remote]\n\ttoken = {CANARY}")
    (templates / "leak.html").write_text("{% include '.git/' ~ 'config' %}")
    (templates / "outside").symlink_to(outside)
    (templates / "escape.html").write_text("{% include 'out' ~ 'side/environ' %}")
    yield stack, outside
    stack.stop()


@pytest.fixture(scope="module")
async def touts(tstack: tuple[Stack, Path]) -> Any:
    nc = await tstack[0].connect()
    outcomes = await Outcomes().start(nc)
    yield outcomes
    await nc.close()


async def publish(stack: Stack, body: dict[str, Any], msg_id: str | None = None) -> None:
    nc = await stack.connect()
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    await nc.jetstream().publish("report.requested", json.dumps(body).encode(), headers=headers)
    await nc.close()


def show(rid: str, source: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "request_id": rid,
        "template": "show.html",
        "params": {"title": "t"},
        "sources": [{"name": "payload", **source}],
        **extra,
    }


def pdf_text(path: Path) -> str:
    return "".join(p.extract_text() for p in PdfReader(BytesIO(path.read_bytes())).pages)


# ---- credentials -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ({"kind": "github", "repo": "org/app", "endpoint": "pulls", "credentials": "github",
          "api_url": "ATTACKER"}, "are bound to"),
        ({"kind": "jira", "jql": "project = X", "credentials": "jira", "url": "ATTACKER"},
         "are bound to"),
        ({"kind": "http", "url": "ATTACKER/projects", "credentials": "inventory"},
         "are bound to"),
        ({"kind": "github", "repo": "org/hop", "endpoint": "pulls", "credentials": "github"},
         "another origin"),
    ],
)  # fmt: skip
async def test_a_credential_never_reaches_an_origin_it_is_not_bound_to(
    tstack: tuple[Stack, Path], touts: Outcomes, net: Net, source: dict[str, Any], reason: str
) -> None:
    stack, _ = tstack
    rid = unique("steal")
    spec = {k: (v.replace("ATTACKER", net.attacker.url) if isinstance(v, str) else v)
            for k, v in source.items()}  # fmt: skip
    await publish(stack, show(rid, spec))
    failed = await touts.failed_event(rid)
    assert reason in failed["reason"] and failed["attempts"] == 1
    assert not net.canary_sent_to_attacker()
    assert CANARY not in failed["reason"]


async def test_credentials_go_to_their_own_origin_and_only_when_named(
    tstack: tuple[Stack, Path], touts: Outcomes, net: Net
) -> None:
    stack, _ = tstack
    named, unnamed = unique("named"), unique("unnamed")
    base = {"kind": "github", "repo": "org/app", "endpoint": "pulls"}
    await publish(stack, show(named, {**base, "credentials": "github"}))
    await publish(stack, show(unnamed, {**base, "api_url": net.legit.url}))
    await touts.delivered_event(named)
    await touts.delivered_event(unnamed)
    auth = [
        h.headers.get("authorization", "") for h in net.legit.hits if "/repos/org/app" in h.path
    ]
    assert f"Bearer gh-{CANARY}" in auth  # the bound origin gets it when named …
    assert "" in auth  # … and a request that did not name it gets none


# ---- request-supplied URLs -----------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "INTERNAL/status",
        "http://localhost:PORT/status",
        "http://2130706433:PORT/status",  # 127.0.0.1 as a decimal
        "http://[::ffff:127.0.0.1]:PORT/status",
    ],
)
async def test_a_request_supplied_url_outside_the_allow_list_is_refused(
    tstack: tuple[Stack, Path], touts: Outcomes, net: Net, url: str
) -> None:
    stack, _ = tstack
    rid = unique("ssrf")
    target = url.replace("INTERNAL", net.internal.url).replace("PORT", str(net.internal.port))
    await publish(stack, show(rid, {"kind": "http", "url": target}))
    failed = await touts.failed_event(rid)
    assert "PRESSROOM_SOURCE_ALLOW" in failed["reason"]
    assert net.internal.hits == []
    letters = stack.cli("dlq", "ls", "--json", check=True).stdout
    assert INTERNAL not in letters


async def test_redirects_are_followed_only_within_the_same_origin(
    tstack: tuple[Stack, Path], touts: Outcomes, net: Net
) -> None:
    stack, _ = tstack
    out, within = unique("hop-out"), unique("hop-in")
    await publish(stack, show(out, {"kind": "http", "url": f"{net.legit.url}/redirect-out"}))
    await publish(stack, show(within, {"kind": "http", "url": f"{net.legit.url}/redirect-in"}))
    failed = await touts.failed_event(out)
    assert "redirect from" in failed["reason"] and "refused" in failed["reason"]
    assert net.attacker.on("/stolen") == []
    await touts.delivered_event(within)
    assert "Atlas" in pdf_text(delivered_file(stack.out, within))


async def test_a_source_named_in_the_config_file_is_the_operators_and_cannot_be_redirected(
    tstack: tuple[Stack, Path], touts: Outcomes, net: Net
) -> None:
    stack, _ = tstack
    ok, moved = unique("named-ok"), unique("named-moved")
    await publish(stack, show(ok, {"source": "internal-status"}))
    await publish(stack, show(moved, {"source": "internal-status", "url": f"{net.attacker.url}/x"}))
    await touts.delivered_event(ok)
    assert INTERNAL in pdf_text(delivered_file(stack.out, ok))
    failed = await touts.failed_event(moved)
    assert "cannot be changed by a request" in failed["reason"]
    assert net.attacker.on("/x") == []


@pytest.mark.parametrize(("path", "reason"), [("/huge", "byte limit"), ("/deep", "nested")])
async def test_oversized_or_deeply_nested_answers_are_refused(
    tstack: tuple[Stack, Path], touts: Outcomes, net: Net, path: str, reason: str
) -> None:
    stack, _ = tstack
    rid = unique("big")
    await publish(stack, show(rid, {"kind": "http", "url": f"{net.legit.url}{path}"}))
    failed = await touts.failed_event(rid)
    assert reason in failed["reason"] and failed["attempts"] == 1


# ---- templates and the render cache --------------------------------------------------------
async def test_two_tenants_through_a_computed_include_each_get_their_own_report(
    tstack: tuple[Stack, Path], touts: Outcomes
) -> None:
    stack, _ = tstack
    tenants = {unique("tenant-a"): "A-owes-1200", unique("tenant-b"): "B-owes-9"}
    for rid, secret in tenants.items():
        body = {"request_id": rid, "template": "tenant", "params": {"section": "balance",
                                                                   "secret": secret}}  # fmt: skip
        await publish(stack, body)
        await touts.delivered_event(rid)
    for rid, secret in tenants.items():
        text = pdf_text(delivered_file(stack.out, rid))
        others = [s for r, s in tenants.items() if r != rid]
        assert secret in text and not any(o in text for o in others)


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        (".git/config", "cannot be requested"),
        ("_base.html", "cannot be requested"),
        ("samples/portfolio.json", "cannot be requested"),
        ("leak.html", "hidden file"),
        ("escape.html", "outside the templates folder"),
    ],
)
async def test_hidden_files_partials_and_symlinks_out_are_never_rendered(
    tstack: tuple[Stack, Path], touts: Outcomes, template: str, reason: str
) -> None:
    stack, outside = tstack
    rid = unique("hidden")
    await publish(stack, {"request_id": rid, "template": template})
    failed = await touts.failed_event(rid)
    assert reason in failed["reason"]
    assert CANARY not in failed["reason"] and str(outside) not in failed["reason"]
    assert str(stack.root) not in failed["reason"]  # names, not server paths
    assert rid not in touts.delivered and not list(stack.out.rglob(f"*{request_tag(rid)}.*"))


# ---- deliveries ------------------------------------------------------------------------------
async def test_email_goes_only_to_allowed_recipients_and_its_text_is_never_a_template(
    tstack: tuple[Stack, Path], touts: Outcomes, net: Net
) -> None:
    stack, _ = tstack
    outsider, allowed = unique("mail-out"), unique("mail-in")
    await publish(
        stack,
        {"request_id": outsider, "template": "show.html", "params": {"title": "t", "payload": 1},
         "deliver": [{"channel": "email", "to": ["victim@elsewhere.org"]}]},
    )  # fmt: skip
    failed = await touts.failed_event(outsider)
    assert (
        "PRESSROOM_EMAIL_ALLOW" in failed["reason"] and "victim@elsewhere.org" in failed["reason"]
    )
    assert net.smtp.to("victim@elsewhere.org") == []

    bomb = "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
    looped = unique("mail-loop")
    await publish(
        stack,
        {"request_id": looped, "template": "show.html", "params": {"title": "t", "payload": 1},
         "deliver": [{"channel": "email", "to": [f"{looped}@example.com"], "body": bomb}]},
    )  # fmt: skip
    failed = await touts.failed_event(looped)  # at once: no template engine to run it
    assert "unknown placeholder {% for i in range(100000) %}" in failed["reason"]
    assert failed["attempts"] == 1

    inbox = f"{allowed}@example.com"
    await publish(
        stack,
        {"request_id": allowed, "template": "show.html", "params": {"title": "t", "payload": 1},
         "deliver": [{"channel": "email", "to": [inbox], "subject": "{{ 7 * 7 }} {request_id}",
                      "body": "Loop: {{% for i in range(9) %}} for {param.title}"}]},
    )  # fmt: skip
    await touts.delivered_event(allowed)
    [mail] = net.smtp.to(inbox)
    assert mail.message["Subject"] == f"{{ 7 * 7 }} {allowed}"  # {{ }} are literal braces
    body = next(p for p in mail.message.walk() if p.get_content_type() == "text/plain")
    assert body.get_payload(decode=True).decode().strip() == "Loop: {% for i in range(9) %} for t"


async def test_s3_deliveries_go_only_where_allowed_and_never_create_or_overwrite(
    tstack: tuple[Stack, Path], touts: Outcomes, net: Net
) -> None:
    stack, _ = tstack
    victim = unique("victim")
    await publish(stack, {"request_id": victim, "template": "show.html",
                          "params": {"title": "victim", "payload": 1}})  # fmt: skip
    delivered = await touts.delivered_event(victim)
    stored = delivered["artefacts"][0]
    before = net.s3.client().get_object("artefacts", stored["key"]).read()

    cases = {
        unique("s3-ok"): ({"bucket": "deliveries", "key": "ok/{request_id}.pdf"}, None),
        unique("s3-prefix"): ({"bucket": "deliveries", "key": "other/x.pdf"}, "S3_DELIVERY_ALLOW"),
        unique("s3-art"): ({"bucket": "artefacts", "key": stored["key"]}, "artefact bucket"),
        unique("s3-new"): ({"bucket": "fresh", "key": "x.pdf"}, "does not exist"),
    }
    for rid, (target, _) in cases.items():
        await publish(stack, {"request_id": rid, "template": "show.html",
                              "params": {"title": "attacker", "payload": 1},
                              "deliver": [{"channel": "s3", **target}]})  # fmt: skip
    for rid, (_, reason) in cases.items():
        if reason is None:
            await touts.delivered_event(rid)
        else:
            assert reason in (await touts.failed_event(rid))["reason"]
    client = net.s3.client()
    assert client.get_object("artefacts", stored["key"]).read() == before
    assert not client.bucket_exists("fresh")
    assert [o.object_name for o in client.list_objects("deliveries", recursive=True)] == [
        f"ok/{next(iter(cases))}.pdf"
    ]


# ---- ids -------------------------------------------------------------------------------------
async def test_a_reused_request_id_with_new_content_fails_loudly(
    tstack: tuple[Stack, Path], touts: Outcomes
) -> None:
    stack, _ = tstack
    rid = unique("reuse")
    first = {"request_id": rid, "template": "show.html", "params": {"title": "A", "payload": 1}}
    await publish(stack, first)
    await touts.delivered_event(rid)
    await publish(stack, {**first, "params": {"title": "B", "payload": 2}})
    failed = await touts.failed_event(rid)
    assert "already used for a different request" in failed["reason"]
    status = json.loads(stack.cli("status", rid, "--json", check=True).stdout)
    assert status["status"] == "delivered"  # the real request's record is untouched
    await publish(stack, first, msg_id=unique("again"))  # same content: a no-op
    marker = unique("marker")
    await publish(stack, {**first, "request_id": marker})
    await touts.delivered_event(marker)
    assert len(touts.delivered[rid]) == 1 and len(touts.failed[rid]) == 1


async def test_a_scheduled_id_cannot_be_taken_first_by_another_publisher(
    tstack: tuple[Stack, Path], touts: Outcomes
) -> None:
    from datetime import UTC, datetime

    from services.scheduler.app import fire
    from shared.bus.topology import JetStreamPublisher
    from shared.events import request_fingerprint
    from shared.schedules import load_schedules

    stack, _ = tstack
    config = yaml.safe_load(Path(stack.env["PRESSROOM_CONFIG"]).read_text())
    [nightly] = load_schedules(config["schedules"])
    when = datetime(2025, 1, 1, 3, 0, tzinfo=UTC)  # a due fire (catch-up after downtime)
    real = nightly.request_for(when)
    forged = json.loads(real.model_dump_json())
    forged["params"] = {"title": "forged", "payload": "attacker"}
    forged["deliver"] = [{"channel": "file", "path": "stolen"}]
    # The attacker even takes the message id the scheduler will use.
    taken = f"{real.request_id}:schedule:{request_fingerprint(real)}"
    await publish(stack, forged, msg_id=taken)
    failed = await touts.failed_event(real.request_id)
    assert "imitates schedule 'nightly'" in failed["reason"]

    nc = await stack.connect()
    js = nc.jetstream()
    await fire(JetStreamPublisher(js), nightly, when, js)
    await nc.close()
    await touts.delivered_event(real.request_id, failed_before=1)
    assert delivered_file(stack.out / "nightly", real.request_id).exists()
    assert not (stack.out / "stolen").exists()


# ---- integrity -------------------------------------------------------------------------------
async def test_tampered_artefacts_are_never_served_or_reused(
    tstack: tuple[Stack, Path], touts: Outcomes, net: Net
) -> None:
    stack, _ = tstack
    body = {"template": "show.html", "params": {"title": "cached", "payload": unique("v")}}
    first = unique("tamper")
    await publish(stack, {**body, "request_id": first})
    delivered = await touts.delivered_event(first)
    key = delivered["artefacts"][0]["key"]
    forged = b"%PDF-1.4 forged by someone with bucket access"
    net.s3.client().put_object("artefacts", key, BytesIO(forged), len(forged))

    got = stack.cli("get", first, "--output", str(stack.root / "got.pdf"))
    assert got.returncode == 1 and "no longer matches its recorded sha256" in got.stderr
    assert len(got.stderr.strip().splitlines()) == 1

    second = unique("tamper")  # identical content: the render cache would reuse the first
    await publish(stack, {**body, "request_id": second})
    await touts.delivered_event(second)

    async def written() -> bytes:
        path = delivered_file(stack.out, second)
        return path.read_bytes() if path.exists() else b""

    pdf = await eventually(written)
    assert pdf != forged and pdf.startswith(b"%PDF") and len(pdf) > len(forged)


# ---- found by the red team (each was a working attack before its fix) --------------------
def status(stack: Stack, rid: str) -> dict[str, Any]:
    return dict(json.loads(stack.cli("status", rid, "--json", check=True).stdout))


async def test_a_future_scheduled_run_cannot_be_run_early_by_an_exact_copy(
    tstack: tuple[Stack, Path], touts: Outcomes
) -> None:
    from datetime import UTC, datetime, timedelta

    from shared.schedules import load_schedules

    stack, _ = tstack
    config = yaml.safe_load(Path(stack.env["PRESSROOM_CONFIG"]).read_text())
    [nightly] = load_schedules(config["schedules"])
    when = nightly.next_fire(datetime.now(UTC) + timedelta(days=400))  # not due for a year
    copy = json.loads(nightly.request_for(when).model_dump_json())  # anyone can compute it
    await publish(stack, copy)
    failed = await touts.failed_event(copy["request_id"])
    assert "which is not due" in failed["reason"] and failed["refused"]
    assert not delivered_file(stack.out / "nightly", copy["request_id"]).exists()


async def test_an_invalid_message_cannot_mark_another_request_failed(
    tstack: tuple[Stack, Path], touts: Outcomes
) -> None:
    stack, _ = tstack
    victim = unique("victim")
    body = {"request_id": victim, "template": "show.html", "params": {"title": "v", "payload": 1}}
    await publish(stack, body)
    await touts.delivered_event(victim)
    await eventually(lambda: _status_is(stack, victim, "delivered"), timeout=60)
    await publish(stack, {"request_id": victim, "template": ""})  # invalid, with the victim's id
    failed = await touts.failed_event(victim)
    assert failed["refused"] and failed["reason"].startswith("invalid payload")
    assert status(stack, victim)["status"] == "delivered"


async def _status_is(stack: Stack, rid: str, wanted: str) -> bool:
    return status(stack, rid)["status"] == wanted


@pytest.mark.parametrize("kind", ["request", "scheduled"])
async def test_a_publisher_cannot_make_a_stage_output_vanish_by_taking_its_message_id(
    tstack: tuple[Stack, Path], touts: Outcomes, kind: str
) -> None:
    from datetime import UTC, datetime, timedelta

    from services.scheduler.app import fire
    from shared.bus.topology import JetStreamPublisher
    from shared.schedules import load_schedules

    stack, _ = tstack
    config = yaml.safe_load(Path(stack.env["PRESSROOM_CONFIG"]).read_text())
    [nightly] = load_schedules(config["schedules"])
    when = nightly.next_fire(datetime.now(UTC) - timedelta(days=400))  # a due fire
    victim = unique("invoice") if kind == "request" else nightly.request_for(when).request_id
    await publish(stack, {}, msg_id=f"{victim}:fetcher")  # the fetcher's output id, taken first
    if kind == "request":
        body = {
            "request_id": victim,
            "template": "show.html",
            "params": {"title": "i", "payload": 1},
        }
        await publish(stack, body)
    else:
        nc = await stack.connect()
        js = nc.jetstream()
        await fire(JetStreamPublisher(js), nightly, when, js)
        await nc.close()
    await touts.delivered_event(victim)


async def test_a_named_source_cannot_be_pointed_at_another_path(
    tstack: tuple[Stack, Path], touts: Outcomes, net: Net
) -> None:
    stack, _ = tstack
    rid = unique("named-path")
    await publish(stack, show(rid, {"source": "portfolio-prs", "repo": "org/payroll",
                                    "endpoint": "../../../admin/keys?x="}))  # fmt: skip
    failed = await touts.failed_event(rid)
    assert "cannot be changed by a request" in failed["reason"]
    assert not [h for h in net.legit.hits if "payroll" in h.path or "admin" in h.path]


async def test_a_credential_is_bound_to_its_path_and_dot_segments_are_refused(
    tstack: tuple[Stack, Path], touts: Outcomes, net: Net
) -> None:
    stack, _ = tstack
    rid = unique("dots")
    await publish(stack, show(rid, {"kind": "http", "credentials": "inventory",
                                    "url": f"{net.legit.url}/api/%2e%2e/admin"}))  # fmt: skip
    failed = await touts.failed_event(rid)
    assert "'.' or '..' segments" in failed["reason"]
    assert not [h for h in net.legit.hits if "admin" in h.path]


async def test_data_that_sets_generation_time_is_part_of_the_render_cache_key(
    tstack: tuple[Stack, Path], touts: Outcomes
) -> None:
    stack, _ = tstack
    shown = "<p>{{ title }} {{ generation_time }}</p>"
    (stack.templates / "stamp.html").write_text(shown)
    a, b = unique("tenant-a"), unique("tenant-b")
    for rid, stamp in ((a, "A-ONLY-7781"), (b, "B-ONLY-1290")):
        params = {"title": "same", "generation_time": stamp}
        await publish(stack, {"request_id": rid, "template": "stamp.html", "params": params})
        await touts.delivered_event(rid)
    assert "B-ONLY-1290" in pdf_text(delivered_file(stack.out, b))


async def test_secrets_in_named_sources_and_requests_stay_out_of_backups_and_config_check(
    tstack: tuple[Stack, Path], touts: Outcomes, net: Net
) -> None:
    import tarfile

    stack, _ = tstack
    rid = unique("tenant-token")
    body = show(rid, {"kind": "http", "url": f"{net.legit.url}/projects",
                      "headers": {"Authorization": f"Bearer tenant-{CANARY}"}})  # fmt: skip
    body["template"] = "no-such-template"  # fails: the request stays in a dead letter
    await publish(stack, body)
    await touts.failed_event(rid)
    archive = stack.root / "backup.tar.gz"
    assert stack.cli("backup", str(archive)).returncode == 0
    with tarfile.open(archive) as tar:
        contents = b"".join(
            tar.extractfile(m).read()
            for m in tar.getmembers()
            if m.isfile()  # type: ignore[union-attr]
        )
    assert CANARY.encode() not in contents
    check = stack.cli("config", "check")
    assert check.returncode == 0 and CANARY not in check.stdout


async def test_one_request_cannot_fan_out_or_repeat_without_bound(
    tstack: tuple[Stack, Path], touts: Outcomes
) -> None:
    stack, _ = tstack
    too_wide = {"template": "show.html", "params": {"title": "t", "payload": 1}}
    cases = {
        unique("fanout"): {
            "sources": [{"name": f"s{i}", "source": "billing"} for i in range(3000)]
        },
        unique("spam"): {"deliver": [{"channel": "email", "to": ["x@example.com"]}] * 300},
    }
    for rid, extra in cases.items():
        await publish(stack, {"request_id": rid, **too_wide, **extra})
    for rid in cases:
        failed = await touts.failed_event(rid)
        assert failed["reason"].startswith("invalid payload") and failed["attempts"] == 1
    once = unique("formats")  # repeated formats are one artefact, not 40,000 uploads
    await publish(stack, {"request_id": once, **too_wide, "formats": ["pdf"] * 40_000})
    delivered = await touts.delivered_event(once)
    assert len(delivered["artefacts"]) == 1


async def test_a_forged_dead_letter_can_neither_replay_to_the_bus_api_nor_delete_an_artefact(
    tstack: tuple[Stack, Path], touts: Outcomes
) -> None:
    from datetime import UTC, datetime

    stack, _ = tstack
    victim = unique("keep")
    await publish(stack, {"request_id": victim, "template": "show.html",
                          "params": {"title": "keep", "payload": 1}})  # fmt: skip
    delivered = await touts.delivered_event(victim)
    now = datetime.now(UTC).isoformat()
    letter = {"payload": "{}", "stage": "fetcher", "reason": "replay me", "permanent": True,
              "attempts": 1, "first_failure": now, "last_failure": now}  # fmt: skip
    nc = await stack.connect()  # ops may publish dead letters (restore does); a stage may too
    js = nc.jetstream()
    api_letter = await js.publish(
        "dlq.report.requested",
        json.dumps({**letter, "subject": "$JS.API.STREAM.DELETE.KV_pressroom_ledger"}).encode(),
    )
    ref_letter = await js.publish(
        "dlq.report.requested",
        json.dumps(
            {
                **letter,
                "subject": "report.requested",
                "payload_ref": delivered["artefacts"][0]["key"],
            }
        ).encode(),
    )
    await nc.close()
    replay = stack.cli("dlq", "replay", str(api_letter.seq))
    assert replay.returncode == 1 and "can be replayed" in replay.stderr
    assert len(replay.stderr.strip().splitlines()) == 1
    assert stack.cli("dlq", "purge", str(ref_letter.seq)).returncode == 0
    got = stack.cli("get", victim, "--output", str(stack.root / f"{victim}.pdf"))
    assert got.returncode == 0, got.stderr
    assert status(stack, victim)["status"] == "delivered"  # the ledger is still there
