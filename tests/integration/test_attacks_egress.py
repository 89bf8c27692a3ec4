"""Requests that try to stall a service or slip past an egress check, against a real stack.

Each test performs the attack as anyone who can publish `report.requested` could, then asserts
that the attack failed with a reason (a dead letter, `report.failed`), that its canary never
arrived, and that another tenant's report published right after it is delivered.
"""

from __future__ import annotations

import base64
import json
import re
import select
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
import yaml

from services.distributor.channels.email import EmailChannel
from services.distributor.parcel import Parcel
from shared.adapters.store import MemoryArtefacts
from shared.errors import TransientError
from shared.events import Delivery, ReportRendered, ReportRequested
from shared.settings import Settings
from tests.helpers import REPO, Outcomes, Stack, delivered_file, eventually, unique
from tests.servers import HttpReceiver

pytestmark = pytest.mark.integration

CANARY = "canary-3e81b7"
WEBHOOK_DEADLINE = 10  # seconds for a whole webhook call (PRESSROOM_WEBHOOK_TIMEOUT)
SHOW = "<h1>{{ title }}</h1><p>{{ payload | default('') }}</p>"
FORMAT = '<p>{{ "{:{w}}".format(1, w=width) }}|{{ "{0:>{1}}".format("x", width) }}</p>'


@dataclass
class DripServer:
    """An HTTP server that answers 200 at once, then sends its body one byte a second, for
    ever: every read succeeds well within any per-read timeout."""

    greeting: bytes | None = None  # sent at once instead of waiting for a request (SMTP)
    opened: int = 0
    open_now: set[int] = field(default_factory=set)
    requests: list[bytes] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> DripServer:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with self._lock:
            self.opened += 1
            number = self.opened
            self.open_now.add(number)
        try:
            if self.greeting is not None:
                conn.sendall(self.greeting)
            else:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                self.requests.append(request)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not self._stop.is_set():
                # A byte a second; a client that hangs up is noticed at once (readable, empty).
                readable, _, _ = select.select([conn], [], [], 1.0)
                if readable and not conn.recv(1):
                    return
                conn.sendall(b"x")
        except OSError:
            pass
        finally:
            with self._lock:
                self.open_now.discard(number)
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()


@dataclass
class Net:
    legit: HttpReceiver  # the API a path-bound credential belongs to
    drip: DripServer

    def admin_hits(self) -> list[Any]:
        return [h for h in self.legit.hits if "admin" in h.path.lower()]


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    def legit_api(path: str, count: int) -> tuple[int, bytes, dict[str, str]]:
        hops = {
            "/api/v2/hop-out": "/admin",
            "/api/v2/hop-semicolon": "/api/v2/..;/admin",
            "/api/v2/hop-encoded": "/api/v2/%252e%252e/admin",
            "/api/v2/hop-in": "/api/v2/data",
        }
        if path in hops:
            return 302, b"", {"Location": hops[path]}
        return 200, json.dumps({"rows": [1, 2, 3]}).encode(), {}

    legit = HttpReceiver(legit_api).start()
    drip = DripServer().start()
    yield Net(legit, drip)
    drip.stop()
    legit.stop()


@pytest.fixture(scope="module")
def estack(tmp_path_factory: pytest.TempPathFactory, net: Net) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("egress")
    config = root / "pressroom.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "source_credentials": {
                    "scoped": {"token": f"scoped-{CANARY}", "base_url": f"{net.legit.url}/api/v2"}
                }
            }
        )
    )
    stack = Stack(
        root,
        env_extra={
            "PRESSROOM_CONFIG": str(config),
            "PRESSROOM_SOURCE_ALLOW": f"127.0.0.1:{net.legit.port}",
            "PRESSROOM_WEBHOOK_SECRET": "whsec_" + base64.b64encode(b"k" * 32).decode(),
            "PRESSROOM_WEBHOOK_ALLOW": "127.0.0.1",
            "PRESSROOM_WEBHOOK_TIMEOUT": str(WEBHOOK_DEADLINE),
            "PRESSROOM_MAX_ATTEMPTS": "2",
            # Four reports side by side, one delivery at a time per target (one more waits).
            "PRESSROOM_DISTRIBUTOR_CONCURRENCY": "4",
            "PRESSROOM_DELIVERY_TARGET_LIMIT": "1",
        },
    )
    # The templates are there before the workers start: they are the operator's template list.
    templates = stack.templates
    shutil.copytree(REPO / "templates", templates)
    (templates / "show.html").write_text(SHOW)
    (templates / "format.html").write_text(FORMAT)
    (templates / "counted.html").write_text(SHOW)  # rendered only by the metrics test
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def eouts(estack: Stack) -> Any:
    nc = await estack.connect()
    outcomes = await Outcomes().start(nc)
    yield outcomes
    await nc.close()


