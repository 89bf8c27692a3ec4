"""`make bench`: the pipeline against a bare Jinja2 + WeasyPrint loop, measured in one run.

Starts a real stack on loopback (nats-server + worker processes), renders the same template and
data both ways on the same cores, and writes docs/benchmarks.json and docs/benchmarks.md.
BENCH_PDF=shipped|plain chooses the PDF both sides make, BENCH_RENDERERS (e.g. "2") the renderer
counts of the throughput rows.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench import archive, burst, finish_cost, longreport, render_time, speed
from bench.cluster import cluster_failover
from bench.cluster import markdown as cluster_markdown
from services.renderer.core import build_context, document_spec, finish_for, make_job
from services.renderer.job import RenderJob
from services.renderer.pdf import render_job
from services.renderer.pool import _worker_init
from shared.adapters.ledger import KvLedger
from shared.bus.names import LEDGER_BUCKET
from shared.events import ReportRequested
from shared.settings import Settings
from tests.helpers import REPO, Outcomes, Stack

DOCS = REPO / "docs"
SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
ONE_PAGE_N = int(os.environ.get("BENCH_ONE_PAGE", "32"))
TEN_PAGE_N = int(os.environ.get("BENCH_TEN_PAGE", "8"))
LATENCY_N = int(os.environ.get("BENCH_LATENCY", "20"))
LARGE_ROWS = int(os.environ.get("BENCH_LARGE_ROWS", "3000"))
FONTS_N = int(os.environ.get("BENCH_FONTS", "12"))
# Throughput: the pipeline and both loops take turns for THROUGHPUT_ROUNDS rounds and each ratio
# is the median of the rounds' ratios (this VM's neighbours make single runs vary by ±15 %).
THROUGHPUT_ROUNDS = max(1, int(os.environ.get("BENCH_THROUGHPUT_ROUNDS", "5")))
SIDES = ("pipeline", "naive", "bare")
# What PDF both sides make. "shipped": what the template asks for (the bundled templates: tagged
# PDF/A-3b); "plain": every request asks for an untagged PDF of no standard. Either way the bare
# loop's render jobs carry the same document options as the pipeline's (core.document_spec and
# core.finish_for of the same request), so like is compared with like.
PDF_MODE = os.environ.get("BENCH_PDF", "shipped")
# Renderer counts to measure (BENCH_RENDERERS=2 for the two-renderer row alone).
RENDERERS = [int(r) for r in os.environ.get("BENCH_RENDERERS", "1,2").split(",")]
PLAIN_PDF = {"variant": None, "tagged": False}


def request_pdf() -> dict[str, Any]:
    """The request's `pdf` options for the chosen mode (BENCH_PDF)."""
    if PDF_MODE not in ("shipped", "plain"):
        raise SystemExit(f"BENCH_PDF={PDF_MODE!r}: use shipped or plain")
    return {"pdf": PLAIN_PDF} if PDF_MODE == "plain" else {}


def workload_name(workload: str) -> str:
    return workload if PDF_MODE == "shipped" else f"{workload}, plain PDF"


def params(projects: int) -> dict[str, Any]:
    base = SAMPLE["projects"]
    rows = [dict(base[i % len(base)], name=f"Project {i:04d}") for i in range(projects)]
    return {**SAMPLE, "projects": rows, "project_count": projects}


WORKLOADS = {"one-page": params(12), "ten-page": params(260)}


def worker_env(**extra: str) -> dict[str, str]:
    """Worker settings for a bench stack; PRESSROOM_* set for `make bench` pass through."""
    passed = {k: v for k, v in os.environ.items() if k.startswith("PRESSROOM_")}
    # The render cache on, as shipped: every report has data of its own (speed.distinct).
    return {"PRESSROOM_LOG_LEVEL": "WARNING", **passed, **extra}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- the bare loop ---------------------------------------------------------------------------
def _bare_render(job: RenderJob) -> tuple[float, str | None, bool]:
    started = time.perf_counter()
    output = render_job(job)
    return time.perf_counter() - started, output.variant, output.tagged


