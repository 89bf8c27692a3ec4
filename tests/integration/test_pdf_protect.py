"""Protected, marked, signed and appended PDFs through the real pipeline and `pressroom render`.

A requester seals the reader's password to the renderer's key; the report arrives by email and
in S3 encrypted (AES-256) with that password, watermarked on every page, with the operator's
terms appended and its footers counting them, signed (PAdES B-T: the loopback timestamp
server answers) — and the password is nowhere in clear: not on any stream or key-value bucket
of the bus (requests, ledger, dead letters …), not in any log or file of the run, not in S3.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pikepdf
import pytest
import weasyprint

from tests.helpers import REPO, Outcomes, Stack, delivered_file, eventually, unique
from tests.pdfmarks import decrypted, stamp_texts, watermarked_pages
from tests.pdftext import page_texts
from tests.pki import TestPki, TimestampServer
from tests.servers import HttpReceiver, S3Server, SmtpServer

pytestmark = pytest.mark.integration

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
CANARY = "canary-Pw-5a1f0e77"  # the reader's password: it must never show in clear
OWNER = "owner-Secret-90c2"
CLEAR = "clear-Pw-3e9d"  # sent in clear by mistake: refused, and the reason does not repeat it


def write_terms(path: Path) -> None:
    """A two-page static PDF, as an operator would drop into the templates folder."""
    weasyprint.HTML(
        string="<style>@page { size: A4; margin: 2cm }</style><h1>Terms of use</h1>"
        "<p>Terms page one.</p><p style='break-before: page'>Terms page two.</p>"
    ).write_pdf(path)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    pki = TestPki.create(tmp_path_factory.mktemp("pki"))
    s3, smtp, tsa = S3Server().start(), SmtpServer().start(), TimestampServer(pki).start()
    collector = HttpReceiver(lambda path, n: (200, b"", {"Content-Type": "application/x-protobuf"}))
    collector.start()
    s3.client().make_bucket("company-reports")
    yield pki, s3, smtp, tsa, collector
    collector.stop()
    tsa.stop()
    smtp.stop()
    s3.stop()


@pytest.fixture(scope="module")
async def protect_stack(
    tmp_path_factory: pytest.TempPathFactory, servers: tuple[Any, ...]
) -> AsyncIterator[Stack]:
    pki, s3, smtp, tsa, collector = servers
    root = tmp_path_factory.mktemp("protect")
    secrets = root / "secrets"
    secrets.mkdir()
    stack = Stack(
        root,
        env_extra={
            **s3.env(),
            **smtp.env(),
            **pki.signing_env(),
            "PRESSROOM_ARTEFACT_BUCKET": "artefacts",
            "PRESSROOM_S3_DELIVERY_ALLOW": "company-reports/board",
            "PRESSROOM_PDF_OWNER_PASSWORD": OWNER,  # DESIGN.md's name: the value itself
            "PRESSROOM_PDF_SEAL_KEY_FILE": str(secrets / "seal.key"),
            "PRESSROOM_PDF_APPEND_ALLOW": "legal/terms.pdf",
            "PRESSROOM_SIGN_TSA_URL": tsa.url,
            # traces too are searched for the password
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        },
    )
    keys = stack.cli("pdf", "keys", str(secrets))
    assert keys.returncode == 0, keys.stderr
    shutil.copytree(REPO / "templates", stack.templates)
    (stack.templates / "legal").mkdir()
    write_terms(stack.templates / "legal" / "terms.pdf")
    await stack.astart()
    try:
        yield stack
    finally:
        stack.stop()


def seal(stack: Stack, password: str, tmp_path: Path) -> str:
    """What a requester does: seal the password with the renderer's public key."""
    (tmp_path / "password").write_text(password)
    public = Path(stack.env["PRESSROOM_PDF_SEAL_KEY_FILE"]).with_name("seal.pub")
    result = stack.cli(
        "pdf", "seal", "--public-key", str(public), "--password-file", str(tmp_path / "password")
    )
    assert result.returncode == 0, result.stderr
    sealed = result.stdout.strip()
    assert sealed.startswith("sealed1:") and password not in sealed
    return sealed


async def everything_on_the_bus(stack: Stack) -> bytes:
    """Every message of every stream (pipeline, dead letters, ledger and other KV buckets,
    object stores), headers and bodies."""
    nc = await stack.connect()
    try:
        js = nc.jetstream()
        seen = []
        for info in await js.streams_info():
            state = info.state
            for seq in range(state.first_seq, state.last_seq + 1):
                try:
                    msg = await js.get_msg(info.config.name, seq)
                except Exception:  # deleted (KV history, purged): nothing to read
                    continue
                seen.append(msg.data or b"")
                seen.append(json.dumps(msg.headers or {}).encode())
        return b"\n".join(seen)
    finally:
        await nc.close()


