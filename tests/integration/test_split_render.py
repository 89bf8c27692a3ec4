"""Split rendering: a long report laid out by several render processes prints like one piece.

Real render processes (RenderPool), real WeasyPrint, and what a reader looks at: the text of
each page (pdftotext), its page-number footer, and the pages as pictures (pdftoppm).
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops
from pypdf import PdfReader

from services.renderer import splitplan
from services.renderer.core import build_context, document_spec, make_job
from services.renderer.job import RenderJob, RenderOutput
from services.renderer.pool import Slots
from services.renderer.pooled import RenderPool
from shared.errors import MissingGlyphs, RenderTimeout, ResourceBlocked
from shared.events import ReportRequested
from shared.settings import Settings
from tests.helpers import REPO, pressroom
from tests.pdftext import page_texts

pytestmark = pytest.mark.integration

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())

# A plain long table: header repeated on every page, "Page N of M" footers, text before and
# after the table, and some rows that wrap to two or three lines (pages hold different counts).
LEDGER = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Ledger</title>
<style>
  @page { @bottom-right { content: "Page " counter(page) " of " counter(pages); font-size: 8pt; }
          @bottom-left { content: "Ledger · {{ period }}"; font-size: 8pt; } }
  body { font-family: "Pressroom Sans", sans-serif; font-size: 10pt; }
  table { width: 100%; border-collapse: collapse; }
  th { text-align: left; background: #1e3a8a; color: white; padding: 1mm; }
  td { border-bottom: 1px solid #9ca3af; padding: 1mm; }
  td:first-child { white-space: nowrap; }
  tr { break-inside: avoid; }
  {{ extra_css }}
</style></head>
<body>
  <h1>Ledger {{ period }}</h1>
  <p>{{ intro }}</p>
  <table>
    <thead><tr><th>#</th><th>Account</th><th>Amount</th></tr></thead>
    <tbody>
    {% for row in rows %}<tr><td>Row {{ "%04d" | format(loop.index0) }}</td>
      <td>{{ row.account }}</td><td>{{ row.amount }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
  <h2>Closing remarks</h2>
  <p>{{ outro }}</p>
</body></html>
"""
WORDS = ("ledger", "reconciliation", "quarterly", "settlement", "adjustment", "carry-over")


def ledger_rows(count: int, *, wrap_every: int = 0, wrap_until: int = 0) -> list[dict[str, Any]]:
    """Rows of one line; with wrap_every, one in so many (up to row wrap_until, if given) wraps
    to two or three lines."""
    rows = []
    for i in range(count):
        account = f"Account {i % 97:02d}"
        if wrap_every and i % wrap_every == 3 and (not wrap_until or i < wrap_until):
            account += " " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(14 + i % 9))
        rows.append({"account": account, "amount": f"{(i * 7919) % 100000 / 100:,.2f}"})
    return rows


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[RenderPool]:
    running = RenderPool(2, memory_mb=2048, timeout=300, warm=False)
    await running.start()
    try:
        yield running
    finally:
        await running.close()


def ledger_job(folder: Path, rows: list[dict[str, Any]], **params: Any) -> RenderJob:
    (folder / "ledger.html").write_text(LEDGER)
    context = {"period": "2026-11", "intro": "Opening balances.", "outro": "Closed.", "rows": rows}
    context.update({"extra_css": ""}, **params)
    job = make_job(Settings(templates_dir=folder), "ledger.html", context, ("pdf",))
    return replace(job, listed_only=False)


def portfolio_job(rows: int) -> RenderJob:
    base = SAMPLE["projects"]
    data = {
        **SAMPLE,
        "projects": [dict(base[i % len(base)], name=f"Project {i:04d}") for i in range(rows)],
        "project_count": rows,
    }
    # A plain PDF: a tagged or PDF/A report (the bundled default) is never split.
    request = ReportRequested(
        template="portfolio.html", request_id="split-test", pdf={"variant": None, "tagged": False}
    )
    settings = Settings(templates_dir=REPO / "templates")
    document = document_spec(settings, request, data)
    context = build_context(request, data)
    return make_job(settings, "portfolio.html", context, ("pdf",), document=document)


async def both(pool: RenderPool, job: RenderJob) -> tuple[RenderOutput, RenderOutput]:
    whole = await pool.render(replace(job, split="off"))
    split = await pool.render(replace(job, split="on"))
    assert whole.chunks == 1
    assert split.chunks == 2, "the long table should have been split"
    return whole, split


