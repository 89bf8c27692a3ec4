"""Render time of one warm process, per workload: `python -m bench.render_time [N]`.

What font lookup and embedding cost: the same template with Latin-only data and with names in
every script (26 font faces, CJK among them). Importable by bench/run.py; runnable against an
older checkout (PYTHONPATH=that checkout) to compare before and after a font change.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from services.renderer.core import build_context, make_job
from services.renderer.pdf import render_job
from shared.events import ReportRequested
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "templates" / "samples"


def workloads(templates: Path) -> dict[str, dict[str, Any]]:
    found = {"latin": json.loads((SAMPLES / "portfolio.json").read_text())}
    multilingual = SAMPLES / "multilingual.json"
    if multilingual.is_file():
        found["every-script"] = json.loads(multilingual.read_text())
    return found


def render_seconds(data: dict[str, Any], n: int, templates: Path) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each render: CPU time barely moves when the machine is shared."""
    settings = Settings(templates_dir=templates, missing_glyphs="warn")
    request = ReportRequested(template="portfolio.html", request_id="bench")
    job = make_job(settings, "portfolio.html", build_context(request, data), ("pdf",))
    render_job(job)  # warm: imports, fontconfig, the fonts this data needs
    times = []
    for _ in range(n):
        started, cpu = time.perf_counter(), time.process_time()
        render_job(job)
        times.append((time.perf_counter() - started, time.process_time() - cpu))
    return times


def figures(n: int, templates: Path = REPO / "templates") -> dict[str, dict[str, float]]:
    result = {}
    for name, data in workloads(templates).items():
        times = render_seconds(data, n, templates)
        wall = sorted(t[0] for t in times)
        cpu = sorted(t[1] for t in times)
        result[name] = {
            "renders": n,
            "p50": statistics.median(wall),
            "min": wall[0],
            "max": wall[-1],
            "cpu_p50": statistics.median(cpu),
        }
    return result


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    for name, row in figures(count).items():
        print(
            f"{name:13} p50 {row['p50'] * 1000:6.0f} ms  min {row['min'] * 1000:6.0f} ms  "
            f"max {row['max'] * 1000:6.0f} ms  CPU p50 {row['cpu_p50'] * 1000:6.0f} ms  (n={count})"
        )
