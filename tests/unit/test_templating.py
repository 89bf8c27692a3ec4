"""Untrusted templates: sandboxed, strict, escaped; clear errors with file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.renderer.templating import TemplateLibrary
from shared.errors import TemplateError
from tests.helpers import REPO


@pytest.fixture
def lib(tmp_path: Path) -> TemplateLibrary:
    (tmp_path / "base.html").write_text(
        "<h1>{% block title %}{% endblock %}</h1>{% block body %}{% endblock %}"
    )
    (tmp_path / "child.html").write_text(
        '{% extends "base.html" %}{% block title %}{{ title }}{% endblock %}'
        "{% block body %}{% include '_part.html' %}{% endblock %}"
    )
    (tmp_path / "_part.html").write_text("<p>{{ body }}</p>")
    return TemplateLibrary(tmp_path)


def write(lib: TemplateLibrary, name: str, text: str) -> str:
    (lib.folder / name).write_text(text)
    return name


def test_inheritance_and_includes_come_from_the_templates_own_folder(lib: TemplateLibrary) -> None:
    html = lib.render("child.html", {"title": "T", "body": "B"})
    assert html == "<h1>T</h1><p>B</p>"
    assert lib.names() == ["base.html", "child.html"]  # partials (_*.html) are not listed


def test_values_are_autoescaped(lib: TemplateLibrary) -> None:
    html = lib.render("child.html", {"title": "<img src=x>", "body": "&"})
    assert "<img" not in html and "&lt;img src=x&gt;" in html


def test_an_undefined_variable_is_an_error_naming_it_and_the_line(lib: TemplateLibrary) -> None:
    with pytest.raises(TemplateError) as caught:
        lib.render("child.html", {"title": "T"})
    assert "'body' is undefined" in caught.value.reason
    assert "_part.html:1" in caught.value.reason


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ '{0.__class__}'.format(1) }}",
        "{{ x | attr('__class__') }}",
        "{% set l = [] %}{{ l.append(1) }}",
    ],
)
def test_sandbox_escapes_are_refused(lib: TemplateLibrary, source: str) -> None:
    name = write(lib, "evil.html", source)
    with pytest.raises(TemplateError, match=r"unsafe|undefined|error"):
        lib.render(name, {"x": 1})


def test_unknown_and_escaping_template_names_are_refused_helpfully(lib: TemplateLibrary) -> None:
    with pytest.raises(
        TemplateError, match=r"'quarterly.html' not found .*known: base.html, child.html"
    ):
        lib.render("quarterly.html", {})
    with pytest.raises(TemplateError, match="outside the templates folder"):
        lib.render("../etc/passwd", {})


def test_syntax_errors_report_file_and_line(lib: TemplateLibrary) -> None:
    name = write(lib, "broken.html", "line one\n{% for x in items %}\n{{ x }\n")
    with pytest.raises(TemplateError, match=r"broken\.html:3"):
        lib.render(name, {"items": []})
    problems = [str(p) for p in lib.validate(name)]
    assert problems and problems[0].startswith("broken.html:3:")


def test_validate_reports_unknown_filters_and_undeclared_variables(lib: TemplateLibrary) -> None:
    name = write(
        lib,
        "declared.html",
        "{#- ---\ndescription: demo\nparams:\n  title: The title\n--- -#}\n"
        "{{ title | shout }}\n{{ author }}",
    )
    problems = [str(p) for p in lib.validate(name)]
    assert "declared.html:6: unknown filter 'shout'" in problems
    assert any("'author' is used but not declared" in p for p in problems)
    assert lib.info(name).description == "demo"


def test_variables_include_those_of_included_templates(lib: TemplateLibrary) -> None:
    assert lib.variables("child.html") == ["body", "title"]


def test_the_version_changes_when_an_included_template_changes(lib: TemplateLibrary) -> None:
    before = lib.version("child.html")
    write(lib, "_part.html", "<p>{{ body }}!</p>")
    assert lib.version("child.html") != before
    assert "!" in lib.render("child.html", {"title": "", "body": ""})  # no stale cache


def test_every_bundled_template_is_valid() -> None:
    lib = TemplateLibrary(REPO / "templates")
    assert {
        "portfolio.html",
        "daily.html",
        "weekly.html",
        "monthly.html",
        "executive_summary.html",
        "custom-report.html",
    } <= set(lib.names())
    for name in lib.names():
        assert lib.validate(name) == [], name
