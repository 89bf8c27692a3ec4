"""Text from requests reaches the operator's terminal as text: no markup, no control sequences."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from services.console.cli._output import Col, literal, print_table, styled, visible

HOSTILE = "[/evil][bold red]x\x1b]0;pwned-title\x07\x1b[2J\u202eabc\x9b31m\x00end\\"
SHOWN = "[/evil][bold red]x\\x1b]0;pwned-title\\x07\\x1b[2J\\u202eabc\\x9b31m\\x00end\\"


def console(width: int = 80) -> Console:
    return Console(file=io.StringIO(), width=width, color_system=None, emoji=False)


def printed(terminal: Console) -> str:
    return terminal.file.getvalue()  # type: ignore[attr-defined]


def raw_controls(text: str) -> list[str]:
    return [
        c for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) <= 0x9F or c in "\u202e"
    ]


def test_visible_writes_every_control_character_out() -> None:
    assert visible(HOSTILE) == SHOWN
    assert visible("line one\nline two\ttab\r") == "line one\\nline two\\ttab\\r"
    assert visible("a\nb\x1b", lines=True) == "a\nb\\x1b"  # a payload keeps its lines
    assert visible("\u2066isolate\u2069 \u200fmark \u2028sep") == (
        "\\u2066isolate\\u2069 \\u200fmark \\u2028sep"
    )
    assert visible("a\u200bb\xadc\ufeffd\U000e0041") == "a\\u200bb\\xadc\\ufeffd\\U000e0041"
    assert visible("Grüße · 東京 – ok") == "Grüße · 東京 – ok"  # text is text
    assert visible("👩\u200d💻 می\u200cخواهم") == "👩\u200d💻 می\u200cخواهم"  # joiners join
    assert visible(visible(HOSTILE)) == visible(HOSTILE)
    assert visible("\ud800") == "\\ud800"  # a lone surrogate cannot even be encoded


@pytest.mark.parametrize("width", [40, 80, 200])
def test_literal_in_markup_shows_the_text_as_written(width: int) -> None:
    terminal = console(width)
    terminal.print(f"[bold]{literal(HOSTILE)}[/] after", soft_wrap=True)
    assert printed(terminal) == f"{SHOWN} after\n"


@pytest.mark.parametrize("value", ["[/]", "[/evil]", "\\", "a\\", "\\[bold]", "[link=x]y[/link]"])
def test_literal_survives_what_rich_would_parse(value: str) -> None:
    terminal = console()
    terminal.print(f"{literal(value)} [bold]ok[/]", soft_wrap=True)
    assert printed(terminal).startswith(value.rstrip("\\")), printed(terminal)
    assert printed(terminal).rstrip("\n").endswith(" ok")


@pytest.mark.parametrize("width", [60, 80, 200])
def test_table_cells_are_plain_text_and_styles_are_explicit(width: int) -> None:
    terminal = console(width)
    rows = [[HOSTILE, styled("failed", "red"), f"reason with {HOSTILE} inside"]]
    print_table(terminal, [Col("request_id"), Col("status"), Col("reason", long=True)], rows)
    shown = printed(terminal)
    assert not raw_controls(shown), repr(shown)
    assert "failed" in shown
    flat = "".join(shown.replace("│", "").split())
    assert "".join(SHOWN.split()) in flat, shown


def test_log_lines_show_what_a_request_made_them_say_as_text() -> None:
    from services.console.cli.logs import parse, readable

    hostile = HOSTILE.replace(" ", "_")  # unquoted in the key=value form
    record = {"timestamp": "2026-12-05T16:00:00.000Z", "level": "error", "event": "failed"}
    for line in (
        parse("renderer-1", json.dumps({**record, "template": hostile})),
        parse("renderer-1", f"ValueError: template {hostile} broke"),
    ):
        shown = readable(line, 80)
        assert not raw_controls(shown), repr(shown)
        assert visible(hostile) in "".join(shown.split()), shown
