"""Real WeasyPrint output, and the URL fetcher that keeps templates inside their folder."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from services.renderer.job import RenderJob
from services.renderer.pdf import render_job
from shared.errors import PermanentError, ResourceBlocked

PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def render(folder: Path, body: str, **kwargs: object) -> bytes:
    (folder / "t.html").write_text(f"<html><body>{body}</body></html>")
    out = render_job(RenderJob(str(folder), "t.html", {}, ("pdf",), **kwargs))  # type: ignore[arg-type]
    assert out.pdf is not None
    return out.pdf


def text(pdf: bytes) -> str:
    return "".join(p.extract_text() for p in PdfReader(BytesIO(pdf)).pages)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-VALUE")
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "assets").mkdir()
    (folder / "assets" / "logo.png").write_bytes(PNG_1PX)
    (folder / "assets" / "style.css").write_text("h1 { color: red; }")
    return folder


def test_a_template_renders_to_a_real_pdf_with_its_own_assets(folder: Path) -> None:
    pdf = render(
        folder,
        '<link rel="stylesheet" href="assets/style.css"><h1>Quarterly numbers</h1>'
        '<img src="assets/logo.png">',
    )
    assert pdf.startswith(b"%PDF-")
    assert "Quarterly numbers" in text(pdf)


@pytest.mark.parametrize(
    "body",
    [
        '<img src="file://{secret}">',
        '<link rel="stylesheet" href="file://{secret}">',
        '<a rel="attachment" href="file://{secret}">x</a>',
        '<img src="../secret.txt">',
        "<style>@import url('../secret.txt');</style>",
    ],
)
def test_local_files_outside_the_template_folder_cannot_be_read(
    folder: Path, secret: Path, body: str
) -> None:
    with pytest.raises(ResourceBlocked, match="outside its folder"):
        render(folder, body.format(secret=secret))


def test_output_over_the_size_limit_fails_with_the_size(folder: Path) -> None:
    with pytest.raises(PermanentError, match=r"pdf output is [\d,]+ bytes, over the 1,000-byte"):
        render(folder, "<p>big enough</p>", max_output_bytes=1000)


def test_the_legacy_pdf_settings_apply_unless_the_template_sets_its_own(folder: Path) -> None:
    from services.renderer.job import PageDefaults

    landscape = render(folder, "<p>x</p>", page=PageDefaults("A4", "landscape", "2cm"))
    width, height = PdfReader(BytesIO(landscape)).pages[0].mediabox.upper_right
    assert width > height
    own = render(
        folder,
        "<style>@page { size: A5 portrait }</style><p>x</p>",
        page=PageDefaults("A4", "landscape", "2cm"),
    )
    width, height = PdfReader(BytesIO(own)).pages[0].mediabox.upper_right
    assert height > width and round(float(width)) == 420  # A5 in points


def test_the_render_cache_key_follows_template_version_and_the_values_it_reads(
    folder: Path,
) -> None:
    from services.renderer.core import render_key
    from services.renderer.pdf import analyse_job

    (folder / "r.html").write_text("<p>{{ title }} {{ generation_time }}</p>")

    def key(**context: object) -> str:
        job = RenderJob(str(folder), "r.html", dict(context), ("pdf",))
        return render_key(analyse_job(job), job)

    base = key(title="A", generation_time="t1", unused=1)
    assert key(title="A", generation_time="t2", unused=2) == base  # volatile / unread values
    assert key(title="B", generation_time="t1") != base
    (folder / "r.html").write_text("<p>{{ title }}! {{ generation_time }}</p>")
    assert key(title="A", generation_time="t1") != base  # a new template version


def test_a_computed_include_makes_the_cache_key_cover_the_whole_context(folder: Path) -> None:
    from services.renderer.core import render_key
    from services.renderer.pdf import analyse_job

    (folder / "parts").mkdir()
    (folder / "parts" / "a.html").write_text("{{ tenant_secret }}")
    (folder / "r.html").write_text('{% include "parts/" ~ section ~ ".html" %}')

    def key(**context: object) -> str:
        job = RenderJob(str(folder), "r.html", dict(context), ("pdf",))
        return render_key(analyse_job(job), job)

    tenant_a = key(section="a", tenant_secret="A's numbers")
    assert key(section="a", tenant_secret="B's numbers") != tenant_a
    before = key(section="a", tenant_secret="x")
    (folder / "parts" / "b.html").write_text("new part")  # any template may now be read
    assert key(section="a", tenant_secret="x") != before


@pytest.mark.parametrize("in_stage", [False, True])
async def test_a_second_identical_render_is_served_from_the_store_without_rendering(
    in_stage: bool,
) -> None:
    """The same request rendered again (a redelivered data.ready) is copied, not rendered;
    another request with the same data is rendered: its PDF carries its own dates, /ID and
    provenance (services/renderer/document.py). In a stage, a message's first delivery does
    not look (there is nothing of its own request to find), its redelivery does."""
    from services.renderer.core import InProcess, render_report
    from shared.adapters.memory import MemoryKeyValue
    from shared.adapters.store import MemoryArtefacts
    from shared.events import DataReady, ReportRequested
    from shared.settings import Settings
    from shared.stage.runner import ATTEMPT
    from tests.helpers import REPO

    renders: list[str] = []

    class Counting(InProcess):
        async def render(self, job: RenderJob) -> object:  # type: ignore[override]
            renders.append(job.template)
            return await super().render(job)

    settings = Settings(templates_dir=REPO / "templates")
    looked: list[str] = []

    class Looking(MemoryKeyValue):
        async def get(self, key: str) -> Any:
            looked.append(key)
            return await super().get(key)

    cache, store = Looking(), MemoryArtefacts()
    context = {
        "report_title": "T",
        "generation_time": "now",
        "project_count": 1,
        "deployment_count": 0,
        "projects": [],
        "reporting_period": "W1",
        "deployments_by_week": {},
        "incident_trend": [1, 2],
        "incident_labels": ["a", "b"],
    }
    outputs = []
    requested = ReportRequested(template="weekly.html", request_id="a")
    for attempt, rid in enumerate(("a", "a", "b"), start=1):
        request = (
            requested if rid == "a" else ReportRequested(template="weekly.html", request_id=rid)
        )
        event = DataReady(request=request, context=context)
        ATTEMPT.set(attempt if in_stage and rid == "a" else 1 if in_stage else 0)
        outputs.append(
            await render_report(
                event,
                renderer=Counting(),
                store=store,  # type: ignore[arg-type]
                settings=settings,
                cache=cache,
            )
        )
    assert renders == ["weekly.html", "weekly.html"]
    assert len(looked) == (1 if in_stage else 3)  # a stage's first deliveries never look
    first, second, other = outputs
    assert second.render_seconds == 0 and second.artefacts[0].sha256 == first.artefacts[0].sha256
    assert second.artefacts[0].key == first.artefacts[0].key and await store.get(
        first.artefacts[0].key
    )
    assert other.render_seconds > 0 and other.artefacts[0].key.endswith("/b.pdf")
