"""Server-drawn SVG charts for the SLO page (no JavaScript): the renderer's round axis ticks,
gaps where a period had no reports, a title and a text alternative for screen readers."""

from __future__ import annotations

from markupsafe import Markup, escape

from services.renderer.charts import nice_ticks

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 28, 28, 26


def line(labels: list[str], values: list[float | None], title: str, *, unit: str) -> Markup:
    known = [v for v in values if v is not None]
    summary = (
        f"{title}: no reports in this window"
        if not known
        else f"{title}: from {min(known):.1f}{unit} to {max(known):.1f}{unit} over "
        f"{len(values)} periods"
    )
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(summary)}" '
        f'class="chart" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(summary)}</title>",
        f'<text x="{LEFT}" y="16" class="chart-title">{escape(title)}</text>',
    ]
    if not known:
        parts.append(f'<text x="{LEFT}" y="{HEIGHT // 2}" class="chart-note">no data</text></svg>')
        return Markup("".join(parts))
    ticks = nice_ticks(min([*known, 0.0]), max(known) or 1)
    lo, hi = ticks[0], ticks[-1]
    span = (hi - lo) or 1
    base = HEIGHT - BOTTOM

    def y(value: float) -> float:
        return base - (value - lo) / span * (base - TOP)

    step = (WIDTH - LEFT - RIGHT) / max(len(values) - 1, 1)
    for tick in ticks:
        parts.append(
            f'<line x1="{LEFT}" y1="{y(tick):.1f}" x2="{WIDTH - RIGHT}" y2="{y(tick):.1f}" '
            f'class="grid"/><text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" class="axis" '
            f'text-anchor="end">{tick:,.10g}</text>'
        )
    run: list[str] = []
    runs: list[list[str]] = []
    for i, value in enumerate(values):
        if value is None:
            if run:
                runs.append(run)
            run = []
            continue
        run.append(f"{LEFT + i * step:.1f},{y(value):.1f}")
    if run:
        runs.append(run)
    for points in runs:
        if len(points) == 1:
            cx, cy = points[0].split(",")
            parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" class="series"/>')
        else:
            parts.append(f'<polyline points="{" ".join(points)}" class="series"/>')
    every = max(len(labels) // 8, 1)
    for i, label in enumerate(labels):
        if i % every == 0:
            parts.append(
                f'<text x="{LEFT + i * step:.1f}" y="{HEIGHT - 8}" class="axis" '
                f'text-anchor="middle">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
