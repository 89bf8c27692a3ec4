"""Tenants on the bus, attacked as a hostile calling system would: a real nats-server runs the
config `pressroom bus auth --publisher alpha --publisher beta` writes, with every worker.

- A PubAck reply subject cannot write anywhere (ledger, schedules, caches, report.failed).
- A request is stamped with the identity that published it; the body cannot say otherwise.
- Each calling system hears its own outcomes only; URL secrets never appear in them.
- A victim's documented message id cannot be taken first; an id collision is heard about.
- Each service role is refused what its stage does not need; render processes hold no secret.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.console.identities import generate
from shared.bus.topology import kv_snapshot
from shared.events import ReportFailed, request_message_id
from tests.helpers import REPO, Stack, delivered_file, eventually, unique
from tests.servers import HttpReceiver

pytestmark = pytest.mark.integration
SECRET = "whsec_" + base64.b64encode(b"tenants-test-signing-key-0123456").decode()
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
BUCKETS = (
    "pressroom_ledger",
    "pressroom_schedules",
    "pressroom_cache",
    "pressroom_render_cache",
    "pressroom_deliveries",
    "pressroom_admission",
)


@pytest.fixture(scope="module")
def hooks() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory, hooks: HttpReceiver) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("tenants")
    generate(root / "auth", publishers=["alpha", "beta"])  # the stack keeps them
    env = {"PRESSROOM_WEBHOOK_ALLOW": "127.0.0.1", "PRESSROOM_WEBHOOK_SECRET": SECRET}
    # Each calling system signs its webhooks with its own secret (a tenant without one is refused).
    env["PRESSROOM_WEBHOOK_SECRETS"] = ",".join(
        f"{name}=whsec_" + base64.b64encode(f"tenants-test-{name}-key-0123456789".encode()).decode()
        for name in ("alpha", "beta")
    )
    stack = Stack(root, env_extra=env).start()
    yield stack
    stack.stop()


class Heard:
    """Everything one connection receives on report.delivered / report.failed, raw."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []

    async def start(self, nc: Any) -> Heard:
        async def on(msg: Any) -> None:
            self.messages.append((msg.subject, msg.data))

        for subject in ("report.delivered", "report.failed"):
            await nc.subscribe(subject, cb=on)
        await nc.flush()
        return self

    def events(self, subject: str) -> list[dict[str, Any]]:
        return [json.loads(data) for s, data in self.messages if s == subject]

    def about(self, rid: str) -> list[dict[str, Any]]:
        return [json.loads(d) for _, d in self.messages if json.loads(d).get("request_id") == rid]

    async def delivered(self, rid: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            for event in self.events("report.delivered"):
                if event["request_id"] == rid:
                    return event
            failed = [e for e in self.events("report.failed") if e["request_id"] == rid]
            if failed:
                raise AssertionError(f"{rid} failed: {failed}")
            return None

        return await eventually(probe, timeout=180, every=0.05)

    async def failed(self, rid: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            return next((e for e in self.events("report.failed") if e["request_id"] == rid), None)

        return await eventually(probe, timeout=180, every=0.05)


def request(rid: str, **extra: Any) -> dict[str, Any]:
    return {"request_id": rid, "template": "weekly.html", "params": SAMPLE, **extra}


async def publish(nc: Any, body: dict[str, Any]) -> Any:
    """As the README shows: JetStream publish with the documented message id."""
    data = json.dumps(body).encode()
    return await nc.jetstream().publish(
        "report.requested",
        data,
        headers={"Nats-Msg-Id": request_message_id(data, body["request_id"])},
    )


async def buckets(stack: Stack) -> dict[str, dict[str, bytes]]:
    nc = await stack.connect()
    try:
        js = nc.jetstream()
        return {bucket: await kv_snapshot(js, bucket) for bucket in BUCKETS}
    finally:
        await nc.close()


async def test_a_pub_ack_reply_subject_writes_nowhere(tenants: Stack) -> None:
    ops = await tenants.connect()
    everything = await Heard().start(ops)
    attacker = await tenants.connect("publisher-alpha")
    victim = await tenants.connect("publisher-beta")
    try:
        mine = await Heard().start(victim)
        rid = unique("victim")
        before = await buckets(tenants)
        # The attack of issue 25: a plain core publish whose reply subject is where JetStream's
        # PubAck ({"stream": "PRESSROOM", "seq": N}) would land, as the server.
        targets = [
            f"$KV.pressroom_ledger.{rid}",
            "$KV.pressroom_schedules.nightly",
            "$KV.pressroom_cache.canary",
            "$KV.pressroom_render_cache.canary",
            "$KV.pressroom_deliveries.canary",
            "report.failed",
            "report.delivered",
        ]
        for target in targets:
            await attacker.publish("report.requested", b"{}", reply=target)
        await attacker.flush()
        ack = await publish(victim, request(rid))
        assert ack.stream == "PRESSROOM" and not ack.duplicate  # the caller's own PubAck arrives
        delivered = await mine.delivered(rid)
        assert delivered["requested_by"] == "beta"

        # The attacker's own (invalid) requests were refused, each with a dead letter: so they
        # were all processed before we look, and none left a PubAck anywhere.
        async def all_refused() -> bool:
            refused = [e for e in everything.events("report.failed") if e.get("refused")]
            return len(refused) >= len(targets)

        await eventually(all_refused, timeout=120)
        after = await buckets(tenants)
        for bucket in BUCKETS:
            for key, value in after[bucket].items():
                assert b'"seq"' not in value or b'"stream"' not in value, (bucket, key, value)
                if bucket != "pressroom_ledger" and key in before[bucket]:
                    assert value == before[bucket][key], (bucket, key)
        assert set(after["pressroom_schedules"]) == set(before["pressroom_schedules"])
        for bucket in ("pressroom_cache", "pressroom_render_cache", "pressroom_deliveries"):
            assert "canary" not in after[bucket], bucket
        for subject, data in everything.messages:  # every outcome is a real event, no PubAck
            event = json.loads(data)
            assert "seq" not in event or "request_id" in event, (subject, event)
            if subject == "report.failed":
                ReportFailed.model_validate(event)
    finally:
        for nc in (ops, attacker, victim):
            await nc.close()


async def test_each_caller_hears_only_its_own_outcomes_stamped_with_its_identity(
    tenants: Stack, hooks: HttpReceiver
) -> None:
    alpha = await tenants.connect("publisher-alpha")
    beta = await tenants.connect("publisher-beta")
    try:
        alpha_heard = await Heard().start(alpha)
        beta_heard = await Heard().start(beta)
        a_rid, b_rid = unique("alpha"), unique("beta")
        token = unique("token-canary")
        # alpha says it is beta; beta's webhook URL carries a token in its query.
        await publish(alpha, request(a_rid, requested_by="beta"))
        hook = f"{hooks.url}/hook/{b_rid}?token={token}&x=1"
        await publish(beta, request(b_rid, deliver=[{"channel": "webhook", "url": hook}]))
        a_event = await alpha_heard.delivered(a_rid)
        b_event = await beta_heard.delivered(b_rid)
        assert a_event["requested_by"] == "alpha"  # the server's word, not the body's
        assert b_event["requested_by"] == "beta"
        assert hooks.on(f"/hook/{b_rid}?token={token}&x=1")  # delivered with its real URL
        # The stamp is what the ledger keeps too.
        ops = await tenants.connect()
        try:
            entry = await (await ops.jetstream().key_value("pressroom_ledger")).get(a_rid)
            assert json.loads(entry.value)["requested_by"] == "alpha"
            everything = await Heard().start(ops)
            # Each hears its own and nothing of the other's: wait until a later outcome of
            # each has arrived at both, so an outcome on its way cannot be missed.
            a_last, b_last = unique("alpha-last"), unique("beta-last")
            await publish(alpha, request(a_last))
            await publish(beta, request(b_last))
            await alpha_heard.delivered(a_last)
            await beta_heard.delivered(b_last)
            await eventually(lambda: _both(everything, a_last, b_last), timeout=60, every=0.05)
        finally:
            await ops.close()
        assert not alpha_heard.about(b_rid) and not alpha_heard.about(b_last)
        assert not beta_heard.about(a_rid) and not beta_heard.about(a_last)
        assert {e["requested_by"] for _, d in alpha_heard.messages for e in [json.loads(d)]} == {
            "alpha"
        }
        # No event, anyone's, shows the webhook's secrets.
        for heard in (alpha_heard, beta_heard):
            for _, data in heard.messages:
                assert token.encode() not in data
        [channel] = b_event["channels"]
        assert channel["target"].endswith(f"/hook/{b_rid}?token=***&x=***")
    finally:
        await alpha.close()
        await beta.close()


async def _both(heard: Heard, *rids: str) -> bool:
    seen = {e["request_id"] for e in heard.events("report.delivered")}
    return all(rid in seen for rid in rids)


async def test_a_victims_message_id_cannot_be_taken_and_a_collision_is_heard(
    tenants: Stack,
) -> None:
    alpha = await tenants.connect("publisher-alpha")
    beta = await tenants.connect("publisher-beta")
    try:
        alpha_heard = await Heard().start(alpha)
        beta_heard = await Heard().start(beta)
        # 1. The attacker takes the old, predictable message id (`<id>:request`) first, with
        # its own content under the victim's next request_id.
        rid = unique("weekly")
        stolen = json.dumps(request(rid, deliver=[{"channel": "file", "path": "thief"}]))
        await alpha.jetstream().publish(
            "report.requested", stolen.encode(), headers={"Nats-Msg-Id": f"{rid}:request"}
        )
        await alpha_heard.delivered(rid)
        # 2. The documented id (with the content's hash) is still free: the victim's message is
        # stored, and the collision of request ids is heard by the victim alone.
        ack = await publish(beta, request(rid, deliver=[{"channel": "file", "path": "victim"}]))
        assert not ack.duplicate
        failed = await beta_heard.failed(rid)
        assert failed["refused"] is True and "already used" in failed["reason"]
        assert failed["requested_by"] == "beta"
        # 3. Under a fresh id the victim's work completes; the attacker heard nothing of it.
        again = unique("weekly")
        await publish(beta, request(again, deliver=[{"channel": "file", "path": "victim"}]))
        await beta_heard.delivered(again)
        assert not [e for e in alpha_heard.events("report.failed") if e["request_id"] == rid]
        assert not alpha_heard.about(again)
    finally:
        await alpha.close()
        await beta.close()


@pytest.mark.parametrize(
    ("role", "subject"),
    [
        ("scheduler", "$JS.API.STREAM.MSG.GET.PRESSROOM"),  # another tenant's fetched data
        ("scheduler", "$JS.API.DIRECT.GET.PRESSROOM"),
        ("renderer", "$KV.pressroom_cache.x"),  # the fetcher's cache
        ("fetcher", "$KV.pressroom_render_cache.x"),  # the renderer's cache
        ("distributor", "$KV.pressroom_cache.x"),
        ("renderer", "dlq.report.requested.beta"),
        ("publisher-alpha", "report.requested.beta"),  # posing as another tenant
        ("publisher-alpha", "tenant.beta.report.delivered"),
    ],
)
async def test_each_role_is_refused_what_its_stage_does_not_need(
    tenants: Stack, role: str, subject: str
) -> None:
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error).lower())

    nc = await tenants.connect(role, error_cb=on_error)
    try:
        await nc.publish(subject, b'{"seq": 1}', reply=f"_INBOX_{role}.x")
        await nc.flush()

        async def violation() -> bool:
            return any("permissions violation" in e and subject.lower() in e for e in errors)

        await eventually(violation, timeout=30)
    finally:
        await nc.close()


