"""The studio's data hygiene: masked paths, recorded payloads sealed and bounded (count, age,
size), and page images compared into changed regions."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from services.console.studio import imagediff, masking
from services.renderer import recording
from shared.adapters.store import MemoryArtefacts, StoredObject
from shared.errors import PressroomError
from shared.events import Artefact, DataReady, ReportRendered, ReportRequested
from shared.sealing import SealError, generate_key, seal_bytes, unseal_bytes
from shared.settings import Settings

ACCOUNT = "DE44500105175407324931"
DATA: dict[str, Any] = {
    "account": {"number": ACCOUNT, "holder": "Ann"},
    "accounts": [{"iban": "FR7630006000011234567890189", "total": 3}, {"iban": "X1", "total": 4}],
    "total": 1234,
}


# ---- masking -------------------------------------------------------------------------------
def test_masked_paths_are_replaced_wherever_they_lead() -> None:
    shown = masking.mask(DATA, ["account.number", "accounts.iban", "missing.path"])
    assert shown["account"] == {"number": masking.MASK, "holder": "Ann"}
    assert [a["iban"] for a in shown["accounts"]] == [masking.MASK, masking.MASK]
    assert [a["total"] for a in shown["accounts"]] == [3, 4]
    assert ACCOUNT not in json.dumps(shown) and "FR76" not in json.dumps(shown)
    assert DATA["account"]["number"] == ACCOUNT  # the original is untouched
    wild = masking.mask(DATA, ["account.*"])
    assert wild["account"] == {"number": masking.MASK, "holder": masking.MASK}
    assert masking.mask(DATA, ["account"])["account"] == masking.MASK


def test_masked_values_are_scrubbed_from_extracted_text() -> None:
    hidden = masking.masked_values(DATA, ["account.number", "accounts.iban"])
    assert hidden == {ACCOUNT, "FR7630006000011234567890189", "X1"}
    text = f"Account {ACCOUNT}\nIBAN FR7630006000011234567890189\nTotal 1234"
    assert masking.scrub_text(text, hidden) == "Account ••••\nIBAN ••••\nTotal 1234"


# ---- recording -----------------------------------------------------------------------------
def _settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(data_dir=tmp_path / "state", **extra)  # type: ignore[arg-type]


def _event(template: str = "weekly.html", rid: str = "r-1") -> tuple[DataReady, ReportRendered]:
    request = ReportRequested(template=template, request_id=rid, requested_by="cli")
    pdf = Artefact(
        format="pdf",
        key=f"reports/{rid}.pdf",
        size=3,
        sha256="ab" * 32,
        content_type="application/pdf",
    )
    rendered = ReportRendered(
        request=request, artefacts=[pdf], template_version="v1", render_seconds=0.5
    )
    return DataReady(request=request, context=DATA), rendered


async def test_a_recording_is_sealed_and_only_the_console_key_opens_it(tmp_path: Path) -> None:
    settings, store = _settings(tmp_path), MemoryArtefacts()
    event, rendered = _event()
    key = await recording.record(store, settings, event, DATA, rendered)
    assert key is not None and key.startswith("studio/payloads/weekly.html/")
    raw = store.objects[key][0]
    assert ACCOUNT.encode() not in raw and b"total" not in raw  # encrypted at rest
    [info] = await recording.listing(store, "weekly.html")
    opened = await recording.read(store, settings, "weekly.html", info.id)
    assert opened["data"] == DATA and opened["request"]["request_id"] == "r-1"
    assert opened["artefacts"][0]["key"] == "reports/r-1.pdf"
    other = _settings(tmp_path / "elsewhere")  # another console's key
    with pytest.raises(PressroomError, match="cannot be opened"):
        await recording.read(store, other, "weekly.html", info.id)
    key_file = recording.private_key_path(settings)
    assert key_file.stat().st_mode & 0o777 == 0o600


@pytest.fixture(autouse=True)
def fresh_recorder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts a renderer's recording state afresh (no prune window open)."""
    monkeypatch.setattr(recording, "_last_prune", {})
    monkeypatch.setattr(recording, "_since_prune", {})


