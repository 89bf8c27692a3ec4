"""JSON from untrusted places, decoded only after its size and nesting depth are checked.

A 50,000-deep array crashes recursive decoders (and every stage after them re-decodes the
context): refuse it before decoding, with a reason, as a permanent error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from shared.errors import PermanentError

MAX_DEPTH = 64
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[^\[\]{}]+")
_PAIRS = re.compile(rb"\[\]|\{\}")


def deeper_than(data: bytes, limit: int) -> bool:
    """True when [ / { nest more than `limit` deep (brackets inside strings do not count).

    Each pass removes the innermost empty pairs of the bracket skeleton, in C: `limit` passes
    at most, whatever the size of the document.
    """
    skeleton = _BRACKETS.sub(b"", _STRINGS.sub(b"", data))
    for _ in range(limit):
        reduced = _PAIRS.sub(b"", skeleton)
        if reduced == skeleton:
            return False
        skeleton = reduced
    return _PAIRS.search(skeleton) is not None


def loads(data: bytes | str, *, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads for untrusted input: too deep or malformed is a PermanentError naming `what`."""
    raw = data.encode() if isinstance(data, str) else data
    if deeper_than(raw, max_depth):
        raise PermanentError(f"{what} is nested deeper than {max_depth} levels")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise PermanentError(f"{what} is not valid JSON: {str(error)[:120]}") from None