@pytest.mark.parametrize("role", ["renderer", "distributor", "fetcher", "ops"])
async def test_each_role_lists_a_store_bigger_than_one_flow_control_window(
    tenants: Stack, role: str
) -> None:
    """A listing (the renderer prunes its studio records by one; ops lists artefacts) streams
    through an ordered consumer, and past a window of bytes the server waits for a
    flow-control reply: refused that reply, a renderer's listing waited for ever and its
    reports with it (found by the 5,000-report soak). Each role lists 600 objects whose
    records (4 KB each) outgrow the window, with no refusal."""
    from shared.adapters.store import ObjectStoreArtefacts
    from shared.bus.names import OBJECT_BUCKET

    prefix = f"{unique('window')}/"
    ops = await tenants.connect()
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error).lower())

    nc = await tenants.connect(role, error_cb=on_error)
    try:
        js = ops.jetstream()
        store = ObjectStoreArtefacts(await js.object_store(OBJECT_BUCKET), js)
        keys = [f"{prefix}{i:04d}" for i in range(600)]
        for start in range(0, len(keys), 100):
            await asyncio.gather(
                *(
                    store.put(key, b"x", content_type="text/plain", metadata={"pad": "p" * 4000})
                    for key in keys[start : start + 100]
                )
            )
        theirs = nc.jetstream()
        listing = ObjectStoreArtefacts(await theirs.object_store(OBJECT_BUCKET), theirs)
        found = await asyncio.wait_for(listing.list(prefix), timeout=120)
        assert sorted(o.key for o in found) == keys
        assert not [e for e in errors if "permissions violation" in e]
        for start in range(0, len(keys), 100):
            await asyncio.gather(*(store.delete(key) for key in keys[start : start + 100]))
    finally:
        await nc.close()
        await ops.close()