# ---- what a reader sees ------------------------------------------------------------------------
def picture(pdf: bytes, page: int, tmp_path: Path) -> Image.Image:
    path = tmp_path / f"pic-{time.monotonic_ns()}.pdf"
    path.write_bytes(pdf)
    out = tmp_path / f"pic-{time.monotonic_ns()}"
    pages = ["-f", str(page), "-l", str(page)]
    command = ["pdftoppm", "-r", "60", "-png", "-singlefile", *pages, str(path), str(out)]
    subprocess.run(command, check=True)
    return Image.open(f"{out}.png").convert("L")


def differing_share(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    histogram = ImageChops.difference(a, b).histogram()
    return sum(histogram[24:]) / (a.size[0] * a.size[1])


def font_programs(pdf: bytes) -> list[str]:
    """The BaseFont of every embedded font program (a font embedded twice is listed twice)."""
    reader = PdfReader(io.BytesIO(pdf))
    programs: dict[int, str] = {}
    for page in reader.pages:
        for ref in page["/Resources"].get_object().get("/Font", {}).values():
            font = ref.get_object()
            descriptor = font["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
            stream = descriptor.raw_get("/FontFile2") or descriptor.raw_get("/FontFile3")
            programs[stream.idnum] = str(font["/BaseFont"])
    return sorted(programs.values())


def outline(pdf: bytes) -> list[tuple[int, str, int]]:
    """(depth, title, page) of every bookmark: the headings a PDF viewer lists."""
    reader = PdfReader(io.BytesIO(pdf))
    found: list[tuple[int, str, int]] = []

    def walk(items: list[Any], depth: int) -> None:
        for item in items:
            if isinstance(item, list):
                walk(item, depth + 1)
            else:
                found.append((depth, str(item.title), reader.get_destination_page_number(item)))

    walk(reader.outline, 0)
    return found


def first_row(text: str) -> int | None:
    found = re.search(r"(?:Row|Project) (\d{4})", text)
    return int(found[1]) if found else None


def seam_row(split: RenderOutput) -> int:
    """The row the second chunk's pages start near, as the planner chose it."""
    html = split.html.decode("utf-8")
    rows = splitplan.read(html).rows
    assert rows is not None
    return splitplan.windows(len(rows), 2, *splitplan.around(html, rows))[1].target


def assert_prints_the_same(whole: bytes, split: bytes, tmp_path: Path, seam_row: int) -> None:
    texts, split_texts = page_texts(whole, tmp_path), page_texts(split, tmp_path)
    assert len(split_texts) == len(texts)
    total = len(texts)
    for number, (expected, got) in enumerate(zip(texts, split_texts, strict=True), start=1):
        assert got == expected, f"page {number} reads differently"
        assert f"Page {number} of {total}" in got
    # The pictures of the first page, both sides of the seam between the chunks, and the last.
    seam = next(n for n, t in enumerate(split_texts, 1) if (first_row(t) or 0) >= seam_row)
    for page in sorted({1, seam - 1, seam, total}):
        share = differing_share(picture(whole, page, tmp_path), picture(split, page, tmp_path))
        assert share < 0.001, f"page {page} looks different ({share:.2%} of its pixels)"


# ---- equivalence ---------------------------------------------------------------------------------
async def test_a_long_portfolio_report_split_in_two_prints_like_the_one_piece_render(
    pool: RenderPool, tmp_path: Path
) -> None:
    whole, split = await both(pool, portfolio_job(360))
    assert whole.pdf and split.pdf
    assert split.pages == whole.pages > 10
    assert_prints_the_same(whole.pdf, split.pdf, tmp_path, seam_row(split))
    # Each font once, with every glyph either half used; the file barely bigger.
    assert font_programs(split.pdf) == font_programs(whole.pdf)
    assert len(split.pdf) <= 1.10 * len(whole.pdf)
    assert outline(split.pdf) == outline(whole.pdf) != []


async def test_rows_of_different_heights_and_text_after_the_table_print_the_same(
    pool: RenderPool, tmp_path: Path
) -> None:
    # The pages before the cut hold fewer rows than the first full page (some rows wrap there,
    # none after): the second chunk's guess of where its pages start is wrong, and it lays
    # its pages out again from where the first chunk's end.
    job = ledger_job(tmp_path, ledger_rows(420, wrap_every=5, wrap_until=150))
    whole, split = await both(pool, job)
    assert whole.pdf and split.pdf
    assert_prints_the_same(whole.pdf, split.pdf, tmp_path, seam_row(split))
    last = page_texts(split.pdf, tmp_path)[-1]
    assert "Row 0419" in last or "Closing remarks" in last


BOXED = ".box { border: 2px solid #333; padding: 2mm; margin: 1mm 0 }"


@pytest.mark.parametrize("boxed", [False, True], ids=["text", "boxed"])
async def test_rows_broken_over_two_pages_print_the_same_on_every_page(
    pool: RenderPool, tmp_path: Path, boxed: bool
) -> None:
    # Every seventh row is long enough to break over two pages, and the later chunk lays its
    # pages out twice (its first guess is off). Two of a reviewer's attacks, on pages far from
    # the cut: WeasyPrint zeroes a continued cell's top border on the box itself, and with
    # collapsed borders the second pass printed those rows half a border higher; and with the
    # long text in a bordered, padded block, moving the first pass's cell layouts printed
    # rows broken at other lines.
    rows = ledger_rows(420)
    for i, row in enumerate(rows):
        row["boxed"] = boxed and i % 7 == 0
        if i % 7 == 0:
            row["account"] += " " + " ".join(WORDS[(i + k) % len(WORDS)] for k in range(40))
    breaking = "@page { margin: 20mm } tr { break-inside: auto } td { orphans: 3; widows: 3 } "
    breaking += BOXED
    job = ledger_job(tmp_path, rows, extra_css=breaking)
    (tmp_path / "ledger.html").write_text(
        LEDGER.replace(
            "<td>{{ row.account }}</td>",
            '<td>{% if row.boxed %}<div class="box">{{ row.account }}</div>'
            "{% else %}{{ row.account }}{% endif %}</td>",
        ).replace("<p>{{ intro }}</p>", "")  # where the rows break: as the attack had it
    )
    whole, split = await both(pool, job)
    assert whole.pdf and split.pdf
    assert_prints_the_same(whole.pdf, split.pdf, tmp_path, seam_row(split))
    for page in range(1, whole.pages + 1):
        share = differing_share(
            picture(whole.pdf, page, tmp_path), picture(split.pdf, page, tmp_path)
        )
        assert share < 0.001, f"page {page} looks different ({share:.2%} of its pixels)"


async def test_a_fixed_layout_table_prints_the_same(pool: RenderPool, tmp_path: Path) -> None:
    # The header row declares the columns: no chunk measures its cells, and the long account
    # names wrap in the declared widths as in one piece.
    fixed = (
        "table { table-layout: fixed } th:first-child { width: 28mm } th:last-child { width: 30mm }"
    )
    job = ledger_job(tmp_path, ledger_rows(400, wrap_every=9), extra_css=fixed)
    whole, split = await both(pool, job)
    assert whole.pdf and split.pdf
    assert_prints_the_same(whole.pdf, split.pdf, tmp_path, seam_row(split))


async def test_a_template_with_running_headers_is_rendered_in_one_piece(
    pool: RenderPool, tmp_path: Path
) -> None:
    job = ledger_job(
        tmp_path,
        ledger_rows(400),
        extra_css="h1 { string-set: title content() } "
        "@page { @top-center { content: string(title) } }",
    )
    output = await pool.render(replace(job, split="on"))
    assert output.chunks == 1 and output.pdf
    assert "Page 1 of" in page_texts(output.pdf, tmp_path)[0]


@pytest.mark.parametrize("where", ["style", "import"])
async def test_zebra_striped_rows_are_rendered_in_one_piece_with_their_stripes(
    pool: RenderPool, tmp_path: Path, where: str
) -> None:
    # A chunk holds only its window of rows: split, the stripes of the later pages came out
    # swapped (a reviewer's attack), also from a file a <style> block @imports (the next
    # reviewer's). Such a template is laid out in one piece, stripes right.
    zebra = "tbody tr:nth-child(even) td { background: #dde }"
    job = ledger_job(tmp_path, ledger_rows(420), extra_css=zebra if where == "style" else "")
    if where == "import":
        (tmp_path / "zebra.css").write_text(zebra)
        (tmp_path / "ledger.html").write_text(
            LEDGER.replace("<style>", '<style>@import url("zebra.css");</style>\n<style>', 1)
        )
    whole = await pool.render(replace(job, split="off"))
    output = await pool.render(replace(job, split="on"))
    assert output.chunks == 1 and output.pdf and whole.pdf
    assert output.pages == whole.pages > 10
    for page in (output.pages // 2, output.pages):
        share = differing_share(
            picture(whole.pdf, page, tmp_path), picture(output.pdf, page, tmp_path)
        )
        assert share < 0.001, f"page {page} looks different ({share:.2%} of its pixels)"


async def test_short_reports_are_never_split(pool: RenderPool, tmp_path: Path) -> None:
    output = await pool.render(replace(ledger_job(tmp_path, ledger_rows(40)), split="on"))
    assert output.chunks == 1 and output.pages >= 1


async def test_the_template_can_turn_splitting_off(pool: RenderPool, tmp_path: Path) -> None:
    (tmp_path / "ledger.html").write_text(LEDGER)
    job = ledger_job(tmp_path, ledger_rows(400))
    (tmp_path / "ledger.html").write_text(
        LEDGER.replace("<title>", '<meta name="pressroom-split" content="off"><title>')
    )
    assert (await pool.render(replace(job, split="on"))).chunks == 1


# ---- failures ------------------------------------------------------------------------------------
async def test_a_chunk_that_reads_a_file_outside_the_template_folder_fails_the_report_once(
    pool: RenderPool, tmp_path: Path
) -> None:
    rows = ledger_rows(400)
    rows[380]["account"] = "x"
    job = ledger_job(tmp_path, rows)
    (tmp_path / "ledger.html").write_text(
        LEDGER.replace(
            "<td>{{ row.account }}</td>",
            "<td>{% if row.account == 'x' %}<img src='file:///etc/hostname'>{% endif %}"
            "{{ row.account }}</td>",
        )
    )
    with pytest.raises(ResourceBlocked) as failure:
        await pool.render(replace(job, split="on"))
    assert "outside its folder" in failure.value.reason
    # The pool is whole again: the next report renders.
    assert (await pool.render(ledger_job(tmp_path, ledger_rows(20)))).pdf


async def test_a_character_no_font_has_in_a_late_row_fails_with_every_missing_character(
    pool: RenderPool, tmp_path: Path
) -> None:
    rows = ledger_rows(400)
    rows[10]["account"] = "Account \U000f0041"  # private use: no font draws it
    rows[390]["account"] = "Account \U000f0042"
    with pytest.raises(MissingGlyphs) as failure:
        await pool.render(replace(ledger_job(tmp_path, rows), split="on"))
    assert "U+F0041" in failure.value.reason and "U+F0042" in failure.value.reason


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def test_a_group_over_the_render_timeout_is_stopped_and_the_pool_replaced(
    tmp_path: Path,
) -> None:
    pool = RenderPool(2, memory_mb=512, timeout=1.0, warm=False)
    try:
        with pytest.raises(RenderTimeout):
            await pool.run_group(_sleep, [600.0, 600.0], label="slow", timeout=lambda: 0.5)
        assert await pool.run_group(_sleep, [0.0, 0.0], label="quick", timeout=lambda: 60) == [
            0.0,
            0.0,
        ]
    finally:
        await pool.close()


# ---- the render processes are shared fairly ---------------------------------------------
async def test_a_group_waiting_for_every_process_is_not_overtaken() -> None:
    slots = Slots(2)
    order: list[str] = []
    release_first = asyncio.Event()

    async def single(name: str, hold: asyncio.Event | None = None) -> None:
        async with slots.hold(1):
            order.append(name)
            if hold is not None:
                await hold.wait()

    async def group() -> None:
        async with slots.hold(2):
            order.append("group")

    first = asyncio.create_task(single("first", release_first))
    await asyncio.sleep(0)
    waiting_group = asyncio.create_task(group())
    await asyncio.sleep(0)
    late = asyncio.create_task(single("late"))
    await asyncio.sleep(0)
    assert order == ["first"]  # one process is busy: the group waits, and so does "late"
    release_first.set()
    await asyncio.gather(first, waiting_group, late)
    assert order == ["first", "group", "late"]
    assert slots.free == 2


# ---- the CLI splits too -----------------------------------------------------------------
def test_pressroom_render_splits_over_its_render_processes(tmp_path: Path) -> None:
    (tmp_path / "ledger.html").write_text(LEDGER)
    data = tmp_path / "data.json"
    data.write_text(
        json.dumps(
            {
                "period": "2026-11",
                "intro": "Opening balances.",
                "outro": "Closed.",
                "extra_css": "",
                "rows": ledger_rows(330),
                "generation_time": "fixed",
            }
        )
    )
    outputs = []
    for workers, split in (("1", "off"), ("2", "on")):
        out = tmp_path / f"ledger-{workers}.pdf"
        result = pressroom(
            "render",
            "-t",
            str(tmp_path / "ledger.html"),
            "--data-file",
            str(data),
            "-o",
            str(out),
            "--split",
            split,
            env={"PRESSROOM_RENDER_WORKERS": workers},
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(out.read_bytes())
    assert page_texts(outputs[0], tmp_path) == page_texts(outputs[1], tmp_path)
    assert font_programs(outputs[0]) == font_programs(outputs[1])
