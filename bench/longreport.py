"""Long reports: one-piece vs split renders, and what the PDF write phase costs.

`python -m bench.longreport [ROWS]` prints the figures; bench/run.py puts them in
docs/benchmarks.md. The render processes are the renderer's own (RenderPool), without the bus.
Each figure is the best of BENCH_ROUNDS runs (the machine is shared), with the CPU time the
render processes used, so a busy machine shows as wall time far above CPU time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.renderer.core import build_context, document_spec, make_job
from services.renderer.job import RenderJob
from services.renderer.pooled import RenderPool
from shared.events import ReportRequested
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "templates" / "samples"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
CELL_ROUNDS = max(4, ROUNDS)  # the same render differs by up to 30 % between rounds here
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def portfolio(rows: int, sample: str = "portfolio.json") -> dict[str, Any]:
    data = json.loads((SAMPLES / sample).read_text())
    base = data["projects"]
    projects = [dict(base[i % len(base)], name=f"Project {i:04d}") for i in range(rows)]
    return {**data, "projects": projects, "project_count": rows}


def job_for(data: dict[str, Any], split: str) -> RenderJob:
    settings = Settings(templates_dir=REPO / "templates", missing_glyphs="warn")
    # A plain PDF: tagged and PDF/A reports are laid out in one piece (bench/archive.py).
    request = ReportRequested(
        template="portfolio.html", request_id="bench-long", pdf={"variant": None, "tagged": False}
    )
    job = make_job(
        settings,
        "portfolio.html",
        build_context(request, data),
        ("pdf",),
        split=split,
        document=document_spec(settings, request, data),
    )
    return replace(job, split_rows=1)


# ---- processes: CPU time and peak memory, from /proc ------------------------------------------
def _children() -> list[int]:
    """The render processes: this process's children started by multiprocessing's spawn."""
    me = str(os.getpid())
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                spawned = b"spawn_main" in (entry / "cmdline").read_bytes()
            except (OSError, IndexError):
                continue
            if parent == me and spawned:
                found.append(int(entry.name))
    return found


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _peak_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def measure(data: dict[str, Any], processes: int, split: str) -> dict[str, Any]:
    """Latency of one render (best of ROUNDS) in a fresh pool of `processes` processes."""
    pool = RenderPool(processes, memory_mb=4096, timeout=1800)
    await pool.start()
    try:
        job = job_for(data, split)
        await pool.render(job_for(portfolio(20), split))  # warm: templates, fonts of the data
        best: dict[str, Any] = {}
        for _ in range(ROUNDS):
            pids = _children()
            cpu_before = {pid: _cpu_seconds(pid) for pid in pids}
            started = time.perf_counter()
            output = await pool.render(job)
            wall = time.perf_counter() - started
            cpu = {pid: _cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in _children()}
            if not best or wall < best["seconds"]:
                best = {
                    "seconds": wall,
                    "cpu_seconds": sum(cpu.values()),
                    "busiest_process_cpu_seconds": max(cpu.values()),
                    "pages": output.pages,
                    "chunks": output.chunks,
                    "pdf_bytes": len(output.pdf or b""),
                }
        peaks = [_peak_mib(pid) for pid in _children()]
        best["peak_rss_mib_largest"] = max(peaks)
        best["peak_rss_mib_sum"] = sum(peaks)
        best["processes"] = processes
        best["rounds"] = ROUNDS
        return best
    finally:
        await pool.close()


async def ceiling(rows: int, processes: int) -> dict[str, Any]:
    """What no split can beat here and now: `processes` independent one-piece renders of
    rows/processes rows each, at the same time, in as many processes (no cutting, no merging)."""
    pool = RenderPool(processes, memory_mb=4096, timeout=1800)
    await pool.start()
    try:
        part = job_for(portfolio(rows // processes), "off")
        await asyncio.gather(
            *(pool.render(job_for(portfolio(20), "off")) for _ in range(processes))
        )
        best: dict[str, Any] = {}
        for _ in range(ROUNDS):
            pids = _children()
            cpu_before = {pid: _cpu_seconds(pid) for pid in pids}
            started = time.perf_counter()
            await asyncio.gather(*(pool.render(part) for _ in range(processes)))
            wall = time.perf_counter() - started
            cpu = [_cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in _children()]
            if not best or wall < best["seconds"]:
                best = {
                    "seconds": wall,
                    "cpu_seconds": sum(cpu),
                    "busiest_process_cpu_seconds": max(cpu),
                }
        best.update(processes=processes, rounds=ROUNDS)
        return best
    finally:
        await pool.close()


async def long_report(rows: int, process_counts: list[int]) -> dict[str, Any]:
    data = portfolio(rows)
    result: dict[str, Any] = {"rows": rows, "load_before": os.getloadavg()}
    result["one_piece"] = await measure(data, 1, "off")
    result["split"] = {}
    for processes in process_counts:
        if processes < 2:
            continue  # a split needs two processes; with one, the report renders in one piece
        result["split"][str(processes)] = await measure(data, processes, "on")
    result["ceiling"] = await ceiling(rows, 2)
    result["load_after"] = os.getloadavg()
    return result


# ---- a held-out kind of long report: a bank statement -------------------------------------------
STATEMENT_DIR = REPO / "bench" / "templates"


def statement(rows: int) -> dict[str, Any]:
    """A statement of `rows` transactions, with totals and notes after the table."""
    balance = 10_000.0
    transactions = []
    debit_total = credit_total = 0.0
    for i in range(rows):
        debit = round(((i * 37) % 500) + 0.99, 2) if i % 3 else 0.0
        credit = 0.0 if i % 3 else round(((i * 53) % 900) + 0.5, 2)
        balance += credit - debit
        debit_total += debit
        credit_total += credit
        transactions.append(
            {
                "date": f"2026-{1 + i * 12 // rows:02d}-{1 + i % 28:02d}",
                "description": ("Card payment " if debit else "Transfer from ")
                + ["Grocer", "Rail", "Payroll", "Utilities", "Bookshop"][i % 5]
                + (" and sons" if i % 7 == 0 else ""),
                "reference": f"REF{i:07d}",
                "debit": debit,
                "credit": credit,
                "balance": round(balance, 2),
            }
        )
    return {
        "bank": "Pressroom Savings",
        "account": "DE00 1234 5678 9012 3456 78",
        "holder": "A. N. Example",
        "period": "2026",
        "opening": 10_000.0,
        "transactions": transactions,
        "total_debit": debit_total,
        "total_credit": credit_total,
        "closing": balance,
        "notes": [f"Note {n}: interest and fees are shown as separate lines." for n in range(6)],
    }


# The statement's table with `table-layout: fixed` and declared column widths (its header row).
FIXED_CSS = """<style>
  table.tx { table-layout: fixed; }
  table.tx th:nth-child(1) { width: 17mm; } table.tx th:nth-child(3) { width: 22mm; }
  table.tx th:nth-child(4), table.tx th:nth-child(5) { width: 20mm; }
  table.tx th:nth-child(6) { width: 23mm; }
