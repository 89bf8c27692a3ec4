"""Warm render processes (services/renderer/warm.py): the fonts and stylesheets a process keeps
draw exactly the PDF a fresh render draws, and one template's @font-face fonts stay its own."""

from __future__ import annotations

import ast
import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from services.renderer import document, fonts, warm
from services.renderer.core import build_context, make_job
from services.renderer.job import RenderJob
from services.renderer.pdf import base_folder, render_html, render_job, resolved_document
from services.renderer.sandbox import fetcher_class
from shared.events import ReportRequested
from shared.settings import Settings
from tests.helpers import REPO

SAMPLES = REPO / "templates" / "samples"
BUNDLED = [
    ("portfolio.html", "portfolio.json"),
    ("portfolio.html", "multilingual.json"),
    ("custom-report.html", "custom-report.json"),
]


def job_for(folder: Path, template: str, data: dict[str, Any]) -> RenderJob:
    settings = Settings(templates_dir=folder, missing_glyphs="warn")
    request = ReportRequested(template=template, request_id="warm", requested_by="test")
    context = build_context(request, data)
    context["generation_time"] = "2026-01-01T00:00:00+00:00"  # the same in both renders
    return make_job(settings, template, context, ("pdf",))


def fresh_pdf(job: RenderJob) -> bytes:
    """Today's path before warm processes: new objects for every render."""
    from weasyprint import CSS, HTML

    fonts.configure(job.font_dirs)
    name, version, html, _ = render_html(job)
    fetcher = fetcher_class()(Path(job.templates_dir), job.asset_allow)
    base = base_folder(job, name)
    rendered = HTML(string=html, base_url=f"{base.resolve()}/", url_fetcher=fetcher).render(
        stylesheets=[CSS(string=job.page.css(), url_fetcher=fetcher)]
    )
    # The same document (standard, tags, metadata) as the warm path writes.
    resolved = resolved_document(job, name)
    options, finish = document.write_options(resolved, job.document, name, version, fetcher)
    document.apply_metadata(rendered, resolved, job.document, name)
    pdf = rendered.write_pdf(finisher=finish, **options)
    assert pdf is not None
    return pdf


@pytest.mark.parametrize(("template", "sample"), BUNDLED)
def test_warm_renders_are_byte_identical_to_fresh_ones(template: str, sample: str) -> None:
    data = json.loads((SAMPLES / sample).read_text())
    if template == "portfolio.html" and sample == "portfolio.json":
        data = dict(data, projects=data["projects"] * 3)  # more than one page
    job = job_for(REPO / "templates", template, data)
    expected = fresh_pdf(job)
    warm.forget()
    first = render_job(job).pdf  # builds the process's font configuration and stylesheets
    again = render_job(job).pdf  # reuses them
    assert first == expected
    assert again == expected


FACE_TEMPLATE = """<html><head><style>
@font-face {{ font-family: "House"; src: url("{font}"); }}
p {{ font-family: "House", serif; }}
</style></head><body><p>{{{{ text }}}}</p></body></html>"""
PLAIN_TEMPLATE = """<html><head><style>p {{ font-family: "House", serif; }}</style></head>
<body><p>{{{{ text }}}}</p></body></html>"""


def font_names(pdf: bytes) -> set[str]:
    """The fonts a PDF embeds, without their subset prefix ("House-Bold")."""
    names = set()
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for font in page["/Resources"]["/Font"].values():
            names.add(str(font.get_object()["/BaseFont"]).lstrip("/").split("+")[-1])
    return names


def test_a_templates_own_fonts_never_reach_another_template(tmp_path: Path) -> None:
    shutil.copy(fonts.BUNDLED_DIR / "NotoSans-Bold.ttf", tmp_path / "house.ttf")
    (tmp_path / "faces.html").write_text(FACE_TEMPLATE.format(font="house.ttf"))
    (tmp_path / "plain.html").write_text(PLAIN_TEMPLATE.format())
    warm.forget()
    plain_before = render_job(job_for(tmp_path, "plain.html", {"text": "plain text"})).pdf
    faces = render_job(job_for(tmp_path, "faces.html", {"text": "house text"})).pdf
    plain_after = render_job(job_for(tmp_path, "plain.html", {"text": "plain text"})).pdf
    assert faces is not None and plain_before is not None
    # The template that declares "House" draws with it; the one that merely names it does not
    # get it from the other's render, before or after.
    assert any(name.startswith("House") for name in font_names(faces))
    assert not any(name.startswith("House") for name in font_names(plain_before))
    assert plain_after == plain_before


