"""The operator's PDF limits through the real pipeline: what a request may not turn off (a DRAFT
stamp outside production, on every page of a split report too) and what it may not ask for
(a password where passwords are forbidden, a signature where no key is configured)."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.sealing import generate_key, seal
from tests.helpers import REPO, Outcomes, Stack, delivered_file, unique
from tests.pdfmarks import stamp_texts, watermarked_pages
from tests.pdftext import page_texts

pytestmark = pytest.mark.integration

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())


@pytest.fixture(scope="module")
async def limits_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("pdf-limits"),
        env_extra={
            "PRESSROOM_RENDER_WORKERS": "2",
            "PRESSROOM_RENDER_TIMEOUT": "600",
            "PRESSROOM_PDF_WATERMARK": "DRAFT",
            "PRESSROOM_PDF_PASSWORDS": "forbid",
        },
    )
    # A template whose front matter asks for its own stamp by default.
    shutil.copytree(REPO / "templates", stack.templates)
    weekly = (stack.templates / "weekly.html").read_text()
    marked = weekly.replace(
        "description: Weekly portfolio status report", "description: Weekly report, internal"
    ).replace("\npdf:\n", "\npdf:\n  watermark: INTERNAL\n")
    assert marked != weekly
    (stack.templates / "internal.html").write_text(marked)
    await stack.astart()
    try:
        yield stack
    finally:
        stack.stop()


async def test_the_operators_draft_stamp_is_on_every_page_of_a_split_report(
    limits_stack: Stack, tmp_path: Path
) -> None:
    base = SAMPLE["projects"]
    projects = [dict(base[i % len(base)], name=f"Project {i:04d}") for i in range(330)]
    rid = unique("draft")
    body = {
        "request_id": rid,
        "template": "portfolio.html",
        "params": {**SAMPLE, "projects": projects},
        "split": "on",
        # A plain PDF: tagged and PDF/A reports (the bundled default) are never split.
        "pdf": {"variant": None, "tagged": False},
    }
    nc = await limits_stack.connect()
    try:
        outcomes = await Outcomes().start(nc)
        await nc.jetstream().publish("report.requested", json.dumps(body).encode())
        await outcomes.delivered_event(rid, timeout=300)
    finally:
        await nc.close()
    pdf = delivered_file(limits_stack.out, rid).read_bytes()
    logs = "".join(p.read_text() for p in (limits_stack.root / "logs").glob("renderer*"))
    assert "long report split" in logs
    pages = page_texts(pdf, tmp_path)
    assert len(pages) > 3 and f"Page {len(pages)} of {len(pages)}" in pages[-1]
    assert stamp_texts(pdf) == ["DRAFT"] * len(pages)
    assert watermarked_pages(pdf, tmp_path) == [True] * len(pages)


async def test_a_password_where_forbidden_and_a_signature_without_a_key_are_refused(
    limits_stack: Stack,
) -> None:
    _, public = generate_key()
    cases = {
        "password": (
            {"password": seal("reader-Pw-1", public)},
            "pdf: passwords and permissions are forbidden here (PRESSROOM_PDF_PASSWORDS)",
        ),
        "permissions": (
            {"permissions": {"print": False}},
            "pdf: passwords and permissions are forbidden here (PRESSROOM_PDF_PASSWORDS)",
        ),
        "sign": ({"sign": True}, "pdf.sign: no signing key is configured"),
    }
    nc = await limits_stack.connect()
    try:
        outcomes = await Outcomes().start(nc)
        rids = {}
        for case, (options, _) in cases.items():
            rid = rids[case] = unique(case)
            body = {"request_id": rid, "template": "weekly.html", "params": SAMPLE, "pdf": options}
            await nc.jetstream().publish("report.requested", json.dumps(body).encode())
        for case, (_, reason) in cases.items():
            failed = await outcomes.failed_event(rids[case])
            assert failed["stage"] == "renderer" and failed["reason"].startswith(reason), failed
            assert failed["dead_letter_seq"] is not None  # kept for replay, with its reason
    finally:
        await nc.close()
    for rid in rids.values():
        assert not delivered_file(limits_stack.out, rid).exists()


async def test_a_templates_own_stamp_is_its_default_a_request_replaces_it_not_the_operators(
    limits_stack: Stack,
) -> None:
    cases = {"default": None, "replaced": {"watermark": "FOR THE BOARD"}}
    nc = await limits_stack.connect()
    try:
        outcomes = await Outcomes().start(nc)
        rids = {}
        for case, options in cases.items():
            rid = rids[case] = unique(case)
            body = {"request_id": rid, "template": "internal", "params": SAMPLE}
            if options:
                body["pdf"] = options
            await nc.jetstream().publish("report.requested", json.dumps(body).encode())
            await outcomes.delivered_event(rid)
    finally:
        await nc.close()
    default = delivered_file(limits_stack.out, rids["default"]).read_bytes()
    replaced = delivered_file(limits_stack.out, rids["replaced"]).read_bytes()
    assert set(stamp_texts(default)) == {"DRAFT INTERNAL"}
    assert set(stamp_texts(replaced)) == {"DRAFT FOR THE BOARD"}
