"""Reports a company can archive, read aloud and reuse (issue 30 items 1, 2, 3, 6), through the
whole pipeline against real servers: PDF/A-3b with provenance, tags, metadata, and CSV/XLSX
exports delivered by email, to S3 and into folders — and each refusal as one reason."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from services.renderer.core import build_context, data_digest, document_spec, make_job
from services.renderer.pooled import RenderPool
from shared.events import ReportRequested
from shared.filenames import request_tag
from shared.settings import Settings
from tests.archive import (
    attachment,
    fonts,
    open_pdf,
    output_intents,
    pdfa_identification,
    structure,
    xmp,
)
from tests.helpers import REPO, Outcomes, Stack, delivered_file, pressroom, unique
from tests.servers import HttpReceiver, S3Server, SmtpServer

pytestmark = pytest.mark.integration

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())

# A ledger whose table has dates, amounts and memo text, some of it a spreadsheet formula.
LEDGER = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Ledger</title></head>
<body><h1>Ledger</h1>
<table data-export="entries"><thead><tr><th>Day</th><th>Amount</th><th>Memo</th></tr></thead>
<tbody>{% for e in entries %}<tr><td data-value="{{ e.day }}">{{ e.day }}</td>
<td data-value="{{ e.amount }}">{{ "%.2f" | format(e.amount) }} EUR</td><td>{{ e.memo }}</td></tr>
{% endfor %}</tbody></table>
<table data-export="totals"><tr><th>Total</th></tr><tr><td>{{ total }}</td></tr></table>
</body></html>"""
ENTRIES = [
    {"day": "2026-11-02", "amount": 1250.5, "memo": "Opening, with a comma"},
    {"day": "2026-11-03", "amount": -99.0, "memo": '=HYPERLINK("http://evil.example","x")'},
    {"day": "2026-11-04", "amount": 12, "memo": "@SUM(A1:A9)"},
    {"day": "2026-11-05", "amount": 0.25, "memo": '+1 "quoted", and a comma'},
    {"day": "2026-11-06", "amount": 7, "memo": "-2+3"},
]
PLAIN = "<!DOCTYPE html><html lang='en'><head><title>Plain</title></head><body><p>{{ x }}</p>"


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[S3Server, SmtpServer, HttpReceiver]]:
    inventory = json.dumps({"deployment_count": 41}).encode()
    s3 = S3Server().start()
    smtp = SmtpServer().start()
    source = HttpReceiver(lambda path, n: (200, inventory, {"Content-Type": "application/json"}))
    source.start()
    s3.client().make_bucket("company-reports")
    yield s3, smtp, source
    source.stop()
    smtp.stop()
    s3.stop()


@pytest.fixture(scope="module")
def astack(tmp_path_factory: pytest.TempPathFactory, servers: Any) -> Iterator[Stack]:
    s3, smtp, _ = servers
    stack = Stack(
        tmp_path_factory.mktemp("archive"),
        env_extra={
            **s3.env(),
            **smtp.env(),
            "PRESSROOM_ARTEFACT_BUCKET": "artefacts",
            "PRESSROOM_S3_DELIVERY_ALLOW": "company-reports/exports",
            "PRESSROOM_PDF_AUTHOR": "Finance Operations",
            # The operator's limit: every PDF is tagged, whatever a request says.
            "PRESSROOM_PDF_REQUIRE": "tagged",
        },
    )
    stack.start()
    (stack.templates / "ledger.html").write_text(LEDGER)
    (stack.templates / "plain.html").write_text(PLAIN)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
async def aouts(astack: Stack) -> Any:
    nc = await astack.connect()
    outcomes = await Outcomes().start(nc)
    yield outcomes
    await nc.close()


async def publish(stack: Stack, body: dict[str, Any]) -> None:
    nc = await stack.connect()
    await nc.jetstream().publish("report.requested", json.dumps(body).encode())
    await nc.close()


