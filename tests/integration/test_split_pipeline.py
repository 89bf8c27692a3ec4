"""Through the real pipeline: a renderer with two render processes splits a long report, and
delivers the PDF `pressroom render` gives for the same data."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, Outcomes, Stack, delivered_file, unique
from tests.pdftext import page_texts

pytestmark = pytest.mark.integration

SAMPLE = json.loads((REPO / "templates/samples/portfolio.json").read_text())


def long_params(rows: int) -> dict[str, Any]:
    base = SAMPLE["projects"]
    projects = [dict(base[i % len(base)], name=f"Project {i:04d}") for i in range(rows)]
    # A fixed generation time: the CLI's render below prints the same first page.
    return {**SAMPLE, "projects": projects, "generation_time": "2026-11-24T08:00:00+00:00"}


@pytest.fixture(scope="module")
async def split_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("split-stack"),
        env_extra={"PRESSROOM_RENDER_WORKERS": "2", "PRESSROOM_RENDER_TIMEOUT": "600"},
    )
    await stack.astart()
    try:
        yield stack
    finally:
        stack.stop()


async def test_a_long_report_is_split_by_the_renderer_and_delivered_as_the_cli_renders_it(
    split_stack: Stack, tmp_path: Path
) -> None:
    nc = await split_stack.connect()
    try:
        outcomes = await Outcomes().start(nc)
        rid = unique("long")
        params = long_params(330)
        body = {"request_id": rid, "template": "portfolio.html", "params": params, "split": "on"}
        body["pdf"] = {"variant": None, "tagged": False}  # tagged PDF/A is laid out in one piece
        await nc.jetstream().publish("report.requested", json.dumps(body).encode())
        await outcomes.delivered_event(rid, timeout=300)
    finally:
        await nc.close()
    delivered = delivered_file(split_stack.out, rid).read_bytes()
    renderer_logs = "".join(p.read_text() for p in (split_stack.root / "logs").glob("renderer*"))
    assert "long report split" in renderer_logs

    data = tmp_path / "data.json"
    data.write_text(json.dumps(params))
    out = tmp_path / "cli.pdf"
    result = split_stack.cli(
        *("render", "-t", "portfolio.html", "--data-file", str(data), "-o", str(out)),
        *("--split", "off"),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert page_texts(delivered, tmp_path) == page_texts(out.read_bytes(), tmp_path)
