"""The fetcher as `services/fetcher/app.py` `create_app` builds it, run in process
(tests/composition/kit.py): report.requested in, data.ready (or a dead letter) out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from services.fetcher.app import FetcherDeps, create_app
from shared.bus.names import FETCHER, msg_id
from shared.errors import PermanentError, TransientError
from shared.events import DATA_READY, ReportRequested, Source
from shared.settings import Settings
from tests.composition.kit import Fakes, running, settings_in


class Counted:
    """A data source that answers (or fails) as told and counts what it was asked."""

    def __init__(self, answer: Any = None, error: Exception | None = None) -> None:
        self.answer, self.error = answer, error
        self.asked: list[str] = []

    async def fetch(self, source: Source, settings: Settings, *, configured: bool = False) -> Any:
        self.asked.append(source.name)
        if self.error is not None:
            raise self.error
        return self.answer


def request(rid: str = "r1") -> ReportRequested:
    return ReportRequested(
        request_id=rid,
        template="weekly.html",
        params={"title": "Weekly"},
        sources=[Source(name="prs", kind="http", url="https://api.example.test/prs")],
    )


def fetcher(tmp_path: Path, fakes: Fakes, source: Counted, **settings: Any) -> Any:
    deps = fakes.deps(FetcherDeps, sources={"http": source})
    return create_app(settings_in(tmp_path, **settings), deps=deps)


async def test_a_request_becomes_data_ready_with_every_source_in_the_context(
    tmp_path: Path,
) -> None:
    fakes, source = Fakes(), Counted(answer={"open": 3})
    async with running(fetcher(tmp_path, fakes, source), FETCHER) as stage:
        await stage.deliver(request("r1"))

    [ready] = fakes.next_events(DATA_READY)
    assert ready["request"]["request_id"] == "r1"
    assert ready["context"]["prs"] == {"open": 3}
    assert [m.msg_id for m in fakes.publisher.on(DATA_READY)] == [msg_id("r1", "fetcher")]
    assert fakes.dead_letters(FETCHER) == [] and fakes.failures() == []


async def test_a_permanent_source_error_is_a_dead_letter_and_report_failed(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    source = Counted(error=PermanentError("source 'prs' answered 404 Not Found"))
    async with running(fetcher(tmp_path, fakes, source), FETCHER) as stage:
        await stage.deliver(request("r2"))

    [letter] = fakes.dead_letters(FETCHER)
    assert letter["request_id"] == "r2" and letter["stage"] == "fetcher"
    assert "404" in letter["reason"] and letter["permanent"]
    assert json.loads(letter["payload"])["request_id"] == "r2"
    [failed] = fakes.failures()
    assert failed["request_id"] == "r2" and failed["stage"] == "fetcher"
    assert fakes.next_events(DATA_READY) == []


async def test_a_transient_error_on_the_last_attempt_is_a_dead_letter(tmp_path: Path) -> None:
    fakes = Fakes()
    source = Counted(error=TransientError("source 'prs' timed out"))
    async with running(fetcher(tmp_path, fakes, source, max_attempts=3), FETCHER) as stage:
        await stage.deliver(request("r3"), attempt=3)

    [letter] = fakes.dead_letters(FETCHER)
    assert letter["reason"].startswith("gave up after 3 attempts") and not letter["permanent"]
    assert "timed out" in letter["reason"]
    assert [f["request_id"] for f in fakes.failures()] == ["r3"]


async def test_a_transient_error_before_the_last_attempt_publishes_nothing(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    source = Counted(error=TransientError("source 'prs' timed out"))
    async with running(fetcher(tmp_path, fakes, source, max_attempts=3), FETCHER) as stage:
        await stage.deliver(request("r6"), attempt=1)

    assert source.asked == ["prs"]
    assert fakes.publisher.messages == []  # handed back to JetStream for a later attempt


async def test_a_duplicate_request_is_skipped_without_fetching_again(tmp_path: Path) -> None:
    fakes, source = Fakes(), Counted(answer={"open": 1})
    async with running(fetcher(tmp_path, fakes, source), FETCHER) as stage:
        await stage.deliver(request("r4"))
        await stage.deliver(request("r4"))

    assert source.asked == ["prs"]
    assert len(fakes.next_events(DATA_READY)) == 1
    assert fakes.dead_letters(FETCHER) == []


async def test_a_body_that_is_not_json_is_a_dead_letter_not_a_crash(tmp_path: Path) -> None:
    fakes, source = Fakes(), Counted(answer={})
    async with running(fetcher(tmp_path, fakes, source), FETCHER) as stage:
        await stage.deliver(b"\xff\xfe not json {{{")
        await stage.deliver(request("r5"))  # and the stage goes on with the next one

    [letter] = fakes.dead_letters(FETCHER)
    assert letter["permanent"] and letter["stage"] == "fetcher"
    assert [r["request"]["request_id"] for r in fakes.next_events(DATA_READY)] == ["r5"]


async def test_a_message_is_handled_without_a_hop_through_a_worker_thread(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """FastStream looks a handler's `NatsMessage` argument up with a synchronous function that
    FastDepends runs in a worker thread: a thread hop on every message. The stages' decoder
    hands the message over itself, so nothing on a message's way goes through a thread."""
    import anyio.to_thread

    hops: list[object] = []

    async def no_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(func)
        return func(*args)

    monkeypatch.setattr(anyio.to_thread, "run_sync", no_thread)
    fakes, source = Fakes(), Counted(answer={"open": 3})
    async with running(fetcher(tmp_path, fakes, source), FETCHER) as stage:
        await stage.deliver(request("r1"))
    [ready] = fakes.next_events(DATA_READY)
    assert ready["request"]["request_id"] == "r1"
    assert hops == []


def holds_itself(obj: Any, depth: int = 4) -> bool:
    """Whether `obj` reaches itself again through its own containers (a reference cycle)."""
    import gc

    level = [r for r in gc.get_referents(obj) if isinstance(r, dict | list | tuple | set)]
    for _ in range(depth):
        if any(r is obj for c in level for r in gc.get_referents(c)):
            return True
        level = [
            r
            for c in level
            for r in gc.get_referents(c)
            if isinstance(r, dict | list | tuple | set)
        ]
    return False


async def test_a_handled_message_does_not_hold_itself_for_the_cycle_collector(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """The decoder's result (the message itself) is cached on the message: a reference cycle
    that would keep each message, body and all, until a full collection — in a renderer,
    possibly hundreds of megabyte-sized data.ready bodies. The handler breaks it."""
    import shared.stage.app as stage_app

    seen: list[Any] = []
    decoder = stage_app.the_message

    async def watched(message: Any) -> Any:
        seen.append(message)
        return await decoder(message)

    monkeypatch.setattr(stage_app, "the_message", watched)
    fakes, source = Fakes(), Counted(answer={"open": 3})
    async with running(fetcher(tmp_path, fakes, source), FETCHER) as stage:
        await stage.deliver(request("r1"))
    [ready] = fakes.next_events(DATA_READY)
    assert ready["request"]["request_id"] == "r1"
    assert seen and not any(holds_itself(message) for message in seen)
