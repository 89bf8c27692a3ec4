"""Credentials and named sources bound to their tenants, attacked as another tenant would: a real
nats-server runs `pressroom bus auth --publisher alpha --publisher beta`, with every worker; a
loopback HTTP server plays beta's CRM, answering beta's data to beta's token and recording every
request with its Authorization header.

Alpha borrows beta's named source, beta's credential under its base URL, or beta's cached
answer; each time the refusal comes before anything is sent, beta's token and data never reach
alpha, and beta's own request still works.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.console.identities import generate
from shared.events import request_message_id
from tests.helpers import Outcomes, Stack, delivered_file, eventually, unique
from tests.servers import HttpReceiver

pytestmark = pytest.mark.integration

TOKEN = "beta-crm-token-5e3a91"  # beta's credential: the CRM answers only to it
IBAN = "DE89370400440532013000"  # beta's data: the canary
SHOW = "<h1>{{ title }}</h1><pre>{{ notes | tojson }}</pre>"


@pytest.fixture(scope="module")
def crm() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()

    def answer(path: str, count: int) -> tuple[int, bytes, dict[str, str]]:
        hit = receiver.hits[-1]  # the receiver records the hit before asking us
        if hit.headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, b'{"error": "unauthorized"}', {"Content-Type": "application/json"}
        body = [{"customer": "ACME (beta's customer)", "iban": IBAN, "path": path}]
        return 200, json.dumps(body).encode(), {"Content-Type": "application/json"}

    receiver.responder = answer
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, crm: HttpReceiver) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("tenant-credentials")
    generate(root / "auth", publishers=["alpha", "beta"])  # the stack keeps them
    config = root / "pressroom.yaml"
    config.write_text(
        yaml.safe_dump(
            {  # the operator configured beta's integration: its CRM credential and a source
                "source_credentials": {
                    "beta-crm": {
                        "token": TOKEN,
                        "base_url": f"{crm.url}/api",
                        "tenants": ["beta"],
                    }
                },
                "sources": {
                    "beta-accounts": {
                        "kind": "http",
                        "url": f"{crm.url}/api/accounts",
                        "credentials": "beta-crm",
                        "tenants": ["beta"],
                    }
                },
            }
        )
    )
    stack = Stack(
        root,
        env_extra={
            "PRESSROOM_CONFIG": str(config),
            # Nothing on loopback is allowed for a request's own URLs: only the credential's
            # binding to beta's CRM could take a request there.
            "PRESSROOM_SOURCE_ALLOW": "203.0.113.9",
        },
    )
    stack.root.mkdir(parents=True, exist_ok=True)
    stack.start()
    (stack.templates / "show.html").write_text(SHOW)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def heard(stack: Stack) -> Any:
    nc = await stack.connect()  # ops: hears every outcome
    outcomes = await Outcomes().start(nc)
    yield outcomes
    await nc.close()


async def publish(stack: Stack, tenant: str, body: dict[str, Any]) -> None:
    """As a calling system does (README): JetStream publish with the documented message id."""
    nc = await stack.connect(f"publisher-{tenant}")
    try:
        data = json.dumps(body).encode()
        headers = {"Nats-Msg-Id": request_message_id(data, body["request_id"])}
        await nc.jetstream().publish("report.requested", data, headers=headers)
    finally:
        await nc.close()


def show(rid: str, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "request_id": rid,
        "template": "show.html",
        "params": {"title": rid},
        "sources": [{"name": "notes", **source}],
        "formats": ["html"],
        "deliver": [{"channel": "file", "path": "loot"}],
    }


def everything_under(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def asked_with(crm: HttpReceiver, marker: str) -> list[str]:
    """The Authorization headers of every CRM request whose path carries `marker`."""
    return [h.headers.get("authorization", "") for h in crm.hits if marker in h.path]


async def assert_refused(
    stack: Stack, heard: Outcomes, crm: HttpReceiver, rid: str, reason: str, before: int
) -> None:

    async def outcome() -> tuple[str, dict[str, Any]] | None:
        if rid in heard.delivered:
            return "delivered", heard.delivered[rid][0]
        return ("failed", heard.failed[rid][0]) if rid in heard.failed else None

    verdict, failed = await eventually(outcome, timeout=180, every=0.01)
    assert verdict == "failed", f"{rid} was delivered: alpha got beta's data"
    assert reason in failed["reason"], failed["reason"]
    assert failed["attempts"] == 1 and "\n" not in failed["reason"]
    assert TOKEN not in json.dumps(failed) and IBAN not in json.dumps(failed)
    assert len(crm.hits) == before  # nothing was sent to beta's CRM on alpha's behalf
    assert IBAN not in everything_under(stack.out / "alpha")
    assert not delivered_file(stack.out / "alpha" / "loot", rid, "html").exists()


async def test_a_tenant_naming_another_tenants_source_is_refused_before_anything_is_sent(
    stack: Stack, heard: Outcomes, crm: HttpReceiver
) -> None:
    before = len(crm.hits)
    rid = unique("alpha-named")
    await publish(stack, "alpha", show(rid, {"source": "beta-accounts"}))
    await assert_refused(stack, heard, crm, rid, "is not available to alpha", before)
    # Beta's own request still works, with beta's token.
    mine = unique("beta-named")
    await publish(stack, "beta", show(mine, {"source": "beta-accounts"}))
    await heard.delivered_event(mine)
    assert IBAN in delivered_file(stack.out / "beta" / "loot", mine, "html").read_text()
    assert f"Bearer {TOKEN}" in asked_with(crm, "/api/accounts")


async def test_a_tenant_naming_another_tenants_credential_under_its_base_url_is_refused(
    stack: Stack, heard: Outcomes, crm: HttpReceiver
) -> None:
    before = len(crm.hits)
    rid = unique("alpha-cred")
    borrowed = {"kind": "http", "url": f"{crm.url}/api/accounts?q={rid}", "credentials": "beta-crm"}
    await publish(stack, "alpha", show(rid, borrowed))
    await assert_refused(
        stack, heard, crm, rid, "credentials 'beta-crm' are not available to alpha", before
    )
    assert asked_with(crm, rid) == []
    # Nor does naming it lift PRESSROOM_SOURCE_ALLOW for a URL of alpha's own under the prefix.
    bare = unique("alpha-bare")
    await publish(stack, "alpha", show(bare, {"kind": "http", "url": f"{crm.url}/api/x?q={bare}"}))
    await heard.failed_event(bare)
    assert asked_with(crm, bare) == []
    mine = unique("beta-cred")
    own = {"kind": "http", "url": f"{crm.url}/api/accounts?q={mine}", "credentials": "beta-crm"}
    await publish(stack, "beta", show(mine, own))
    await heard.delivered_event(mine)
    assert asked_with(crm, mine) == [f"Bearer {TOKEN}"]
    assert IBAN in delivered_file(stack.out / "beta" / "loot", mine, "html").read_text()


async def test_another_tenants_cached_answer_is_never_served(
    stack: Stack, heard: Outcomes, crm: HttpReceiver
) -> None:
    # Beta's answer is cached (an hour) under the very spec alpha will send.
    mine = unique("beta-cached")
    await publish(stack, "beta", show(mine, {"source": "beta-accounts", "cache": 3600}))
    await heard.delivered_event(mine)
    assert IBAN in delivered_file(stack.out / "beta" / "loot", mine, "html").read_text()
    cached = {"kind": "http", "url": f"{crm.url}/api/accounts?c=1", "credentials": "beta-crm"}
    again = unique("beta-cached")
    await publish(stack, "beta", show(again, {**cached, "cache": 3600}))
    await heard.delivered_event(again)
    before = len(crm.hits)
    for source in ({"source": "beta-accounts", "cache": 3600}, {**cached, "cache": 3600}):
        rid = unique("alpha-cached")
        body = {**show(rid, source), "use_cache": True}
        await publish(stack, "alpha", body)
        await assert_refused(stack, heard, crm, rid, "not available to alpha", before)
    # Beta's own next request is still served (from its cache: no new CRM request).
    third = unique("beta-cached")
    await publish(stack, "beta", show(third, {"source": "beta-accounts", "cache": 3600}))
    await heard.delivered_event(third)
    assert IBAN in delivered_file(stack.out / "beta" / "loot", third, "html").read_text()
    assert len(crm.hits) == before
