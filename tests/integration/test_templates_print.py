"""The bundled templates as a reader sees them: page numbers, repeated headers, readable axes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from services.renderer.job import RenderJob
from services.renderer.pdf import render_job
from tests.helpers import REPO

# A 48-page render in the fixture: minutes, not seconds, when both cores are busy.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_a_long_legacy_custom_report_has_page_numbers_and_a_header_on_every_page(
    tmp_path: Path,
) -> None:
    data = json.loads((REPO / "templates/samples/custom-report.json").read_text())
    data["projects"] = [
        {"name": f"Project {i}", "status": "blocked", "health": "red"} for i in range(900)
    ]
    data["generation_time"] = "2026-11-23T08:00:00Z"
    job = RenderJob(str(REPO / "templates"), "custom-report.html", data, ("pdf",))
    output = render_job(job)
    assert output.pdf is not None and output.pages > 10
    pdf = tmp_path / "long.pdf"
    pdf.write_bytes(output.pdf)
    for page in (1, 2, output.pages):
        text = subprocess.run(
            ["pdftotext", "-layout", "-f", str(page), "-l", str(page), str(pdf), "-"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert f"Page {page} of {output.pages}" in text
        assert re.search(r"Project\s+Status\s+Health", text), text[:300]
        # columns are apart, not run together ("blocked red")
        assert re.search(r"blocked\s{2,}red", text)
