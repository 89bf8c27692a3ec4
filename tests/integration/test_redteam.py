"""Attacks found by a fresh attack on the hardened stack (issue 25), each performed by a hostile
calling system (its own tenant identity) against real servers: the canary never arrives and the
other tenant's work completes.

- Dripping webhook receivers on several ports (each its own per-target share) took every
  distributor slot: now all webhooks of one caller share one limit as well.
- A webhook "URL" of dotted words made the URL-secret masking quadratic and froze the
  distributor's event loop for minutes: now linear.
- A default backup kept the value of a message header whose name does not look secret
  (`X-Auth`): now only trace context keeps its value. (URL query tokens, `pwd`-like fields and
  secrets in payloads that are not JSON leaked too; main's redaction now covers them.)
"""

from __future__ import annotations

import base64
import json
import tarfile
from collections.abc import Iterator
from typing import Any

import pytest

from services.console.identities import generate
from shared.events import request_message_id
from tests.helpers import REPO, Outcomes, Stack, eventually, unique
from tests.integration.test_attacks_egress import DripServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
WEBHOOK_DEADLINE = 15  # seconds for a whole webhook call (PRESSROOM_WEBHOOK_TIMEOUT)


@pytest.fixture(scope="module")
def drips() -> Iterator[list[DripServer]]:
    servers = [DripServer().start() for _ in range(3)]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def rstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("redteam")
    generate(root / "auth", publishers=["alpha", "beta"])  # the stack keeps them
    stack = Stack(
        root,
        env_extra={
            "PRESSROOM_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"r" * 32).decode(),
            # A calling system signs its webhooks with its own secret (none: refused at once).
            "PRESSROOM_WEBHOOK_SECRETS": "alpha=whsec_" + base64.b64encode(b"a" * 32).decode(),
            "PRESSROOM_WEBHOOK_ALLOW": "127.0.0.1",
            "PRESSROOM_WEBHOOK_TIMEOUT": str(WEBHOOK_DEADLINE),
            "PRESSROOM_MAX_ATTEMPTS": "2",
            # Four reports side by side, one delivery at a time per target (one more waits).
            "PRESSROOM_DISTRIBUTOR_CONCURRENCY": "4",
            "PRESSROOM_DELIVERY_TARGET_LIMIT": "1",
        },
    ).start()
    yield stack
    stack.stop()


def to_file(rid: str) -> dict[str, Any]:
    return {
        "request_id": rid,
        "template": "weekly.html",
        "params": {**SAMPLE, "report_title": rid},
        "deliver": [{"channel": "file", "path": "tenants"}],
    }


async def publish(stack: Stack, role: str, *bodies: dict[str, Any]) -> None:
    """As a calling system does, with its own identity and the documented message id."""
    nc = await stack.connect(role)
    js = nc.jetstream(timeout=10)
    for body in bodies:
        data = json.dumps(body).encode()
        await js.publish(
            "report.requested",
            data,
            headers={"Nats-Msg-Id": request_message_id(data, body["request_id"])},
        )
    await nc.close()


def hanging(drips: list[DripServer]) -> set[tuple[int, int]]:
    return {(n, c) for n, drip in enumerate(drips) for c in drip.open_now}


async def test_slow_receivers_on_several_ports_cannot_hold_another_tenants_delivery(
    rstack: Stack, drips: list[DripServer]
) -> None:
    # Per-target limits key on host:port: one attacker with a dripping receiver on a few ports
    # (or a few host names) used to take every distributor slot, so another tenant's file
    # delivery waited for the slow deliveries' deadlines.
    ops = await rstack.connect()
    outcomes = await Outcomes().start(ops)
    try:
        warm = unique("warm")  # the renderer's first report pays its start-up
        await publish(rstack, "publisher-beta", to_file(warm))
        await outcomes.delivered_event(warm)

        slow = [unique("slow") for _ in range(6)]  # two for each receiver
        await publish(
            rstack,
            "publisher-alpha",
            *(
                {**to_file(rid), "deliver": [{"channel": "webhook", "url": f"{drip.url}/h"}]}
                for rid in slow
                for drip in [drips[slow.index(rid) % len(drips)]]
            ),
        )

        async def some_hanging() -> set[tuple[int, int]]:
            return hanging(drips)

        first = await eventually(some_hanging, timeout=120)

        victim = unique("victim")
        seen: list[set[tuple[int, int]]] = []

        async def on_delivered(msg: Any) -> None:
            if json.loads(msg.data)["request_id"] == victim:
                seen.append(hanging(drips))  # what was still hanging at that moment

        sub = await ops.subscribe("report.delivered", cb=on_delivered)
        await publish(rstack, "publisher-beta", to_file(victim))
        await outcomes.delivered_event(victim, timeout=180)

        async def noticed() -> list[set[tuple[int, int]]]:
            return seen

        await eventually(noticed, timeout=30)
        await sub.unsubscribe()
        # Delivered while the first slow deliveries were still hanging: it waited for none.
        assert first <= seen[0], (first, seen)
        for drip in drips:  # the receivers go away (their deadlines are test_attacks_egress's)
            drip.stop()
        for rid in slow:  # every slow one still ends, with a reason: none is lost or stuck
            await outcomes.failed_event(rid, timeout=600)
    finally:
        await ops.close()


