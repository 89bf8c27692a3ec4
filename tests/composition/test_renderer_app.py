"""The renderer as `services/renderer/app.py` `create_app` builds it, run in process
(tests/composition/kit.py): data.ready in, report.rendered with its artefacts in the store (or a
dead letter) out. The render processes are the real ones: `create_app` starts its RenderPool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.renderer.app import RendererDeps, create_app
from shared.adapters.store import sha256_hex
from shared.bus.names import RENDERER
from shared.events import REPORT_RENDERED, DataReady, ReportRequested
from tests.composition.kit import Fakes, running, settings_in
from tests.helpers import eventually

NOTE = "<html><body><h1>{{ title }}</h1><p>{{ open }} open pull requests</p></body></html>\n"
BROKEN = "<html><body>{% for row in %}{{ row }}{% endfor %}</body></html>\n"


def renderer(tmp_path: Path, fakes: Fakes) -> Any:
    templates = tmp_path / "templates"
    templates.mkdir(exist_ok=True)
    (templates / "note.html").write_text(NOTE)
    (templates / "broken.html").write_text(BROKEN)
    return create_app(settings_in(tmp_path), deps=fakes.deps(RendererDeps))


def ready(rid: str, template: str = "note.html") -> DataReady:
    request = ReportRequested(request_id=rid, template=template, formats=["pdf", "html"])
    return DataReady(request=request, context={"title": "Weekly", "open": 3})


async def test_data_ready_becomes_report_rendered_with_both_artefacts_in_the_store(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    async with running(renderer(tmp_path, fakes), RENDERER) as stage:
        await stage.deliver(ready("r1"))

    [rendered] = fakes.next_events(REPORT_RENDERED)
    assert rendered["request"]["request_id"] == "r1"
    artefacts = {a["format"]: a for a in rendered["artefacts"]}
    assert set(artefacts) == {"pdf", "html"}
    pdf = await fakes.store.get(artefacts["pdf"]["key"])
    html = await fakes.store.get(artefacts["html"]["key"])
    assert pdf.startswith(b"%PDF-") and sha256_hex(pdf) == artefacts["pdf"]["sha256"]
    assert b"<h1>Weekly</h1>" in html and b"3 open pull requests" in html
    assert fakes.dead_letters(RENDERER) == [] and fakes.failures() == []


async def test_a_template_error_is_a_dead_letter_and_report_failed(tmp_path: Path) -> None:
    fakes = Fakes()
    async with running(renderer(tmp_path, fakes), RENDERER) as stage:
        await stage.deliver(ready("r2", template="broken.html"))

    [letter] = fakes.dead_letters(RENDERER)
    assert letter["request_id"] == "r2" and letter["stage"] == "renderer"
    assert letter["permanent"] and "broken.html" in letter["reason"]
    [failed] = fakes.failures()
    assert failed["request_id"] == "r2" and failed["stage"] == "renderer"
    assert fakes.next_events(REPORT_RENDERED) == [] and fakes.store.objects == {}


async def test_a_duplicate_is_skipped_without_rendering_again(tmp_path: Path) -> None:
    fakes = Fakes()
    async with running(renderer(tmp_path, fakes), RENDERER) as stage:
        await stage.deliver(ready("r3"))

        async def rendered() -> list[Any]:
            # The renderer takes the next message as soon as a slot frees: the first one's
            # work goes on after `deliver` returns.
            return fakes.next_events(REPORT_RENDERED)

        await eventually(rendered)
        # Rendering again would now fail (no template): a duplicate must not get that far.
        (tmp_path / "templates" / "note.html").unlink()
        await stage.deliver(ready("r3"))

    assert len(fakes.next_events(REPORT_RENDERED)) == 1
    assert fakes.dead_letters(RENDERER) == [] and fakes.failures() == []
