"""The house's rules as a reader relies on them: no import circle anywhere (imports inside
functions counted), and the checker that says so finds one when there is one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts/import_graph.py")
assert spec is not None and spec.loader is not None
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_the_checker_finds_a_circle_through_three_modules() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_graph.cycles(edges) == [["a", "b", "c"]]


def test_no_module_of_shared_or_services_is_in_an_import_circle() -> None:
    known = import_graph.modules()
    edges = {
        name: {t for t, _ in import_graph.imports_of(name, path, known)}
        for name, path in known.items()
    }
    assert import_graph.cycles(edges) == []


def test_nothing_in_shared_imports_a_service_even_inside_a_function() -> None:
    known = import_graph.modules()
    upward = [
        (name, target)
        for name, path in known.items()
        if name.startswith("shared")
        for target, _ in import_graph.imports_of(name, path, known)
        if target.startswith("services")
    ]
    assert upward == []