async def publish(stack: Stack, *bodies: bytes | dict[str, Any]) -> int:
    """Publish as a calling system does; the stream sequence of the last message."""
    nc = await stack.connect()
    js = nc.jetstream(timeout=10)
    seq = 0
    for body in bodies:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        seq = int((await js.publish("report.requested", data)).seq)
    await nc.close()
    return seq


def to_file(rid: str, template: str = "show.html", **params: Any) -> dict[str, Any]:
    return {
        "request_id": rid,
        "template": template,
        "params": {"title": rid, **params},
        "deliver": [{"channel": "file", "path": "tenants"}],
    }


def with_source(rid: str, url: str) -> dict[str, Any]:
    return {
        **to_file(rid),
        "sources": [{"name": "payload", "kind": "http", "url": url, "credentials": "scoped"}],
    }


# ---- one message must not freeze a stage ---------------------------------------------------
async def test_a_megabyte_of_escaped_quotes_is_dead_lettered_and_the_next_tenant_is_served(
    estack: Stack, eouts: Outcomes
) -> None:
    # An unterminated JSON string of escaped quotes: the old depth check re-scanned from every
    # quote (quadratic: 32 KB took 3 s, this would have held the fetcher for about an hour).
    hostile = b'{"request_id":"' + b'\\"' * 500_000
    seq = await publish(estack, hostile)
    victim = unique("after-quotes")
    await publish(estack, to_file(victim))

    failed = await eouts.failed_event(f"unknown-fetcher-{seq}", timeout=120)
    assert failed["reason"].startswith("invalid payload")
    assert failed["stage"] == "fetcher" and failed["refused"]
    await eouts.delivered_event(victim, timeout=120)


# ---- one slow target must not hold the deliveries to others --------------------------------
async def test_a_receiver_dripping_bytes_fails_at_its_deadline_and_holds_no_one_else(
    estack: Stack, eouts: Outcomes, net: Net
) -> None:
    warm = unique("warm")  # the renderer's first report pays its start-up; not the victim's
    await publish(estack, to_file(warm))
    await eouts.delivered_event(warm)

    slow = [unique("slow") for _ in range(4)]  # as many as the distributor has slots
    hook = [{"channel": "webhook", "url": f"{net.drip.url}/hook"}]
    await publish(estack, *({**to_file(rid), "deliver": hook} for rid in slow))

    async def hanging() -> set[int]:
        return set(net.drip.open_now)

    first = min(await eventually(hanging, timeout=120))

    victim = unique("beside-slow")
    seen_open: list[set[int]] = []
    nc = await estack.connect()

    async def on_delivered(msg: Any) -> None:
        if json.loads(msg.data)["request_id"] == victim:
            seen_open.append(set(net.drip.open_now))  # what was still hanging at that moment

    async def noticed() -> list[set[int]]:
        return seen_open

    sub = await nc.subscribe("report.delivered", cb=on_delivered)
    try:
        await publish(estack, to_file(victim))
        await eouts.delivered_event(victim, timeout=120)
        await eventually(noticed, timeout=30)
    finally:
        await sub.unsubscribe()
        await nc.close()
    # Delivered while the first slow delivery was still hanging (it waited for nobody), and
    # that was the only one to its target (PRESSROOM_DELIVERY_TARGET_LIMIT=1): the other slow
    # reports waited or were handed back instead of taking every slot.
    assert seen_open[0] == {first}, (first, seen_open, net.drip.opened)

    deadline = f"no complete answer within {WEBHOOK_DEADLINE}s"

    async def one_at_its_deadline() -> bool:  # a slow report failed for its deadline
        failed = [eouts.failed[rid][0]["reason"] for rid in slow if rid in eouts.failed]
        return any(deadline in reason for reason in failed)

    await eventually(one_at_its_deadline, timeout=300)
    net.drip.stop()  # then the receiver goes away: the others need not wait their deadlines
    for rid in slow:  # and every slow one ends, with a reason
        assert (await eouts.failed_event(rid, timeout=300))["reason"]