def test_render_processes_hold_no_secret(tmp_path: Path) -> None:
    """A render process's environment, seen from inside it: no delivery, store or bus secret."""
    import os
    import subprocess
    import sys

    probe = (
        "import os, json\n"
        "from services.renderer.pooled import RenderPool\n"
        "import asyncio\n"
        "async def main():\n"
        "    pool = RenderPool(1, warm=False)\n"
        "    await pool.start()\n"
        "    env = {}\n"
        "    for name in ['PATH', *NAMES]:\n"
        "        env[name] = await pool.run(os.getenv, name, label='probe')\n"
        "    print(json.dumps(env))\n"
        "    await pool.close()\n"
        "asyncio.run(main())\n"
    )
    secrets = {
        "PRESSROOM_SMTP_PASSWORD": "smtp-canary",
        "PRESSROOM_WEBHOOK_SECRET": "whsec_canary",
        "PRESSROOM_S3_SECRET_KEY": "s3-canary",
        "PRESSROOM_S3_ACCESS_KEY": "s3-id-canary",
        "PRESSROOM_NATS_URL": "nats://user:nats-canary@127.0.0.1:1",
        "PRESSROOM_NATS_PASSWORD": "nats-canary",
        "PRESSROOM_SOURCE_CREDENTIALS": '{"x": {"token": "src-canary"}}',
        "AWS_SECRET_ACCESS_KEY": "aws-canary",
    }
    probe = f"NAMES = {sorted(secrets)!r}\n" + probe
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, **secrets, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen.pop("PATH")  # a real environment, only without the secrets
    assert seen == dict.fromkeys(secrets)