async def test_a_url_of_dotted_words_is_refused_without_holding_the_distributor(
    rstack: Stack,
) -> None:
    # Every reason and channel target is passed through mask_url_secrets; its pattern tried a
    # scheme at every word boundary, quadratic on `a.a.a.…`: a request whose webhook "URL" was
    # 300 KB of that held the distributor's event loop (every delivery) for minutes.
    ops = await rstack.connect()
    outcomes = await Outcomes().start(ops)
    try:
        hostile = unique("dotted")
        url = "x " + "a." * 200_000
        await publish(
            rstack,
            "publisher-alpha",
            {**to_file(hostile), "deliver": [{"channel": "webhook", "url": url}]},
        )
        victim = unique("after-dotted")
        await publish(rstack, "publisher-beta", to_file(victim))
        failed = await outcomes.failed_event(hostile, timeout=120)
        assert failed["stage"] == "distributor" and "webhook" in failed["reason"]
        await outcomes.delivered_event(victim, timeout=120)
    finally:
        await ops.close()


async def test_a_default_backup_holds_no_secret_a_request_carried(rstack: Stack) -> None:
    # A token in a URL's query, a `pwd`, any secret in a payload that is not JSON (a truncated
    # body, a non-UTF-8 body), and the value of a header named anything but a secret-looking
    # name (`X-Auth`) went into the operator's backup as it came.
    canary = "bk-canary-5d21"
    source = {
        "name": "rows",
        "kind": "http",
        "url": f"https://api.example.com/rows?access_token={canary}-query",
        "headers": {"Authorization": f"Bearer {canary}-header"},
    }
    failing = {
        **to_file(unique("backup")),
        "template": "no-such-template.html",  # fails: the request stays in a dead letter
        "sources": [source],
        "deliver": [{"channel": "webhook", "url": f"https://hooks.example/x?sig={canary}-hook"}],
        "params": {"pwd": f"{canary}-pwd", "db_password": f"{canary}-password"},
    }
    whole = json.dumps(failing)
    bodies = [
        whole.encode(),
        whole[:-3].encode(),  # not JSON: a client that cut its body short
        whole.encode() + b"\xff",  # not UTF-8: kept as base64
    ]
    nc = await rstack.connect("publisher-alpha")
    ops = await rstack.connect()
    outcomes = await Outcomes().start(ops)
    try:
        js = nc.jetstream(timeout=10)
        seqs = []
        for body in bodies:
            ack = await js.publish("report.requested", body, headers={"X-Auth": f"{canary}-nats"})
            seqs.append(ack.seq)
        await outcomes.failed_event(failing["request_id"])
        for seq in seqs[1:]:  # unreadable: refused under a made-up id
            await outcomes.failed_event(f"unknown-fetcher-{seq}")
    finally:
        await nc.close()
        await ops.close()
    archive = rstack.root / "backup.tar.gz"
    made = rstack.cli("backup", str(archive))
    assert made.returncode == 0, made.stderr
    with tarfile.open(archive) as tar:
        letters = tar.extractfile("dead-letters.jsonl").read()  # type: ignore[union-attr]
        contents = b"".join(
            tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        )
    assert letters.count(b"\n") >= len(bodies)  # the dead letters are there ...
    assert canary.encode() not in contents  # ... without what the requests carried
    assert base64.b64encode(whole.encode()[:30]) not in contents
