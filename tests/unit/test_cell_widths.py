"""A long table's cells measured once per distinct cell (services/renderer/cellwidths.py): the
PDF is byte-identical to WeasyPrint measuring every cell, on a table whose repeated texts sit in
cells that differ only in ways a cell's widths depend on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from services.renderer import cellwidths
from services.renderer.pdf import render_job
from tests.helpers import REPO
from tests.unit.test_render_warm import job_for

# The same texts again and again, in cells that differ by: a class (font size), the row
# (nth-child: letter spacing, inherited), the language (hyphenation), generated content, an
# inline element, white-space, the borders collapsing gave them (the table's on the first
# column, a thick neighbour's); and cells left to WeasyPrint (an inline block).
TRICKY = """<html><head><style>
  table { border-collapse: collapse; border: 3mm solid black; }
  td { border: 1px solid gray; padding: 1mm 2mm; hyphens: auto; }
  td.thick { border-right: 5mm solid black; }
  td.big { font-size: 20pt; }
  tr:nth-child(4n) { letter-spacing: 3px; }
  td.tag::before { content: "* "; }
  td.pre { white-space: pre; }
  span.box { display: inline-block; width: 30mm; }
</style></head><body><table><tbody>
{% for i in range(rows) %}<tr>
  <td>{{ words[i % 3] }}</td>
  <td class="{{ 'big' if i % 5 == 4 else '' }}">{{ words[i % 2] }}</td>
  <td lang="{{ 'de' if i % 2 else 'en' }}"
      class="{{ 'thick' if i % 9 == 8 else '' }}">Donaudampfschifffahrtsgesellschaft</td>
  <td class="{{ 'tag' if i % 3 == 0 else '' }}">{{ words[2] }}</td>
  <td>{% if i % 4 == 1 %}<b>{{ words[0] }}</b>{% else %}{{ words[0] }}{% endif %}</td>
  <td class="{{ 'pre' if i % 6 == 5 else '' }}">{{ words[0] }} {{ words[1] }}</td>
  <td>{% if i % 7 == 6 %}<span class="box">x</span>{% endif %}{{ i % 4 }}</td>
</tr>{% endfor %}
</tbody></table></body></html>"""
WORDS = ["Alpha beta", "Gamma", "Delta epsilon zeta"]


def tricky_pdf(tmp_path: Path, rows: int = 40) -> bytes:
    (tmp_path / "tricky.html").write_text(TRICKY)
    output = render_job(job_for(tmp_path, "tricky.html", {"rows": rows, "words": WORDS}))
    assert output.pdf is not None
    return output.pdf


def test_cells_measured_once_print_exactly_what_measuring_each_prints(tmp_path: Path) -> None:
    with cellwidths.disabled():
        expected = tricky_pdf(tmp_path)
    before = dict(cellwidths.totals)
    assert tricky_pdf(tmp_path) == expected
    reused = cellwidths.totals["reused"] - before["reused"]
    measured = cellwidths.totals["measured"] - before["measured"]
    assert reused > 150 and measured < 100, (reused, measured)  # 280 cells, few distinct


def style_without_ancestors(style: Any, memo: Any) -> int | None:
    """A flawed key: a style's own declarations, not its parents' (a row's letter spacing)."""
    kinds = cellwidths._kinds
    own = (
        cellwidths._frozen((tuple(sorted(style.cascaded.items())), style.pseudo_type))
        if type(style) is kinds["computed"]
        else "anonymous"
    )
    return memo.tokens.setdefault(own, len(memo.tokens))


@pytest.mark.parametrize(
    ("part", "flawed"),
    [
        ("_style_key", lambda style, memo: 0),
        ("_style_key", style_without_ancestors),
        ("_used_borders", lambda box: (None, None)),
    ],
    ids=["text only", "without ancestors", "without collapsed borders"],
)
def test_a_key_that_leaves_part_of_the_cell_out_would_print_another_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, part: str, flawed: Any
) -> None:
    # The table above catches such keys: the test above can fail.
    with cellwidths.disabled():
        expected = tricky_pdf(tmp_path)
    monkeypatch.setattr(cellwidths, part, flawed)
    assert tricky_pdf(tmp_path) != expected


@pytest.mark.parametrize(("sample", "times"), [("portfolio.json", 8), ("multilingual.json", 2)])
def test_the_bundled_report_prints_the_same(tmp_path: Path, sample: str, times: int) -> None:
    data = json.loads((REPO / "templates" / "samples" / sample).read_text())
    data = dict(data, projects=data["projects"] * times)  # a table of repeated rows
    job = job_for(REPO / "templates", "portfolio.html", data)
    with cellwidths.disabled():
        expected = render_job(job).pdf
    reused = cellwidths.totals["reused"]
    assert render_job(job).pdf == expected
    assert cellwidths.totals["reused"] > reused  # its repeated rows were not measured again
