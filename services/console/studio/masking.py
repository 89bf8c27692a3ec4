"""Masked fields: dotted paths (PRESSROOM_STUDIO_MASK) whose values never leave the server.

A path is dot-separated keys; `*` matches any key or list index, and a list met on the way is
walked item by item (`accounts.iban` masks the `iban` of every account). A masked value is
replaced by MASK whatever it was (a number, a string, a whole object).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MASK = "••••"


def _parts(path: str) -> list[str]:
    return [p for p in path.strip().split(".") if p]


def mask(data: Any, paths: Iterable[str]) -> Any:
    """A copy of `data` with every value at a masked path replaced by MASK."""
    result = data
    for path in paths:
        parts = _parts(path)
        if parts:
            result = _mask(result, parts)
    return result


def _mask(node: Any, parts: list[str]) -> Any:
    if isinstance(node, list):
        return [_mask(item, parts) for item in node]
    if not isinstance(node, dict):
        return node
    head, rest = parts[0], parts[1:]
    out = dict(node)
    for key in list(out):
        if head == "*" or key == head:
            out[key] = MASK if not rest else _mask(out[key], rest)
    return out


def masked_values(data: Any, paths: Iterable[str]) -> set[str]:
    """The text of every masked value (the leaves under a masked path), to scrub from what is
    shown of a rendered report (its extracted text)."""
    found: set[str] = set()
    for path in paths:
        parts = _parts(path)
        if parts:
            _collect(data, parts, found)
    return {v for v in found if v}


def _collect(node: Any, parts: list[str], found: set[str]) -> None:
    if isinstance(node, list):
        for item in node:
            _collect(item, parts, found)
        return
    if not isinstance(node, dict):
        return
    head, rest = parts[0], parts[1:]
    for key, value in node.items():
        if head == "*" or key == head:
            if rest:
                _collect(value, rest, found)
            else:
                _leaves(value, found)


def _leaves(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        for item in value.values():
            _leaves(item, found)
    elif isinstance(value, list):
        for item in value:
            _leaves(item, found)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        # As a report may print it: 1234567, 1,234,567, 1.234.567, 1 234 567
        found.add(str(value))
        grouped = f"{value:,}"
        found.update({grouped, grouped.replace(",", "."), grouped.replace(",", " ")})
    elif value is not None and not isinstance(value, bool):
        found.add(str(value))


def scrub_text(text: str, values: set[str]) -> str:
    """`text` with every masked value replaced (longest first: no partial leftovers)."""
    for value in sorted(values, key=len, reverse=True):
        if len(value) >= 2:
            text = text.replace(value, MASK)
    return text


def scrub_strings(value: Any, values: set[str]) -> Any:
    """Every string inside `value` (a result about to be shown) scrubbed of masked values."""
    if not values:
        return value
    if isinstance(value, str):
        return scrub_text(value, values)
    if isinstance(value, dict):
        return {k: scrub_strings(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_strings(v, values) for v in value]
    return value
