"""The fetcher's look for calling systems' subjects (shared/stage/callers.py): a subject it could
not read is tried again soon, then less and less often — never given up, never hammered."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from shared.bus.names import FETCHER, StageSpec
from shared.settings import Settings
from shared.stage import callers


async def test_a_subject_it_could_not_read_is_tried_again_soon_then_less_often(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alpha = FETCHER.of_tenant("alpha")
    now = [100.0]
    failures = [3]  # the bus too busy to answer three times, then fine
    tried: list[float] = []

    async def subjects(js: Any) -> list[StageSpec]:
        return [alpha]

    async def declare(js: Any, spec: StageSpec, settings: Settings) -> None:
        tried.append(now[0])
        if failures[0]:
            failures[0] -= 1
            raise TimeoutError("nats: timeout")

    async def start(spec: StageSpec) -> object:
        return object()

    monkeypatch.setattr(callers, "intake_subjects", subjects)
    monkeypatch.setattr(callers, "declare_intake", declare)
    monkeypatch.setattr(callers.time, "monotonic", lambda: now[0])
    intakes = callers.CallerIntakes(None, Settings(), start)  # type: ignore[arg-type]
    while now[0] < 110:  # a look every half second
        await intakes.look()
        now[0] += 0.5
    assert tried == [100.0, 101.0, 103.0, 107.0]  # waits of 1, 2, 4 s
    assert intakes.reading == {alpha.durable: alpha}


async def test_a_refused_subject_is_tried_at_most_once_a_minute_in_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now, tried = [0.0], []

    async def subjects(js: Any) -> list[StageSpec]:
        return [FETCHER.of_tenant("retired")]

    async def declare(js: Any, spec: StageSpec, settings: Settings) -> None:
        tried.append(now[0])
        raise TimeoutError("nats: timeout")  # what a permissions violation looks like

    async def start(spec: StageSpec) -> object:
        raise AssertionError("never started")

    monkeypatch.setattr(callers, "intake_subjects", subjects)
    monkeypatch.setattr(callers, "declare_intake", declare)
    monkeypatch.setattr(callers.time, "monotonic", lambda: now[0])
    intakes = callers.CallerIntakes(None, Settings(), start)  # type: ignore[arg-type]
    while now[0] < 600:
        await intakes.look()
        now[0] += 1.0
    gaps = [b - a for a, b in itertools.pairwise(tried)]
    assert gaps[:6] == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0] and set(gaps[6:]) == {60.0}
    assert intakes.reading == {}
