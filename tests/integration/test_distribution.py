"""Email, S3, signed webhooks and folders against real servers — each delivered exactly once."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from services.distributor.channels.webhook import verify
from tests.helpers import REPO, Outcomes, Stack, delivered_file, unique
from tests.servers import HttpReceiver, S3Server, SmtpServer

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"pressroom-test-secret-0123456789").decode()
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[S3Server, SmtpServer, HttpReceiver]]:
    flaky_once: set[str] = set()

    def responder(path: str, count: int) -> tuple[int, bytes, dict[str, str]]:
        if path.startswith("/flaky") and path not in flaky_once:
            flaky_once.add(path)
            return 503, b"busy", {"Retry-After": "1"}
        if path.startswith("/gone"):
            return 410, b"", {}
        return 200, b"{}", {}

    s3, smtp, hooks = S3Server().start(), SmtpServer().start(), HttpReceiver(responder).start()
    s3.client().make_bucket("company-reports")  # deliveries never create buckets
    yield s3, smtp, hooks
    hooks.stop()
    smtp.stop()
    s3.stop()


@pytest.fixture(scope="module")
def dstack(tmp_path_factory: pytest.TempPathFactory, servers: Any) -> Iterator[Stack]:
    s3, smtp, _ = servers
    stack = Stack(
        tmp_path_factory.mktemp("distribution"),
        env_extra={
            **s3.env(),
            **smtp.env(),
            "PRESSROOM_WEBHOOK_SECRET": SECRET,
            "PRESSROOM_WEBHOOK_ALLOW": "127.0.0.1",
            "PRESSROOM_ARTEFACT_BUCKET": "artefacts",
            "PRESSROOM_S3_DELIVERY_ALLOW": "company-reports/portfolio",
            # Long enough a retry budget (~12 s) to ride out the outages below.
            "PRESSROOM_MAX_ATTEMPTS": "8",
            "PRESSROOM_RETRY_BACKOFF": "0.5,1,2",
        },
    ).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def douts(dstack: Stack) -> Any:
    nc = await dstack.connect()
    outcomes = await Outcomes().start(nc)
    yield outcomes
    await nc.close()


async def publish(stack: Stack, body: dict[str, Any]) -> None:
    nc = await stack.connect()
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await nc.close()


async def test_one_request_emails_uploads_and_calls_the_webhook_once_each(
    dstack: Stack, servers: Any, douts: Outcomes
) -> None:
    s3, smtp, hooks = servers
    rid = unique("all")
    inbox = f"{rid}@example.com"
    await publish(
        dstack,
        {
            "request_id": rid,
            "template": "weekly.html",
            "params": SAMPLE,
            "deliver": [
                {"channel": "email", "to": [inbox], "subject": "Weekly {request_id}"},
                {"channel": "s3", "bucket": "company-reports", "key": "portfolio/{request_id}.pdf"},
                {"channel": "webhook", "url": f"{hooks.url}/hook/{rid}"},
            ],
        },
    )
    delivered = await douts.delivered_event(rid)
    assert [c["channel"] for c in delivered["channels"]] == ["email", "s3", "webhook"]
    assert all(c["ok"] for c in delivered["channels"])

    # email: one message, subject rendered, the PDF attached
    [mail] = smtp.to(inbox)
    assert mail.message["Subject"] == f"Weekly {rid}"
    [attachment] = [p for p in mail.message.walk() if p.get_filename()]
    assert attachment.get_filename().startswith("portfolio-status-report-")  # its title
    pdf = attachment.get_payload(decode=True)
    assert pdf.startswith(b"%PDF")

    # s3: the same bytes under the requested key, with the sha256 in its metadata
    obj = s3.client().get_object("company-reports", f"portfolio/{rid}.pdf")
    assert obj.read() == pdf
    assert delivered["artefacts"][0]["sha256"] in str(obj.headers)

    # webhook: one signed call a receiver can verify, with artefact digest and a download URL
    [hit] = hooks.on(f"/hook/{rid}")
    assert verify(SECRET, hit.headers, hit.body)
    body = hit.json()
    assert body["request_id"] == rid and body["artefacts"][0]["size"] == len(pdf)
    assert body["artefacts"][0]["url"].startswith(f"http://{s3.endpoint}/artefacts/")

    # the artefact itself sits in the S3 artefact store under the dated key
    key = delivered["artefacts"][0]["key"]
    assert key.startswith("reports/") and key.endswith(f"/{rid}.pdf")
    stat = s3.client().stat_object("artefacts", key)
    assert stat.metadata["x-amz-meta-template-version"]


async def test_a_redelivered_report_rendered_sends_nothing_again(
    dstack: Stack, servers: Any, douts: Outcomes
) -> None:
    _, smtp, hooks = servers
    rid = unique("again")
    inbox = f"{rid}@example.com"
    await publish(
        dstack,
        {
            "request_id": rid,
            "template": "weekly.html",
            "params": SAMPLE,
            "deliver": [
                {"channel": "email", "to": [inbox]},
                {"channel": "webhook", "url": f"{hooks.url}/hook/{rid}"},
            ],
        },
    )
    await douts.delivered_event(rid)

    # Publish the same report.rendered again, as a redelivery after a crash would.
    nc = await dstack.connect()
    js = nc.jetstream()
    sub = await js.subscribe("report.rendered", ordered_consumer=True)
    rendered = None
    while rendered is None:
        msg = await sub.next_msg(timeout=5)
        if json.loads(msg.data)["request"]["request_id"] == rid:
            rendered = msg.data
    await js.publish("report.rendered", rendered, headers={"Nats-Msg-Id": unique("redeliver")})
    marker = unique("marker")
    await publish(dstack, {"request_id": marker, "template": "weekly.html", "params": SAMPLE})
    await douts.delivered_event(marker)
    await sub.unsubscribe()
    await nc.close()

    assert len(smtp.to(inbox)) == 1
    assert len(hooks.on(f"/hook/{rid}")) == 1


async def test_a_transient_webhook_failure_is_retried_without_resending_the_email(
    dstack: Stack, servers: Any, douts: Outcomes
) -> None:
    _, smtp, hooks = servers
    rid = unique("flaky")
    inbox = f"{rid}@example.com"
    await publish(
        dstack,
        {
            "request_id": rid,
            "template": "weekly.html",
            "params": SAMPLE,
            "deliver": [
                {"channel": "email", "to": [inbox]},
                {"channel": "webhook", "url": f"{hooks.url}/flaky/{rid}"},
            ],
        },
    )
    await douts.delivered_event(rid)
    assert len(hooks.on(f"/flaky/{rid}")) == 2  # 503 with Retry-After, then 200
    first, second = hooks.on(f"/flaky/{rid}")
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert len(smtp.to(inbox)) == 1


async def test_private_webhook_targets_are_refused_and_other_channels_still_deliver(
    dstack: Stack, douts: Outcomes
) -> None:
    rid = unique("ssrf")
    await publish(
        dstack,
        {
            "request_id": rid,
            "template": "weekly.html",
            "params": SAMPLE,
            "deliver": [
                {"channel": "webhook", "url": "http://169.254.169.254/latest/meta-data"},
                {"channel": "file", "path": "ssrf"},
            ],
        },
    )
    failed = await douts.failed_event(rid)
    assert "169.254.169.254" in failed["reason"] and "non-public" in failed["reason"]
    assert failed["attempts"] == 1 and failed["stage"] == "distributor"
    assert delivered_file(dstack.out / "ssrf", rid).exists()


async def test_a_bad_email_address_fails_permanently_naming_it(
    dstack: Stack, douts: Outcomes
) -> None:
    rid = unique("badmail")
    await publish(
        dstack,
        {
            "request_id": rid,
            "template": "weekly.html",
            "params": SAMPLE,
            "deliver": [{"channel": "email", "to": ["not an address"]}],
        },
    )
    failed = await douts.failed_event(rid)
    assert "invalid email address 'not an address'" in failed["reason"]
    assert failed["attempts"] == 1


async def test_pressroom_get_downloads_from_s3(dstack: Stack, douts: Outcomes) -> None:
    rid = unique("get")
    await publish(
        dstack,
        {
            "request_id": rid,
            "template": "weekly.html",
            "params": SAMPLE,
            "formats": ["pdf", "html"],
        },
    )
    await douts.delivered_event(rid)
    target = dstack.root / f"{rid}.html"
    result = dstack.cli("get", rid, "--format", "html", "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert "Portfolio Status Report" in target.read_text()
    assert os.path.getsize(delivered_file(dstack.out, rid)) > 0


async def test_an_existing_report_can_be_delivered_again_from_the_cli(
    dstack: Stack, servers: Any, douts: Outcomes
) -> None:
    _, smtp, hooks = servers
    rid = unique("resend")
    await publish(dstack, {"request_id": rid, "template": "weekly.html", "params": SAMPLE})
    await douts.delivered_event(rid)
    inbox = f"{rid}@example.com"
    result = dstack.cli(
        "deliver", rid, "--email", inbox, "--webhook", f"{hooks.url}/again/{rid}", "--json"
    )
    assert result.returncode == 0, result.stderr
    assert [r["ok"] for r in json.loads(result.stdout)] == [True, True]
    assert len(smtp.to(inbox)) == 1 and len(hooks.on(f"/again/{rid}")) == 1


def test_the_email_and_webhook_configuration_can_be_checked(dstack: Stack, servers: Any) -> None:
    _, smtp, hooks = servers
    email = dstack.cli("check", "email", "--to", "check@example.com")
    assert email.returncode == 0, email.stderr
    assert "test message sent" in email.stdout and smtp.to("check@example.com")
    # An address no delivery may reach (PRESSROOM_EMAIL_ALLOW) fails the check, unsent.
    outside = dstack.cli("check", "email", "--to", "canary@outside.test")
    assert outside.returncode == 1
    assert "PRESSROOM_EMAIL_ALLOW" in outside.stderr and "canary@outside.test" in outside.stderr
    assert not smtp.to("canary@outside.test")
    hook = dstack.cli("check", "webhook", "--url", f"{hooks.url}/ping")
    assert hook.returncode == 0, hook.stderr
    assert verify(SECRET, hooks.on("/ping")[0].headers, hooks.on("/ping")[0].body)
    refused = dstack.cli("check", "webhook", "--url", "http://10.0.0.1/x")
    assert refused.returncode == 1 and "non-public" in refused.stderr


def test_pressroom_clean_lists_and_removes_old_artefacts_from_s3(dstack: Stack) -> None:
    listed = json.loads(
        dstack.cli("clean", "--older-than", "30d", "--dry-run", "--json", check=True).stdout
    )
    assert listed["objects"] == [] and listed["files"] == []  # nothing is 30 days old yet
    everything = json.loads(
        dstack.cli("clean", "--older-than", "0m", "--dry-run", "--json", check=True).stdout
    )
    assert everything["objects"] and all(
        o["key"].startswith("reports/") for o in everything["objects"]
    )


async def test_an_smtp_outage_delays_the_email_but_sends_it_once(
    dstack: Stack, servers: Any, douts: Outcomes
) -> None:
    _, smtp, _ = servers
    rid = unique("smtpdown")
    inbox = f"{rid}@example.com"
    smtp.stop()
    try:
        await publish(
            dstack,
            {
                "request_id": rid,
                "template": "weekly.html",
                "params": SAMPLE,
                "deliver": [{"channel": "email", "to": [inbox]}],
            },
        )
        await asyncio.sleep(3)
        assert rid not in douts.delivered and rid not in douts.failed
    finally:
        smtp.restart()
    delivered = await douts.delivered_event(rid, timeout=60)
    assert delivered["channels"][0]["ok"]
    assert len(smtp.to(inbox)) == 1


async def test_an_s3_outage_delays_the_report_but_loses_nothing(
    dstack: Stack, servers: Any, douts: Outcomes
) -> None:
    # Last in this module: the restarted S3 server starts empty.
    s3, _, _ = servers
    rid = unique("s3down")
    s3.stop()
    try:
        await publish(dstack, {"request_id": rid, "template": "weekly.html", "params": SAMPLE})
        await asyncio.sleep(3)
        assert rid not in douts.delivered and rid not in douts.failed
    finally:
        s3.restart()
    await douts.delivered_event(rid, timeout=60)
    assert delivered_file(dstack.out, rid).read_bytes().startswith(b"%PDF")
    keys = [o.object_name for o in s3.client().list_objects("artefacts", recursive=True)]
    assert any(k.endswith(f"/{rid}.pdf") for k in keys)  # bucket recreated, artefact stored


async def test_download_links_are_minted_when_asked_and_never_stored(
    dstack: Stack, servers: Any, douts: Outcomes
) -> None:
    import httpx

    from services.distributor.channels.email import EmailChannel
    from services.distributor.parcel import Parcel
    from shared.adapters.store import S3Artefacts
    from shared.events import Delivery, ReportRendered, ReportRequested
    from shared.settings import Settings

    s3, smtp, _ = servers
    rid = unique("links")
    await publish(dstack, {"request_id": rid, "template": "weekly.html", "params": SAMPLE})
    delivered = await douts.delivered_event(rid)
    [artefact] = delivered["artefacts"]

    # `pressroom get --url`: a working link, printed, not recorded anywhere.
    minted = dstack.cli("get", rid, "--url", "--expires", "1h")
    assert minted.returncode == 0, minted.stderr
    link = minted.stdout.strip()
    async with httpx.AsyncClient() as client:
        pdf = (await client.get(link)).content
    assert pdf.startswith(b"%PDF") and len(pdf) == artefact["size"]

    # An email too big to attach carries a link minted for that message only.
    settings = Settings(
        **{k.removeprefix("PRESSROOM_").lower(): v for k, v in {**s3.env(), **smtp.env()}.items()},
        artefact_bucket="artefacts",
        email_allow="example.com",
        email_attachment_limit=1000,
    )
    rendered = ReportRendered(
        request=ReportRequested(template="weekly.html", request_id=rid),
        artefacts=[artefact],
        template_version="v",
        render_seconds=0,
    )
    store = S3Artefacts.from_settings(settings)
    inbox = f"{rid}-link@example.com"
    result = await EmailChannel(settings).deliver(
        Delivery.model_validate({"channel": "email", "to": [inbox]}), Parcel(rendered, store)
    )
    [mail] = smtp.to(inbox)
    parts = {p.get_content_type(): p.get_payload(decode=True) for p in mail.message.walk()}
    assert "X-Amz-Signature=" in parts["text/plain"].decode()
    assert '<a href="http' in parts["text/html"].decode()  # clickable in the HTML part
    assert result.detail == "linked" and "X-Amz" not in result.model_dump_json()

    # Nothing that is kept — events, ledger, logs — holds a signed link.
    status = dstack.cli("status", rid, "--json", check=True).stdout
    assert "X-Amz-Signature" not in status + json.dumps(delivered) + dstack.logs()
