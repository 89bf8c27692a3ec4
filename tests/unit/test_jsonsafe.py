"""The depth check every stage runs on every incoming body: right, and linear on hostile input."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from shared import jsonsafe
from shared.errors import PermanentError
from shared.jsonsafe import deeper_than, depth

MB = 1024 * 1024

# Bodies that made the old check re-scan from every quote or bracket (quadratic: 1 MB ≈ an hour).
HOSTILE: dict[str, Callable[[int], bytes]] = {
    "unterminated string of escaped quotes": lambda n: b'{"request_id":"' + b'\\"' * (n // 2),
    "unterminated, ending in a backslash": lambda n: b'{"a":"' + b'\\"' * (n // 2) + b"\\",
    "quote after quote": lambda n: b'"' * n,
    "many short strings": lambda n: b'["ab",' * (n // 6),
    "deep but within the limit, repeated": lambda n: (
        (b"[" * 60 + b"1" + b"]" * 60 + b",") * (n // 122)
    ),
    "only openers": lambda n: b"[" * n,
}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", 0),
        (b"[]", 1),
        (b'[[1,{"a":[2]}]]', 4),
        (b'"[[[["', 0),
        (b'["\\"]"]', 1),  # an escaped quote does not end the string
        (b'{"a":"x\\', 1),  # unterminated, trailing backslash
        (b'{"a":"[[[[', 1),  # unterminated string: its brackets do not count
        (b"[[[", 3),
        (b'["a\\\\", [[1]]]', 3),  # an escaped backslash does not escape the quote after it
        (b'["a\\\\\\"]", [1]]', 2),  # \\ then \": the string goes on past that quote
    ],
)
def test_depth_counts_brackets_outside_strings(body: bytes, expected: int) -> None:
    assert depth(body) == expected


def test_too_deep_is_a_permanent_error_with_a_reason() -> None:
    with pytest.raises(PermanentError, match="nested deeper than 64 levels"):
        jsonsafe.loads(b"[" * 65 + b"]" * 65, what="the answer")
    assert jsonsafe.loads(b"[" * 64 + b"]" * 64, what="the answer") is not None
    assert deeper_than(b"[" * 101, 100) and not deeper_than(b"[" * 100, 100)


@pytest.mark.parametrize("shape", list(HOSTILE))
def test_a_hostile_megabyte_is_checked_in_linear_time(shape: str) -> None:
    """Cost grows with size, not size squared: 16 times the bytes costs about 16 times the CPU
    (a quadratic check costs 256 times as much; the bound below leaves 4x for noise)."""
    make = HOSTILE[shape]

    def cost(size: int) -> float:
        body = make(size)
        best = float("inf")
        for _ in range(5):  # best of five: other processes only ever add time
            start = time.process_time()
            deeper_than(body, 100)
            best = min(best, time.process_time() - start)
        return max(best, 1e-6)

    small, large = cost(MB // 16), cost(MB)
    assert large / small < 64, f"{shape}: 1 MB cost {large:.4f}s, 64 KB {small:.4f}s"
