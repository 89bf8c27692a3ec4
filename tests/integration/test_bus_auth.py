"""The locked bus, tried as an attacker on the network would: identities, permissions, TLS.

A real nats-server runs the config `pressroom bus auth --tls` writes; every worker connects as
its own role. Each forbidden action is attempted for real and must be refused by the server
(its permissions violation, not a check of ours) and leave no trace.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import nats
import pytest

from services.console.identities import new_user_seed
from tests import cliproc
from tests.helpers import REPO, Outcomes, Stack, eventually, unique

pytestmark = pytest.mark.integration
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("locked"), tls=True).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def louts(locked: Stack) -> Any:
    nc = await locked.connect()
    outcomes = await Outcomes().start(nc)
    yield outcomes
    await nc.close()


async def refused(
    stack: Stack, role: str, action: Callable[[Any], Awaitable[Any]], subject: str
) -> None:
    """`role` tries `action`; the server must report a permissions violation for `subject`."""
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error).lower())

    nc = await stack.connect(role, error_cb=on_error)
    try:
        with suppress(Exception):  # a refused JetStream request just times out
            await action(nc)

        async def violation() -> bool:
            return any("permissions violation" in e and subject.lower() in e for e in errors)

        await eventually(violation, timeout=30)
    finally:
        await nc.close()


async def counts(stack: Stack) -> tuple[int, int]:
    nc = await stack.connect()
    js = nc.jetstream()
    pipeline = (await js.stream_info("PRESSROOM")).state.messages
    letters = (await js.stream_info("PRESSROOM_DLQ")).state.messages
    await nc.close()
    return int(pipeline), int(letters)


# ---- who may connect ---------------------------------------------------------------------
async def test_anonymous_and_plaintext_clients_cannot_connect(locked: Stack) -> None:
    context = ssl.create_default_context(cafile=str(locked.auth_dir / "ca.pem"))
    attempts: list[dict[str, Any]] = [
        {"tls": context},  # encrypted, but no identity
        {"nkeys_seed": str(locked.auth_dir / "ops.nk")},  # an identity, but no TLS
        {"tls": ssl.create_default_context(), "nkeys_seed": str(locked.auth_dir / "ops.nk")},
        {"tls": context, "nkeys_seed": str(_stranger(locked))},  # a key the server never saw
    ]
    for options in attempts:
        with pytest.raises(Exception) as caught:
            await nats.connect(
                locked.url, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=3,
                error_cb=_ignore, **options,
            )  # fmt: skip
        assert caught.value is not None, options


async def _ignore(error: Exception) -> None:
    pass


def _stranger(stack: Stack) -> Path:
    path = stack.root / "stranger.nk"
    path.write_text(new_user_seed())
    return path


# ---- the publisher: what other systems get -----------------------------------------------
def test_a_publisher_can_request_a_report_and_see_it_delivered(locked: Stack) -> None:
    rid = unique("publisher")
    result = locked.cli(
        "request", "--template", "weekly", "--data-file",
        str(REPO / "templates/samples/portfolio.json"), "--request-id", rid, "--wait", "--json",
        env={"PRESSROOM_NATS_NKEY": str(locked.auth_dir / "publisher.nk")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["outcome"]["subject"] == "report.delivered"


async def test_a_publisher_cannot_forge_stage_events(locked: Stack, louts: Outcomes) -> None:
    victim = unique("victim")
    nc = await locked.connect()
    body = {"request_id": victim, "template": "weekly.html", "params": SAMPLE}
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await nc.close()
    delivered = await louts.delivered_event(victim)
    before = await counts(locked)

    forged_rendered = {  # "copy the victim's report to my folder"
        "request": {"request_id": unique("thief"), "template": "weekly.html",
                    "deliver": [{"channel": "file", "path": "stolen"}]},
        "artefacts": delivered["artefacts"], "template_version": "x", "render_seconds": 0,
    }  # fmt: skip
    forged_delivered = {**delivered, "request_id": unique("fake")}
    forged_ready = {"request": {"request_id": unique("x"), "template": "weekly.html"},
                    "context": {}}  # fmt: skip
    for subject, payload in (
        ("report.rendered", forged_rendered),
        ("report.delivered", forged_delivered),
        ("data.ready", forged_ready),
    ):

        async def publish(nc: Any, s: str = subject, p: Any = payload) -> None:
            await nc.jetstream().publish(s, json.dumps(p).encode(), timeout=2)

        await refused(locked, "publisher", publish, subject)
    assert await counts(locked) == before
    assert not (locked.out / "stolen").exists()
    assert forged_delivered["request_id"] not in louts.delivered


@pytest.mark.parametrize(
    ("what", "subject"),
    [
        ("read data.ready", "data.ready"),
        ("read another role's replies", "_INBOX_renderer.>"),
        ("read every reply", "_INBOX.>"),
        ("read the ledger", "$JS.API.STREAM.INFO.KV_pressroom_ledger"),
        ("rewrite the ledger", "$KV.pressroom_ledger.victim"),
        ("read an artefact", "$JS.API.STREAM.INFO.OBJ_pressroom_artefacts"),
        ("purge the dead letters", "$JS.API.STREAM.PURGE.PRESSROOM_DLQ"),
        ("list the streams", "$JS.API.STREAM.LIST"),
        ("consume the stage subjects", "$JS.API.CONSUMER.CREATE.PRESSROOM"),
        ("change the stream", "$JS.API.STREAM.UPDATE.PRESSROOM"),
    ],
)
async def test_a_publisher_cannot_read_or_administer_anything(
    locked: Stack, what: str, subject: str
) -> None:
    from nats.js import api

    async def action(nc: Any) -> None:
        js = nc.jetstream(timeout=2)
        if (
            what.startswith("read data")
            or what.startswith("read another")
            or what == "read every reply"
        ):
            await nc.subscribe(subject)
            await nc.flush()
        elif what == "read the ledger":
            await js.key_value("pressroom_ledger")
        elif what == "rewrite the ledger":
            await js.publish(subject, b'{"status": "delivered"}', timeout=2)
        elif what == "read an artefact":
            await js.object_store("pressroom_artefacts")
        elif what == "purge the dead letters":
            await js.purge_stream("PRESSROOM_DLQ")
        elif what == "list the streams":
            await js.streams_info()
        elif what == "consume the stage subjects":
            await js.add_consumer("PRESSROOM", api.ConsumerConfig(filter_subject="data.ready"))
        elif what == "change the stream":
            await js.update_stream(api.StreamConfig(name="PRESSROOM", subjects=[">"]))

    before = await counts(locked)
    await refused(locked, "publisher", action, subject)
    assert await counts(locked) == before


@pytest.mark.parametrize(
    ("role", "subject"),
    [
        ("fetcher", "report.delivered"),  # only the distributor says a report was delivered
        ("renderer", "data.ready"),
        ("distributor", "report.rendered"),
        ("scheduler", "data.ready"),
        ("renderer", "$KV.pressroom_deliveries.x"),  # the distributor's outcome records
        ("fetcher", "$JS.API.STREAM.PURGE.PRESSROOM_DLQ"),
        ("distributor", "$JS.API.CONSUMER.MSG.NEXT.PRESSROOM.renderer"),  # another's queue
        # Only the renderer records payloads: a record planted here would be shown in the
        # studio and rendered by its shadow runs.
        ("distributor", "$O.pressroom_studio.M.c3R1ZGlvL3BheWxvYWRzL2Zvcmdl"),
        ("fetcher", "$O.pressroom_studio.C.forged"),
        ("distributor", "$JS.API.STREAM.PURGE.OBJ_pressroom_studio"),
    ],
)
async def test_each_service_may_do_only_its_own_work(
    locked: Stack, role: str, subject: str
) -> None:
    async def action(nc: Any) -> None:
        if subject.startswith("$JS.API.STREAM.PURGE"):
            await nc.jetstream(timeout=2).purge_stream(subject.rsplit(".", 1)[-1])
        else:
            await nc.publish(subject, b"{}")
            await nc.flush()

    await refused(locked, role, action, subject)


# ---- saying so, in one line --------------------------------------------------------------
def test_a_refused_identity_is_one_line_in_the_cli_and_stops_a_worker(locked: Stack) -> None:
    stranger = _stranger(locked)
    cli = locked.cli("ls", env={"PRESSROOM_NATS_NKEY": str(stranger)})
    assert cli.returncode == 1 and len(cli.stderr.strip().splitlines()) == 1
    assert "refused" in cli.stderr and "authorization violation" in cli.stderr.lower()

    bad = locked.root / "bad-identities"
    bad.mkdir()
    (bad / "fetcher.nk").write_text(new_user_seed())
    worker = subprocess.run(
        [sys.executable, "-m", "services.console.cli", "worker", "fetcher"],
        env={**locked.env, "PRESSROOM_NATS_CREDENTIALS_DIR": str(bad),
             "PRESSROOM_STARTUP_TIMEOUT": "60"},
        capture_output=True, text=True, timeout=90, cwd=locked.root,
    )  # fmt: skip
    assert worker.returncode == 1
    [line] = [ln for ln in worker.stderr.splitlines() if ln.startswith("error:")]
    assert "fetcher: NATS refused nkey seed" in line and "authorization violation" in line.lower()


def test_the_ops_cli_may_purge_and_a_publisher_cli_may_not(locked: Stack) -> None:
    as_publisher = locked.cli(
        "dlq", "purge", "--all", "--yes",
        env={"PRESSROOM_NATS_NKEY": str(locked.auth_dir / "publisher.nk")},
    )  # fmt: skip
    assert as_publisher.returncode == 1
    assert "permissions violation" in as_publisher.stderr.lower()
    assert len(as_publisher.stderr.strip().splitlines()) == 1


# ---- secrets stay secret -----------------------------------------------------------------
def test_a_password_in_the_nats_url_appears_nowhere(tmp_path: Path) -> None:
    from services.console.embedded import free_port, start_nats_server

    secret = "S3cretPassw0rd"
    auth = tmp_path / "userpass.conf"
    auth.write_text(f'authorization {{ user: "pressroom", password: "{secret}" }}\n')
    port = free_port()
    server = start_nats_server(tmp_path / "nats", port, monitor_port=free_port(), auth=auth)
    stack = Stack(tmp_path / "stack", auth=False, workers={"renderer": 1})
    stack.port = port
    url = f"nats://pressroom:{secret}@127.0.0.1:{port}"
    env = {**stack.env, "PRESSROOM_NATS_URL": url}
    try:
        stack.root.mkdir(parents=True)
        (stack.root / "templates").symlink_to(REPO / "templates")
        setup = cliproc.run(["bus", "setup"], env=env, timeout=60)
        assert setup.returncode == 0, setup.stderr
        stack.env_extra["PRESSROOM_NATS_URL"] = url
        proc = stack.start_worker("renderer")
        import asyncio

        import httpx

        async def ready() -> str | None:
            try:
                async with httpx.AsyncClient() as client:
                    answer = await client.get(stack.health["renderer-1"] + "/readyz")
            except httpx.HTTPError:
                return None
            return answer.text if answer.status_code == 200 else None

        readyz = asyncio.run(eventually(ready, timeout=60))
        health = cliproc.run(
            ["health", "--json", "--url", stack.health["renderer-1"]], env=env, timeout=60
        )
        wrong = {**env, "PRESSROOM_NATS_URL": f"nats://pressroom:{secret}@127.0.0.1:{free_port()}"}
        unreachable = cliproc.run(["ls"], env=wrong, timeout=60)
        proc.terminate()
        proc.wait(timeout=30)
        shown = readyz + health.stdout + health.stderr + unreachable.stderr + stack.logs()
        assert "127.0.0.1" in shown and "pressroom:" not in shown
        assert secret not in shown
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert os.path.exists(tmp_path / "nats")