</style>
"""


def fixed_statement_dir() -> Path:
    """A copy of the statement's templates whose table declares a fixed layout."""
    folder = Path(tempfile.mkdtemp(prefix="pressroom-bench-statement-"))
    for template in STATEMENT_DIR.glob("*.html"):
        text = template.read_text()
        if template.name == "_statement_base.html":
            text = text.replace("</head>", FIXED_CSS + "</head>")
        (folder / template.name).write_text(text)
    return folder


def statement_job(rows: int, split: str, templates: Path = STATEMENT_DIR) -> RenderJob:
    settings = Settings(templates_dir=templates, missing_glyphs="warn")
    request = ReportRequested(template="statement.html", request_id="bench-statement")
    job = make_job(
        settings, "statement.html", build_context(request, statement(rows)), ("pdf",), split=split
    )
    return replace(job, split_rows=1)


async def _statement_once(
    processes: int, rows: int, split: str, templates: Path = STATEMENT_DIR, rounds: int = ROUNDS
) -> dict[str, Any]:
    pool = RenderPool(processes, memory_mb=4096, timeout=1800)
    await pool.start()
    chunk_stats: list[list[dict[str, float]]] = []
    steps: dict[str, float] = {}  # wall seconds of the render's steps: plan, chunks, merge
    original_group, original_run = pool.run_group, pool.run

    async def capturing(fn: Any, jobs: list[Any], **kwargs: Any) -> list[Any]:
        started = time.perf_counter()
        results = await original_group(fn, jobs, **kwargs)
        steps["chunks"] = time.perf_counter() - started
        chunk_stats.append([r.stats for r in results])
        return results

    async def timed(fn: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        result = await original_run(fn, *args, **kwargs)
        name = {"render_or_plan": "plan", "merge_and_finish": "merge"}.get(fn.__name__)
        if name:
            steps[name] = time.perf_counter() - started
        return result

    pool.run_group = capturing  # type: ignore[method-assign]
    pool.run = timed  # type: ignore[method-assign]
    try:
        await pool.render(statement_job(40, split, templates))  # warm
        chunk_stats.clear()
        job = statement_job(rows, split, templates)
        best: dict[str, Any] = {}
        for _ in range(rounds):
            pids = _children()
            cpu_before = {pid: _cpu_seconds(pid) for pid in pids}
            steps.clear()
            started = time.perf_counter()
            output = await pool.render(job)
            wall = time.perf_counter() - started
            cpu = {pid: _cpu_seconds(pid) - cpu_before.get(pid, 0.0) for pid in _children()}
            if not best or wall < best["seconds"]:
                best = {
                    "seconds": wall,
                    "cpu_seconds": sum(cpu.values()),
                    "busiest_process_cpu_seconds": max(cpu.values()),
                    "pages": output.pages,
                    "chunks": output.chunks,
                    "pdf_bytes": len(output.pdf or b""),
                    "html_seconds": output.html_seconds,
                    "chunk_stats": chunk_stats[-1] if chunk_stats else [],
                    "steps": dict(steps),
                    "load": os.getloadavg()[0],
                }
        best.update(processes=processes, rounds=rounds)
        return best
    finally:
        await pool.close()


# One piece and split take turns, each in a fresh pool: this host's speed drifts by 10-30 %
# within minutes, so a split measured a minute after its one piece compares two hosts.
STATEMENT_PAIRS = max(3, ROUNDS)


async def statement_pairs(
    rows: int, processes: int = 2, templates: Path = STATEMENT_DIR, pairs: int = STATEMENT_PAIRS
) -> dict[str, Any]:
    """`pairs` rounds of one piece and split, alternated (the order swapped each round): each
    round's ratios, their medians, and the fastest of each way for the table."""
    rounds: list[dict[str, Any]] = []
    for n in range(pairs):
        order = ("off", "on") if n % 2 == 0 else ("on", "off")
        found = {}
        for split in order:
            found[split] = await _statement_once(
                1 if split == "off" else processes, rows, split, templates, rounds=1
            )
        one, parts = found["off"], found["on"]
        rounds.append(
            {
                "one_piece": one,
                "split": parts,
                "ratio": one["seconds"] / parts["seconds"],
                "cpu_ratio": one["cpu_seconds"] / critical_cpu(parts),
            }
        )
    return {
        "one_piece": {
            **min((r["one_piece"] for r in rounds), key=lambda f: f["seconds"]),
            "rounds": pairs,
        },
        "split": {
            **min((r["split"] for r in rounds), key=lambda f: f["seconds"]),
            "rounds": pairs,
        },
        "pairs": [
            {
                "one_piece_seconds": r["one_piece"]["seconds"],
                "split_seconds": r["split"]["seconds"],
                "ratio": r["ratio"],
                "cpu_ratio": r["cpu_ratio"],
            }
            for r in rounds
        ],
        "ratio": statistics.median(r["ratio"] for r in rounds),
        "cpu_ratio": statistics.median(r["cpu_ratio"] for r in rounds),
    }


def _summary(found: dict[str, Any]) -> dict[str, Any]:
    return {key: found[key] for key in ("pairs", "ratio", "cpu_ratio")}


async def statement_report(rows: int, process_counts: tuple[int, ...] = (2,)) -> dict[str, Any]:
    """One piece vs split for the statement (a template the split was not tuned on)."""
    result: dict[str, Any] = {"rows": rows, "load_before": os.getloadavg()}
    paired = {str(p): await statement_pairs(rows, p) for p in process_counts}
    first = paired[str(process_counts[0])]
    result["one_piece"] = first["one_piece"]
    result["split"] = {
        p: {**found["split"], "paired": _summary(found)} for p, found in paired.items()
    }
    if os.environ.get("BENCH_FIXED", "1") == "1":
        fixed = fixed_statement_dir()
        try:
            found = await statement_pairs(rows, max(process_counts), fixed)
            result["fixed"] = {
                "one_piece": found["one_piece"],
                "split": {**found["split"], "paired": _summary(found)},
            }
        finally:
            shutil.rmtree(fixed, ignore_errors=True)
    result["load_after"] = os.getloadavg()
    return result


def _chunk_cpu(stats: dict[str, float]) -> dict[str, float]:
    """A chunk's CPU seconds per step (the stats hold CPU seconds since the chunk started)."""
    steps = ("boxes", "measure", "layout", "margins", "write")
    marks = [stats.get(f"{step}_cpu", 0.0) for step in steps]
    previous = [0.0, *marks[:-1]]
    return {step: mark - before for step, mark, before in zip(steps, marks, previous, strict=True)}


def critical_cpu(split: dict[str, Any]) -> float:
    """The split's latency floor on idle cores: the plan and the merge (wall, serial) and the
    busiest chunk's CPU."""
    steps = split.get("steps", {})
    chunks = [_chunk_cpu(st) for st in split.get("chunk_stats") or []]
    busiest = max((sum(c.values()) for c in chunks), default=split["busiest_process_cpu_seconds"])
    return float(steps.get("plan", 0.0) + busiest + steps.get("merge", 0.0))


def statement_markdown(found: dict[str, Any]) -> list[str]:
    one = found["one_piece"]
    lines = [
        "",
        f"## Long report, held-out kind: a {found['rows']:,}-row statement",
        "",
        "`bench/templates/statement.html`: extends a base template, totals and notes after the "
        'table, "Page X of Y" in the footer, header lines in the top margin. One piece and '
        f"split take turns, {one['rounds']} rounds each way (the order swapped each round, each "
        "render in a fresh pool of warm processes): the speed-ups are the medians of the "
        "rounds' ratios (each round's below), the latencies the fastest of each way. Load "
        f"average (1 min) before / after: {found['load_before'][0]:.1f} / "
        f"{found['load_after'][0]:.1f}. Target: split over 2 processes ≥ 1.8× one piece. The "
        "machine is shared: besides the latency, the CPU speed-up compares the one piece's CPU "
        "with the split's floor on idle cores (plan and merge as measured, the busiest "
        "chunk's CPU).",
        "",
        "| render | latency | speed-up | CPU (all) | floor | CPU speed-up | Jinja | pages | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups = [("", one, found["split"])]
    if "fixed" in found:
        fixed = found["fixed"]
        groups.append((", fixed layout", fixed["one_piece"], {"fixed": fixed["split"]}))
    for suffix, whole, splits in groups:
        lines.append(
            f"| one piece{suffix} | {whole['seconds']:.1f} s | 1.00× "
            f"| {whole['cpu_seconds']:.1f} s | {whole['cpu_seconds']:.1f} s | 1.00× "
            f"| {whole['html_seconds']:.2f} s | {whole['pages']} | {whole.get('load', 0):.1f} |"
        )
        for figures in splits.values():
            floor = critical_cpu(figures)
            paired = figures.get("paired") or {}
            ratio = paired.get("ratio", whole["seconds"] / figures["seconds"])
            cpu_ratio = paired.get("cpu_ratio", whole["cpu_seconds"] / floor)
            lines.append(
                f"| split in {figures['chunks']}{suffix} | {figures['seconds']:.1f} s "
                f"| **{ratio:.2f}×** "
                f"| {figures['cpu_seconds']:.1f} s | {floor:.1f} s "
                f"| **{cpu_ratio:.2f}×** "
                f"| {figures['html_seconds']:.2f} s | {figures['pages']} "
                f"| {figures.get('load', 0):.1f} |"
            )
    for suffix, _, splits in groups:
        for figures in splits.values():
            pairs = (figures.get("paired") or {}).get("pairs") or []
            if pairs:
                lines += [
                    "",
                    f"Each round{suffix}, one piece / split in {figures['chunks']} "
                    "(latency; CPU speed-up): "
                    + "; ".join(
                        f"{p['one_piece_seconds']:.1f} / {p['split_seconds']:.1f} s = "
                        f"{p['ratio']:.2f}× ({p['cpu_ratio']:.2f}×)"
                        for p in pairs
                    )
                    + ".",
                ]
    for suffix, _, splits in groups:
        for figures in splits.values():
            stats = figures.get("chunk_stats") or []
            if not stats:
                continue
            steps = figures.get("steps", {})
            lines += [
                "",
                f"Where the split in {figures['chunks']}{suffix} spends its time: plan (Jinja and "
                f"the cut) {steps.get('plan', 0):.2f} s, chunks {steps.get('chunks', 0):.2f} s, "
                f"merge {steps.get('merge', 0):.2f} s (wall); each chunk's CPU seconds:",
                "",
                "| chunk | boxes | widths measured | layout | margins | written | all "
                "| cells copied | pages laid out twice |",
                "|---|---|---|---|---|---|---|---|---|",
            ]
            for n, st in enumerate(stats):
                cpu = _chunk_cpu(st)
                lines.append(
                    f"| {n} | {cpu['boxes']:.2f} | {cpu['measure']:.2f} | {cpu['layout']:.2f} "
                    f"| {cpu['margins']:.2f} | {cpu['write']:.2f} | {sum(cpu.values()):.2f} "
                    f"| {int(st.get('cell_copies', 0))} | {int(st.get('second_pass_pages', 0))} |"
                )
    return lines


# ---- the write phase: HarfBuzz-Subset vs fontTools ---------------------------------------------
def _write_phase_child(path: str, subsetter: str) -> dict[str, float]:
    """Layout and write CPU of one warm render (runs in a fresh process)."""
    from services.renderer import fonts

    fonts.configure()
    import weasyprint
    import weasyprint.pdf.fonts as pdf_fonts

    if subsetter == "fonttools":
        pdf_fonts.harfbuzz_subset = None  # what WeasyPrint does without libharfbuzz-subset0
    import logging

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    html = Path(path).read_text()
    weasyprint.HTML(string=fonts.WARM_UP_HTML).write_pdf()
    figures: dict[str, float] = {}
    for _ in range(ROUNDS):
        cpu = time.process_time()
        document = weasyprint.HTML(string=html, base_url=str(REPO / "templates") + "/").render()
        layout = time.process_time() - cpu
        cpu = time.process_time()
        pdf = document.write_pdf()
        write = time.process_time() - cpu
        if not figures or layout + write < figures["layout"] + figures["write"]:
            figures = {"layout": layout, "write": write, "bytes": float(len(pdf))}
    return figures


def write_phase(rows: int) -> dict[str, Any]:
    """CPU seconds of layout and write, per subsetter, for three documents."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from services.renderer.fonts import harfbuzz_subset_available
    from services.renderer.pdf import render_html

    documents = {
        "one page, Latin": portfolio(12),
        "one page, every script": json.loads((SAMPLES / "multilingual.json").read_text()),
        f"{rows:,} rows, Latin": portfolio(rows),
    }
    result: dict[str, Any] = {"harfbuzz_subset_installed": harfbuzz_subset_available()}
    folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"pressroom-bench-write-{os.getpid()}"
    folder.mkdir(parents=True, exist_ok=True)
    for label, data in documents.items():
        path = folder / f"{len(result)}.html"
        path.write_text(render_html(job_for(data, "off"))[2])
        result[label] = {}
        for subsetter in ("harfbuzz", "fonttools"):
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                result[label][subsetter] = pool.submit(
                    _write_phase_child, str(path), subsetter
                ).result()
    return result


# ---- each distinct cell measured once (services/renderer/cellwidths.py) -------------------------
def _cell_widths_child(path: str, base: str) -> dict[str, Any]:
    """Layout CPU of one warm render, cells measured once per distinct cell and each apart,
    alternated (runs in a fresh process); the time in WeasyPrint's column-width pass."""
    import hashlib
    import logging

    from services.renderer import cellwidths, fonts

    fonts.configure()
    import weasyprint
    from weasyprint.layout import preferred, table

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    cellwidths.install()
    spent = [0.0]
    measure = preferred.table_and_columns_preferred_widths

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return measure(*args, **kwargs)
        finally:
            spent[0] += time.process_time() - started

    preferred.table_and_columns_preferred_widths = timed
    table.table_and_columns_preferred_widths = timed  # type: ignore[attr-defined]
    html = Path(path).read_text()
    weasyprint.HTML(string=fonts.WARM_UP_HTML).write_pdf()
    runs: dict[str, list[dict[str, float]]] = {"each": [], "once": []}
    digests = set()
    for round_ in range(CELL_ROUNDS):
        for way in ("each", "once") if round_ % 2 == 0 else ("once", "each"):
            spent[0] = 0.0
            before = dict(cellwidths.totals)
            with cellwidths.disabled() if way == "each" else contextlib.nullcontext():
                cpu = time.process_time()
                document = weasyprint.HTML(string=html, base_url=base).render()
                layout = time.process_time() - cpu
            digests.add(hashlib.sha256(document.write_pdf() or b"").hexdigest())
            runs[way].append(
                {
                    "layout": layout,
                    "widths": spent[0],
                    "reused": cellwidths.totals["reused"] - before["reused"],
                    "measured": cellwidths.totals["measured"] - before["measured"],
                }
            )
    median = {
        way: {k: statistics.median(r[k] for r in found) for k in found[0]}
        for way, found in runs.items()
    }
    pairs = [e["layout"] / o["layout"] for e, o in zip(runs["each"], runs["once"], strict=True)]
    return {**median, "ratio": statistics.median(pairs), "identical": len(digests) == 1}


def cell_widths(rows: int) -> dict[str, Any]:
    """Layout CPU with each cell measured vs each distinct cell once, for two long tables."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from services.renderer.pdf import render_html

    documents = {
        f"`portfolio.html`, {rows:,} rows": (job_for(portfolio(rows), "off"), REPO / "templates"),
        f"statement, {rows:,} rows": (statement_job(rows, "off"), STATEMENT_DIR),
    }
    result: dict[str, Any] = {"load_before": os.getloadavg()[0]}
    folder = Path(tempfile.mkdtemp(prefix="pressroom-bench-cells-"))
    try:
        for label, (job, base) in documents.items():
            path = folder / f"{len(result)}.html"
            path.write_text(render_html(job)[2])
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                result[label] = pool.submit(_cell_widths_child, str(path), f"{base}/").result()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["load_after"] = os.getloadavg()[0]
    return result


def cell_widths_markdown(found: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Long tables: each distinct cell measured once",
        "",
        "Before it lays a table out, WeasyPrint measures every cell's min- and max-content "
        "width. A render process measures each distinct cell (its boxes, texts and styles) "
        "once per render instead (services/renderer/cellwidths.py). CPU seconds of one warm "
        f"render's layout in a fresh process, {CELL_ROUNDS} rounds, the two ways alternated "
        "(the order swapped every round): medians, and the median of the rounds' ratios. The "
        "column-width pass is WeasyPrint's `table_and_columns_preferred_widths`. Load average "
        f"(1 min) before / after: {found['load_before']:.1f} / {found['load_after']:.1f}.",
        "",
        "| document | layout, each cell | layout, once per distinct cell | ratio "
        "| width pass, each / once | cells measured / reused | same PDF |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, run in found.items():
        if not isinstance(run, dict):
            continue
        each, once = run["each"], run["once"]
        lines.append(
            f"| {label} | {each['layout']:.2f} s | {once['layout']:.2f} s | "
            f"**{run['ratio']:.2f}×** | {each['widths']:.2f} s / "
            f"{once['widths']:.2f} s | {once['measured']:,.0f} / {once['reused']:,.0f} | "
            f"{'yes' if run['identical'] else '**no**'} |"
        )
    return lines


def markdown(long: dict[str, Any], write: dict[str, Any] | None) -> list[str]:
    one = long["one_piece"]
    lines = [
        "",
        f"## Long report: one piece vs split ({long['rows']:,} table rows, `portfolio.html`)",
        "",
        "The renderer's own render processes without the bus; best of "
        f"{one['rounds']} runs each. CPU is what the render processes used (all of them); "
        '"busiest" is the one process that worked longest — the floor of the split\'s '
        "latency on an idle machine. Peak memory: the largest process, and all processes "
        "added up. Load average (1/5/15 min) before: "
        + " / ".join(f"{x:.1f}" for x in long["load_before"])
        + ", after: "
        + " / ".join(f"{x:.1f}" for x in long["load_after"])
        + ".",
        "",
        "| render | processes | latency | speed-up | CPU (all) | CPU (busiest) | CPU speed-up "
        "| peak RSS largest / sum | pages | PDF size |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def row(name: str, figures: dict[str, Any]) -> str:
        speed = one["seconds"] / figures["seconds"]
        cpu_speed = one["busiest_process_cpu_seconds"] / figures["busiest_process_cpu_seconds"]
        return (
            f"| {name} | {figures['processes']} | {figures['seconds']:.1f} s | **{speed:.2f}×** "
            f"| {figures['cpu_seconds']:.1f} s | {figures['busiest_process_cpu_seconds']:.1f} s "
            f"| {cpu_speed:.2f}× "
            f"| {figures['peak_rss_mib_largest']:.0f} / {figures['peak_rss_mib_sum']:.0f} MiB "
            f"| {figures['pages']} | {figures['pdf_bytes'] / 1024:.0f} KiB "
            f"({figures['pdf_bytes'] / one['pdf_bytes'] - 1:+.1%}) |"
        )

    lines.append(row("one piece", one))
    for figures in long["split"].values():
        lines.append(row(f"split in {figures['chunks']}", figures))
    top = long.get("ceiling")
    if top:
        lines += [
            "",
            f"What no split can beat on this machine at the time: {top['processes']} independent "
            f"one-piece renders of {long['rows'] // top['processes']:,} rows at once (no cutting, "
            f"no merging) took {top['seconds']:.1f} s ({one['seconds'] / top['seconds']:.2f}× "
            f"the one-piece latency), CPU {top['cpu_seconds']:.1f} s, the busiest process "
            f"{top['busiest_process_cpu_seconds']:.1f} s "
            f"({one['busiest_process_cpu_seconds'] / top['busiest_process_cpu_seconds']:.2f}×).",
        ]
    if write:
        lines += [
            "",
            "## The PDF write phase: HarfBuzz-Subset vs fontTools",
            "",
            "CPU seconds of one warm render, layout and write apart (best of "
            f"{ROUNDS}); fontTools is what WeasyPrint uses without `libharfbuzz-subset0`. "
            f"HarfBuzz-Subset installed here: {write['harfbuzz_subset_installed']}.",
            "",
            "| document | layout | write, HarfBuzz | write, fontTools "
            "| render, fontTools / HarfBuzz |",
            "|---|---|---|---|---|",
        ]
        for label, figures in write.items():
            if not isinstance(figures, dict):
                continue
            hb, ft = figures["harfbuzz"], figures["fonttools"]
            ratio = (ft["layout"] + ft["write"]) / (hb["layout"] + hb["write"])
            lines.append(
                f"| {label} | {hb['layout']:.2f} s | {hb['write']:.2f} s | {ft['write']:.2f} s "
                f"| {ratio:.2f}× |"
            )
    return lines


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    cores = os.cpu_count() or 1
    figures = asyncio.run(long_report(count, sorted({1, 2, cores})))
    write = write_phase(count) if os.environ.get("BENCH_WRITE", "1") == "1" else None
    print(json.dumps({"long": figures, "write": write}, indent=2))
    print("\n".join(markdown(figures, write)))