def test_pressroom_up_hands_each_worker_its_own_seed_and_secrets(tmp_path: Path) -> None:
    from services.console.supervisor import Supervisor
    from shared.settings import load_settings

    cfg = load_settings()
    sup = Supervisor(cfg, {})
    sup.env = {
        "PRESSROOM_NATS_CREDENTIALS_DIR": str(tmp_path),
        "PRESSROOM_SMTP_PASSWORD": "smtp",
        "PRESSROOM_WEBHOOK_SECRET": "whsec",
        "PRESSROOM_S3_SECRET_KEY": "s3",
        "PRESSROOM_SOURCE_CREDENTIALS": "{}",
        "PATH": "/usr/bin",
    }
    for role in ("fetcher", "renderer", "distributor", "scheduler"):
        env = sup.worker_env(role)
        assert env["PRESSROOM_NATS_NKEY"] == str(tmp_path / f"{role}.nk")
        assert "PRESSROOM_NATS_CREDENTIALS_DIR" not in env  # not the folder with ops.nk
        assert ("PRESSROOM_SMTP_PASSWORD" in env) == (role == "distributor")
        assert ("PRESSROOM_WEBHOOK_SECRET" in env) == (role == "distributor")
        assert ("PRESSROOM_SOURCE_CREDENTIALS" in env) == (role == "fetcher")
        assert ("PRESSROOM_S3_SECRET_KEY" in env) == (role != "scheduler")


