"""What a receiving team's own tools say about Pressroom's email and webhooks (issue 28 items 3,
4 and 7): Python's `email` under policy.strict and SpamAssassin (offline) on every message an
SMTP server accepts — greylisting (451 at RCPT) and a 451 after DATA ridden out with one
Message-ID — and the official `standardwebhooks` package verifying every webhook, whose id is
the same across retries, new for a manual re-delivery and never the request id."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from standardwebhooks import Webhook

from shared.filenames import MAX_STEM
from tests.helpers import REPO, Outcomes, Stack, eventually, unique
from tests.servers import HttpReceiver, free_port

pytestmark = pytest.mark.integration
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
SECRET = "whsec_" + base64.b64encode(b"pressroom-standards-secret-0123456").decode()


@dataclass
class Mail:
    rcpt: list[str]
    raw: bytes
    accepted: bool


@dataclass
class PickySmtp:
    """aiosmtpd that greylists (451 at RCPT, once per address starting `grey`) and answers the
    first DATA for an address starting `late` with 451 — keeping what it was sent either way."""

    mails: list[Mail] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)

    def start(self) -> PickySmtp:
        from aiosmtpd.controller import Controller

        outer = self

        class Handler:
            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str, options: Any
            ) -> str:
                if address.startswith("grey") and ("rcpt", address) not in outer.seen:
                    outer.seen.add(("rcpt", address))
                    return "451 4.7.1 Greylisted, please try again later"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                first = envelope.rcpt_tos[0]
                late = first.startswith("late") and ("data", first) not in outer.seen
                outer.mails.append(Mail(list(envelope.rcpt_tos), envelope.content, not late))
                if late:
                    outer.seen.add(("data", first))
                    return "451 4.3.0 Temporary failure, try again"
                return "250 Message accepted"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.mails if address in m.rcpt]


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[PickySmtp, HttpReceiver]]:
    flaky: set[str] = set()

    def responder(path: str, count: int) -> tuple[int, bytes, dict[str, str]]:
        if path.startswith("/flaky") and path not in flaky:
            flaky.add(path)
            return 503, b"busy", {"Retry-After": "1"}
        return 200, b"{}", {}

    smtp, hooks = PickySmtp().start(), HttpReceiver(responder).start()
    yield smtp, hooks
    hooks.stop()
    smtp.stop()


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, receivers: tuple[PickySmtp, HttpReceiver]
) -> Iterator[Stack]:
    smtp, _ = receivers
    running = Stack(
        tmp_path_factory.mktemp("standards"),
        env_extra={
            "PRESSROOM_SMTP_HOST": "127.0.0.1",
            "PRESSROOM_SMTP_PORT": str(smtp.port),
            "PRESSROOM_SMTP_FROM": "Pressroom reports <reports@example.com>",
            "PRESSROOM_WEBHOOK_SECRET": SECRET,
            "PRESSROOM_WEBHOOK_ALLOW": "127.0.0.1",
            "PRESSROOM_MAX_ATTEMPTS": "6",
        },
    ).start()
    yield running
    running.stop()


async def request(stack: Stack, body: dict[str, Any]) -> dict[str, Any]:
    nc = await stack.connect()
    outcomes = await Outcomes().start(nc)
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    delivered = await outcomes.delivered_event(body["request_id"])
    await nc.close()
    return delivered


def strict(raw: bytes) -> EmailMessage:
    """What a strict receiver parses: any header defect raises."""
    message = email.message_from_bytes(raw, policy=email.policy.strict)
    assert isinstance(message, EmailMessage)
    return message


def spam_score(raw: bytes) -> tuple[float, str]:
    binary = shutil.which("spamassassin")
    if binary is None:
        raise RuntimeError("spamassassin is not installed: `make test-deps` installs it")
    checked = subprocess.run(
        [binary, "--local", "--test-mode"],
        input=raw,
        capture_output=True,
        timeout=300,
        check=False,
    )
    report = checked.stdout.decode(errors="replace")
    status = re.search(
        r"^X-Spam-Status: .*?score=(-?[\d.]+).*?tests=(.*?)\s+autolearn", report, re.M | re.S
    )
    assert status, report[:2000]
    return float(status.group(1)), " ".join(status.group(2).split())


async def test_an_email_reads_well_survives_greylisting_and_keeps_its_message_id(
    stack: Stack, receivers: tuple[PickySmtp, HttpReceiver]
) -> None:
    smtp, _ = receivers
    rid = unique("mail")
    grey, late = f"grey-{rid}@example.com", f"late-{rid}@example.com"
    await request(
        stack,
        {
            "request_id": rid,
            "template": "weekly.html",
            "params": SAMPLE,
            "requested_by": "Dana Analyst",
            "deliver": [{"channel": "email", "to": [grey]}, {"channel": "email", "to": [late]}],
        },
    )
    # greylisted at RCPT: tried again, accepted once (not a permanent failure)
    assert [m.accepted for m in smtp.to(grey)] == [True]
    # refused after DATA, then accepted: the same message twice, one Message-ID
    attempts = smtp.to(late)
    assert [m.accepted for m in attempts] == [False, True]
    first, second = (strict(m.raw) for m in attempts)
    assert first["Message-ID"] == second["Message-ID"]
    assert rid not in first["Message-ID"]  # an id Pressroom generates
    mail = strict(smtp.to(grey)[0].raw)
    assert mail["Message-ID"] != first["Message-ID"]  # another delivery, another id
    assert mail["Date"].datetime is not None
    assert mail["Subject"] == "Portfolio Status Report: November 2026"

    text = mail.get_body(preferencelist=("plain",))
    html = mail.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    for part in (text.get_content(), html.get_content()):
        assert "Portfolio Status Report" in part and "November 2026" in part
        assert "Dana Analyst" in part
    [attachment] = [p for p in mail.iter_attachments()]
    name = attachment.get_filename()
    assert name == "portfolio-status-report-2026-" + name.split("-2026-")[1]
    assert len(name) <= MAX_STEM + 4 and "filename*" not in str(attachment["Content-Disposition"])
    assert attachment.get_content()[:5] == b"%PDF-"

    score, rules = spam_score(smtp.to(grey)[0].raw)
    assert score < 1.0, rules
    assert not re.search(r"MISSING_|INVALID_|MSGID|HEADER_|DATE", rules), rules


async def test_a_filename_pattern_names_attachments_and_folder_files_safely(
    stack: Stack, receivers: tuple[PickySmtp, HttpReceiver]
) -> None:
    smtp, _ = receivers
    rid = unique("named") + ".with.dots-and-a-rather-long-tail-0123456789"
    to = f"named-{rid[:12]}@example.com"
    await request(
        stack,
        {
            "request_id": rid,
            "template": "weekly.html",
            "params": {**SAMPLE, "report_title": "Q4 / Übersicht: <Portfolio>"},
            "filename": "{title} {period} {request_id}",
            "deliver": [{"channel": "email", "to": [to]}, {"channel": "file", "path": "named"}],
        },
    )
    [mail] = [strict(m.raw) for m in smtp.to(to)]
    [attachment] = list(mail.iter_attachments())
    name = attachment.get_filename()
    assert name.startswith("q4-ubersicht-portfolio-november-2026-") and name.endswith(".pdf")
    assert len(name) == MAX_STEM + 4 and re.fullmatch(r"[a-z0-9._-]+", name)
    assert "filename*" not in str(attachment["Content-Disposition"])
    assert [p.name for p in (stack.out / "named").iterdir()] == [name]


def verified(hit: Any) -> dict[str, Any]:
    """The official library's verdict: raises unless the signature is right."""
    return Webhook(SECRET).verify(hit.body, hit.headers)  # type: ignore[no-any-return]


