"""Charts in the bundled templates: axes labelled on round values."""

from __future__ import annotations

import re

from services.renderer.charts import line_chart, nice_ticks


def test_chart_axes_are_labelled_on_round_values() -> None:
    assert nice_ticks(0, 9) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(0, 1234) == [0, 500, 1000, 1500]
    assert nice_ticks(-3, 7) == [-4, -2, 0, 2, 4, 6, 8]
    svg = str(line_chart([3, 9, 4, 6]))
    labels = re.findall(r'text-anchor="end" fill="#374151">([^<]+)<', svg)
    assert labels == ["0", "2", "4", "6", "8", "10"]
