"""PDF standards in the capped render processes (services/renderer/document.py): each variant
identifies itself, a tagged or PDF/A report is laid out in one piece, and a split plain report
carries the same metadata as a one-piece one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from services.renderer.core import build_context, document_spec, make_job
from services.renderer.job import RenderJob
from services.renderer.pooled import RenderPool
from shared.events import ReportRequested
from shared.settings import Settings
from tests.archive import attachment, open_pdf, structure, xmp
from tests.helpers import REPO

pytestmark = pytest.mark.integration

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[RenderPool]:
    pool = RenderPool(2, timeout=600)
    await pool.start()
    yield pool
    await pool.close()


def job(rows: int = 0, pdf: dict[str, Any] | None = None, **operator: Any) -> RenderJob:
    data = dict(SAMPLE)
    if rows:
        base = SAMPLE["projects"]
        data["projects"] = [dict(base[i % len(base)], name=f"P{i:04d}") for i in range(rows)]
    settings = Settings(templates_dir=REPO / "templates", **operator)
    request = ReportRequested(
        template="portfolio.html",
        request_id="archive-render",
        requested_at="2026-11-23T08:00:00Z",
        pdf=pdf,
    )
    document = document_spec(settings, request, data)
    return make_job(
        settings, "portfolio.html", build_context(request, data), ("pdf",), document=document
    )


@pytest.mark.parametrize(
    ("pdf", "part", "ua"),
    [({"variant": "pdf/a-2b"}, "2", None), ({"variant": "pdf/ua-1"}, None, "1")],
)
async def test_each_variant_identifies_itself_in_xmp(
    pool: RenderPool, pdf: dict[str, Any], part: str | None, ua: str | None
) -> None:
    output = await pool.render(job(pdf=pdf))
    assert output.pdf is not None and output.variant == pdf["variant"]
    document = open_pdf(output.pdf)
    found = xmp(document, "pdfaid:part", "pdfuaid:part", "dc:title")
    assert (found["pdfaid:part"], found["pdfuaid:part"]) == (part, ua)
    assert found["dc:title"] == "Portfolio Status Report"
    assert "pressroom.json" not in document.attachments  # provenance is PDF/A-3's
    assert output.tagged and "H1" in [tag for tag, _ in structure(document)]


async def test_a_plain_pdf_still_has_xmp_metadata_and_a_stable_id(pool: RenderPool) -> None:
    plain = job(pdf={"variant": None, "tagged": False})
    first, again = await pool.render(plain), await pool.render(plain)
    assert first.pdf == again.pdf and first.pdf is not None
    document = open_pdf(first.pdf)
    found = xmp(document, "pdfaid:part", "dc:creator", "xmp:CreateDate")
    assert found == {
        "pdfaid:part": None,
        "dc:creator": ["Pressroom"],
        "xmp:CreateDate": "2026-11-23T08:00:00+00:00",
    }
    assert "/StructTreeRoot" not in document.Root and len(document.trailer.ID) == 2


async def test_a_long_tagged_pdfa_report_is_laid_out_in_one_piece(pool: RenderPool) -> None:
    output = await pool.render(replace(job(rows=400), split="on"))
    assert output.pdf is not None and output.chunks == 1
    assert (output.variant, output.tagged) == ("pdf/a-3b", True)
    document = open_pdf(output.pdf)
    tags = [tag for tag, _ in structure(document)]
    # every body cell; the header cells again on each page the header repeats on
    assert tags.count("TD") == 400 * 6 and tags.count("TH") == 6 * output.pages
    _, relationship, _ = attachment(document, "pressroom.json")
    assert relationship == "/Supplement"


async def test_a_split_plain_report_has_the_metadata_of_a_one_piece_one(pool: RenderPool) -> None:
    plain = job(rows=400, pdf={"variant": None, "tagged": False, "metadata": {"author": "Ops"}})
    whole = await pool.render(replace(plain, split="off"))
    split = await pool.render(replace(plain, split="on"))
    assert split.chunks == 2 and whole.pdf is not None and split.pdf is not None
    one, two = open_pdf(whole.pdf), open_pdf(split.pdf)
    for key in ("/Title", "/Author", "/Creator", "/CreationDate", "/ModDate"):
        assert str(two.docinfo[key]) == str(one.docinfo[key]), key
    assert str(two.docinfo["/Author"]) == "Ops"
    keys = ("dc:title", "dc:creator", "xmp:CreatorTool", "xmp:CreateDate")
    assert xmp(two, *keys) == xmp(one, *keys)
    assert str(two.trailer.ID[0]) == str(one.trailer.ID[0])
    assert str(two.Root.Lang) == str(one.Root.Lang) == "en"
