"""Fixtures: one real Pressroom stack per session, and a nats-py connection to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Outcomes, Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
async def nc(stack: Stack) -> AsyncIterator[Any]:
    connection = await stack.connect()
    yield connection
    await connection.drain()


@pytest.fixture(scope="session")
async def outcomes(nc: Any) -> Outcomes:
    return await Outcomes().start(nc)


@pytest.fixture
def templates(stack: Stack) -> Path:
    return stack.templates
