"""Nothing worked out again per request that did not change: a template's version, variables and
analysis are kept per process by the identity of its files, and any change of any file it reads
(an include, same size, same clock tick) is seen by the very next render."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.renderer import core
from services.renderer.job import RenderJob
from services.renderer.pdf import analyse_job, render_job, template_library


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "base.html").write_text(
        "<h1>{% block title %}{% endblock %}</h1>{% block body %}{% endblock %}"
    )
    (tmp_path / "report.html").write_text(
        '{% extends "base.html" %}{% block title %}{{ title }}{% endblock %}'
        "{% block body %}{% include '_part.html' %}{% endblock %}"
    )
    (tmp_path / "_part.html").write_text("<p>old {{ body }}</p>")
    return tmp_path


def job(folder: Path, **context: str) -> RenderJob:
    return RenderJob(
        templates_dir=str(folder),
        template="report",
        context=context,
        formats=("html",),
        analyse=True,
    )


def test_an_edited_include_is_rendered_and_versioned_at_once(folder: Path) -> None:
    first = render_job(job(folder, title="T", body="B"))
    assert b"<p>old B</p>" in first.html and first.analysis is not None
    assert first.analysis.variables == ["body", "title"]
    core.remember(job(folder), first.analysis)
    assert core.known_analysis(job(folder)) == first.analysis

    # Same size, written at once: only the content tells it changed.
    (folder / "_part.html").write_text("<p>new {{ body }}</p>")
    assert core.known_analysis(job(folder)) is None  # the service asks the render again
    second = render_job(job(folder, title="T", body="B"))
    assert b"<p>new B</p>" in second.html
    assert second.analysis is not None
    assert second.analysis.version != first.analysis.version
    assert second.template_version == second.analysis.version

    (folder / "_part.html").write_text("<p>{{ body }} {{ extra }}</p>")
    third = analyse_job(job(folder))
    assert third.variables == ["body", "extra", "title"]


def test_a_missing_include_that_appears_changes_the_version(folder: Path) -> None:
    (folder / "_part.html").unlink()
    (folder / "report.html").write_text("{% include '_later.html' ignore missing %}x")
    before = analyse_job(job(folder))
    (folder / "_later.html").write_text("{{ later }}")
    after = analyse_job(job(folder))
    assert after.version != before.version and after.variables == ["later"]


def test_unchanged_templates_are_analysed_once_per_process(folder: Path) -> None:
    library = template_library(str(folder))
    first = library.facts("report.html")
    render_job(job(folder, title="T", body="B"))
    assert library.facts("report.html") is first  # the same object: not worked out again
    (folder / "base.html").write_text(
        "<h2>{% block title %}{% endblock %}</h2>{% block body %}{% endblock %}"
    )
    assert library.facts("report.html") is not first
