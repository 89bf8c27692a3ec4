"""Planning a split render: where a long report can be cut, and when it is."""

from __future__ import annotations

from services.renderer import splitplan


def test_the_planner_finds_the_longest_tables_rows_and_cuts_between_them() -> None:
    html = (
        "<table><tr><td>small</td></tr></table>"
        "<table><thead><tr><th>h</th></tr></thead><tbody>"
        + "".join(f"<tr><td>{i}<table><tr><td>in</td></tr></table></td></tr>" for i in range(400))
        + "</tbody></table><p>after</p>"
    )
    document = splitplan.read(html)
    assert document.rows is not None
    assert document.rows.table_index == 1 and len(document.rows) == 400
    windows = splitplan.windows(400, 4)
    assert len(windows) == 2  # at least MIN_CHUNK_ROWS rows a chunk
    cut = windows[1].target
    assert 150 < cut < 200  # the first chunk also boxes its look-ahead rows
    second = splitplan.chunk_html(html, document.rows, windows[1])
    assert f"<td>{cut - 1}<" in second and f"<td>{cut}<" in second  # one row looked behind
    assert f"<td>{cut - 2}<" not in second
    assert second.endswith("</tbody></table><p>after</p>")
    assert "<th>h</th>" in second


def test_the_planner_names_what_cannot_be_split() -> None:
    def why(css: str) -> str | None:
        return splitplan.unsupported([css])

    assert why("td { color: red } @page { @bottom-right { content: counter(page) } }") is None
    assert why("h1 { string-set: t content() }") == "running strings (string-set)"
    assert why("li::before { content: counter(item) }") == "counters in the content"
    assert why("@page :left { margin-left: 3cm }") == "left/right pages"
    assert why("p { text-align:left; page-break-inside: avoid }") is None
    assert why("table { page: wide }") == "named pages"
    # A chunk holds a window of rows: selectors counting rows would match others in it.
    rows = "selectors that count rows (:nth-child …)"
    assert why("tr:nth-child(even) td { background: #eee }") == rows
    assert why("tbody > .row:NTH-OF-TYPE(3n+1) { color: red }") == rows
    assert why(":nth-last-child(2) { color: red }") == rows
    assert why("table tr:last-child td { border: 0 }") == rows
    assert why("tr:not(.x):first-child { color: red }") == rows
    assert why("td:first-child { white-space: nowrap } li:nth-child(2) { color: red }") is None
    assert why("th:last-child, td:nth-child(3) { text-align: right }") is None
    # A reviewer's second round: rows looking at other rows, escapes, and common templates
    # that must still split.
    for counting in (
        "tr.sub ~ tr td { color: red }",
        "table:has(tr.late) td { color: red }",
        "tr:has(~ tr.late) td { color: red }",
        "tbody t\\72:nth-child(even) td { color: red }",
        "tbody tr:nth-ch\\69ld(even) td { color: red }",
        "@media print { tbody > *:nth-child(odd) { color: red } }",
        ".amount:last-child { color: red }",
    ):
        assert why(counting) == rows, counting
    # A hostile template's CSS is read in bounded steps (each would otherwise cost a scan of
    # the whole stylesheet): too long a selector or too many of them, and it is one piece.
    assert why("td" + ":first-child" * 100_000 + " { color: red }") == rows
    assert why("td" + "x" * 1_000_000 + ":first-child { color: red }") == rows
    assert why("td ~ td" + "x" * 1_000_000 + " { color: red }") == rows
    for fine in (
        "tr > :last-child { text-align: right } tr > *:first-child { width: 2cm }",
        "thead tr:first-child th { color: red } tfoot tr:last-child td { color: red }",
        "td:not(:first-child) { text-align: right } td:is(:last-child) { color: red }",
        "td > :first-child { margin-top: 0 } td > :last-child { margin-bottom: 0 }",
        "td p:last-of-type { margin: 0 } td ~ td { border-left: 1px solid }",
        "a[lang~=en] { color: red }",
    ):
        assert why(fine) is None, fine


def test_splitting_is_chosen_by_the_operator_the_request_and_the_template() -> None:
    assert splitplan.split_mode("off", "on") == "off"
    assert splitplan.split_mode("auto", "on") == "on"
    assert splitplan.split_mode("auto", None) == "auto"
    assert splitplan.want_split("auto", None, rows=2000, threshold=500)
    assert not splitplan.want_split("auto", None, rows=400, threshold=500)
    assert splitplan.want_split("on", None, rows=400, threshold=500)
    assert not splitplan.want_split("on", "off", rows=4000, threshold=500)
    assert splitplan.want_split("auto", "on", rows=400, threshold=5000)
    assert not splitplan.want_split("on", None, rows=100, threshold=1)  # too short to cut


def test_the_cut_balances_what_comes_before_and_after_the_table() -> None:
    def document(before: int, after: int) -> str:
        rows = "".join(f"<tr><td>{i}</td><td>x</td></tr>" for i in range(1000))
        paragraphs = ["<p>text</p>" * before, "<p>text</p>" * after]
        return (
            f"<html><head><style>td {{ color: red }}</style></head><body>{paragraphs[0]}"
            f"<table><tbody>{rows}</tbody></table>{paragraphs[1]}</body></html>"
        )

    def cut(html: str) -> int:
        rows = splitplan.read(html).rows
        assert rows is not None
        before, after = splitplan.around(html, rows)
        return splitplan.windows(len(rows), 2, before, after)[1].target

    plain = cut(document(0, 0))
    assert 450 < plain < 500  # an equal share, less the first chunk's look-ahead rows
    # Totals and notes after the table: the last chunk lays them out, it gets fewer rows.
    assert cut(document(0, 300)) > plain + 40
    # A long heading before it: the first chunk gets fewer.
    assert cut(document(300, 0)) < plain - 40
    # A heading of much text in few tags counts by its text.
    long_text = document(0, 0).replace("<body>", "<body><p>" + "word " * 3000 + "</p>")
    assert cut(long_text) < plain - 100
    # Never fewer than half an equal share, however long the heading.
    assert cut(document(100_000, 0)) == 250