async def test_webhooks_verify_with_the_official_library_and_ids_follow_the_spec(
    stack: Stack, receivers: tuple[PickySmtp, HttpReceiver]
) -> None:
    _, hooks = receivers
    rid = unique("hook")
    path = f"/flaky/{rid}"
    await request(
        stack,
        {
            "request_id": rid,
            "template": "weekly.html",
            "params": SAMPLE,
            "deliver": [{"channel": "webhook", "url": hooks.url + path}],
        },
    )
    first, retried = hooks.on(path)  # 503, then 200
    assert first.headers["webhook-id"] == retried.headers["webhook-id"]
    for hit in (first, retried):
        body = verified(hit)
        assert body["type"] == "report.delivered" and body["request_id"] == rid
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", body["timestamp"])
        assert rid not in hit.headers["webhook-id"]
        assert re.fullmatch(r"msg_[a-z2-7]+", hit.headers["webhook-id"])

    # a manual re-delivery is a new delivery: a receiver de-duplicating on webhook-id keeps it
    again = stack.cli("deliver", rid, "--webhook", hooks.url + f"/again/{rid}", "--json")
    assert again.returncode == 0, again.stderr
    again_too = stack.cli("deliver", rid, "--webhook", hooks.url + f"/again/{rid}", "--json")
    assert again_too.returncode == 0, again_too.stderr

    async def both() -> list[Any] | None:
        hits = hooks.on(f"/again/{rid}")
        return hits if len(hits) == 2 else None

    resent = await eventually(both, timeout=30)
    ids = {first.headers["webhook-id"], *(h.headers["webhook-id"] for h in resent)}
    assert len(ids) == 3
    for hit in resent:
        assert verified(hit)["request_id"] == rid


def test_a_secret_the_libraries_cannot_use_is_refused_at_start(tmp_path: Any) -> None:
    from tests.helpers import pressroom

    raw = "a-plain-secret-that-is-long-enough-to-pass"
    result = pressroom(
        "check",
        "webhook",
        "--url",
        "http://127.0.0.1:9/x",
        env={"PRESSROOM_WEBHOOK_SECRET": raw},
        cwd=tmp_path,
    )
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert "PRESSROOM_WEBHOOK_SECRET" in line and "whsec_" in line and "openssl rand" in line
