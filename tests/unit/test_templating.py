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
        TemplateError, match=r"'quarterly.html' not found \(known: base.html, child.html\)"
    ):
        lib.resolve("quarterly.html")
    with pytest.raises(TemplateError, match=r"did you mean child\.html"):
        lib.resolve("chld")
    with pytest.raises(TemplateError, match="not a plain name"):
        lib.render("../etc/passwd", {})


def test_a_request_names_a_listed_template_with_or_without_its_extension(
    lib: TemplateLibrary,
) -> None:
    assert lib.resolve("child") == "child.html" == lib.resolve("child.html")
    write(lib, ".secret.html", "token")
    (lib.folder / "notes.txt").write_text("x")
    for unlisted in ("_part.html", ".secret.html", "notes.txt", ".git/config"):
        with pytest.raises(TemplateError, match="cannot be requested"):
            lib.resolve(unlisted)


@pytest.mark.parametrize(
    "include",
    ["'.git/config'", "'.git/' ~ 'config'", "'link/environ'", "'lin' ~ 'k/environ'", "'out.html'"],
)
def test_includes_never_read_hidden_files_or_leave_the_folder_through_symlinks(
    lib: TemplateLibrary, include: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "environ").write_text("AWS_SECRET=canary")
    (outside / "out.html").write_text("canary")
    (lib.folder / ".git").mkdir()
    (lib.folder / ".git" / "config").write_text("token=canary")
    (lib.folder / "link").symlink_to(outside)
    (lib.folder / "out.html").symlink_to(outside / "out.html")
    name = write(lib, "leak.html", "{% include " + include + " %}")
    with pytest.raises(TemplateError, match=r"hidden file|outside the templates folder") as caught:
        lib.render(name, {})
    assert "canary" not in caught.value.reason and str(outside) not in caught.value.reason


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ 'x' * 5000000000 }}", "5,000,000,000 items"),
        ("{{ [1, 2] * 6000000 }}", "12,000,000 items"),
        ("{{ 7 ** 12000000 }}", "digits"),
        ("{{ '%999999999d' % 1 }}", "width of 999999999"),
        ("{{ 'x' | center(999999999) }}", "width limit"),
        ("{{ '{:>999999999}'.format(1) }}", "width of 999999999"),
        ("{{ 'x'.ljust(999999999) }}", "width of 999999999"),
        ("{{ '%s' | format('x') ~ ('%999999999s' | format('x')) }}", "width"),
    ],
)
def test_absurd_results_are_refused_before_they_are_computed(
    lib: TemplateLibrary, source: str, reason: str
) -> None:
    name = write(lib, "bomb.html", source)
    with pytest.raises(TemplateError, match="unsafe operation") as caught:
        lib.render(name, {})
    assert reason in caught.value.reason


def test_compiling_a_bomb_does_not_compute_it() -> None:
    from services.renderer.templating import Sandbox

    # Jinja folds constant expressions at compile time, except operators the sandbox intercepts.
    Sandbox().compile("{{ 'x' * 5000000000 }}{{ 7 ** 12000000 }}")


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(1000000) %}{% endfor %}",  # the sandbox's own range() cap
        "{{ [1][5] }}",
        "{{ 10 ** 400 * 1.0 }}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
        "{{ 1 // 0 }}",
    ],
)
def test_any_failure_of_template_code_is_a_template_error(
    lib: TemplateLibrary, source: str
) -> None:
    name = write(lib, "fails.html", source)
    with pytest.raises(TemplateError):
        lib.render(name, {})


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