async def test_recordings_are_bounded_by_size_count_and_age(tmp_path: Path) -> None:
    store = MemoryArtefacts()
    small = _settings(tmp_path, studio_max_payload_bytes=100)
    event, rendered = _event()
    assert await recording.record(store, small, event, DATA, rendered) is None
    assert store.objects == {}
    off = _settings(tmp_path, studio_record=False)
    assert await recording.record(store, off, event, DATA, rendered) is None

    settings = _settings(tmp_path, studio_max_payloads=3, studio_keep_days=7)
    recorded = []
    for n in range(6):  # within one prune window: the first, then as many as are kept
        event, rendered = _event(rid=f"r-{n}")
        recorded.append(await recording.record(store, settings, event, DATA, rendered))
    assert [key is not None for key in recorded] == [True, True, True, True, False, False]
    event, rendered = _event(template="monthly.html")
    assert await recording.record(store, settings, event, DATA, rendered)
    await recording.prune(store, settings, "weekly.html")
    kept = await recording.listing(store, "weekly.html")
    assert len(kept) == 3
    assert await recording.counts(store) == {"weekly.html": 3, "monthly.html": 1}
    ids = [
        (await recording.read(store, settings, "weekly.html", k.id))["request"]["request_id"]
        for k in kept
    ]
    assert ids == ["r-3", "r-2", "r-1"]  # the newest
    later = datetime.now(UTC) + timedelta(days=8)
    gone = await recording.prune(store, settings, "weekly.html", now=later)
    assert len(gone) == 3 and await recording.listing(store, "weekly.html") == []


async def test_a_prune_that_never_answers_holds_no_report(tmp_path: Path) -> None:
    """The renderer's prune lists the store; a listing that never answers (as one refused its
    flow-control replies did) must not hold the report being recorded, nor the next ones."""
    listing = asyncio.Event()

    class Unanswering(MemoryArtefacts):
        async def list(self, prefix: str = "") -> list[StoredObject]:
            listing.set()
            await asyncio.Event().wait()  # never
            return []

    store, settings = Unanswering(), _settings(tmp_path)
    for n in range(3):
        event, rendered = _event(rid=f"r-{n}")
        key = await asyncio.wait_for(recording.record(store, settings, event, DATA, rendered), 30)
        assert key is not None and key in store.objects
    await asyncio.wait_for(listing.wait(), 30)  # the prune did start, beside the reports
    for task in list(recording._pruning._tasks):
        task.cancel()


async def test_a_recording_never_keeps_the_sealed_pdf_password(tmp_path: Path) -> None:
    settings, store = _settings(tmp_path), MemoryArtefacts()
    event, rendered = _event()
    body = recording.record_body(event, DATA, rendered)
    assert "password" not in json.dumps(body.get("request", {}).get("pdf") or {})
    assert await recording.record(store, settings, event, DATA, rendered)


def test_sealed_bytes_open_only_with_their_key() -> None:
    private, public = generate_key()
    other, _ = generate_key()
    blob = seal_bytes(b"payload " * 1000, public)
    assert unseal_bytes(blob, private) == b"payload " * 1000
    with pytest.raises(SealError):
        unseal_bytes(blob, other)
    with pytest.raises(SealError):
        unseal_bytes(blob[:-1] + bytes([blob[-1] ^ 1]), private)


# ---- page images compared ------------------------------------------------------------------
def _page(text_box: tuple[int, int, int, int] | None = None) -> bytes:
    image = Image.new("RGB", (400, 560), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([40, 40, 300, 60], fill="black")  # a heading, the same on both
    if text_box:
        draw.rectangle(list(text_box), fill="black")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def test_identical_pages_have_no_regions() -> None:
    same = imagediff.compare(_page((40, 300, 120, 316)), _page((40, 300, 120, 316)))
    assert same.ratio == 0 and same.regions == []


def test_a_changed_number_is_one_region_around_it() -> None:
    changed = imagediff.compare(_page((40, 300, 120, 316)), _page((40, 300, 140, 316)))
    [region] = changed.regions
    # The change is x 121..140, y 300..316: the region covers it, and not the heading.
    assert region.x <= 121 and region.x + region.w >= 140
    assert region.y <= 300 and region.y + region.h >= 316 and region.y > 60
    assert 0 < changed.ratio < 0.01
    shown = Image.open(io.BytesIO(changed.highlight)).convert("RGB")
    assert shown.getpixel((130, 308)) == (220, 0, 0)  # the changed pixels in red
    assert shown.getpixel((100, 50)) != (0, 0, 0)  # the rest dimmed


def test_masked_boxes_are_covered_in_page_images() -> None:
    covered = imagediff.redact(_page(), [(30.0, 30.0, 80.0, 50.0)], dpi=72)
    shown = Image.open(io.BytesIO(covered)).convert("RGB")
    assert shown.getpixel((50, 40)) == (90, 90, 90)  # inside the box (the heading was black)
    assert shown.getpixel((200, 50)) == (0, 0, 0)  # the heading outside it, untouched


def test_masked_numbers_are_scrubbed_as_reports_print_them() -> None:
    hidden = masking.masked_values({"salary": 1234567}, ["salary"])
    text = "Salary 1,234,567 / 1.234.567 / 1234567"
    assert masking.scrub_text(text, hidden) == "Salary •••• / •••• / ••••"


def test_a_page_only_one_side_has_is_all_changed() -> None:
    added = imagediff.compare(None, _page())
    assert added.regions and added.ratio > 0
