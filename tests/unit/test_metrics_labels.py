"""The template label is bounded by the operator's template list, not by who came first."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared import metrics
from shared.templatefiles import template_names


@pytest.fixture(autouse=True)
def fresh_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's label state, put back afterwards (other tests share the process)."""
    monkeypatch.setattr(metrics, "_listed", {})
    monkeypatch.setattr(metrics, "_seen", {})


def test_junk_names_cannot_push_a_real_template_into_other(tmp_path: Path) -> None:
    (tmp_path / "weekly.html").write_text("<p>w</p>")
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "monthly.html").write_text("<p>m</p>")
    (tmp_path / "_base.html").write_text("partial")
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "x.html").write_text("sample")
    names = template_names(tmp_path)
    assert names == ["reports/monthly.html", "weekly.html"]  # what `templates ls` lists
    metrics.operator_labels("template", names)

    junk = {metrics.bounded("template", f"junk-{n}.html") for n in range(metrics.MAX_LABEL_VALUES)}

    assert junk == {"other"}
    assert metrics.bounded("template", "weekly.html") == "weekly.html"
    # the name a request may use is the same template: one label (issue 26)
    assert metrics.bounded("template", "weekly") == "weekly.html"
    assert metrics.bounded("template", "reports/monthly.html") == "reports/monthly.html"
    assert metrics.bounded("template", "_base.html") == "other"


def test_first_come_only_for_a_label_nobody_lists() -> None:
    kept = {metrics.bounded("source", f"s{n}") for n in range(metrics.MAX_LABEL_VALUES + 5)}
    assert len(kept) == metrics.MAX_LABEL_VALUES + 1 and "other" in kept
