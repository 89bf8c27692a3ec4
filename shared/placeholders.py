"""`{placeholder}` substitution for request-supplied text (email subjects, S3 keys).

Not `str.format`: no attribute access, no format specs (`{x:>999999999}` would allocate a
gigabyte), only names from a fixed table; `{{` and `}}` stand for literal braces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from shared.errors import PermanentError

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def fill(pattern: str, values: Mapping[str, str], *, what: str) -> str:
    """`pattern` with each `{name}` replaced; unknown names and stray braces are refused."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name is None:
            raise PermanentError(f"{what} has an unmatched brace (write {{{{ or }}}} for one)")
        if name not in values:
            known = ", ".join(f"{{{k}}}" for k in sorted(values))
            raise PermanentError(f"{what} has an unknown placeholder {{{name}}} (known: {known})")
        return values[name]

    return _TOKEN.sub(replace, pattern)