async def test_an_smtp_server_dripping_its_greeting_is_hung_up_on_at_the_deadline() -> None:
    drip = DripServer(greeting=b"220 ").start()  # the rest of the line, a byte a second
    try:
        settings = Settings(
            smtp_host="127.0.0.1", smtp_port=drip.port, smtp_timeout=2, email_allow="example.com"
        )
        request = ReportRequested(template="show.html", request_id=unique("mail"))
        parcel = Parcel(
            ReportRendered(request=request, artefacts=[], template_version="v", render_seconds=0),
            MemoryArtefacts(),
        )
        delivery = Delivery.model_validate({"channel": "email", "to": ["ops@example.com"]})
        with pytest.raises(TransientError, match=r"SMTP server .* within 2s"):
            await EmailChannel(settings).deliver(delivery, parcel)

        async def hung_up() -> bool:  # the session's thread is not left reading for ever
            return drip.opened == 1 and not drip.open_now

        await eventually(hung_up, timeout=30)
    finally:
        drip.stop()


# ---- a bound credential stays under its path prefix ----------------------------------------
@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/api/v2/..;/admin", "'.' or '..' segments"),
        ("/api/v2/%2e%2e/admin", "'.' or '..' segments"),
        ("/api/v2/%252e%252e/admin", "'.' or '..' segments"),
        ("/api/v2/%25252e%25252e/admin", "percent-encoded too many times"),
        ("/api/v2/hop-out", "are bound to the path"),
        ("/api/v2/hop-semicolon", "'.' or '..' segments"),
        ("/api/v2/hop-encoded", "'.' or '..' segments"),
    ],
)
async def test_a_path_bound_credential_never_leaves_its_prefix(
    estack: Stack, eouts: Outcomes, net: Net, path: str, reason: str
) -> None:
    rid = unique("prefix")
    await publish(estack, with_source(rid, f"{net.legit.url}{path}"))
    victim = unique("prefix-victim")
    await publish(estack, with_source(victim, f"{net.legit.url}/api/v2/hop-in"))

    failed = await eouts.failed_event(rid)
    assert reason in failed["reason"], failed["reason"]
    await eouts.delivered_event(victim)
    assert not net.admin_hits(), [(h.path, h.headers) for h in net.admin_hits()]
    served = [h for h in net.legit.hits if h.path == "/api/v2/data"]
    assert served and all(CANARY in h.headers.get("authorization", "") for h in served)


# ---- templates cannot build a gigabyte before the output cap --------------------------------
async def test_a_format_width_from_the_request_is_refused_before_it_is_built(
    estack: Stack, eouts: Outcomes
) -> None:
    rid = unique("width")
    await publish(estack, to_file(rid, "format.html", width=999_999_999))
    victim = unique("width-victim")
    await publish(estack, to_file(victim, "format.html", width=5))

    failed = await eouts.failed_event(rid)
    assert "width of 999999999" in failed["reason"], failed["reason"]
    await eouts.delivered_event(victim)
    assert delivered_file(estack.out / "tenants", victim).stat().st_size > 0


# ---- made-up template names cannot crowd a real template out of the metrics -----------------
async def test_junk_template_names_cannot_push_a_real_template_into_other(
    estack: Stack, eouts: Outcomes
) -> None:
    junk = {unique("junk"): f"junk-{n}-{unique('t')}.html" for n in range(210)}  # budget: 200
    await publish(estack, *(to_file(rid, name) for rid, name in junk.items()))
    real = unique("real")
    await publish(estack, to_file(real, "counted.html"))
    await eouts.delivered_event(real, timeout=300)
    for rid in junk:  # every junk name has been counted somewhere by now
        assert "not found" in (await eouts.failed_event(rid, timeout=300))["reason"]

    for worker, url in estack.health.items():
        text = urlopen(f"{url}/metrics", timeout=30).read().decode()
        assert not re.search(r'template="junk-', text), worker
        if worker.startswith(("renderer", "distributor")):
            assert 'template="counted.html"' in text, worker


# ---- the NATS monitoring port is not for everyone ----------------------------------------
def test_the_nats_monitoring_port_listens_on_loopback_only(estack: Stack) -> None:
    conf = (estack.root / "nats" / "nats-server.conf").read_text()
    host, port = re.search(r"^http: (\S+):(\d+)$", conf, re.M).groups()  # type: ignore[union-attr]
    assert host == "127.0.0.1"
    listening = [
        line.split()[1]
        for table in ("/proc/net/tcp", "/proc/net/tcp6")
        if Path(table).exists()
        for line in Path(table).read_text().splitlines()[1:]
        if line.split()[3] == "0A"  # LISTEN
    ]
    bound = [address for address in listening if int(address.rsplit(":", 1)[1], 16) == int(port)]
    assert bound == ["0100007F:" + f"{int(port):04X}"], bound  # 127.0.0.1 only