async def test_a_bundled_report_is_tagged_pdfa3b_with_metadata_and_its_provenance(
    astack: Stack, servers: Any, aouts: Outcomes
) -> None:
    _, _, source = servers
    rid = unique("archive")
    requested_at = datetime.now(UTC).replace(microsecond=0)
    await publish(
        astack,
        {
            "request_id": rid,
            "template": "weekly.html",
            "params": SAMPLE,
            "requested_at": requested_at.isoformat(),
            "sources": [{"name": "inventory", "kind": "http", "url": f"{source.url}/inv"}],
            "pdf": {"metadata": {"subject": "Portfolio health", "keywords": ["weekly", "ops"]}},
        },
    )
    delivered = await aouts.delivered_event(rid)
    entry = ledger_entry(astack, rid)
    data = delivered_file(astack.out, rid).read_bytes()
    [artefact] = delivered["artefacts"]
    assert artefact["sha256"] == hashlib.sha256(data).hexdigest()
    pdf = open_pdf(data)

    # PDF/A-3b: XMP identification, the sRGB output intent, no encryption, every font embedded
    assert pdfa_identification(pdf) == ("3", "B")
    [(subtype, condition, components)] = output_intents(pdf)
    assert subtype == "/GTS_PDFA1" and "sRGB" in condition and components == 3
    assert not pdf.is_encrypted
    used = list(fonts(pdf))
    assert used and all(embedded for _, embedded in used), used

    # metadata: in the info dictionary and the XMP alike; dates are the request's
    info = pdf.docinfo
    assert str(info.Title) == "Portfolio Status Report"
    assert str(info.Author) == "Finance Operations"  # the operator's default author
    assert str(info.Subject) == "Portfolio health"
    assert str(info.Keywords) == "weekly, ops"
    assert str(info.Creator) == "Pressroom"
    stamp = requested_at.astimezone(UTC).strftime("D:%Y%m%d%H%M%S+00'00")
    assert str(info.CreationDate) == str(info.ModDate) == stamp
    meta = xmp(pdf, "dc:title", "dc:creator", "xmp:CreateDate")
    assert meta["dc:title"] == "Portfolio Status Report"
    assert meta["dc:creator"] == ["Finance Operations"]
    assert datetime.fromisoformat(meta["xmp:CreateDate"]) == requested_at
    assert str(pdf.Root.Lang) == "en"
    assert len(pdf.trailer.ID) == 2

    # provenance: an associated file, named in /AF, that says where the report came from
    body, relationship, listed = attachment(pdf, "pressroom.json")
    assert relationship == "/Supplement" and listed == ["pressroom.json"]
    record = json.loads(body)
    assert record["request_id"] == rid
    assert datetime.fromisoformat(record["requested_at"]) == requested_at
    assert record["template"] == {"name": "weekly.html", "content_hash": entry["template_version"]}
    [fetched] = record["sources"]
    assert fetched["name"] == "inventory" and fetched["kind"] == "http"
    assert fetched["fetched_at"].startswith("20")  # when the fetcher got it
    assert record["data_hash"] == data_digest({"inventory": {"deployment_count": 41}, **SAMPLE})
    assert record["renderer"].startswith("pressroom ") and "weasyprint 70" in record["renderer"]
    assert "trace_id" in record

    # tags: headings, table header cells, every figure (chart) with alt text from its data
    tags = structure(pdf)
    names = [tag for tag, _ in tags]
    assert "H1" in names and names.count("H2") >= 2
    assert names.count("TH") == 6 and "TD" in names and "Table" in names
    figures = [element for tag, element in tags if tag == "Figure"]
    assert len(figures) == 2 + len(SAMPLE["projects"])  # two charts, a sparkline per project
    alts = [str(f.get("/Alt", "")) for f in figures]
    assert all(alts), alts
    weeks = SAMPLE["deployments_by_week"]
    first_week = next(iter(weeks))
    assert any(a.startswith('Bar chart "Deployments per week"') for a in alts)
    assert any(f"{first_week} {weeks[first_week]}" in a for a in alts)
    assert pdf.Root.MarkInfo.Marked


def ledger_entry(stack: Stack, rid: str) -> dict[str, Any]:
    return dict(json.loads(stack.cli("status", rid, "--json", check=True).stdout))


