"""The distributor as `services/distributor/app.py` `create_app` builds it, run in process
(tests/composition/kit.py): report.rendered in, report.delivered (or a dead letter) out, with its
default channels — the `file` one writing into the test's tmp dir."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.distributor.app import DistributorDeps, create_app
from shared.adapters.store import artefact_key, sha256_hex
from shared.bus.names import DISTRIBUTOR
from shared.events import (
    REPORT_DELIVERED,
    Artefact,
    Delivery,
    ReportRendered,
    ReportRequested,
)
from tests.composition.kit import Fakes, running, settings_in
from tests.helpers import delivered_file, eventually

PDF = b"%PDF-1.7 a rendered weekly report\n"


def distributor(tmp_path: Path, fakes: Fakes) -> Any:
    deps = fakes.deps(DistributorDeps)
    return create_app(settings_in(tmp_path), deps=deps)


async def rendered(fakes: Fakes, rid: str, path: str) -> ReportRendered:
    """A report the renderer stored, to be delivered as a file under `path`."""
    request = ReportRequested(
        request_id=rid,
        template="weekly.html",
        deliver=[Delivery(channel="file", path=path)],  # type: ignore[call-arg]
        requested_at=datetime(2026, 11, 24, 9, 0, tzinfo=UTC),
    )
    key = artefact_key(rid, "pdf", request.requested_at)
    await fakes.store.put(key, PDF, content_type="application/pdf")
    artefact = Artefact(
        format="pdf", key=key, size=len(PDF), sha256=sha256_hex(PDF), content_type="application/pdf"
    )
    return ReportRendered(
        request=request, artefacts=[artefact], template_version="v1", render_seconds=0.1
    )


async def test_report_rendered_becomes_report_delivered_with_the_file_written(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    async with running(distributor(tmp_path, fakes), DISTRIBUTOR) as stage:
        await stage.deliver(await rendered(fakes, "r1", "weekly"))

    assert delivered_file(tmp_path / "out" / "weekly", "r1").read_bytes() == PDF
    [delivered] = fakes.next_events(REPORT_DELIVERED)
    assert delivered["request_id"] == "r1"
    [channel] = delivered["channels"]
    assert channel["channel"] == "file" and channel["ok"]
    assert fakes.dead_letters(DISTRIBUTOR) == [] and fakes.failures() == []


async def test_a_delivery_outside_the_out_dir_is_a_dead_letter_and_report_failed(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    async with running(distributor(tmp_path, fakes), DISTRIBUTOR) as stage:
        await stage.deliver(await rendered(fakes, "r2", "../../elsewhere"))

    [letter] = fakes.dead_letters(DISTRIBUTOR)
    assert letter["request_id"] == "r2" and letter["stage"] == "distributor"
    assert letter["permanent"] and "outside PRESSROOM_OUT_DIR" in letter["reason"]
    [failed] = fakes.failures()
    assert failed["request_id"] == "r2" and failed["stage"] == "distributor"
    assert fakes.next_events(REPORT_DELIVERED) == []
    assert not list(tmp_path.rglob("*.pdf")) and not (tmp_path.parent / "elsewhere").exists()


async def test_a_duplicate_is_skipped_without_delivering_again(tmp_path: Path) -> None:
    fakes = Fakes()
    async with running(distributor(tmp_path, fakes), DISTRIBUTOR) as stage:
        event = await rendered(fakes, "r3", "weekly")
        await stage.deliver(event)

        async def delivered() -> bool:  # reports are delivered side by side, not before return
            entry = await fakes.ledger.get("r3")
            record = entry.stages.get("distributor") if entry else None
            return record is not None and record.state == "done"

        await eventually(delivered)
        written = delivered_file(tmp_path / "out" / "weekly", "r3")
        assert written.read_bytes() == PDF
        written.unlink()  # a second delivery would write it again
        await stage.deliver(event)

    assert not written.exists()
    assert len(fakes.next_events(REPORT_DELIVERED)) == 1
    assert fakes.dead_letters(DISTRIBUTOR) == []


async def test_a_channel_whose_library_is_missing_is_a_dead_letter_that_says_so(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Channels load their module at their first delivery: a library missing from the install
    shows there, as a permanent failure naming the channel (no retry would help)."""
    from services.distributor import channels

    monkeypatch.setitem(channels.CHANNELS, "file", ("not_installed_here", "FileChannel"))
    fakes = Fakes()
    async with running(distributor(tmp_path, fakes), DISTRIBUTOR) as stage:
        await stage.deliver(await rendered(fakes, "r4", "weekly"))

    [letter] = fakes.dead_letters(DISTRIBUTOR)
    assert letter["request_id"] == "r4" and letter["permanent"]
    assert "the file channel cannot be loaded (ModuleNotFoundError" in letter["reason"]
    assert fakes.next_events(REPORT_DELIVERED) == []
    assert not list(tmp_path.rglob("*.pdf"))
