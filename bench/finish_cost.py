"""What finishing a PDF costs against a plain render: `python -m bench.finish_cost [N]`.

One warm process renders weekly.html N times per option: plain; a watermark; AES-256 with a
reader's password; a PAdES B-B signature (a key and certificate of a test CA made here); B-T
(plus a timestamp from a loopback RFC 3161 server); and everything at once (two appended pages,
watermark, password, B-T). `make bench` runs it too (BENCH_ONLY=finish: this alone).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.renderer.core import build_context, make_job
from services.renderer.job import Finish, Signing
from services.renderer.pdf import render_job
from shared.events import ReportRequested
from shared.settings import Settings
from tests.pki import TestPki, TimestampServer

REPO = Path(__file__).resolve().parents[1]
SAMPLE = json.loads((REPO / "templates" / "samples" / "portfolio.json").read_text())


def _options(folder: Path, tsa_url: str) -> dict[str, Finish | None]:
    import weasyprint

    pki = TestPki.create(folder / "pki")
    (folder / "owner").write_text("owner-password")
    (folder / "reader").write_text("reader-password")
    terms = folder / "terms.pdf"
    weasyprint.HTML(string="<p>Terms</p><p style='break-before: page'>More terms</p>").write_pdf(
        terms
    )
    files = Signing(
        key_file=str(pki.folder / "signer.key"),
        cert_file=str(pki.folder / "signer.pem"),
        chain_file=str(pki.folder / "ca.pem"),
    )
    encrypt = {
        "user_password_file": str(folder / "reader"),
        "owner_password_file": str(folder / "owner"),
        "permissions": (True, False),
    }
    timestamped = replace(files, tsa_url=tsa_url)
    return {
        "plain": None,
        "watermark": Finish(watermarks=("DRAFT",)),
        "password (AES-256)": Finish(**encrypt),  # type: ignore[arg-type]
        "sign B-B": Finish(signing=files),
        "sign B-T (local TSA)": Finish(signing=timestamped),
        "all (append 2 pages, mark, password, B-T)": Finish(
            append=(str(terms),),
            watermarks=("CONFIDENTIAL — for Zoë",),
            signing=timestamped,
            **encrypt,  # type: ignore[arg-type]
        ),
    }


def figures(n: int) -> dict[str, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="pressroom-finish-bench-") as scratch:
        folder = Path(scratch)
        tsa = TimestampServer(TestPki.create(folder / "tsa")).start()
        try:
            options = _options(folder, tsa.url)
            settings = Settings(templates_dir=REPO / "templates")
            request = ReportRequested(template="weekly.html", request_id="bench")
            base = make_job(settings, "weekly.html", build_context(request, SAMPLE), ("pdf",))
            result: dict[str, dict[str, float]] = {}
            for name, spec in options.items():
                job = replace(base, finish=spec)
                render_job(job)  # warm: imports, fonts, the stamp's layout
                times, size = [], 0
                for _ in range(n):
                    started, cpu = time.perf_counter(), time.process_time()
                    output = render_job(job)
                    times.append((time.perf_counter() - started, time.process_time() - cpu))
                    size = len(output.pdf or b"")
                wall = sorted(t[0] for t in times)
                result[name] = {
                    "renders": n,
                    "p50": statistics.median(wall),
                    "cpu_p50": statistics.median(sorted(t[1] for t in times)),
                    "bytes": size,
                }
            plain = result["plain"]["p50"]
            for row in result.values():
                row["extra_ms"] = (row["p50"] - plain) * 1000
            return result
        finally:
            tsa.stop()


def markdown(rows: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "| weekly.html | p50 | CPU p50 | over plain | PDF bytes |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['p50'] * 1000:.0f} ms | {row['cpu_p50'] * 1000:.0f} ms | "
            f"{row['extra_ms']:+.0f} ms | {row['bytes']:,} |"
        )
    return lines


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print("\n".join(markdown(figures(count))))
