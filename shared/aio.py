"""Small asyncio helpers the services and adapters share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any


async def all_settled(work: Sequence[Awaitable[Any]]) -> None:
    """Every one done, side by side; the first failure raised once all have settled (none is
    left running behind an early error)."""
    results = await asyncio.gather(*work, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
