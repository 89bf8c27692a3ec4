"""`pressroom render` and `pressroom templates`: the legacy generate_report.py flags, no bus."""

from __future__ import annotations

import json
import subprocess
from io import BytesIO
from pathlib import Path

import pytest
from pypdf import PdfReader

from tests.helpers import REPO, pressroom

pytestmark = pytest.mark.integration


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_the_legacy_template_and_data_render_to_pdf_by_path(tmp_path: Path) -> None:
    output = tmp_path / "reports" / "custom.pdf"
    result = pressroom(
        "render",
        "--template",
        str(REPO / "templates/custom-report.html"),
        "--data-file",
        str(REPO / "templates/samples/custom-report.json"),
        "--param",
        "report_title=Portfolio Review",
        "--param",
        "project_count=31",
        "--output",
        str(output),
        "--format",
        "pdf",
    )
    assert result.returncode == 0, result.stderr
    text = "".join(p.extract_text() for p in PdfReader(BytesIO(output.read_bytes())).pages)
    assert "Portfolio Review" in text  # --param overrides the data file
    assert "31" in text and "Cobalt" in text


def test_html_output_follows_the_output_extension(tmp_path: Path) -> None:
    output = tmp_path / "weekly.html"
    result = pressroom(
        "render",
        "--template",
        "weekly.html",
        "--data-file",
        str(REPO / "templates/samples/portfolio.json"),
        "--output",
        str(output),
    )
    assert result.returncode == 0, result.stderr
    assert output.read_text().startswith("<!DOCTYPE html>")
    assert "<svg" in output.read_text()  # charts are inline SVG


def test_yaml_data_files_work_too(tmp_path: Path) -> None:
    data = tmp_path / "d.yaml"
    data.write_text(
        "report_title: From YAML\nproject_count: 3\ndeployment_count: 1\n"
        "projects: []\ngeneration_time: now\n"
    )
    output = tmp_path / "out.html"
    result = pressroom(
        "render",
        "-t",
        str(REPO / "templates/custom-report.html"),
        "--data-file",
        str(data),
        "-o",
        str(output),
    )
    assert result.returncode == 0, result.stderr
    assert "From YAML" in output.read_text()


def test_dry_run_validates_and_writes_nothing(tmp_path: Path) -> None:
    output = tmp_path / "never.pdf"
    result = pressroom(
        "render",
        "--template",
        "portfolio.html",
        "--data-file",
        str(REPO / "templates/samples/portfolio.json"),
        "--output",
        str(output),
        "--dry-run",
    )
    assert result.returncode == 0, result.stderr
    assert "nothing written" in result.stdout and not output.exists()


def test_the_legacy_dry_run_with_missing_variables_fails_in_one_line(tmp_path: Path) -> None:
    result = pressroom(
        "render",
        "--template",
        "custom-report.html",
        "--param",
        'report_title="Test Report"',
        "--param",
        "project_count=25",
        "--output",
        str(tmp_path / "x.html"),
        "--dry-run",
    )
    line = one_line_error(result)
    assert "undefined" in line and "custom-report.html" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--template", "quarterly.html"], "'quarterly.html' not found"),
        (["--template", "portfolio.html", "--data-file", "/nonexistent.json"], "not found"),
        (["--template", "portfolio.html", "--format", "docx"], "pdf, html, csv or xlsx"),
        (["--template", "portfolio.html", "--param", "novalue"], "key=value"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, args: list[str], expected: str) -> None:
    line = one_line_error(pressroom("render", *args, "--output", str(tmp_path / "o.pdf")))
    assert expected in line


# Markup WeasyPrint 70 does not handle: it raises from inside its layout.
UNLAID = """<html><head><style>li::marker { content: "-> "; }</style></head>
<body><table><tr><td><ol><li>one</li></ol></td></tr></table></body></html>"""


def test_markup_weasyprint_cannot_lay_out_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "unlaid.html").write_text(UNLAID)
    args = ["--template", str(tmp_path / "unlaid.html"), "--output", str(tmp_path / "o.pdf")]
    line = one_line_error(pressroom("render", *args))
    assert "WeasyPrint could not lay this document out (TypeError: " in line, line
    assert not (tmp_path / "o.pdf").exists()


def test_templates_ls_validate_and_vars() -> None:
    listed = json.loads(pressroom("templates", "ls", "--json").stdout)
    assert {"portfolio.html", "weekly.html"} <= {t["name"] for t in listed}
    assert all(t["description"] for t in listed)

    assert pressroom("templates", "validate", "--all").returncode == 0

    variables = json.loads(pressroom("templates", "vars", "custom-report.html", "--json").stdout)
    assert variables["variables"] == [
        "deployment_count",
        "generation_time",
        "project_count",
        "projects",
        "report_title",
    ]


def test_vars_of_a_template_that_does_not_parse_is_an_error_at_its_line(tmp_path: Path) -> None:
    # Not an empty table and exit 0: the variables after the typo could not be known.
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "rows.html").write_text("<td>{{ name }}</td>\n<td>{{ total }</td>")
    (tmp_path / "outer.html").write_text("<h1>{{ title }}</h1>{% include 'parts/rows.html' %}")
    result = pressroom("templates", "vars", str(tmp_path / "outer.html"))
    assert result.returncode == 1 and not result.stdout
    assert one_line_error(result) == (
        "error: template syntax error at parts/rows.html:2: unexpected '}'"
    )


def test_validate_exits_1_with_file_and_line_per_problem(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<p>\n{{ x | nosuchfilter }}\n{% if %}</p>")
    result = pressroom("templates", "validate", str(broken))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "broken.html:3: Expected an expression, got 'end of statement block'"
    ]


@pytest.mark.parametrize(
    "args",
    [["dlq", "show"], ["bogus"], ["render", "--format"], ["templates", "vars"]],
)
def test_usage_errors_are_one_line_with_exit_2(args: list[str]) -> None:
    result = pressroom(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr


def test_an_unreachable_bus_is_one_line_not_a_hang() -> None:
    result = pressroom("ls", env={"PRESSROOM_NATS_URL": "nats://127.0.0.1:1"}, timeout=30)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: cannot reach NATS at nats://127.0.0.1:1: connection refused: nothing listens "
        "there (is the server running?)"
    ]