def every_file_of_the_run(root: Path) -> bytes:
    """Logs, out folder, embedded state: every file the run wrote (templates aside)."""
    return b"\n".join(
        path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not {"templates", "secrets"} & set(path.relative_to(root).parts)
    )


def everything_in_s3(s3: S3Server) -> bytes:
    client = s3.client()
    return b"\n".join(
        client.get_object(bucket.name, obj.object_name).read()
        for bucket in client.list_buckets()
        for obj in client.list_objects(bucket.name, recursive=True)
    )


async def test_a_sealed_password_signed_watermarked_report_with_terms_reaches_email_and_s3(
    protect_stack: Stack, servers: tuple[Any, ...], tmp_path: Path
) -> None:
    pki, s3, smtp, tsa, collector = servers
    rid = unique("protected")
    inbox = f"{rid}@example.com"
    sealed = seal(protect_stack, CANARY, tmp_path)
    body = {
        "request_id": rid,
        "template": "weekly.html",
        "params": SAMPLE,
        "requested_by": "Zoë Board",
        "pdf": {
            "password": sealed,
            "permissions": {"print": True, "copy": False},
            "watermark": "CONFIDENTIAL — for {recipient}",
            "sign": True,
            "append": ["legal/terms.pdf"],
        },
        "deliver": [
            {"channel": "email", "to": [inbox], "subject": "Board {request_id}"},
            {"channel": "s3", "bucket": "company-reports", "key": "board/{request_id}.pdf"},
        ],
    }
    nc = await protect_stack.connect()
    try:
        outcomes = await Outcomes().start(nc)
        await nc.jetstream().publish("report.requested", json.dumps(body).encode())
        delivered = await outcomes.delivered_event(rid)
    finally:
        await nc.close()

    [mail] = smtp.to(inbox)
    [attachment] = [p for p in mail.message.walk() if p.get_filename()]
    pdf = attachment.get_payload(decode=True)
    uploaded = s3.client().get_object("company-reports", f"board/{rid}.pdf").read()
    assert pdf == uploaded  # the signed bytes, as rendered: nothing changed them afterwards
    assert hashlib.sha256(pdf).hexdigest() == delivered["artefacts"][0]["sha256"]

    # AES-256 with the reader's password; printing allowed, copying not
    with pytest.raises(pikepdf.PasswordError):
        pikepdf.open(io.BytesIO(pdf))
    with pikepdf.open(io.BytesIO(pdf), password=CANARY) as document:
        assert document.encryption.bits == 256
        assert document.allow.print_highres and not document.allow.extract
    with pikepdf.open(io.BytesIO(pdf), password=OWNER) as document:
        assert document.owner_password_matched

    # the terms' two pages after the report's; its footer counts them; the stamp on every page
    pages = page_texts(decrypted(pdf, CANARY), tmp_path)
    total = len(pages)
    assert total >= 3
    assert f"Page 1 of {total}" in pages[0]
    assert "Terms page one." in pages[-2] and "Terms page two." in pages[-1]
    assert watermarked_pages(decrypted(pdf, CANARY), tmp_path) == [True] * total
    stamp = stamp_texts(decrypted(pdf, CANARY))
    assert stamp == ["CONFIDENTIAL — for Zoë Board"] * total

    # PAdES signature over the whole file, valid, trusted, with the TSA's timestamp (B-T)
    status = await pki.validate(pdf, CANARY)
    assert status.bottom_line and status.trusted and status.intact
    assert status.coverage.name == "ENTIRE_FILE"
    assert status.timestamp_validity is not None and status.timestamp_validity.trusted
    assert tsa.requests >= 1

    # the password in clear: nowhere on the bus, in the run's files or in S3 (which hold the
    # request, sealed, and the run's logs)
    bus = await everything_on_the_bus(protect_stack)
    assert sealed.encode() in bus and CANARY.encode() not in bus
    files = every_file_of_the_run(protect_stack.root)
    assert rid.encode() in files and CANARY.encode() not in files
    assert CANARY.encode() not in everything_in_s3(s3)

    async def traced() -> bytes | None:
        exported = b"\n".join(hit.body for hit in collector.on("/v1/traces"))
        return exported if rid.encode() in exported else None

    assert CANARY.encode() not in await eventually(traced, timeout=60)
    # nor the operator's owner password (its file aside)
    assert OWNER.encode() not in bus and OWNER.encode() not in files
    assert CANARY.encode() not in mail.message.as_bytes()


