"""A signed report keeps its document metadata whole: every Info entry equals its XMP twin
(ISO 19005-2 6.6.2.3.1 for PDF/A), and the signature still covers the whole, unchanged file."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pikepdf
import pytest
from pikepdf.models.metadata import DOCINFO_MAPPING
from pikepdf.models.metadata._converters import decode_pdf_date, parse_xmp_date

from services.renderer.core import build_context, document_spec, finish_for, make_job
from services.renderer.pdf import render_job
from shared.events import ReportRequested
from shared.settings import Settings
from tests.helpers import REPO, unique
from tests.pki import TestPki

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())


def info_and_xmp_disagreements(pdf: bytes) -> list[tuple[str, Any, Any]]:
    """Each Info entry whose XMP twin (pikepdf's mapping) is missing or says otherwise."""
    document = pikepdf.open(io.BytesIO(pdf))
    info = {str(k): str(v) for k, v in document.docinfo.items()}
    found = []
    with document.open_metadata(set_pikepdf_as_editor=False, update_docinfo=False) as xmp:
        for mapping in DOCINFO_MAPPING:
            mine, twin = info.get(mapping.name), xmp.get(f"{{{mapping.ns}}}{mapping.key}")
            if mine is None and twin is None:
                continue
            if mine is None or twin is None:
                same = False
            elif mapping.name in ("/CreationDate", "/ModDate"):
                same = decode_pdf_date(mine) == parse_xmp_date(twin)
            elif mapping.name == "/Author":  # WeasyPrint's Info joins dc:creator's list
                same = mine == (", ".join(twin) if isinstance(twin, list) else twin)
            else:
                same = mine == str(twin)
            if not same:
                found.append((mapping.name, mine, twin))
    return found


def render(settings: Settings, pdf: dict[str, Any], **request_fields: Any) -> bytes:
    """The PDF as the renderer's render process makes it (the job the service builds)."""
    fields = {"request_id": unique("signed"), **request_fields}
    request = ReportRequested.model_validate(
        {**fields, "template": "portfolio.html", "params": SAMPLE, "pdf": pdf}
    )
    job = make_job(
        settings,
        request.template,
        build_context(request, SAMPLE),
        ("pdf",),
        document=document_spec(settings, request, SAMPLE),
        finish=finish_for(settings, request),
    )
    output = render_job(job)
    assert output.pdf is not None
    return output.pdf


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return TestPki.create(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize(
    ("pdf", "variant"),
    [
        ({"sign": True}, "3"),  # the bundled templates' default: PDF/A-3b
        ({"sign": True, "variant": "pdf/a-2b", "watermark": "DRAFT"}, "2"),
        ({"sign": True, "variant": "pdf/ua-1"}, None),
        ({"sign": True, "variant": None}, None),  # plain: Pressroom writes XMP for it too
    ],
)
def test_a_signed_report_keeps_its_info_and_xmp_in_agreement_and_its_signature_valid(
    pki: TestPki, pdf: dict[str, Any], variant: str | None
) -> None:
    settings = Settings(
        templates_dir=REPO / "templates",
        sign_key=str(pki.folder / "signer.key"),
        sign_cert=str(pki.folder / "signer.pem"),
        sign_chain_file=str(pki.folder / "ca.pem"),
    )
    signed = render(settings, pdf)

    assert info_and_xmp_disagreements(signed) == []
    document = pikepdf.open(io.BytesIO(signed))
    with document.open_metadata(set_pikepdf_as_editor=False, update_docinfo=False) as xmp:
        assert xmp.get("pdfaid:part") == variant
        assert str(xmp["pdf:Producer"]).startswith("WeasyPrint")
    signature = document.Root.AcroForm.Fields[0].V
    assert str(signature.Prop_Build.App.REx).startswith("pressroom ")  # who signed it, there

    status = asyncio.run(pki.validate(signed))
    assert status.bottom_line and status.intact and status.valid and status.trusted
    assert status.coverage.name == "ENTIRE_FILE" and status.modification_level.name == "NONE"


def test_signing_changes_none_of_the_documents_metadata(pki: TestPki) -> None:
    # Its dates stay the request's (the signature has its own time), its producer the renderer
    # (the signature names its own software): the same as the unsigned render of the request.
    settings = Settings(
        templates_dir=REPO / "templates",
        sign_key=str(pki.folder / "signer.key"),
        sign_cert=str(pki.folder / "signer.pem"),
    )
    request = {"request_id": unique("same"), "requested_at": "2026-03-02T08:00:00+00:00"}
    signed = pikepdf.open(io.BytesIO(render(settings, {"sign": True}, **request)))
    unsigned = pikepdf.open(io.BytesIO(render(settings, {}, **request)))
    assert dict(signed.docinfo.items()) == dict(unsigned.docinfo.items())
    assert signed.Root.Metadata.read_bytes() == unsigned.Root.Metadata.read_bytes()
    assert str(signed.docinfo["/ModDate"]).startswith("D:20260302080000")
