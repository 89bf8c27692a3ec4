"""The renderer contract (services/renderer/core.py Renderer), the same for RenderPool (capped
render processes, what the renderer service runs) and InProcess (what unit tests use): the same
input gives the same template version and a PDF showing the data; a template that cannot render
is a PermanentError naming it; `analyse` tells the render cache what the render will use."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from services.renderer.core import InProcess, Renderer, make_job
from services.renderer.job import RenderJob
from services.renderer.pooled import RenderPool
from shared.errors import PermanentError
from shared.settings import Settings

pytestmark = pytest.mark.integration

TEMPLATES = {
    "note.html": "<html><body><h1>{{ title }}</h1><p>{{ open }} open pull requests</p>"
    "</body></html>\n",
    "broken.html": "<html><body>{% for row in %}{{ row }}{% endfor %}</body></html>\n",
    "undefined.html": "<html><body>{{ nothing.here }}</body></html>\n",
}
CONTEXT = {"title": "Weekly digest", "open": 3}


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("templates")
    for name, text in TEMPLATES.items():
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[RenderPool]:
    started = RenderPool(1, memory_mb=2048, timeout=120.0)
    await started.start()
    yield started
    await started.close()


@pytest.fixture(params=["render-pool", "in-process"])
def renderer(request: pytest.FixtureRequest, pool: RenderPool) -> Renderer:
    return pool if request.param == "render-pool" else InProcess()


def job(templates: Path, template: str, **overrides: Any) -> RenderJob:
    made = make_job(Settings(), template, dict(CONTEXT), ("pdf", "html"), templates_dir=templates)
    return RenderJob(**{**made.__dict__, **overrides})


def text_of(pdf: bytes) -> str:
    return " ".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


async def test_the_same_input_gives_a_pdf_of_the_data_and_the_same_version(
    renderer: Renderer, templates: Path
) -> None:
    first = await renderer.render(job(templates, "note.html"))
    again = await renderer.render(job(templates, "note.html"))
    for output in (first, again):
        assert output.pdf is not None and output.pdf.startswith(b"%PDF-")
        assert output.pages == 1
        assert "Weekly digest" in text_of(output.pdf) and "3 open pull requests" in text_of(
            output.pdf
        )
        assert b"<h1>Weekly digest</h1>" in output.html
    assert first.template_version == again.template_version


async def test_analyse_names_the_template_its_version_and_what_it_reads(
    renderer: Renderer, templates: Path
) -> None:
    analysis = await renderer.analyse(job(templates, "note.html"))
    rendered = await renderer.render(job(templates, "note.html"))
    assert analysis.template == "note.html"
    assert analysis.version == rendered.template_version
    assert analysis.variables is not None and {"title", "open"} <= set(analysis.variables)


@pytest.mark.parametrize("template", ["broken.html", "undefined.html", "absent.html"])
async def test_a_template_that_cannot_render_is_permanent_and_named(
    renderer: Renderer, templates: Path, template: str
) -> None:
    with pytest.raises(PermanentError) as caught:
        await renderer.render(job(templates, template))
    assert template in caught.value.reason


async def test_an_output_over_the_size_cap_is_permanent(
    renderer: Renderer, templates: Path
) -> None:
    with pytest.raises(PermanentError):
        await renderer.render(job(templates, "note.html", max_output_bytes=200))