def bare_job(settings: Settings, data: dict[str, Any], i: int) -> RenderJob:
    """The job the renderer service would make of the same request: the same context, document
    options (PDF/A, tags, metadata, provenance) and finishing."""
    request = ReportRequested.model_validate(
        {"template": "portfolio.html", "request_id": f"bare-{i}", **request_pdf()}
    )
    data = speed.distinct(data, i)
    return make_job(
        settings,
        "portfolio.html",
        build_context(request, data),
        ("pdf",),
        document=document_spec(settings, request, data),
        finish=finish_for(settings, request),
    )


def warm_pool(
    pool: ProcessPoolExecutor, render: Any, job: Callable[[int], Any], processes: int
) -> None:
    """One job per process first, to load imports and fonts (not counted)."""
    list(pool.map(render, [job(-i - 1) for i in range(processes)]))


def loop_round(
    pool: ProcessPoolExecutor, render: Any, job: Callable[[int], Any], first: int, n: int
) -> tuple[float, list[Any]]:
    """Reports per second of one round of `n` jobs (`job(i)`: the i-th report's, distinct data
    each), and what the jobs returned."""
    jobs = [job(first + i) for i in range(n)]
    started = time.perf_counter()
    done = list(pool.map(render, jobs))
    return n / (time.perf_counter() - started), done


def _bare_pool(processes: int) -> ProcessPoolExecutor:
    """Render processes as the renderer starts them (warm fonts, the tuned collector), with no
    memory cap: the warm loop is Pressroom's render without the bus."""
    return ProcessPoolExecutor(
        processes, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(0, True)
    )


# ---- the naive loop: what a person writes by hand ----------------------------------------------
_naive: dict[str, Any] = {}


def _naive_init(folder: str) -> None:
    """Once per process, as one would: a Jinja2 environment over the templates (with their own
    filters, so the same template renders) and the renderer's font configuration file (so both
    sides draw the same fonts). Nothing else is kept between reports."""
    import jinja2

    from services.renderer import fonts
    from services.renderer.templating import TemplateLibrary

    fonts.configure()
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    own = TemplateLibrary(Path(folder)).env
    env.filters.update(own.filters)
    env.globals.update(own.globals)
    _naive.update(env=env, folder=folder)


def _naive_render(args: tuple[dict[str, Any], dict[str, Any]]) -> float:
    """Jinja2, then `HTML(string=…).write_pdf()` with the PDF options the request resolves to."""
    import weasyprint

    context, options = args
    started = time.perf_counter()
    html = _naive["env"].get_template("portfolio.html").render(context)
    weasyprint.HTML(string=html, base_url=f"{_naive['folder']}/").write_pdf(**options)
    return time.perf_counter() - started


def naive_options(settings: Settings, data: dict[str, Any]) -> dict[str, Any]:
    """`write_pdf`'s options for the PDF standard and tags the pipeline's renders resolve to."""
    return speed.pdf_options(bare_job(settings, data, 0))


def _naive_pool(processes: int) -> ProcessPoolExecutor:
    folder = str((REPO / "templates").resolve())
    return ProcessPoolExecutor(
        processes, mp_context=get_context("spawn"), initializer=_naive_init, initargs=(folder,)
    )


# ---- the pipeline ----------------------------------------------------------------------------
async def publish(stack: Stack, bodies: list[dict[str, Any]]) -> None:
    nc = await stack.connect()
    js = nc.jetstream()
    for body in bodies:
        await js.publish("report.requested", json.dumps(body).encode())
    await nc.close()


def pipeline_body(data: dict[str, Any], rid: str, i: int) -> dict[str, Any]:
    return {
        "request_id": rid,
        "template": "portfolio.html",
        "params": speed.distinct(data, i),
        **request_pdf(),
    }


async def pipeline_round(
    stack: Stack, outcomes: Outcomes, data: dict[str, Any], label: str, first: int, n: int
) -> float:
    """Reports per second of `n` requests published at once, from the first publish to the
    last report.delivered."""
    rids = [f"{label}-{first + i}" for i in range(n)]
    bodies = [pipeline_body(data, rid, first + i) for i, rid in enumerate(rids)]
    started = time.perf_counter()
    await publish(stack, bodies)
    for rid in rids:
        await outcomes.delivered_event(rid, timeout=600)
    return n / (time.perf_counter() - started)