async def test_exports_are_delivered_beside_the_pdf_by_email_s3_and_folder(
    astack: Stack, servers: Any, aouts: Outcomes
) -> None:
    s3, smtp, _ = servers
    rid = unique("exports")
    inbox = f"{rid}@example.com"
    await publish(
        astack,
        {
            "request_id": rid,
            "template": "ledger.html",
            "formats": ["pdf", "csv", "xlsx"],
            "params": {"entries": ENTRIES, "total": 1170.75},
            "csv_bom": True,
            "filename": "ledger-{request_id}",
            "deliver": [
                {"channel": "file", "path": "books"},
                {"channel": "email", "to": [inbox]},
                {"channel": "s3", "bucket": "company-reports", "key": "exports/{request_id}.{ext}"},
            ],
        },
    )
    delivered = await aouts.delivered_event(rid)
    listed = [(a["format"], a.get("name")) for a in delivered["artefacts"]]
    assert listed == [("pdf", None), ("csv", "entries"), ("csv", "totals"), ("xlsx", None)]
    assert all(c["ok"] for c in delivered["channels"]), delivered["channels"]

    folder = astack.out / "books"
    stem = f"ledger-{rid}"
    want = sorted(f"{stem}.{ext}" for ext in ("pdf", "entries.csv", "totals.csv", "xlsx"))
    assert sorted(p.name for p in folder.glob(f"{stem}.*")) == want
    entries_csv = (folder / f"{stem}.entries.csv").read_bytes()
    workbook_bytes = (folder / f"{stem}.xlsx").read_bytes()

    # email: every artefact attached, with its type
    [mail] = smtp.to(inbox)
    attached = {p.get_filename(): p for p in mail.message.walk() if p.get_filename()}
    assert sorted(attached) == want
    assert attached[f"{stem}.entries.csv"].get_payload(decode=True) == entries_csv
    assert attached[f"{stem}.xlsx"].get_content_type() == (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    # s3: each under its own key
    got = s3.client().get_object("company-reports", f"exports/{rid}.entries.csv").read()
    assert got == entries_csv
    got = s3.client().get_object("company-reports", f"exports/{rid}.xlsx").read()
    assert got == workbook_bytes

    # CSV: RFC 4180 with a BOM; formulas from data come back as text, prefixed with '
    assert entries_csv.startswith(b"\xef\xbb\xbf") and b"\r\n" in entries_csv
    rows = list(csv.reader(io.StringIO(entries_csv.decode("utf-8-sig"), newline="")))
    assert rows[0] == ["Day", "Amount", "Memo"]
    assert rows[1:] == [
        [e["day"], repr(float(e["amount"])) if isinstance(e["amount"], float) else str(e["amount"]),
         ("'" + e["memo"]) if e["memo"][0] in "=+-@" else e["memo"]]
        for e in ENTRIES
    ]  # fmt: skip

    # XLSX: a sheet per table, real dates and numbers, formulas as text, frozen header, widths
    workbook = openpyxl.load_workbook(io.BytesIO(workbook_bytes))
    assert workbook.sheetnames == ["entries", "totals"]
    sheet = workbook["entries"]
    assert sheet.freeze_panes == "A2"
    assert [c.value for c in sheet[1]] == ["Day", "Amount", "Memo"]
    for row, entry in zip(sheet.iter_rows(min_row=2), ENTRIES, strict=True):
        day, amount, memo = row
        assert day.is_date and day.value.date() == date.fromisoformat(entry["day"])
        assert amount.data_type == "n" and amount.value == entry["amount"]
        assert memo.data_type == "s" and memo.value == entry["memo"]  # never "f"
    assert sheet.column_dimensions["C"].width > sheet.column_dimensions["B"].width
    assert workbook["totals"]["A2"].value == 1170.75


async def test_the_same_request_renders_to_the_same_bytes(
    astack: Stack, aouts: Outcomes, tmp_path: Path
) -> None:
    """Rendered again by a fresh render process (the CLI's), the delivered request gives
    byte-identical PDF and XLSX: the ledger's content hash names the content."""
    rid = unique("same")
    body = {
        "request_id": rid,
        "template": "ledger.html",
        "formats": ["pdf", "xlsx"],
        "params": {"entries": ENTRIES, "total": 3},
        "requested_at": datetime.now(UTC).isoformat(),
    }
    await publish(astack, body)
    delivered = await aouts.delivered_event(rid)
    hashes = {a["format"]: a["sha256"] for a in delivered["artefacts"]}
    again = await rerender(astack, body, body["params"])
    assert {fmt: hashlib.sha256(data).hexdigest() for fmt, data in again.items()} == hashes


async def rerender(stack: Stack, request: dict[str, Any], data: dict[str, Any]) -> dict[str, bytes]:
    settings = Settings(
        templates_dir=stack.templates, pdf_author="Finance Operations", pdf_require="tagged"
    )
    req = ReportRequested.model_validate(request)
    job = make_job(
        settings,
        req.template,
        build_context(req, data),
        tuple(req.formats),
        document=document_spec(settings, req, data, trace_id=None),
    )

    pool = RenderPool(1, warm=False)
    try:
        output = await pool.render(job)
    finally:
        await pool.close()
    assert output.pdf is not None
    return {"pdf": output.pdf, **{e.format: e.content for e in output.exports}}


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"pdf": {"tagged": False}}, "untagged PDF refused: the operator requires"),
        ({"pdf": {"variant": "pdf/ua-1", "tagged": False}}, "untagged PDF refused"),
        ({"template": "plain.html", "formats": ["xlsx"]}, "xlsx export refused: template"),
        ({"pdf": {"variant": "pdf/a-1b"}}, "invalid payload"),
        ({"pdf": {"variant": "pdf/a-3b", "colour": "red"}}, "invalid payload"),
    ],
)
async def test_a_request_the_options_refuse_fails_once_with_the_reason(
    astack: Stack, aouts: Outcomes, change: dict[str, Any], reason: str
) -> None:
    rid = unique("refused")
    body = {"request_id": rid, "template": "weekly.html", "params": SAMPLE, **change}
    if body["template"] == "plain.html":
        body["params"] = {"x": 1}
    await publish(astack, body)
    failed = await aouts.failed_event(rid)
    assert failed["reason"].startswith(reason) or reason in failed["reason"], failed["reason"]
    assert "\n" not in failed["reason"] and failed["attempts"] == 1
    assert not list(astack.out.rglob(f"*{request_tag(rid)}*"))


