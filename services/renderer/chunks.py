"""A split render's parts as every process sees them: one chunk's job and result, and the
rendezvous where the chunks of one report meet (files in a folder they share). The layout of a
chunk itself is in chunklayout.py, which only render processes load.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.renderer.job import SplitAborted
from shared.errors import PressroomError, RenderTimeout

# How often a waiting chunk looks again: every 1–2 ms for its first 50 ms of waiting, then every
# 5 ms. A value seen late is time the whole split loses; a look is a few system calls (20–40 µs),
# and a long wait (a chunk waiting for the slowest to lay out all its pages) should not take a
# core from renders running beside it. From a publish to the waiter seeing it, measured with two
# processes: 10.9 ms on average when the looks backed off to 20 ms.
POLL_SECONDS = (0.001,) * 10 + (0.002,) * 20 + (0.005,)


class SplitUnsupported(PressroomError):
    """This document cannot be split exactly: render it in one piece (the reason says why)."""


@dataclass(frozen=True)
class ChunkJob:
    index: int
    count: int
    html: str
    base_url: str
    templates_dir: str
    asset_allow: tuple[str, ...]
    page_css: str
    font_dirs: tuple[str, ...]
    table_index: int
    first: int  # global index of the first row in this chunk's HTML
    rows: int  # rows in this chunk's HTML
    targets: tuple[int, ...]  # every chunk's nominal first row (targets[0] == 0)
    rendezvous: str
    deadline: float  # time.time() after which waiting is pointless (the render timeout)
    font_scope: str = ""  # the template version: its chunks share a warm font configuration


@dataclass(frozen=True)
class ChunkResult:
    index: int
    pdf: bytes
    pages: int
    missing: tuple[int, ...]  # code points drawn without a font (the coverage check)
    fonts: dict[str, tuple[bool, int]]  # font resource name -> (embedded once?, owning chunk)
    bookmarks: tuple[tuple[float, tuple[tuple[int, str, tuple[float, float], str], ...]], ...]
    stats: dict[str, float] = field(default_factory=dict)


# ---- the rendezvous -------------------------------------------------------------------------
class Rendezvous:
    """Files in a shared folder: each chunk publishes, the others wait (with a deadline)."""

    def __init__(self, folder: str, index: int, count: int, deadline: float) -> None:
        self.folder = Path(folder)
        self.index = index
        self.count = count
        self.deadline = deadline

    def _path(self, name: str, index: int) -> Path:
        return self.folder / f"{name}-{index}.json"

    def publish(self, name: str, value: Any) -> None:
        target = self._path(name, self.index)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(value), encoding="utf-8")
        os.replace(tmp, target)

    def peek(self, name: str, index: int) -> Any:
        """The value if published already, else None (never waits)."""
        try:
            return json.loads(self._path(name, index).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def abort(self, reason: str) -> None:
        with contextlib.suppress(OSError):
            tmp = self.folder / f"abort-{self.index}.tmp"
            tmp.write_text(reason, encoding="utf-8")
            os.replace(tmp, self.folder / "abort")

    def wait(self, name: str, index: int) -> Any:
        found = self.wait_any([(name, index)])
        assert found is not None
        return found[1]

    def wait_any(
        self, wanted: list[tuple[str, int]], patience: float | None = None
    ) -> tuple[str, Any] | None:
        """The first of these values published (in the order asked, if several are): its name
        and value; None if none is after `patience` seconds."""
        polls = 0
        given_up = None if patience is None else time.monotonic() + patience
        while True:
            for name, index in wanted:
                try:
                    return name, json.loads(self._path(name, index).read_text(encoding="utf-8"))
                except FileNotFoundError:
                    pass
            if given_up is not None and time.monotonic() > given_up:
                return None
            if (self.folder / "abort").exists():
                raise SplitAborted("another chunk of this report failed")
            if time.time() > self.deadline:
                raise RenderTimeout("render took longer than the render timeout and was stopped")
            time.sleep(POLL_SECONDS[min(polls, len(POLL_SECONDS) - 1)])
            polls += 1

    def gather(self, name: str, value: Any) -> list[Any]:
        self.publish(name, value)
        return [value if i == self.index else self.wait(name, i) for i in range(self.count)]


# ---- locating the table in WeasyPrint's boxes -----------------------------------------------