async def throughput_row(
    root: Path, data: dict[str, Any], n: int, renderers: int, label: str
) -> dict[str, Any]:
    """The pipeline, the naive loop and the warm loop on the same cores, THROUGHPUT_ROUNDS
    rounds of `n` reports each, the three sides taking turns round by round (in a rotating
    order), so a change in the machine's speed during the run falls on all three alike. Each
    ratio is the median of the rounds' ratios; each side's rate the median of its rounds."""
    settings = Settings(templates_dir=REPO / "templates")
    options = naive_options(settings, data)
    stack = await Stack(
        root / f"{label}-{renderers}",
        workers={"fetcher": 1, "renderer": renderers, "distributor": 1},
        env_extra=worker_env(),
    ).astart()
    try:
        nc = await stack.connect()
        outcomes = await Outcomes().start(nc)
        warm_up = [f"warm-{label}-{i}" for i in range(renderers * 2)]
        await publish(stack, [pipeline_body(data, r, -i - 1) for i, r in enumerate(warm_up)])
        for rid in warm_up:
            await outcomes.delivered_event(rid, timeout=300)
        with _bare_pool(renderers) as bare, _naive_pool(renderers) as naive:

            def bare_one(i: int) -> RenderJob:
                return bare_job(settings, data, i)

            def naive_one(i: int) -> tuple[dict[str, Any], dict[str, Any]]:
                return bare_job(settings, data, i).context, options

            warm_pool(bare, _bare_render, bare_one, renderers)
            warm_pool(naive, _naive_render, naive_one, renderers)
            before = speed.load()
            rounds: list[dict[str, float]] = []
            renders: list[Any] = []
            naive_renders: list[float] = []
            for round_ in range(THROUGHPUT_ROUNDS):
                first, found = round_ * n, {}
                for side in SIDES[round_ % 3 :] + SIDES[: round_ % 3]:
                    if side == "pipeline":
                        found[side] = await pipeline_round(
                            stack, outcomes, data, f"{label}-{renderers}", first, n
                        )
                    elif side == "naive":
                        found[side], done = loop_round(naive, _naive_render, naive_one, first, n)
                        naive_renders += done
                    else:
                        found[side], done = loop_round(bare, _bare_render, bare_one, first, n)
                        renders += done
                rounds.append(found)
            after = speed.load()
        await nc.close()
    finally:
        stack.stop()

    def figures(name: str, **more: Any) -> dict[str, Any]:
        """One side's figures: the median of its rounds' rates, and what else it knows."""
        rate = statistics.median(r[name] for r in rounds)
        return {"reports": n, "rounds": THROUGHPUT_ROUNDS, "per_second": rate, **more}

    load = [before, after]
    naive_pdf = f"{options.get('pdf_variant', 'plain')}{', tagged' if options['pdf_tags'] else ''}"
    return {
        "bare": figures(
            "bare",
            render_p50=statistics.median(t for t, _, _ in renders),
            pdf=sorted({f"{v or 'plain'}{', tagged' if t else ''}" for _, v, t in renders}),
            load=load,
        ),
        "naive": figures(
            "naive", render_p50=statistics.median(naive_renders), pdf=[naive_pdf], load=load
        ),
        "pipeline": figures("pipeline", load=load),
        "rounds": rounds,
        "ratio": statistics.median(r["pipeline"] / r["bare"] for r in rounds),
        "ratio_naive": statistics.median(r["pipeline"] / r["naive"] for r in rounds),
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * q // 100) - 1).__int__()]


async def latency(root: Path, n: int) -> dict[str, Any]:
    """One request at a time, on one connection: publish → report.delivered as a client sees it.

    Every request has data of its own. The same data again would measure nothing more: a PDF
    carries its own request's id, dates and provenance, so the render cache serves only a
    redelivery of the same request, and another request renders afresh."""
    result: dict[str, Any] = {"requests": n, "load": [speed.load()]}
    stack = await Stack(root / "latency", env_extra=worker_env()).astart()
    try:
        nc = await stack.connect()
        js = nc.jetstream()
        done: dict[str, asyncio.Future[float]] = {}

        async def on_delivered(msg: Any) -> None:
            rid = json.loads(msg.data)["request_id"]
            if rid in done and not done[rid].done():
                done[rid].set_result(time.perf_counter())

        await nc.subscribe("report.delivered", cb=on_delivered)
        ledger = KvLedger(await js.key_value(LEDGER_BUCKET))
        data = WORKLOADS["one-page"]
        latencies, overheads, renders = [], [], []
        for i in range(n + 2):
            rid = f"latency-{i}"
            done[rid] = asyncio.get_running_loop().create_future()
            body = {
                "request_id": rid,
                "template": "portfolio.html",
                "params": speed.distinct(data, i),
            }
            started = time.perf_counter()
            await js.publish("report.requested", json.dumps(body).encode())
            total = await asyncio.wait_for(done[rid], 120) - started
            entry = await ledger.get(rid)
            while entry is None or entry.render_seconds is None:
                await asyncio.sleep(0.005)
                entry = await ledger.get(rid)
            if i < 2:
                continue  # warm-up: the template's first use in its render process
            latencies.append(total)
            renders.append(entry.render_seconds)
            overheads.append(total - entry.render_seconds)
        await nc.close()
    finally:
        stack.stop()
    result.update(
        latency={f"p{q}": pct(latencies, q) for q in (50, 95, 99)},
        render={f"p{q}": pct(renders, q) for q in (50, 95, 99)},
        overhead={f"p{q}": pct(overheads, q) for q in (50, 95, 99)},
    )
    result["load"].append(speed.load())
    return result


def _children_hwm_kib(pid: int) -> int:
    """Peak resident memory (VmHWM) of a process and its children, from /proc."""
    peak = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().split()
            status = (entry / "status").read_text()
        except OSError:
            continue
        if int(entry.name) == pid or int(stat[3]) == pid:
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
    return peak


async def large_report(root: Path, rows: int, processes: int = 1) -> dict[str, Any]:
    """Publish → delivered of one long report; with 2+ render processes it is split (#17)."""
    stack = await Stack(
        root / f"large-{processes}",
        env_extra=worker_env(
            PRESSROOM_RENDER_TIMEOUT="600", PRESSROOM_RENDER_WORKERS=str(processes)
        ),
    ).astart()
    try:
        nc = await stack.connect()
        outcomes = await Outcomes().start(nc)
        data = params(rows)
        started = time.perf_counter()
        await publish(
            # A plain PDF: a tagged PDF/A report (the bundled default) is never split, and
            # this workload measures splitting (bench/archive.py measures what tags cost).
            stack,
            [
                {
                    "request_id": "large",
                    "template": "portfolio.html",
                    "params": data,
                    "pdf": {"variant": None, "tagged": False},
                }
            ],
        )
        delivered = await outcomes.delivered_event("large", timeout=900)
        elapsed = time.perf_counter() - started
        renderer = stack.procs["renderer"][0].pid
        peak_kib = _children_hwm_kib(renderer)
        ledger = KvLedger(await nc.jetstream().key_value(LEDGER_BUCKET))
        entry = await ledger.get("large")
        await nc.close()
        return {
            "rows": rows,
            "processes": processes,
            "seconds": elapsed,
            "render_seconds": entry.render_seconds if entry else None,
            "pdf_bytes": delivered["artefacts"][0]["size"],
            "peak_rss_mib": peak_kib / 1024,
        }
    finally:
        stack.stop()


def markdown(result: dict[str, Any]) -> str:
    t = result["throughput"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` on {result['machine']['cpus']} cores "
        f"({result['machine']['platform']}), {result['when']}. Same template "
        "(`portfolio.html`) and data every way; the loops are Jinja2 + WeasyPrint in the same "
        "number of processes, with no bus, store, ledger or delivery. The pipeline and both "
        f"loops take turns, {THROUGHPUT_ROUNDS} rounds of the same number of reports each (the "
        "order rotating), so a change in the machine's speed falls on all three alike: each "
        "ratio is the median of the rounds' ratios, each rate the median of its rounds. Every "
        "report has data of its own, and the render cache is on as shipped (it finds nothing to"
        " reuse). Every side makes the same PDF from the same request: the warm loop's jobs "
        "carry the document options and finishing the renderer service would give them (the PDF"
        " column: what its renders were; `plain PDF` rows: every request asked for an untagged "
        "PDF of no standard, BENCH_PDF=plain), the naive loop asks WeasyPrint for the same "
        "standard and tags. Two references: the **naive loop** is what a person writes by hand "
        "— Jinja2, then `HTML(string=…).write_pdf()` with the same PDF standard and tags, per "
        "report, in the same number of processes (issue 34's reference: target pipeline / naive"
        " ≥ 0.95); the **warm loop** is Pressroom's own render function in a loop, in render "
        "processes as the renderer starts them (warm fonts, stylesheets, template analysis, the"
        " tuned collector), so pipeline / warm is what the bus, ledger, store and delivery cost,"
        " and nothing else.",
        "",
        "## Throughput (reports/second)",
        "",
        "| workload | renderers | pipeline | naive loop | warm loop | pipeline / naive "
        "| pipeline / warm | load (1 min) | PDF |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload, rows in t.items():
        for r, row in sorted(rows.items()):
            sides = ("bare", "naive", "pipeline")
            loads = [x[0] for side in sides for x in row.get(side, {}).get("load", [])]
            shown = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "—"
            made = "; ".join(row["bare"].get("pdf", [])) or "not recorded"
            naive = row.get("naive", {}).get("per_second")
            lines.append(
                f"| {workload} | {r} | {row['pipeline']['per_second']:.2f} | "
                + (f"{naive:.2f} | " if naive else "not measured | ")
                + f"{row['bare']['per_second']:.2f} | "
                + (f"**{row['ratio_naive']:.2f}** | " if naive else "— | ")
                + f"**{row['ratio']:.2f}** | {shown} | {made} |"
            )
    lines += ["", "## Scaling", "", "| workload | 2 renderers / 1 renderer |", "|---|---|"]
    for workload, ratio in result["scaling"].items():
        lines.append(f"| {workload} | {ratio:.2f}× |")
    lat = result["latency"]
    lines += [
        "",
        f"## Latency at light load (one request at a time, n={lat['requests']})",
        "",
        "Render cache on, as shipped; each request has data of its own (the same data in another "
        "request renders afresh too: its PDF carries its own id, dates and provenance). "
        "Load average (1 min) before / after: "
        + " / ".join(f"{x[0]:.1f}" for x in lat.get("load", []))
        + ". Target: overhead p50 < 20 ms.",
        "",
        "| | p50 | p95 | p99 |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("latency", "publish → report.delivered"),
        ("render", "render (inside the renderer)"),
        ("overhead", "pipeline overhead (latency − render)"),
    ):
        row = lat[key]
        lines.append(
            f"| {label} | {row['p50'] * 1000:.0f} ms | {row['p95'] * 1000:.0f} ms | "
            f"{row['p99'] * 1000:.0f} ms |"
        )
    fonts = result.get("fonts")
    if fonts:
        latin, every = fonts["latin"], fonts["every-script"]
        lines += [
            "",
            f"## Fonts (one warm render process, n={latin['renders']})",
            "",
            "`portfolio.html` with the Latin sample and with `multilingual.json` (names in every "
            "bundled script: 26 font faces, CJK among them).",
            "",
            "| data | wall p50 | wall min | CPU p50 |",
            "|---|---|---|---|",
            f"| Latin only | {latin['p50'] * 1000:.0f} ms | {latin['min'] * 1000:.0f} ms "
            f"| {latin['cpu_p50'] * 1000:.0f} ms |",
            f"| every script | {every['p50'] * 1000:.0f} ms | {every['min'] * 1000:.0f} ms "
            f"| {every['cpu_p50'] * 1000:.0f} ms |",
            f"| every script / Latin | **{every['p50'] / latin['p50']:.2f}** | "
            f"| **{every['cpu_p50'] / latin['cpu_p50']:.2f}** |",
        ]
    big = result["large"]
    lines += [
        "",
        f"## Large report through the pipeline ({big['rows']:,} table rows)",
        "",
        "| renderer processes | publish → delivered | render | PDF size | peak memory "
        "(service + render processes) |",
        "|---|---|---|---|---|",
    ]
    for run in [big, *result.get("large_split", [])]:
        lines.append(
            f"| {run.get('processes', 1)} | {run['seconds']:.1f} s | "
            f"{run['render_seconds']:.1f} s | {run['pdf_bytes'] / 1024 / 1024:.2f} MiB | "
            f"{run['peak_rss_mib']:.0f} MiB |"
        )
    if result.get("warm") or result.get("soak"):
        plot = "benchmarks-soak.png" if (DOCS / "benchmarks-soak.png").is_file() else None
        lines += speed.markdown(result.get("warm"), result.get("soak"), plot)
    if "long" in result:
        lines += longreport.markdown(result["long"], result.get("write_phase"))
    if "statement" in result:
        lines += longreport.statement_markdown(result["statement"])
    if "cell_widths" in result:
        lines += longreport.cell_widths_markdown(result["cell_widths"])
    if "archive" in result:
        lines += archive.markdown(result["archive"])
    notes = DOCS / "benchmarks-notes.md"  # hand-written remarks on the figures
    if notes.is_file():
        lines += ["", notes.read_text().rstrip()]
    if "cluster" in result:
        lines += ["", *cluster_markdown(result["cluster"])]
    lines.append("")
    return "\n".join(lines)


def update_published(**sections: Any) -> None:
    """Put freshly measured sections into docs/benchmarks.json and rewrite benchmarks.md."""
    saved = DOCS / "benchmarks.json"
    published = json.loads(saved.read_text()) if saved.is_file() else {}
    published.update(sections)
    if {"throughput", "latency", "large"} <= set(published):
        saved.write_text(json.dumps(published, indent=2) + "\n")
        (DOCS / "benchmarks.md").write_text(markdown(published))


async def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="pressroom-bench-"))
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "throughput": {},
        "scaling": {},
    }
    only = os.environ.get("BENCH_ONLY")  # e.g. "ten-page", "fonts" or "cluster" while tuning
    if only in ("warm", "soak", "writes", "speed"):
        # Issue 34's figures alone; each updates its own section of the published figures.
        found = await speed.only(only, root, DOCS)
        update_published(**found)
        print("\n".join(speed.markdown(found.get("warm"), found.get("soak"), None)))
        return
    if only == "latency":
        found = {"latency": await latency(root, LATENCY_N)}
        update_published(**found)
        print(json.dumps(found, indent=2))
        return
    if only == "cells":
        found = {"cell_widths": longreport.cell_widths(LARGE_ROWS)}
        update_published(**found)
        print("\n".join(longreport.cell_widths_markdown(found["cell_widths"])))
        return
    if only == "statement":
        found = {"statement": await longreport.statement_report(LARGE_ROWS)}
        update_published(**found)
        print("\n".join(longreport.statement_markdown(found["statement"])))
        return
    if only == "burst":  # issue 33: bursting and lanes, one run (bench/burst.py)
        await burst.main()
        return
    if only == "archive":
        found = {"archive": await archive.measure()}
        update_published(**found)
        print("\n".join(archive.markdown(found["archive"])))
        return
    if only == "fonts":
        print(json.dumps(render_time.figures(FONTS_N), indent=2))
        return
    if only == "finish":  # issue 30's finishing options against a plain render
        print("\n".join(finish_cost.markdown(finish_cost.figures(FONTS_N))))
        return
    if only == "cluster":
        # Measure the cluster workload alone and update its section of the published figures.
        cluster = await cluster_failover(root)
        saved = DOCS / "benchmarks.json"
        published = json.loads(saved.read_text()) if saved.is_file() else {}
        if {"throughput", "latency", "large"} <= set(published):
            published["cluster"] = cluster
            saved.write_text(json.dumps(published, indent=2) + "\n")
            (DOCS / "benchmarks.md").write_text(markdown(published))
        print("\n".join(cluster_markdown(cluster)))
        return
    if only == "long":
        # Measure the long-report workload alone and update its section of the figures.
        long = await longreport.long_report(LARGE_ROWS, sorted({1, 2, os.cpu_count() or 1}))
        write = longreport.write_phase(LARGE_ROWS)
        saved = DOCS / "benchmarks.json"
        published = json.loads(saved.read_text()) if saved.is_file() else {}
        if {"throughput", "latency", "large"} <= set(published):
            published.update(long=long, write_phase=write)
            saved.write_text(json.dumps(published, indent=2) + "\n")
            (DOCS / "benchmarks.md").write_text(markdown(published))
        print("\n".join(longreport.markdown(long, write)))
        return
    for workload, n in (("one-page", ONE_PAGE_N), ("ten-page", TEN_PAGE_N)):
        if only and workload != only:
            continue
        data = WORKLOADS[workload]
        name = workload_name(workload)
        result["throughput"][name] = {}
        for renderers in RENDERERS:
            log(f"{name}: pipeline, naive loop and warm loop, {renderers} process(es) …")
            result["throughput"][name][str(renderers)] = await throughput_row(
                root, data, n, renderers, workload
            )
        if {"1", "2"} <= set(result["throughput"][name]):
            one, two = (result["throughput"][name][r]["pipeline"]["per_second"] for r in "12")
            result["scaling"][name] = two / one
    if only:
        if result["throughput"]:
            saved = DOCS / "benchmarks.json"
            published = json.loads(saved.read_text()) if saved.is_file() else {}
            throughput = published.get("throughput", {})
            scaling = published.get("scaling", {})
            for name, rows in result["throughput"].items():
                throughput.setdefault(name, {}).update(rows)
                if name in result["scaling"]:
                    scaling[name] = result["scaling"][name]
            update_published(throughput=throughput, scaling=scaling)
        print(json.dumps(result, indent=2))
        return
    log("fonts: Latin-only and every-script renders …")
    result["fonts"] = render_time.figures(FONTS_N)
    log("PDF finishing: watermark, password, signatures against a plain render …")
    result["finish"] = finish_cost.figures(FONTS_N)
    log("latency at light load …")
    result["latency"] = await latency(root, LATENCY_N)
    log("one warm render vs a naive loop …")
    result["warm"] = speed.warm_vs_naive()
    log(f"soak: {speed.SOAK_N} reports, render process memory and JetStream writes …")
    result["soak"] = await speed.soak(root)
    speed.save_plot(result["soak"], DOCS / "benchmarks-soak.png")
    log(f"large report ({LARGE_ROWS} rows) …")
    result["large"] = await large_report(root, LARGE_ROWS)
    log(f"large report ({LARGE_ROWS} rows), split over 2 render processes …")
    result["large_split"] = [await large_report(root, LARGE_ROWS, processes=2)]
    log(f"long report ({LARGE_ROWS} rows): one piece vs split, 1, 2 and all cores …")
    result["long"] = await longreport.long_report(LARGE_ROWS, sorted({1, 2, os.cpu_count() or 1}))
    log("the PDF write phase: HarfBuzz-Subset vs fontTools …")
    result["write_phase"] = longreport.write_phase(LARGE_ROWS)
    log(f"long tables ({LARGE_ROWS} rows): each cell measured vs each distinct cell once …")
    result["cell_widths"] = longreport.cell_widths(LARGE_ROWS)
    log("PDF/A, tags and exports against a plain render …")
    result["archive"] = await archive.measure()

    def publish() -> str:
        (DOCS / "benchmarks.json").write_text(json.dumps(result, indent=2) + "\n")
        text = markdown(result)
        (DOCS / "benchmarks.md").write_text(text)
        return text

    publish()  # the one-machine figures stay even if the cluster workload fails
    result["cluster"] = await cluster_failover(root)
    print(publish())


if __name__ == "__main__":
    # Workers and commands exec'd as a deployment starts them, not forked from the tests'
    # zygote (tests/cliproc.py): a forked worker's memory would count the zygote's modules.
    os.environ["TESTS_FORK_CLI"] = "0"
    asyncio.run(main())