def collector_state() -> tuple[int, bool]:
    import gc

    from services.renderer import warm

    fonts_seen = any(o is warm.shared_font_config() for o in gc.get_objects())
    return gc.get_threshold()[0], fonts_seen


def leave_cycles(count: int, seconds: float) -> None:
    """A job that leaves `count` objects in reference cycles behind, in the oldest generation,
    as a layout leaves its boxes (they outlive many young collections while it runs)."""
    import gc
    import time

    kept = []
    for _ in range(count // 2):
        a: list[Any] = []
        b = [a]
        a.append(b)
        kept.append(a)
    gc.collect(1)  # what survives the young generations moves to the oldest
    time.sleep(seconds)


def tracked_objects() -> int:
    import gc

    return len(gc.get_objects())


def in_render_process(*calls: tuple[Any, ...], collect_after: float | None = None) -> list[Any]:
    """Each `(fn, *args)` in turn in the same render process of a CappedPool."""
    import asyncio

    from services.renderer.pool import CappedPool

    async def run() -> list[Any]:
        pool = CappedPool(1, timeout=120, collect_after=collect_after)
        try:
            return [await pool.run(fn, *args, label="gc") for fn, *args in calls]
        finally:
            await pool.close()

    return asyncio.run(run())


def test_render_processes_run_with_the_collector_tuned_for_layout() -> None:
    """Young collections are rarer than CPython's default, and what a render process loaded in
    its warm-up (the shared font configuration among it) is out of the collector's sight
    (warm.tune_collector)."""
    import gc

    [(threshold, fonts_seen)] = in_render_process((collector_state,))
    assert threshold == warm.GC_YOUNG_THRESHOLD != gc.get_threshold()[0]
    assert not fonts_seen  # frozen after the warm-up, not before it


def test_a_long_job_leaves_no_garbage_for_the_next_one() -> None:
    """After a long job the pool collects in the idle process; after a short one the tuned
    collector leaves the garbage where it is (so this test sees the difference). Jobs sleep
    twice the pool's limit to be long, and stay far below it to be short."""
    cycles = 200_000
    # The first call imports this module in the render process.
    before, _, after_short = in_render_process(
        (tracked_objects,), (leave_cycles, cycles, 0.0), (tracked_objects,), collect_after=60.0
    )
    assert after_short - before > cycles / 2
    before, _, after_long = in_render_process(
        (tracked_objects,), (leave_cycles, cycles, 1.0), (tracked_objects,), collect_after=0.5
    )
    assert after_long - before < cycles / 10


def leave_cycles_in_chunk(job: tuple[int, float]) -> None:
    leave_cycles(*job)


def leave_cycles_and_fail(job: tuple[int, float]) -> None:
    leave_cycles(*job)
    raise ValueError("this chunk cannot be laid out")


def tracked_in_chunk(_: object) -> int:
    return tracked_objects()


def split_like(*steps: str) -> dict[str, Any]:
    """A pool of two processes (collecting after jobs of 0.5 s) through `steps`: "chunks" (two
    long chunks of one split), "failed" (the same, failing), "other" (another report's job),
    "merge" (the split's merge); "before" and "after" count each process's objects."""
    import asyncio

    from services.renderer.pool import CappedPool

    cycles = 200_000
    seen: dict[str, Any] = {}

    async def run() -> None:
        pool = CappedPool(2, timeout=120, collect_after=0.5)
        token = object()
        group: dict[str, Any] = {"label": "gc", "timeout": lambda: 120.0}
        chunk = (cycles, 1.0)
        try:
            for step in steps:
                if step in ("before", "after"):
                    seen[step] = sorted(await pool.run_group(tracked_in_chunk, [0, 1], **group))
                elif step == "chunks":
                    jobs = [chunk, chunk]
                    await pool.run_group(leave_cycles_in_chunk, jobs, split=token, **group)
                elif step == "failed":
                    with contextlib.suppress(ValueError):
                        await pool.run_group(
                            leave_cycles_and_fail, [chunk, chunk], split=token, **group
                        )
                elif step == "other":
                    seen["other"] = await pool.run(tracked_objects, label="gc")
                elif step == "merge":
                    seen["merge"] = await pool.run(tracked_objects, label="gc", merge_of=token)
        finally:
            await pool.close()

    asyncio.run(run())
    seen["cycles"] = cycles
    return seen


def test_a_splits_chunks_are_collected_after_its_merge_not_before() -> None:
    """Long chunks of a split render: their processes collect once the merge that follows has
    run (it does not wait behind a collection), and then they hold no garbage."""
    seen = split_like("before", "chunks", "merge", "after")
    base, cycles = max(seen["before"]), seen["cycles"]
    assert seen["merge"] - base > cycles / 2  # the merge ran before any collection
    assert all(a - b < cycles / 10 for a, b in zip(seen["after"], seen["before"], strict=True))


def test_a_report_let_in_between_a_split_and_its_merge_gets_a_collected_process() -> None:
    seen = split_like("before", "chunks", "other", "merge", "after")
    base, cycles = max(seen["before"]), seen["cycles"]
    assert seen["other"] - base < cycles / 10  # collected before it
    assert seen["merge"] - base > cycles / 2  # the merge took the split's other process
    assert all(a - b < cycles / 10 for a, b in zip(seen["after"], seen["before"], strict=True))


def test_failed_long_chunks_leave_no_garbage_for_the_next_job() -> None:
    """A split that fails (then rendered in one piece) does not render on its chunks' garbage."""
    seen = split_like("before", "failed", "other", "after")
    base, cycles = max(seen["before"]), seen["cycles"]
    assert seen["other"] - base < cycles / 10
    assert all(a - b < cycles / 10 for a, b in zip(seen["after"], seen["before"], strict=True))


def test_markup_weasyprint_cannot_lay_out_fails_as_the_templates_error(tmp_path: Path) -> None:
    from shared.errors import TemplateError, classify

    (tmp_path / "unlaid.html").write_text(
        '<html><head><style>li::marker { content: "-> "; }</style></head>'
        "<body><table><tr><td><ol><li>one</li></ol></td></tr></table></body></html>"
    )
    with pytest.raises(TemplateError) as raised:
        render_job(job_for(tmp_path, "unlaid.html", {}))
    # The renderer dead-letters it at once, with this reason: rendering it again gives the same.
    assert classify(raised.value) == "permanent"
    assert raised.value.reason.startswith("WeasyPrint could not lay this document out (TypeError")


_LOADED = """
import subprocess, sys
runs = []
real = subprocess.Popen.__init__
def counted(self, args, *a, **k):
    runs.append(args[0] if isinstance(args, (list, tuple)) else args)
    real(self, args, *a, **k)
subprocess.Popen.__init__ = counted
if sys.argv[1] == "pressroom":
    from services.renderer.pool import _import_weasyprint
    _import_weasyprint()
else:
    import weasyprint
from weasyprint.text import ffi
maps = open("/proc/self/maps").read().split()
wanted = ("libgobject", "libpango", "libharfbuzz", "libfontconfig")
libs = sorted({p.rsplit("/", 1)[-1] for p in maps if p.rsplit("/", 1)[-1].startswith(wanted)})
print(repr((runs, libs, ffi.harfbuzz_subset is not None)))
"""


def test_render_processes_load_weasyprints_libraries_without_running_a_compiler() -> None:
    # A render process's start ran ldconfig, gcc and ld for every library name WeasyPrint
    # tries (0.35 s); it loads the very same libraries without running anything.
    def loaded(how: str) -> tuple[list[str], list[str], bool]:
        shown = subprocess.run(
            [sys.executable, "-c", _LOADED, how], capture_output=True, text=True, cwd=REPO
        )
        assert shown.returncode == 0, shown.stderr
        result: tuple[list[str], list[str], bool] = ast.literal_eval(shown.stdout.strip())
        return result

    plain_runs, plain_libs, plain_subset = loaded("plain")
    runs, libs, subset = loaded("pressroom")
    assert plain_runs and runs == []  # ldconfig at least, for a plain import
    assert libs == plain_libs and subset == plain_subset
    assert any(lib.startswith("libpango-1.0.so") for lib in libs)