def test_pressroom_render_takes_the_same_options_and_refuses_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "ledger.json"
    data.write_text(json.dumps({"entries": ENTRIES, "total": 3}))
    (tmp_path / "ledger.html").write_text(LEDGER)
    (tmp_path / "plain.html").write_text(PLAIN)
    env = {"PRESSROOM_DATA_DIR": str(tmp_path / ".pressroom")}

    def render(*args: str) -> Any:
        return pressroom("render", *args, env=env, cwd=tmp_path)

    ua = tmp_path / "ua.pdf"
    ledger = ("-t", str(tmp_path / "ledger.html"), "--data-file", str(data))
    done = render(*ledger, "-o", str(ua), "--pdf-variant", "pdf/ua-1", "--author", "Books",
                  "--keyword", "ledger")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "pdf/ua-1, tagged" in done.stdout
    document = open_pdf(ua.read_bytes())
    assert xmp(document, "pdfuaid:part", "dc:creator") == {
        "pdfuaid:part": "1",
        "dc:creator": ["Books"],
    }
    assert str(document.docinfo.Keywords) == "ledger"

    done = render(*ledger, "-o", str(tmp_path / "books.csv"), "--csv-bom")
    assert done.returncode == 0, done.stderr
    entries = (tmp_path / "books.entries.csv").read_bytes()
    assert entries.startswith(b"\xef\xbb\xbfDay,Amount,Memo\r\n")
    assert (tmp_path / "books.totals.csv").read_bytes() == b"\xef\xbb\xbfTotal\r\n3\r\n"
    done = render(*ledger, "-o", str(tmp_path / "books.xlsx"))
    assert done.returncode == 0, done.stderr
    workbook = openpyxl.load_workbook(tmp_path / "books.xlsx")
    assert workbook.sheetnames == ["entries", "totals"]

    refusals = {
        ("-t", str(tmp_path / "ledger.html"), "--pdf-variant", "pdf/ua-1", "--untagged"): (
            "pdf/ua-1 refused with tagged: false"
        ),
        ("-t", str(tmp_path / "ledger.html"), "--pdf-variant", "pdf/a-1b"): "invalid pdf.variant",
        (
            "-t",
            str(tmp_path / "plain.html"),
            "-p",
            "x=1",
            "--format",
            "xlsx",
        ): "xlsx export refused",
    }
    for args, reason in refusals.items():
        failed = render(*args, "--data-file", str(data), "-o", str(tmp_path / "no.pdf"))
        assert failed.returncode == 1 and reason in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1 and "Traceback" not in failed.stderr
    assert not list(tmp_path.glob("no.*"))