async def test_refused_options_are_dead_letters_with_a_reason_and_no_password_in_clear(
    protect_stack: Stack, tmp_path: Path
) -> None:
    sealed_elsewhere = "sealed1:" + "A" * 120  # not sealed to this renderer's key
    cases = {
        "notallowed": (
            {"append": ["samples/portfolio.json"]},
            "'samples/portfolio.json' is not one the operator allows",
        ),
        "badseal": (
            {"password": sealed_elsewhere},
            "pdf.password: the password was not sealed to this renderer's key",
        ),
        "clear": ({"password": CLEAR}, "never in clear"),
        "htmlonly": ({"watermark": "DRAFT"}, "asks for no PDF"),
    }
    nc = await protect_stack.connect()
    try:
        outcomes = await Outcomes().start(nc)
        rids = {}
        for case, (options, _) in cases.items():
            rid = rids[case] = unique(case)
            body = {"request_id": rid, "template": "weekly.html", "params": SAMPLE, "pdf": options}
            if case == "htmlonly":
                body["formats"] = ["html"]
            await nc.jetstream().publish("report.requested", json.dumps(body).encode())
        for case, (_, reason) in cases.items():
            failed = await outcomes.failed_event(rids[case])
            assert reason in failed["reason"], failed
            assert "\n" not in failed["reason"] and CLEAR not in failed["reason"]
    finally:
        await nc.close()
    dead = protect_stack.cli("dlq", "ls")
    assert dead.returncode == 0, dead.stderr
    for rid in rids.values():
        assert rid[:20] in dead.stdout or rid in dead.stdout


async def test_pressroom_render_protects_signs_and_marks_and_refuses_a_forbidden_password(
    protect_stack: Stack, servers: tuple[Any, ...], tmp_path: Path
) -> None:
    pki = servers[0]
    (tmp_path / "reader").write_text(CANARY + "\n")
    out = tmp_path / "weekly.pdf"
    result = protect_stack.cli(
        *(
            "render",
            "-t",
            "weekly.html",
            "--data-file",
            str(REPO / "templates/samples/portfolio.json"),
        ),
        *("-o", str(out), "--password-file", str(tmp_path / "reader"), "--no-print", "--copy"),
        *("--sign", "--watermark", "DRAFT", "--append", "legal/terms.pdf"),
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    pdf = out.read_bytes()
    with pikepdf.open(io.BytesIO(pdf), password=CANARY) as document:
        assert not document.allow.print_highres and document.allow.extract
    pages = page_texts(decrypted(pdf, CANARY), tmp_path)
    assert f"Page 1 of {len(pages)}" in pages[0] and "Terms page two." in pages[-1]
    assert watermarked_pages(decrypted(pdf, CANARY), tmp_path) == [True] * len(pages)
    assert (await pki.validate(pdf, CANARY)).bottom_line
    assert CANARY not in result.stdout + result.stderr

    forbidden = protect_stack.cli(
        *(
            "render",
            "-t",
            "weekly.html",
            "--data-file",
            str(REPO / "templates/samples/portfolio.json"),
        ),
        *("-o", str(tmp_path / "no.pdf"), "--password-file", str(tmp_path / "reader")),
        env={"PRESSROOM_PDF_PASSWORDS": "forbid"},
    )
    assert forbidden.returncode == 1 and "Traceback" not in forbidden.stderr
    assert forbidden.stderr.strip().splitlines() == [
        "error: pdf: passwords and permissions are forbidden here (PRESSROOM_PDF_PASSWORDS)"
    ]
    assert not (tmp_path / "no.pdf").exists()


async def test_the_same_report_for_two_readers_is_encrypted_for_each_not_reused(
    protect_stack: Stack, tmp_path: Path
) -> None:
    """The render cache would copy an identical earlier render: never one with a password."""
    nc = await protect_stack.connect()
    rids = {}
    try:
        outcomes = await Outcomes().start(nc)
        for reader in ("first-Reader-Pw", "second-Reader-Pw"):
            rid = rids[reader] = unique("reader")
            body = {
                "request_id": rid,
                "template": "weekly.html",
                "params": SAMPLE,
                "pdf": {"password": seal(protect_stack, reader, tmp_path)},
            }
            await nc.jetstream().publish("report.requested", json.dumps(body).encode())
            await outcomes.delivered_event(rid)
    finally:
        await nc.close()
    for reader, rid in rids.items():
        pdf = delivered_file(protect_stack.out, rid).read_bytes()
        with pikepdf.open(io.BytesIO(pdf), password=reader) as document:
            assert document.user_password_matched
        other = next(r for r in rids if r != reader)
        with pytest.raises(pikepdf.PasswordError):
            pikepdf.open(io.BytesIO(pdf), password=other)
