"""What archival, accessible and data outputs cost (issue 30): PDF/A, tags, XLSX/CSV.

`python -m bench.archive` (or `BENCH_ONLY=archive make bench`) prints the figures. Each render
runs in the renderer's own warm render process (RenderPool, one process, no bus), best of
BENCH_ROUNDS runs of BENCH_ARCHIVE_N renders each:

- the bundled portfolio template, ten pages (260 rows), as a plain PDF, as PDF/A-3b, tagged, and
  tagged PDF/A-3b (the bundled default);
- the exports of a 3,000-row table: the template rendered to HTML only, and to HTML plus XLSX
  (or CSV): the difference is what the export costs (a 3,000-row PDF takes ~30 s and would hide
  it).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from services.renderer.core import build_context, document_spec, make_job
from services.renderer.job import RenderJob
from services.renderer.pooled import RenderPool
from shared.events import ReportRequested
from shared.settings import Settings
from tests.helpers import REPO

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
N = int(os.environ.get("BENCH_ARCHIVE_N", "4"))
PDF_ROWS = 260  # the ten-page workload of bench/run.py
EXPORT_ROWS = int(os.environ.get("BENCH_LARGE_ROWS", "3000"))

VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"variant": None, "tagged": False},
    "pdf/a-3b": {"variant": "pdf/a-3b", "tagged": False},
    "tagged": {"variant": None, "tagged": True},
    "tagged pdf/a-3b (default)": {"variant": "pdf/a-3b", "tagged": True},
}


def data(rows: int) -> dict[str, Any]:
    base = SAMPLE["projects"]
    projects = [dict(base[i % len(base)], name=f"Project {i:04d}") for i in range(rows)]
    return {**SAMPLE, "projects": projects, "project_count": rows}


def job(rows: int, formats: tuple[str, ...], pdf: dict[str, Any] | None = None) -> RenderJob:
    settings = Settings(templates_dir=REPO / "templates")
    request = ReportRequested(
        template="portfolio.html",
        request_id="bench-archive",
        requested_at="2026-11-23T08:00:00Z",
        formats=list(formats),
        pdf=pdf,
    )
    context = data(rows)
    return make_job(
        settings,
        "portfolio.html",
        build_context(request, context),
        formats,
        document=document_spec(settings, request, context),
    )


async def _seconds(pool: RenderPool, render: RenderJob) -> tuple[float, int]:
    """Best of ROUNDS: mean seconds per render over N renders, and the output's size."""
    best = float("inf")
    size = 0
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(N):
            output = await pool.render(render)
        best = min(best, (time.perf_counter() - started) / N)
        size = len(output.pdf or b"") + sum(len(e.content) for e in output.exports)
    return best, size


async def measure() -> dict[str, Any]:
    pool = RenderPool(1, timeout=600)
    await pool.start()
    try:
        pdf: dict[str, Any] = {}
        for name, options in VARIANTS.items():
            seconds, size = await _seconds(pool, job(PDF_ROWS, ("pdf",), options))
            pdf[name] = {"seconds": seconds, "bytes": size}
        plain = pdf["plain"]["seconds"]
        for figures in pdf.values():
            figures["ratio"] = figures["seconds"] / plain
        exports: dict[str, Any] = {}
        for name, formats in (("html", ("html",)), ("xlsx", ("html", "xlsx"))):
            seconds, size = await _seconds(pool, job(EXPORT_ROWS, formats))
            exports[name] = {"seconds": seconds, "bytes": size}
        seconds, size = await _seconds(pool, job(EXPORT_ROWS, ("html", "csv")))
        exports["csv"] = {"seconds": seconds, "bytes": size}
    finally:
        await pool.close()
    return {"rounds": ROUNDS, "renders": N, "pdf_rows": PDF_ROWS, "pdf": pdf,
            "export_rows": EXPORT_ROWS, "exports": exports}  # fmt: skip


def markdown(found: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"## Archival and accessible PDFs, data exports (best of {found['rounds']} × "
        f"{found['renders']} renders, one warm render process)",
        "",
        f"| the portfolio, {found['pdf_rows']} rows (ten pages) | seconds per render | "
        "× plain | PDF size |",
        "|---|---|---|---|",
    ]
    for name, figures in found["pdf"].items():
        lines.append(
            f"| {name} | {figures['seconds']:.2f} | {figures['ratio']:.2f} | "
            f"{figures['bytes'] / 1024:.0f} KiB |"
        )
    html = found["exports"]["html"]["seconds"]
    lines += [
        "",
        f"| {found['export_rows']:,}-row table | seconds per render | export's own cost | size |",
        "|---|---|---|---|",
        f"| HTML only (Jinja) | {html:.2f} | — | — |",
    ]
    for name in ("xlsx", "csv"):
        figures = found["exports"][name]
        lines.append(
            f"| HTML + {name.upper()} | {figures['seconds']:.2f} | "
            f"{figures['seconds'] - html:.2f} s | {figures['bytes'] / 1024:.0f} KiB |"
        )
    return lines


if __name__ == "__main__":
    result = asyncio.run(measure())
    print(json.dumps(result, indent=2), file=sys.stderr)
    print("\n".join(markdown(result)))