def test_every_url_in_an_outcome_loses_its_secrets() -> None:
    from shared.events import ChannelResult, ReportFailed

    result = ChannelResult(
        channel="webhook", ok=False, target="https://robot:pw@hooks.example.com/h?token=abc#frag",
        detail="POST https://hooks.example.com/h?sig=xyz&token=abc answered 500",
    )  # fmt: skip
    assert result.target == "https://***@hooks.example.com/h?token=***#***"
    assert result.detail == "POST https://hooks.example.com/h?sig=***&token=*** answered 500"
    failed = ReportFailed(
        request_id="r", stage="fetcher", attempts=1, subject="report.requested",
        reason="source http://user:secret@inventory.internal/api?key=k1 timed out",
    )  # fmt: skip
    assert "secret" not in failed.reason and "k1" not in failed.reason
    assert "inventory.internal/api?key=***" in failed.reason


async def test_a_scheduled_message_id_cannot_be_taken_by_a_tenant(tenants: Stack) -> None:
    """The scheduler may not read the stream back, so its ids must be unguessable: keyed with
    its own seed. A tenant taking the id computable from the schedule's content changes
    nothing."""
    from datetime import UTC, datetime

    from services.scheduler.app import fire, fire_message_id
    from shared.bus.identity import secret_of
    from shared.bus.topology import JetStreamPublisher
    from shared.events import request_fingerprint
    from shared.schedules import Schedule

    nightly = Schedule.model_validate(
        {"name": unique("nightly"), "cron": "0 3 * * *", "request": request("ignored")}
    )
    when = datetime(2026, 1, 1, 3, 0, tzinfo=UTC)
    real = nightly.request_for(when)
    attacker = await tenants.connect("publisher-alpha")
    guessable = f"{real.request_id}:schedule:{request_fingerprint(real)}"
    taken = await attacker.jetstream().publish(
        "report.requested", b"{}", headers={"Nats-Msg-Id": guessable}
    )
    await attacker.close()
    key = secret_of(tenants.identity("scheduler"))
    assert key and fire_message_id(real, key) != guessable
    scheduler = await tenants.connect("scheduler")
    try:
        js = scheduler.jetstream()
        published: list[Any] = []

        class Recording(JetStreamPublisher):
            async def publish(self, subject: str, body: bytes, **options: Any) -> Any:
                published.append(ack := await super().publish(subject, body, **options))
                return ack

        await fire(Recording(js, verify_duplicates=False), nightly, when, None, key)
    finally:
        await scheduler.close()
    [ack] = published
    assert not ack.duplicate and ack.seq != taken.seq
    ops = await tenants.connect()
    try:
        stored = await ops.jetstream().get_msg("PRESSROOM", ack.seq)
        assert json.loads(stored.data)["request_id"] == real.request_id
    finally:
        await ops.close()


