"""Issue 34's figures: a warm render vs a naive WeasyPrint loop, the render processes' memory over
thousands of reports, and the JetStream writes one report causes.

`BENCH_ONLY=warm|soak|writes make bench` measures one of them (bench/run.py); BENCH_SOAK sets
the soak's report count (5,000 by default), BENCH_SOAK_SECONDS a time limit (the soak stops at
its next sample past it). The soak and `writes` also give the CPU per report of each process.
Every figure is a ratio or a slope measured in one run, with the load average beside it: the
machine is shared.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.plot import line_plot
from services.renderer.core import build_context, make_job
from services.renderer.job import RenderJob
from services.renderer.pool import rss_mib
from shared.events import ReportRequested
from shared.settings import Settings
from tests.helpers import REPO, Outcomes, Stack

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())
SOAK_N = int(os.environ.get("BENCH_SOAK", "5000"))
# A time limit for the soak (0: none): past it, the soak stops at its next sample and gives the
# slope over the reports done (a shared machine may not fit 5,000 in the time there is).
SOAK_SECONDS = float(os.environ.get("BENCH_SOAK_SECONDS", "0"))
WARM_N = int(os.environ.get("BENCH_WARM", "30"))
WARM_ROUNDS = int(os.environ.get("BENCH_WARM_ROUNDS", "3"))


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def distinct(data: dict[str, Any], i: int) -> dict[str, Any]:
    """The same report with data of its own (the render cache cannot answer it)."""
    projects = [dict(p) for p in data["projects"]]
    projects[0]["name"] = f"{projects[0]['name']} #{i}"
    return {**data, "projects": projects}


def params(projects: int) -> dict[str, Any]:
    base = SAMPLE["projects"]
    rows = [dict(base[i % len(base)], name=f"Project {i:04d}") for i in range(projects)]
    return {**SAMPLE, "projects": rows, "project_count": projects}


# ---- one warm render vs a naive loop ------------------------------------------------------------
def _job(data: dict[str, Any]) -> RenderJob:
    settings = Settings(templates_dir=REPO / "templates")
    request = ReportRequested(template="portfolio.html", request_id="bench-warm")
    return make_job(settings, "portfolio.html", build_context(request, data), ("pdf",))


def pdf_options(job: RenderJob) -> dict[str, Any]:
    """`write_pdf`'s options for the PDF standard and tags the job's render resolves to: a naive
    loop asks WeasyPrint for the same PDF as Pressroom makes."""
    from services.renderer.pdf import resolved_document

    resolved = resolved_document(job, job.template)
    options: dict[str, Any] = {"pdf_tags": resolved.tagged}
    if resolved.variant:
        options["pdf_variant"] = resolved.variant
    return options


def _naive(data: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """What a person writes by hand: Jinja2, then `HTML(string=…).write_pdf()`, per report
    (the renderer's font configuration file, so both draw the same fonts; the same PDF
    standard and tags as the warm render's)."""
    import jinja2
    import weasyprint

    from services.renderer import fonts

    fonts.configure()
    folder = REPO / "templates"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    from services.renderer.templating import TemplateLibrary

    env.filters.update(TemplateLibrary(folder).env.filters)  # the templates' own filters
    env.globals.update(TemplateLibrary(folder).env.globals)
    options = pdf_options(_job(data[0]))
    times = []
    for i, context in enumerate([data[0], *data]):
        started, cpu = time.perf_counter(), time.process_time()
        html = env.get_template("portfolio.html").render(_job(context).context)
        weasyprint.HTML(string=html, base_url=f"{folder}/").write_pdf(**options)
        if i:  # the first one loads imports and fonts
            times.append((time.perf_counter() - started, time.process_time() - cpu))
    return times


def _warm(data: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """Pressroom's render function in a warm render process (RenderPool's initializer)."""
    from services.renderer.pdf import render_job
    from services.renderer.pool import _worker_init

    _worker_init(0, True)
    times = []
    for i, context in enumerate([data[0], *data]):
        started, cpu = time.perf_counter(), time.process_time()
        render_job(_job(context))
        if i:
            times.append((time.perf_counter() - started, time.process_time() - cpu))
    return times


def warm_vs_naive(n: int = WARM_N, rounds: int = WARM_ROUNDS) -> dict[str, Any]:
    """Each in a fresh process, alternated round by round. The ratio is of the CPU per render
    over the whole loop (its mean: what a loop of renders costs, the collector's pauses every
    few renders included), per round; the medians per render are given beside it."""
    data = [distinct(params(12), i) for i in range(n)]
    walls: dict[str, list[float]] = {"naive": [], "warm": []}
    cpus: dict[str, list[float]] = {"naive": [], "warm": []}
    ratios, ratios_p50 = [], []
    before = load()
    for _ in range(rounds):
        means, medians = {}, {}
        for name, fn in (("naive", _naive), ("warm", _warm)):
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                times = pool.submit(fn, data).result()
            walls[name] += [t[0] for t in times]
            cpus[name] += [t[1] for t in times]
            means[name] = statistics.fmean(t[1] for t in times)
            medians[name] = statistics.median(t[1] for t in times)
        ratios.append(means["naive"] / means["warm"])
        ratios_p50.append(medians["naive"] / medians["warm"])
    return {
        "renders": n,
        "rounds": rounds,
        **{
            name: {
                "wall_p50": statistics.median(walls[name]),
                "cpu_p50": statistics.median(cpus[name]),
                "cpu_mean": statistics.fmean(cpus[name]),
            }
            for name in ("naive", "warm")
        },
        "cpu_mean_ratio_per_round": ratios,
        "cpu_mean_ratio": statistics.median(ratios),
        "cpu_p50_ratio_per_round": ratios_p50,
        "cpu_p50_ratio": statistics.median(ratios_p50),
        "wall_ratio": statistics.median(walls["naive"]) / statistics.median(walls["warm"]),
        "load": [before, load()],
    }


# ---- processes and JetStream state -------------------------------------------------------------
def render_processes(service_pids: set[int]) -> dict[int, float]:
    """RSS (MiB) of each render process (spawned children of the renderer services)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid not in service_pids or b"spawn_main" not in (entry / "cmdline").read_bytes():
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    found[int(entry.name)] = int(line.split()[1]) / 1024
        except (OSError, IndexError, ValueError):
            continue
    return found


def service_memory(stack: Stack) -> dict[str, float]:
    """RSS (MiB) of nats-server and each service's main process (the first of each kind)."""
    found = {"nats-server": rss_mib(stack.nats.pid)} if stack.nats is not None else {}
    for name, procs in stack.procs.items():
        if procs:
            found[name] = rss_mib(procs[0].pid)
    return found


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/PID/stat), 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stack_cpu(stack: Stack) -> dict[str, float]:
    """CPU seconds used so far by each part of a stack: nats-server, each service's main
    process, and the render processes (the renderer services' children) together."""
    used: dict[str, float] = {}
    if stack.nats is not None:
        used["nats-server"] = _cpu_seconds(stack.nats.pid)
    for name, procs in stack.procs.items():
        used[name] = sum(_cpu_seconds(p.pid) for p in procs)
    renderers = {p.pid for p in stack.procs.get("renderer", [])}
    if renderers:
        used["render processes"] = sum(_cpu_seconds(pid) for pid in render_processes(renderers))
    return used


def cpu_per_report(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    """Seconds of CPU per report by part, between two `stack_cpu` readings (render processes
    that were replaced in between would be undercounted: the soak turns recycling off)."""
    return {name: max(0.0, after.get(name, 0.0) - before.get(name, 0.0)) / n for name in after}


async def jetstream_counts(js: Any) -> dict[str, int]:
    """Messages ever stored per stream (KV and object buckets are streams too) and acks per
    stream (messages its durable consumers acknowledged: a listing's short-lived consumer
    caught at one count and not at the other is no write of a report's)."""
    counts: dict[str, int] = {}
    for info in await js.streams_info():
        name = info.config.name
        counts[f"stream {name}"] = info.state.last_seq
        acked = 0
        for consumer in await js.consumers_info(name):
            if consumer.config.durable_name and consumer.ack_floor:
                acked += consumer.ack_floor.consumer_seq
        if acked:
            counts[f"acks {name}"] = acked
    return counts


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    sxx = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx if sxx else 0.0


async def soak(root: Path, n: int = SOAK_N, every: int = 100, batch: int = 25) -> dict[str, Any]:
    """n one-page reports of distinct data through the pipeline (cache on, as shipped; no
    recycling, so any growth shows), the render processes' RSS sampled every `every` reports;
    and the JetStream writes per report over the same reports."""
    stack = await Stack(
        root / "soak",
        env_extra={
            "PRESSROOM_LOG_LEVEL": "WARNING",
            "PRESSROOM_RENDER_MAX_RENDERS": "0",
            "PRESSROOM_RENDER_MAX_RSS_MB": "0",
        },
    ).astart()
    try:
        nc = await stack.connect()
        js = nc.jetstream()
        outcomes = await Outcomes().start(nc)
        services = {p.pid for p in stack.procs["renderer"]}
        data = params(12)
        warm = [f"soak-warm-{i}" for i in range(4)]
        for i, rid in enumerate(warm):
            body = {
                "request_id": rid,
                "template": "portfolio.html",
                "params": distinct(data, -i - 1),
            }
            await js.publish("report.requested", json.dumps(body).encode())
        for rid in warm:
            await outcomes.delivered_event(rid, timeout=300)
        counts_before = await jetstream_counts(js)
        samples: list[tuple[int, dict[int, float]]] = [(0, render_processes(services))]
        kept: list[tuple[int, dict[str, float]]] = [(0, service_memory(stack))]
        loads = [load()[0]]  # the 1-minute load average at every sample: the machine is shared
        cpu_before = stack_cpu(stack)
        started = time.perf_counter()
        before = load()
        done = 0
        while done < n:
            rids = [f"soak-{done + i}" for i in range(min(batch, n - done))]
            for i, rid in enumerate(rids):
                body = {
                    "request_id": rid,
                    "template": "portfolio.html",
                    "params": distinct(data, done + i),
                }
                await js.publish("report.requested", json.dumps(body).encode())
            for rid in rids:
                await outcomes.delivered_event(rid, timeout=600)
                outcomes.delivered.pop(rid, None)
            done += len(rids)
            if done % every == 0 or done == n:
                samples.append((done, render_processes(services)))
                kept.append((done, service_memory(stack)))
                loads.append(load()[0])
                rss = ", ".join(f"{mib:.1f}" for mib in samples[-1][1].values())
                print(
                    f"soak: {done}/{n} reports, {time.perf_counter() - started:.0f} s, "
                    f"render process RSS {rss} MiB, load {loads[-1]:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
                if SOAK_SECONDS and time.perf_counter() - started > SOAK_SECONDS:
                    n = done  # out of time (BENCH_SOAK_SECONDS): the figures of what was done
                    break
        seconds = time.perf_counter() - started
        cpu = cpu_per_report(cpu_before, stack_cpu(stack), n)
        counts_after = await jetstream_counts(js)
        await nc.close()
    finally:
        stack.stop()
    per_process: dict[int, list[tuple[float, float]]] = {}
    for count, rss in samples:
        for pid, mib in rss.items():
            per_process.setdefault(pid, []).append((float(count), mib))
    # The first `every` reports fill the process's caches (fonts of the data, stylesheets,
    # templates): the slope that says whether memory grows for ever is the one after them.
    slopes = {
        str(pid): slope([p for p in points if p[0] >= every]) * 1000
        for pid, points in per_process.items()
    }
    slopes_all = {str(pid): slope(points) * 1000 for pid, points in per_process.items()}
    by_service: dict[str, list[tuple[float, float]]] = {}
    for count, rss_of in kept:
        for name, mib in rss_of.items():
            by_service.setdefault(name, []).append((float(count), mib))
    services_memory = {
        name: {
            "first": points[0][1],
            "last": points[-1][1],
            "slope_mib_per_1000": slope([p for p in points if p[0] >= every]) * 1000,
        }
        for name, points in by_service.items()
    }
    writes = {
        key: (counts_after.get(key, 0) - counts_before.get(key, 0)) / n
        for key in sorted(set(counts_after) | set(counts_before))
    }
    return {
        "reports": n,
        "seconds": seconds,
        "samples": [(count, {str(k): v for k, v in rss.items()}) for count, rss in samples],
        "slope_mib_per_1000": slopes,
        "worst_slope_mib_per_1000": max(slopes.values(), default=0.0),
        "slope_with_warm_up_mib_per_1000": slopes_all,
        "warm_up_reports": every,
        "rss_first_last": {
            str(pid): (points[0][1], points[-1][1]) for pid, points in per_process.items()
        },
        "services_memory": services_memory,
        "writes_per_report": writes,
        "stream_writes_per_report": sum(v for k, v in writes.items() if k.startswith("stream ")),
        "acks_per_report": sum(v for k, v in writes.items() if k.startswith("acks ")),
        "load": [before, load()],
        "load_during": {
            "min": min(loads),
            "median": statistics.median(loads),
            "max": max(loads),
        },
        "cpu_per_report": cpu,
        "cpu_outside_render_per_report": sum(v for k, v in cpu.items() if k != "render processes"),
    }


def save_plot(result: dict[str, Any], path: Path) -> None:
    series: dict[str, list[tuple[float, float]]] = {}
    for count, rss in result["samples"]:
        for n, (_, mib) in enumerate(sorted(rss.items())):
            series.setdefault(str(n + 1), []).append((float(count), mib))
    line_plot(series, path, x_label="reports", y_label="RSS MiB")


def markdown(
    warm: dict[str, Any] | None, soaked: dict[str, Any] | None, plot: str | None
) -> list[str]:
    lines: list[str] = []
    if warm:
        lines += [
            "",
            f"## One warm render vs a naive loop (one process each, n={warm['renders']} × "
            f"{warm['rounds']} rounds, alternated)",
            "",
            "Naive: Jinja2 then `weasyprint.HTML(string=…).write_pdf()` per report, as one would "
            "write it by hand. Warm: Pressroom's render function in a render process (its font "
            "configuration, stylesheets and template analysis kept between reports). Distinct "
            "data per report. Load average before / after: "
            f"{warm['load'][0][0]:.1f} / {warm['load'][1][0]:.1f}.",
            "",
            "| | wall p50 | CPU p50 | CPU per render over the loop (mean) |",
            "|---|---|---|---|",
            *(
                f"| {label} | {warm[key]['wall_p50'] * 1000:.0f} ms "
                f"| {warm[key]['cpu_p50'] * 1000:.0f} ms "
                f"| {warm[key].get('cpu_mean', 0.0) * 1000:.0f} ms |"
                for key, label in (("naive", "naive loop"), ("warm", "warm render"))
            ),
            f"| naive / warm | {warm['wall_ratio']:.2f}× "
            f"| {warm.get('cpu_p50_ratio', 0.0):.2f}× "
            f"| **{warm['cpu_mean_ratio']:.2f}×** "
            f"(rounds: {', '.join(f'{r:.2f}' for r in warm['cpu_mean_ratio_per_round'])}) |",
            "",
            "Both make the same PDF (the template's standard and tags). The ratio is of the CPU "
            "a loop of renders costs (the mean per render, per round: the collector's pauses "
            "every few renders count), its median over the rounds.",
            "",
            "Target: ≥ 1.15× (a Pressroom render beats what a user would write by hand).",
        ]
    if soaked:
        lines += [
            "",
            f"## Memory over {soaked['reports']:,} reports (soak)",
            "",
            "One-page reports of distinct data through the whole pipeline (render cache on, as "
            "shipped; recycling off so any growth would show), the render process's resident "
            f"memory sampled every 100 reports; {soaked['seconds']:.0f} s. Load average before / "
            f"after: {soaked['load'][0][0]:.1f} / {soaked['load'][1][0]:.1f}"
            + (
                f"; during (1 min, at every sample): {during['min']:.1f}–{during['max']:.1f}, "
                f"median {during['median']:.1f}."
                if (during := soaked.get("load_during"))
                else "."
            ),
            "",
            f"| render process | RSS first → last sample | slope after the first "
            f"{soaked.get('warm_up_reports', 100)} reports | slope including them |",
            "|---|---|---|---|",
        ]
        with_warm_up = soaked.get("slope_with_warm_up_mib_per_1000", {})
        for n, (pid, (first, last)) in enumerate(sorted(soaked["rss_first_last"].items())):
            lines.append(
                f"| {n + 1} | {first:.1f} → {last:.1f} MiB | "
                f"**{soaked['slope_mib_per_1000'][pid]:.2f} MiB per 1,000 reports** | "
                f"{with_warm_up.get(pid, 0.0):.2f} MiB per 1,000 |"
            )
        lines += ["", "Target: < 2 MiB per 1,000 reports (was ~250)."]
        if kept := soaked.get("services_memory"):
            lines += [
                "",
                "The services and the bus over the same reports (their main processes):",
                "",
                "| process | RSS first → last sample | slope after the warm-up |",
                "|---|---|---|",
                *(
                    f"| {name} | {m['first']:.1f} → {m['last']:.1f} MiB | "
                    f"{m['slope_mib_per_1000']:.2f} MiB per 1,000 reports |"
                    for name, m in sorted(kept.items())
                ),
            ]
        if plot:
            lines += ["", f"![render process RSS over the soak]({plot})"]
        lines += [
            "",
            "## JetStream writes per report",
            "",
            "Over the same reports: messages stored per stream (KV buckets are streams: `KV_*`) "
            "and acknowledgements, per report.",
            "",
            "| where | per report |",
            "|---|---|",
        ]
        for key, value in soaked["writes_per_report"].items():
            if round(value, 2):
                lines.append(f"| {key} | {value:.2f} |")
        lines.append(f"| **all stream writes** | **{soaked['stream_writes_per_report']:.2f}** |")
        lines.append(f"| **all acks** | **{soaked['acks_per_report']:.2f}** |")
        cpu = soaked.get("cpu_per_report")
        if cpu:
            lines += [
                "",
                "CPU per report over the same reports, by process (user + system, from /proc):",
                "",
                "| process | CPU per report |",
                "|---|---|",
                *(f"| {name} | {sec * 1000:.1f} ms |" for name, sec in sorted(cpu.items())),
                f"| **all but the render processes** | "
                f"**{soaked['cpu_outside_render_per_report'] * 1000:.1f} ms** |",
            ]
    return lines


async def only(what: str, root: Path, docs: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    if what in ("warm", "speed"):
        result["warm"] = warm_vs_naive()
    if what in ("soak", "writes", "speed"):
        n = SOAK_N if what != "writes" else int(os.environ.get("BENCH_WRITES", "200"))
        result["soak"] = await soak(root, n)
        if what != "writes":
            save_plot(result["soak"], docs / "benchmarks-soak.png")
    return result
