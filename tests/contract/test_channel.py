"""The channel contract (services/distributor/channels Channel), the same for every channel
against a real target — file (a tmp out dir), email (aiosmtpd), s3 (moto's S3 server), webhook
(an HTTP server): a delivery that succeeds puts the verified PDF there and says where; a target
that asks to be tried again is a TransientError; one that refuses for good, or a target the
operator does not allow, is a PermanentError with a reason — and nothing arrives."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.distributor.channels.file import FileChannel
from services.distributor.parcel import Parcel
from shared.adapters.store import MemoryArtefacts, artefact_key, sha256_hex
from shared.errors import PermanentError, TransientError
from shared.events import Artefact, Delivery, ReportRendered, ReportRequested
from shared.filenames import folder_filename, request_tag
from shared.settings import Settings
from tests.contract.conftest import Target
from tests.helpers import unique

pytestmark = pytest.mark.integration

PDF = b"%PDF-1.7\n% a weekly report, delivered\n"


async def parcel() -> Parcel:
    request = ReportRequested(
        request_id=unique("r"),
        template="weekly.html",
        requested_at=datetime(2026, 11, 24, 9, 0, tzinfo=UTC),
    )
    store = MemoryArtefacts()
    key = artefact_key(request.request_id, "pdf", request.requested_at)
    await store.put(key, PDF, content_type="application/pdf")
    artefact = Artefact(
        format="pdf", key=key, size=len(PDF), sha256=sha256_hex(PDF), content_type="application/pdf"
    )
    event = ReportRendered(
        request=request, artefacts=[artefact], template_version="v1", render_seconds=0.2
    )
    return Parcel(event, store)


async def test_a_delivery_puts_the_report_there_and_says_where(target: Target) -> None:
    channel, delivery = target.deliveries["ok"]
    report = await parcel()
    result = await channel.deliver(delivery, report)
    assert result.ok and result.channel == target.name and result.target
    assert await target.arrived(report.request_id) == sha256_hex(PDF)


async def test_a_target_that_asks_to_try_again_is_transient(target: Target) -> None:
    channel, delivery = target.deliveries["transient"]
    report = await parcel()
    with pytest.raises(TransientError) as caught:
        await channel.deliver(delivery, report)
    assert caught.value.reason
    assert await target.arrived(report.request_id) is None


@pytest.mark.parametrize("case", ["permanent", "refused"])
async def test_a_target_that_refuses_for_good_is_permanent(target: Target, case: str) -> None:
    channel, delivery = target.deliveries[case]  # type: ignore[index]
    report = await parcel()
    with pytest.raises(PermanentError) as caught:
        await channel.deliver(delivery, report)
    assert caught.value.reason
    assert await target.arrived(report.request_id) is None


@pytest.mark.parametrize(
    ("tenant", "path", "written"),
    [
        ("alpha", "beta", "alpha/beta"),
        ("alpha", ".", "alpha"),
        ("alpha", "../beta", "!outside PRESSROOM_OUT_DIR/alpha/"),
        ("alpha", "/elsewhere", "!is absolute"),  # even with PRESSROOM_FILE_ALLOW_ABSOLUTE
        ("..", "x", "!not a calling system's name"),  # never a folder above the root
        (None, "beta", "beta"),  # the services' own requests: from the root
    ],
)
async def test_a_tenants_file_delivery_stays_in_its_own_folder(
    tmp_path: Path, tenant: str | None, path: str, written: str
) -> None:
    """`written`: the folder under PRESSROOM_OUT_DIR, or `!` and the refusal's reason."""
    out = tmp_path / "out"
    channel = FileChannel(Settings(out_dir=out, file_allow_absolute=True))
    report = await parcel()
    report.event = report.event.model_copy(
        update={"request": report.event.request.model_copy(update={"tenant": tenant})}
    )
    delivery = Delivery(channel="file", path=path.replace("/elsewhere", str(tmp_path / "abs")))
    if written.startswith("!"):
        with pytest.raises(PermanentError) as caught:
            await channel.deliver(delivery, report)
        assert written[1:] in caught.value.reason
        assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    else:
        result = await channel.deliver(delivery, report)
        name = folder_filename(report.event.request, "pdf")
        assert name.endswith(f"-{request_tag(report.request_id)}.pdf")
        assert result.target == f"PRESSROOM_OUT_DIR/{written}/{name}"
        assert (out / written / name).read_bytes() == PDF


async def test_a_file_delivery_is_synced_with_its_name_before_it_counts_as_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power loss after the delivery is recorded must not take the file back: its bytes are
    synced, and so is the folder that holds its new name (a rename lives in the folder)."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    out = tmp_path / "out"
    report = await parcel()
    await FileChannel(Settings(out_dir=out)).deliver(Delivery(channel="file", path="x"), report)
    folder = (out / "x").resolve()
    [written] = [p for p in folder.iterdir()]
    assert len(synced) == 2
    assert synced[0].startswith(str(folder / f".{written.name}."))  # the bytes, before the rename
    assert synced[1] == str(folder)  # then the name


async def test_a_folder_that_cannot_be_synced_still_takes_the_delivery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some mounts refuse to sync a folder (EINVAL): the file is there, so the delivery is made
    and not retried into a second copy or a dead letter."""
    real_fsync = os.fsync

    def no_folder_sync(fd: int) -> None:
        if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", no_folder_sync)
    out = tmp_path / "out"
    report = await parcel()
    result = await FileChannel(Settings(out_dir=out)).deliver(
        Delivery(channel="file", path="x"), report
    )
    assert result.ok
    assert [p.read_bytes() for p in (out / "x").iterdir()] == [PDF]