async def test_an_embedded_bus_from_before_accounts_keeps_its_streams(tmp_path: Path) -> None:
    """`pressroom up` on a data folder written before accounts: the streams move with it."""
    import nats

    from services.console.embedded import free_port, start_nats_server
    from shared.bus.identity import Identity

    data, port = tmp_path / "data", free_port()
    old = start_nats_server(data, port, monitor_port=free_port())  # no identities, as before
    try:
        nc = await nats.connect(f"nats://127.0.0.1:{port}")
        js = nc.jetstream()
        await js.add_stream(name="PRESSROOM", subjects=["report.>"])
        await js.publish("report.requested", b'{"template": "weekly.html"}')
        await (await js.create_key_value(bucket="pressroom_ledger")).put("old", b"{}")
        await nc.close()
    finally:
        old.terminate()
        old.wait(timeout=15)
    generate(tmp_path / "auth")
    new = start_nats_server(
        data, port, monitor_port=free_port(), auth=tmp_path / "auth" / "auth.conf"
    )
    try:
        ops = Identity("ops", "nkey", tmp_path / "auth" / "ops.nk")
        nc = await nats.connect(f"nats://127.0.0.1:{port}", **ops.nats_kwargs())
        js = nc.jetstream()

        async def kept() -> bool:
            try:
                return (await js.stream_info("PRESSROOM")).state.messages == 1
            except Exception:  # JetStream still loading the store
                return False

        await eventually(kept, timeout=30)
        assert (await (await js.key_value("pressroom_ledger")).get("old")).value == b"{}"
        await nc.close()
    finally:
        new.terminate()
        new.wait(timeout=15)


def _holding(out: Path, marker: str) -> list[Path]:
    """Every delivered file under PRESSROOM_OUT_DIR whose content carries `marker`."""
    return sorted(
        p.relative_to(out)
        for p in out.rglob("*")
        if p.is_file() and marker.encode() in p.read_bytes()
    )


async def test_a_tenants_file_deliveries_stay_in_its_own_folder(tenants: Stack) -> None:
    alpha = await tenants.connect("publisher-alpha")
    beta = await tenants.connect("publisher-beta")
    try:
        alpha_heard = await Heard().start(alpha)
        beta_heard = await Heard().start(beta)
        mark, canary = unique("beta-own"), unique("alpha-canary")

        def html(rid: str, title: str, path: str, **extra: Any) -> dict[str, Any]:
            deliver = [{"channel": "file", "path": path}]
            params = {**SAMPLE, "report_title": title}
            return {**request(rid, formats=["html"], deliver=deliver, **extra), "params": params}

        def aim(title: str, path: str, **extra: Any) -> dict[str, Any]:
            return html("", title, path, filename="victim-report", **extra)

        # The victim's report lands in its folder, under a name it chose.
        b_rid = unique("beta")
        await publish(beta, html(b_rid, mark, "inbox", filename="victim-report"))
        b_event = await beta_heard.delivered(b_rid)
        [b_channel] = b_event["channels"]
        assert b_channel["target"] == "PRESSROOM_OUT_DIR/beta/inbox/victim-report.html"
        victim = tenants.out / "beta" / "inbox" / "victim-report.html"
        assert mark.encode() in victim.read_bytes()
        # The attacker aims at the victim's folder: by name, by `..`, absolute, and by claiming
        # to be beta (body `tenant`) or nobody (null): as beta's file name each time.
        aimed = {
            unique("alpha-name"): aim(canary, "beta"),
            unique("alpha-inbox"): aim(canary, "beta-inbox"),
            unique("alpha-claim"): aim(canary, "inbox", tenant="beta", requested_by="beta"),
            unique("alpha-null"): aim(canary, "inbox", tenant=None),
        }
        refused = {
            unique("alpha-up"): aim(canary, "../beta/inbox"),
            unique("alpha-abs"): aim(canary, str(victim.parent)),
        }
        for rid, body in {**aimed, **refused}.items():
            await publish(alpha, {**body, "request_id": rid})
        for rid, body in aimed.items():
            [channel] = (await alpha_heard.delivered(rid))["channels"]
            path = body["deliver"][0]["path"]
            assert channel["target"] == f"PRESSROOM_OUT_DIR/alpha/{path}/victim-report.html"
        for rid in refused:
            failed = await alpha_heard.failed(rid)
            assert failed["stage"] == "distributor"
            assert "PRESSROOM_OUT_DIR/alpha/" in failed["reason"], failed["reason"]
        # The canary is only ever in alpha's folder; the victim's file is its own.
        found = _holding(tenants.out, canary)
        assert found and all(p.parts[0] == "alpha" for p in found), found
        assert mark.encode() in victim.read_bytes()
        assert canary.encode() not in victim.read_bytes()
        # And the victim's work still completes, in its own folder.
        b_next = unique("beta-next")
        await publish(beta, html(b_next, mark, "inbox"))
        [channel] = (await beta_heard.delivered(b_next))["channels"]
        name = delivered_file(tenants.out / "beta" / "inbox", b_next, "html").name
        assert channel["target"] == f"PRESSROOM_OUT_DIR/beta/inbox/{name}"
    finally:
        await alpha.close()
        await beta.close()


