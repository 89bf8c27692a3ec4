"""Webhook signing (Standard Webhooks), the SSRF guard, and email address checks."""

from __future__ import annotations

import time

import pytest

from services.distributor.channels.email import recipient_allowed, validate_addresses
from services.distributor.channels.s3 import check_target, destination_key
from services.distributor.channels.webhook import sign, verify
from shared.adapters import egress
from shared.errors import PermanentError
from shared.settings import Settings


async def check_webhook(url: str, allow: list[str]) -> tuple[str, str | None]:
    target = await egress.check_public(url, allow, what="webhook", setting="X_ALLOW")
    return target.origin.host, target.address


def test_signature_matches_the_standard_webhooks_test_vector() -> None:
    signature = sign(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        b'{"test": 2432232314}',
    )
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_verify_rejects_tampered_bodies_and_stale_timestamps() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    now = int(time.time())
    headers = {
        "webhook-id": "m1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, "m1", now, b"{}"),
    }
    assert verify(secret, headers, b"{}")
    assert not verify(secret, headers, b'{"x":1}')
    old = now - 3600
    stale = {
        **headers,
        "webhook-timestamp": str(old),
        "webhook-signature": sign(secret, "m1", old, b"{}"),
    }
    assert not verify(secret, stale, b"{}")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://2130706433/hook",  # 127.0.0.1 in decimal
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_private_loopback_and_metadata_targets_are_refused(url: str) -> None:
    with pytest.raises(PermanentError, match="non-public address"):
        await check_webhook(url, [])


async def test_allow_list_admits_a_private_target_by_host_or_cidr() -> None:
    assert await check_webhook("http://127.0.0.1:9/x", ["127.0.0.1"]) == ("127.0.0.1", "127.0.0.1")
    assert (await check_webhook("http://10.1.2.3/x", ["10.0.0.0/8"]))[1] == "10.1.2.3"
    assert await check_webhook("http://127.0.0.1:9/x", ["127.0.0.1:9"])
    with pytest.raises(PermanentError):
        await check_webhook("http://127.0.0.1:10/x", ["127.0.0.1:9"])  # another port


async def test_non_http_schemes_and_userinfo_are_refused() -> None:
    with pytest.raises(PermanentError, match="not an http"):
        await check_webhook("file:///etc/passwd", [])
    with pytest.raises(PermanentError, match="credentials in the URL"):
        await check_webhook("http://u:p@127.0.0.1/x", ["127.0.0.1"])


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("ops@example.com", True),
        ("Ops <OPS@Example.com>", True),
        ("x@sub.example.com", True),
        ("x@example.org", False),
        ("boss@partner.net", True),
        ("other@partner.net", False),
        ("x@evil-example.com", False),
    ],
)
def test_email_recipients_must_match_the_allow_list(address: str, allowed: bool) -> None:
    allow = ["example.com", ".example.com", "boss@partner.net"]
    assert recipient_allowed(address, allow) is allowed


def test_s3_deliveries_only_to_allowed_buckets_and_prefixes_never_the_artefact_bucket() -> None:
    cfg = Settings(
        s3_delivery_allow="reports,shared/team-a,pressroom-artefacts",
        artefact_bucket="pressroom-artefacts",
    )
    check_target("reports", "any/key.pdf", cfg)
    check_target("shared", "team-a/x.pdf", cfg)
    for bucket, key in (
        ("shared", "team-b/x.pdf"),
        ("shared", "team-ab/x.pdf"),
        ("other", "x.pdf"),
        ("pressroom-artefacts", "reports/2026/11/23/victim.pdf"),
    ):
        with pytest.raises(PermanentError, match="refused"):
            check_target(bucket, key, cfg)


def test_email_addresses_are_checked_before_sending() -> None:
    assert validate_addresses("ops@example.com") == ["ops@example.com"]
    assert validate_addresses(["Ops Team <ops@example.com>"]) == ["Ops Team <ops@example.com>"]
    for bad in (["not an address"], ["a@b@c"], [], ["ops@example.com, x@y.z"]):
        with pytest.raises(PermanentError):
            validate_addresses(bad)


def test_s3_keys_fill_placeholders_and_refuse_escapes() -> None:
    from datetime import UTC, datetime

    from services.distributor.parcel import Parcel
    from shared.adapters.store import MemoryArtefacts
    from shared.events import ReportRendered, ReportRequested

    request = ReportRequested(
        template="weekly.html", request_id="r1", requested_at=datetime(2026, 11, 23, tzinfo=UTC)
    )
    parcel = Parcel(
        ReportRendered(request=request, artefacts=[], template_version="v", render_seconds=0),
        MemoryArtefacts(),
    )
    assert (
        destination_key("p/{date}/{template}-{request_id}.{ext}", parcel, "pdf", 1)
        == "p/2026-11-23/weekly-r1.pdf"
    )
    assert destination_key("p/report.pdf", parcel, "html", 2) == "p/report.html"
    assert destination_key("p/", parcel, "pdf", 1) == "p/r1.pdf"
    with pytest.raises(PermanentError):
        destination_key("../x/{request_id}", parcel, "pdf", 1)
    with pytest.raises(PermanentError, match="placeholder"):
        destination_key("{nope}", parcel, "pdf", 1)
    with pytest.raises(PermanentError, match="placeholder"):
        destination_key("{date:>999999999}", parcel, "pdf", 1)  # no format specs, no bombs


def test_a_calling_system_named_in_email_allows_mails_only_its_own_recipients() -> None:
    settings = Settings(
        email_allow="example.com",
        email_allows="beta=.beta.example, beta=boss@partner.example, gamma=gamma.example",
    )
    assert settings.email_allow_for("beta") == (
        [".beta.example", "boss@partner.example"],
        "PRESSROOM_EMAIL_ALLOWS for beta",
    )
    # Not named: the operator's list, as the operator's own requests.
    assert settings.email_allow_for("alpha") == (["example.com"], "PRESSROOM_EMAIL_ALLOW")
    assert settings.email_allow_for(None) == (["example.com"], "PRESSROOM_EMAIL_ALLOW")
    for bad in ("beta", "beta=", "Beta=beta.example", "beta=not a domain", "beta=localhost"):
        with pytest.raises(ValueError):
            Settings(email_allows=bad)


def test_config_check_names_the_calling_systems_that_share_the_operators_recipients() -> None:
    from services.console.cli.stack import email_warnings

    settings = Settings(email_allow="example.com", email_allows="beta=.beta.example")
    [warning] = email_warnings(settings, ["alpha", "beta", "gamma"])
    assert warning.startswith("alpha, gamma may mail every recipient of PRESSROOM_EMAIL_ALLOW")
    assert email_warnings(settings, ["beta"]) == []
    assert email_warnings(settings, ["publisher"]) == []  # the single calling system: as before
    assert email_warnings(Settings(email_allows="beta=b.example"), ["alpha"]) == []  # no list
