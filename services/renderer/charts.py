"""Inline SVG charts for templates (WeasyPrint runs no JavaScript): bar, line and sparkline."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from markupsafe import Markup, escape

PALETTE = ("#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2")


def _pairs(data: Any) -> list[tuple[str, float]]:
    """Accept {label: value}, [(label, value)], [{"label":..,"value":..}] or [value, ...]."""
    if isinstance(data, Mapping):
        return [(str(k), _num(v)) for k, v in data.items()]
    pairs: list[tuple[str, float]] = []
    for index, item in enumerate(data or []):
        if isinstance(item, Mapping):
            label = item.get("label", item.get("name", index + 1))
            pairs.append((str(label), _num(item.get("value", 0))))
        elif isinstance(item, list | tuple) and len(item) == 2:
            pairs.append((str(item[0]), _num(item[1])))
        else:
            pairs.append((str(index + 1), _num(item)))
    return pairs


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 or value == int(value) else f"{value:,.2f}"


MAX_DESCRIBED = 40  # values a chart's text description lists before "and N more"


def describe(kind: str, title: str | None, pairs: Sequence[tuple[str, float]]) -> str:
    """The chart in words, from its data: its alt text in a tagged PDF (and for screen
    readers of the HTML): `Bar chart "Deployments per week": W44 12; W45 15.`"""
    head = f'{kind} "{title}"' if title else kind
    if not pairs:
        return f"{head}: no data."
    shown = "; ".join(
        f"{label} {_fmt(value)}" if label else _fmt(value) for label, value in pairs[:MAX_DESCRIBED]
    )
    more = f"; and {len(pairs) - MAX_DESCRIBED} more" if len(pairs) > MAX_DESCRIBED else ""
    return f"{head}: {shown}{more}."


def _svg(width: int, height: int, body: Iterable[str], title: str | None, alt: str = "") -> Markup:
    label = f' aria-label="{escape(title)}"' if title else ""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img"{label}>'
        # WeasyPrint's tagged PDF takes a figure's alt text from the SVG's <title>.
        + (f"<title>{escape(alt)}</title>" if alt else "")
    )
    caption = (
        f'<text x="0" y="12" font-size="11" font-weight="bold" fill="#111827">'
        f"{escape(title)}</text>"
        if title
        else ""
    )
    return Markup(head + caption + "".join(body) + "</svg>")


def bar_chart(
    data: Any,
    width: int = 480,
    height: int = 200,
    title: str | None = None,
    color: str = PALETTE[0],
    horizontal: bool = False,
) -> Markup:
    pairs = _pairs(data)
    alt = describe("Bar chart", title, pairs)
    if not pairs:
        return _svg(width, height, ['<text x="8" y="40" font-size="10">no data</text>'], title, alt)
    top = 20 if title else 4
    peak = max((v for _, v in pairs), default=0) or 1
    parts: list[str] = []
    if horizontal:
        label_w, row = 110, (height - top) / len(pairs)
        for i, (label, value) in enumerate(pairs):
            y = top + i * row
            w = max((width - label_w - 50) * value / peak, 0)
            parts.append(
                f'<text x="{label_w - 6}" y="{y + row * 0.65:.1f}" font-size="9" '
                f'text-anchor="end" fill="#374151">{escape(label)}</text>'
                f'<rect x="{label_w}" y="{y + row * 0.15:.1f}" width="{w:.1f}" '
                f'height="{row * 0.7:.1f}" fill="{escape(color)}" rx="2"/>'
                f'<text x="{label_w + w + 4:.1f}" y="{y + row * 0.65:.1f}" font-size="9" '
                f'fill="#111827">{_fmt(value)}</text>'
            )
        return _svg(width, height, parts, title, alt)
    base, col = height - 18, width / len(pairs)
    for i, (label, value) in enumerate(pairs):
        h = max((base - top - 12) * value / peak, 0)
        x = i * col
        parts.append(
            f'<rect x="{x + col * 0.15:.1f}" y="{base - h:.1f}" width="{col * 0.7:.1f}" '
            f'height="{h:.1f}" fill="{escape(color)}" rx="2"/>'
            f'<text x="{x + col / 2:.1f}" y="{base - h - 3:.1f}" font-size="9" '
            f'text-anchor="middle" fill="#111827">{_fmt(value)}</text>'
            f'<text x="{x + col / 2:.1f}" y="{height - 5}" font-size="9" '
            f'text-anchor="middle" fill="#374151">{escape(label)}</text>'
        )
    parts.append(f'<line x1="0" y1="{base}" x2="{width}" y2="{base}" stroke="#9ca3af"/>')
    return _svg(width, height, parts, title, alt)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round axis values covering [lo, hi]: 0, 2, 4, 6 rather than 0 and 5.7."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.floor(lo / step) * step
    ticks = [first]
    while ticks[-1] < hi - 1e-9:
        ticks.append(round(first + len(ticks) * step, 10))
    return ticks


def _series(data: Any) -> dict[str, list[float]]:
    if isinstance(data, Mapping) and all(isinstance(v, list | tuple) for v in data.values()):
        return {str(k): [_num(x) for x in v] for k, v in data.items()}
    return {"": [v for _, v in _pairs(data)]}


def line_chart(
    data: Any,
    labels: Sequence[Any] | None = None,
    width: int = 480,
    height: int = 200,
    title: str | None = None,
) -> Markup:
    series = _series(data)
    values = [v for points in series.values() for v in points]
    names = [str(label) for label in labels or []]
    alt = " ".join(
        describe(
            f"Line chart{f' ({name})' if name else ''}",
            title,
            [(names[i] if i < len(names) else str(i + 1), v) for i, v in enumerate(points)],
        )
        for name, points in series.items()
    )
    if not values:
        return _svg(width, height, ['<text x="8" y="40" font-size="10">no data</text>'], title, alt)
    top, base, left = (22 if title else 6), height - 18, 36
    ticks = nice_ticks(min([*values, 0.0]), max(values) or 1)
    lo, hi = ticks[0], ticks[-1]
    span = (hi - lo) or 1
    parts = []
    for tick in ticks:  # gridlines and labels on round values
        y = base - (tick - lo) / span * (base - top)
        colour = "#9ca3af" if tick == lo else "#e5e7eb"
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width}" y2="{y:.1f}" stroke="{colour}"/>'
            f'<text x="{left - 4}" y="{y + 3:.1f}" font-size="8" text-anchor="end" '
            f'fill="#374151">{tick:,.10g}</text>'
        )
    longest = max(len(p) for p in series.values())
    step = (width - left - 8) / max(longest - 1, 1)
    for n, (name, points) in enumerate(series.items()):
        color = PALETTE[n % len(PALETTE)]
        coords = " ".join(
            f"{left + i * step:.1f},{base - (v - lo) / span * (base - top):.1f}"
            for i, v in enumerate(points)
        )
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"/>')
        if name:
            parts.append(
                f'<text x="{width - 4}" y="{top + 10 + n * 11}" font-size="9" text-anchor="end" '
                f'fill="{color}">{escape(name)}</text>'
            )
    for i, label in enumerate(labels or []):
        if longest <= 12 or i % max(longest // 8, 1) == 0:
            parts.append(
                f'<text x="{left + i * step:.1f}" y="{height - 5}" font-size="8" '
                f'text-anchor="middle">{escape(str(label))}</text>'
            )
    return _svg(width, height, parts, title, alt)


def sparkline(data: Any, width: int = 90, height: int = 18, color: str = PALETTE[0]) -> Markup:
    values = [v for _, v in _pairs(data)]
    if len(values) < 2:
        return Markup("")
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1
    step = (width - 2) / (len(values) - 1)
    coords = " ".join(
        f"{1 + i * step:.1f},{height - 1 - (v - lo) / span * (height - 2):.1f}"
        for i, v in enumerate(values)
    )
    trend = "rising" if values[-1] > values[0] else "falling" if values[-1] < values[0] else "flat"
    alt = describe(f"Trend, {trend}", None, [("", v) for v in values])
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="sparkline" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img">'
        f'<title>{escape(alt)}</title><polyline points="{coords}" '
        f'fill="none" stroke="{escape(color)}" stroke-width="1.5"/></svg>'
    )