async def test_a_body_cannot_set_the_tenant_stamp_on_the_plain_subject(tenants: Stack) -> None:
    """`tenant` comes from the subject only: ops' request saying `"tenant": "beta"` is still the
    services' own (written from PRESSROOM_OUT_DIR, not confined to beta's folder), and may not
    escape the root either."""
    ops = await tenants.connect()
    try:
        heard = await Heard().start(ops)
        rid, up = unique("ops-claim"), unique("ops-up")
        title = unique("ops-title")
        params = {**SAMPLE, "report_title": title}
        body = request(rid, formats=["html"], deliver=[{"channel": "file", "path": "shared"}])
        await publish(ops, {**body, "params": params, "tenant": "beta"})
        [channel] = (await heard.delivered(rid))["channels"]
        name = delivered_file(tenants.out / "shared", rid, "html").name
        assert channel["target"] == f"PRESSROOM_OUT_DIR/shared/{name}"
        assert _holding(tenants.out, title) == [Path("shared") / name]
        # Claiming a tenant whose folder is above the root changes nothing either.
        outside = request(up, formats=["html"], deliver=[{"channel": "file", "path": ".."}])
        await publish(ops, {**outside, "tenant": ".."})
        failed = await heard.failed(up)
        assert "outside PRESSROOM_OUT_DIR" in failed["reason"]
        assert not delivered_file(tenants.out.parent, up, "html").exists()
    finally:
        await ops.close()


async def test_a_calling_system_cannot_backdate_its_requests(tenants: Stack) -> None:
    """`requested_at` is where latency SLOs start: 60 reports claiming 290 s of queueing would
    fail every tenant's p95. A calling system's requests start when the bus took them, on its
    lane and when handed to another lane alike; the operator's own keep a few minutes of skew."""
    alpha = await tenants.connect("publisher-alpha")
    ops = await tenants.connect()
    try:
        heard = await Heard().start(alpha)
        claimed = (datetime.now(UTC) - timedelta(seconds=290)).isoformat()
        normal, bulk = unique("backdated"), unique("backdated-bulk")
        published = datetime.now(UTC)
        await publish(alpha, request(normal, requested_at=claimed))
        await publish(alpha, request(bulk, requested_at=claimed, priority="bulk"))
        for rid in (normal, bulk):
            await heard.delivered(rid)
        ledger = await ops.jetstream().key_value("pressroom_ledger")
        for rid in (normal, bulk):
            entry = json.loads((await ledger.get(rid)).value)
            started = datetime.fromisoformat(entry["requested_at"])
            assert started >= published - timedelta(seconds=5), (rid, entry["requested_at"])
    finally:
        await alpha.close()
        await ops.close()
