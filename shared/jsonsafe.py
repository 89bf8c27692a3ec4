"""JSON from untrusted places, decoded only after its size and nesting depth are checked.

A 50,000-deep array crashes recursive decoders (and every stage after them re-decodes the
context): refuse it before decoding, with a reason, as a permanent error.

Every check here runs on the event loop against bytes anyone may publish, so each is a few
linear passes of C (bytes.replace, split, translate; no regular expression that could backtrack
or restart): 1 MB (NATS's default max_payload) takes milliseconds to a few tens of them,
whatever its shape. Re-scanning from every quote or bracket (what a plain
`"(?:[^"\\]|\\.)*"` does on an unterminated string of escaped quotes) is quadratic: 32 KB
took seconds, 1 MB would have taken an hour.
"""

from __future__ import annotations

import json
from array import array
from itertools import accumulate
from typing import Any

from shared.errors import PermanentError

MAX_DEPTH = 64
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# Openers become +1 and closers -1 (0xFF as a signed byte): the running sum is the depth.
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


def skeleton(data: bytes) -> bytes:
    """The brackets of `data` outside strings, in order.

    Escapes pair up from the left, so dropping every `\\\\` and then every `\\"` leaves only the
    quotes that open or close a string; every other piece between them is inside one (an
    unterminated string runs to the end, as a decoder would read it).
    """
    if b'"' in data:
        if b"\\" in data:
            data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
        data = b"".join(data.split(b'"')[0::2])
    return data.translate(None, _NOT_BRACKETS)


def depth(data: bytes) -> int:
    """How deep [ / { nest in `data` (brackets inside strings do not count), in linear time."""
    steps = array("b", skeleton(data).translate(_STEPS))
    return max(accumulate(steps), default=0)


def deeper_than(data: bytes, limit: int) -> bool:
    """True when [ / { nest more than `limit` deep (brackets inside strings do not count)."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False  # the common case, in two C scans
    return depth(data) > limit


def loads(data: bytes | str, *, what: str, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads for untrusted input: too deep or malformed is a PermanentError naming `what`."""
    raw = data.encode() if isinstance(data, str) else data
    if deeper_than(raw, max_depth):
        raise PermanentError(f"{what} is nested deeper than {max_depth} levels")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise PermanentError(f"{what} is not valid JSON: {str(error)[:120]}") from None
