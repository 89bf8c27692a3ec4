"""Fixtures: one real Pressroom stack per session, and a nats-py connection to it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats.aio.client
import pytest

from services.console import embedded
from tests.helpers import Outcomes, Stack

# A test run starts several hundred Python processes (workers, render processes, CLI calls,
# consoles). Where the environment sets PYTHONDONTWRITEBYTECODE (this machine's does), none of
# them writes a bytecode cache, so every one compiles from source each module it imports
# that nothing cached before: 0.15-0.25 s of CPU for a distributor or a console start here.
# The tests' processes inherit this process's environment; the caches go in the project's own
# .venv and source folders, which a changed source file invalidates as usual.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# Ports the tests pick (free_port) come from a slice of their own per pytest worker, below both
# the kernel's ephemeral range and the slice the product's own processes pick from: a port one
# worker picked for a process it is about to start cannot be taken meanwhile by another
# worker's pick, nor by anyone's outgoing connection.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
embedded.PORTS = range(20000 + 1000 * (_WORKER % 4), 21000 + 1000 * (_WORKER % 4))

# `make test` hands whole files to four workers (`--dist loadfile`; more than the two cores, so
# that while some wait — for a minute's turn, a timeout — the others use the cores), each
# taking the next file when it is done, in this order (`--no-loadscope-reorder` in
# pyproject.toml): the folders of long files first, the unit tests last, so that the suite ends
# on short files filling in beside the last long one rather than on one worker's two-minute
# file started last.
LONGEST_FIRST = ("faults", "browser", "integration", "composition", "contract", "unit")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent

    def folder(item: pytest.Item) -> int:
        top = item.path.relative_to(here).parts[0]
        return LONGEST_FIRST.index(top) if top in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=folder)  # stable: the order inside a folder and a file is kept


@pytest.fixture(scope="session", autouse=True)
async def close_forgotten_bus_clients() -> AsyncIterator[None]:
    """At the end of a worker's session (one event loop for all its tests): a NATS client a
    test left open (a failed assertion before its `close()`) keeps reconnecting to a server
    that is gone — 60 tries 2 s apart — and holds the loop's shutdown for two minutes. Close
    any such client at the end, and say how many there were."""
    yield
    left = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, nats.aio.client.Client) and not obj.is_closed
    ]
    for client in left:
        with contextlib.suppress(Exception):  # closing what is already broken: nothing to do
            await asyncio.wait_for(client.close(), timeout=5)
    if left:  # said, not raised: the tests that left them have passed or failed on their own
        sys.stderr.write(f"{len(left)} NATS client(s) left open by tests were closed\n")


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
