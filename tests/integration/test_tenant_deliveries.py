"""A calling system's deliveries, attacked by another: a real nats-server with the identities
`pressroom bus auth --publisher alpha --publisher beta --publisher gamma` writes, every worker,
moto's S3 server and a real HTTP receiver.

- Alpha cannot replace beta's delivered S3 object, nor plant one where beta's will go: each
  tenant writes in its own folder under the allowed prefix; the operator's keys are as asked.
- Alpha's webhook to beta's receiver does not verify with beta's secret (nor the shared one);
  a tenant without its own secret is refused; the operator's requests sign with the shared one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.console.identities import generate
from services.distributor.channels.webhook import verify
from tests.helpers import Stack, unique
from tests.integration.test_tenants import SAMPLE, Heard, publish, request
from tests.servers import HttpReceiver, S3Server, SmtpServer

pytestmark = pytest.mark.integration
BUCKET = "company-reports"


def whsec(seed: bytes) -> str:
    return "whsec_" + base64.b64encode(seed.ljust(32, b"-")).decode()


SHARED, ALPHA, BETA = whsec(b"operator"), whsec(b"alpha"), whsec(b"beta")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[S3Server, HttpReceiver]]:
    s3, hooks = S3Server().start(), HttpReceiver().start()
    s3.client().make_bucket(BUCKET)  # deliveries never create buckets
    yield s3, hooks
    hooks.stop()
    s3.stop()


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    servers: tuple[S3Server, HttpReceiver],
    smtp: SmtpServer,
) -> Iterator[Stack]:
    s3, _ = servers
    root = tmp_path_factory.mktemp("tenant-deliveries")
    generate(root / "auth", publishers=["alpha", "beta", "gamma"])
    beta_file = root / "webhook-secrets"
    beta_file.write_text(f"# from the operator's secret store\nbeta={BETA}\n")
    beta_file.chmod(0o600)
    env = {
        **s3.env(),
        "PRESSROOM_S3_DELIVERY_ALLOW": f"{BUCKET}/portfolio",
        "PRESSROOM_WEBHOOK_ALLOW": "127.0.0.1",
        "PRESSROOM_WEBHOOK_SECRET": SHARED,
        "PRESSROOM_WEBHOOK_SECRETS": f"alpha={ALPHA}",
        "PRESSROOM_WEBHOOK_SECRETS_FILE": str(beta_file),
        **smtp.env(),
        # beta mails its customers; the operator's own list is the stack's (example.com).
        "PRESSROOM_EMAIL_ALLOWS": "beta=.beta.example,beta=boss@partner.example",
    }
    started = Stack(root, env_extra=env).start()
    yield started
    started.stop()


def html(rid: str, title: str, deliver: list[dict[str, Any]]) -> dict[str, Any]:
    body = request(rid, formats=["html"], deliver=deliver)
    return {**body, "params": {**SAMPLE, "report_title": title}}


def holding(s3: S3Server, marker: str) -> list[str]:
    """Every object in the delivery bucket whose content carries `marker`."""
    client = s3.client()
    return sorted(
        obj.object_name
        for obj in client.list_objects(BUCKET, recursive=True)
        if marker.encode() in client.get_object(BUCKET, obj.object_name).read()
    )


def s3_key(event: dict[str, Any]) -> str:
    [channel] = event["channels"]
    return str(channel["target"]).removeprefix(f"s3://{BUCKET}/")


async def test_a_tenant_cannot_replace_or_preplant_another_tenants_s3_objects(
    stack: Stack, servers: tuple[S3Server, HttpReceiver]
) -> None:
    s3, _ = servers
    alpha, beta, ops = (
        await stack.connect("publisher-alpha"),
        await stack.connect("publisher-beta"),
        await stack.connect(),
    )
    try:
        alpha_heard, beta_heard = await Heard().start(alpha), await Heard().start(beta)
        ops_heard = await Heard().start(ops)
        mark, canary = unique("beta-own"), unique("alpha-canary")
        pattern = [{"channel": "s3", "bucket": BUCKET, "key": "portfolio/weekly-{date}.html"}]
        # Before: alpha plants the key beta's weekly report will use ({date} is predictable).
        planted = unique("alpha-plant")
        await publish(alpha, html(planted, canary, pattern))
        await alpha_heard.delivered(planted)
        b_rid = unique("beta")
        await publish(beta, html(b_rid, mark, pattern))
        victim = s3_key(await beta_heard.delivered(b_rid))
        assert holding(s3, mark) == [victim]
        # After: alpha aims at beta's object by its key, by the pattern, and claiming beta.
        aims = {
            unique("alpha-key"): [{"channel": "s3", "bucket": BUCKET, "key": victim}],
            unique("alpha-pattern"): pattern,
            unique("alpha-flat"): [
                {"channel": "s3", "bucket": BUCKET, "key": victim.replace("beta/", "", 1)}
            ],
        }
        for rid, deliver in aims.items():
            await publish(alpha, {**html(rid, canary, deliver), "tenant": "beta"})
        for rid in aims:
            assert s3_key(await alpha_heard.delivered(rid)).startswith("portfolio/alpha/")
        # The canary is only ever in alpha's folder; beta's object is still beta's.
        found = holding(s3, canary)
        assert found and all(key.startswith("portfolio/alpha/") for key in found), found
        body = s3.client().get_object(BUCKET, victim).read()
        assert mark.encode() in body and canary.encode() not in body
        assert victim.startswith("portfolio/beta/weekly-"), victim
        # Beta's own work still goes on, and a redelivery of its request rewrites its object.
        b_next = unique("beta-next")
        await publish(beta, html(b_next, mark, pattern))
        assert s3_key(await beta_heard.delivered(b_next)) == victim
        assert holding(s3, mark) == [victim]
        # The operator's own requests write the key as asked, as before.
        o_rid, o_mark = unique("ops"), unique("ops-own")
        own_key = [{"channel": "s3", "bucket": BUCKET, "key": "portfolio/{request_id}.html"}]
        await publish(ops, html(o_rid, o_mark, own_key))
        assert s3_key(await ops_heard.delivered(o_rid)) == f"portfolio/{o_rid}.html"
    finally:
        for nc in (alpha, beta, ops):
            await nc.close()


async def test_a_tenants_webhook_does_not_verify_with_another_tenants_secret(
    stack: Stack, servers: tuple[S3Server, HttpReceiver]
) -> None:
    _, hooks = servers
    alpha, beta, gamma, ops = (
        await stack.connect("publisher-alpha"),
        await stack.connect("publisher-beta"),
        await stack.connect("publisher-gamma"),
        await stack.connect(),
    )
    try:
        heard = {
            name: await Heard().start(nc)
            for name, nc in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("ops", ops))
        }
        path = f"/{unique('beta-hook')}"
        to_beta = [{"channel": "webhook", "url": hooks.url + path}]
        rids = {name: unique(name) for name in heard}
        # Alpha first (the canary), gamma (no secret of its own), then beta and the operator.
        for name, nc in (("alpha", alpha), ("gamma", gamma), ("beta", beta), ("ops", ops)):
            await publish(nc, html(rids[name], unique(name), to_beta))
        await heard["alpha"].delivered(rids["alpha"])
        await heard["beta"].delivered(rids["beta"])
        await heard["ops"].delivered(rids["ops"])

        def hits(rid: str) -> list[Any]:
            return [h for h in hooks.on(path) if json.loads(h.body)["request_id"] == rid]

        [from_alpha] = hits(rids["alpha"])
        [from_beta] = hits(rids["beta"])
        [from_ops] = hits(rids["ops"])
        # Beta's receiver verifies with beta's secret: alpha's webhook never passes it (nor the
        # shared one); beta's does; the operator's verifies with the shared secret only.
        assert not verify(BETA, from_alpha.headers, from_alpha.body)
        assert not verify(SHARED, from_alpha.headers, from_alpha.body)
        assert verify(ALPHA, from_alpha.headers, from_alpha.body)
        assert verify(BETA, from_beta.headers, from_beta.body)
        assert not verify(ALPHA, from_beta.headers, from_beta.body)
        assert verify(SHARED, from_ops.headers, from_ops.body)
        assert not verify(BETA, from_ops.headers, from_ops.body)
        # A tenant without a secret of its own is refused (not signed with the shared one).
        refused = await heard["gamma"].failed(rids["gamma"])
        assert "'gamma' has no signing secret" in refused["reason"], refused["reason"]
        assert not hits(rids["gamma"])
        for secret in (SHARED, ALPHA, BETA):
            assert secret not in json.dumps(refused)
        # And no secret is written in any worker's log.
        for log in Path(stack.root).rglob("*.log"):
            text = log.read_text(errors="replace")
            assert all(s.removeprefix("whsec_") not in text for s in (SHARED, ALPHA, BETA)), log
    finally:
        for nc in (alpha, beta, gamma, ops):
            await nc.close()


async def test_a_tenant_cannot_mail_the_recipients_another_tenant_may(
    stack: Stack, smtp: SmtpServer
) -> None:
    alpha, beta, ops = (
        await stack.connect("publisher-alpha"),
        await stack.connect("publisher-beta"),
        await stack.connect(),
    )
    try:
        heard = {name: await Heard().start(nc) for name, nc in (("a", alpha), ("b", beta))}
        ops_heard = await Heard().start(ops)
        customer, boss = "customer@mail.beta.example", "boss@partner.example"

        canary = unique("alpha-canary")

        def mail(rid: str, to: str, title: str = "") -> dict[str, Any]:
            return html(rid, title or unique("mail"), [{"channel": "email", "to": to}])

        # beta's customers and the address beta may use hear from beta's requests.
        own, own_boss = unique("beta-mail"), unique("beta-boss")
        await publish(beta, mail(own, customer))
        await publish(beta, mail(own_boss, boss))
        await heard["b"].delivered(own)
        await heard["b"].delivered(own_boss)
        # alpha aims at beta's customers, and at the address only beta may mail.
        phish, spoof = unique("alpha-phish"), unique("alpha-boss")
        await publish(alpha, mail(phish, customer, canary))
        await publish(alpha, {**mail(spoof, boss, canary), "tenant": "beta"})
        for rid in (phish, spoof):
            failed = await heard["a"].failed(rid)
            assert "refused: not in PRESSROOM_EMAIL_ALLOW" in failed["reason"], failed
        # beta is held to its own list: the operator's domain is not on it.
        wide = unique("beta-wide")
        await publish(beta, mail(wide, "someone@example.com"))
        assert "not in PRESSROOM_EMAIL_ALLOWS for beta" in (await heard["b"].failed(wide))["reason"]
        # The operator's own requests use the operator's list, as before.
        o_rid = unique("ops-mail")
        await publish(ops, mail(o_rid, "someone@example.com"))
        await ops_heard.delivered(o_rid)
        # The canary: nothing of alpha's reached beta's customer or beta's address.
        got = [m.rcpt_tos for m in smtp.messages if canary in str(m.message["Subject"])]
        assert got == [], got
        assert len(smtp.to(customer)) == 1 and len(smtp.to(boss)) == 1
    finally:
        for nc in (alpha, beta, ops):
            await nc.close()
