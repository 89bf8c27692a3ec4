"""Recorded `data.ready` payloads for the studio (issue #32): what a real report was rendered
from, so a template change can be tried on last week's data before it goes live.

The renderer records, not the fetcher: only the renderer knows which artefacts (the delivered
PDF) and which template version a payload produced — what a shadow render compares against —
and it records only payloads that rendered. Each record is sealed to the console's public key
(shared/sealing.py `seal_bytes`) before it reaches the artefact store, whatever the store: the
renderer can write records but never read them back. Records are bounded: none larger than
PRESSROOM_STUDIO_MAX_PAYLOAD_BYTES, at most PRESSROOM_STUDIO_MAX_PAYLOADS per template, none
older than PRESSROOM_STUDIO_KEEP_DAYS. Masking (PRESSROOM_STUDIO_MASK) happens on the way
out, in the console: a shadow render needs the real data to compare with the real report.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.adapters.store import ArtefactStore, StoredObject, StudioUnavailable
from shared.bus.names import STUDIO_PREFIX
from shared.errors import PressroomError
from shared.events import DataReady, ReportRendered
from shared.observe.logging import get_logger
from shared.sealing import SealError, generate_key, public_key_of, seal_bytes, unseal_bytes
from shared.settings import Settings

log = get_logger(__name__)

PREFIX = f"{STUDIO_PREFIX}payloads/"  # in a bucket of its own (shared/adapters/store.py)
KEY_FILE = "studio-seal.pem"
SEALED = ".sealed"
PRUNE_EVERY = 60.0  # seconds between two prunes of one template's records, per process
PRUNE_TIMEOUT = 300.0  # a prune still going after this is given up (the next one tries again)


@dataclass(frozen=True)
class RecordInfo:
    """One recorded payload as a listing shows it (the content stays sealed)."""

    id: str
    template: str
    key: str
    size: int
    recorded_at: datetime


def template_prefix(template: str) -> str:
    return f"{PREFIX}{template}/"


def record_id(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(SEALED)


def private_key_path(settings: Settings) -> Path:
    return settings.studio_key_file or Path(settings.data_dir) / KEY_FILE


def private_key(settings: Settings) -> bytes:
    """The console's key for recordings (PRESSROOM_STUDIO_KEY_FILE, else in the data
    folder), made on first use (0600): the console and renderers sharing the file agree."""
    path = private_key_path(settings)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    pem, _ = generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile: theirs is the one
        return path.read_bytes()
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return pem


def public_key(settings: Settings) -> bytes:
    """What the renderer seals to: PRESSROOM_STUDIO_PUBLIC_KEY_FILE, or the public half of
    the console's key (made on first use when neither is configured)."""
    if settings.studio_public_key_file is not None:
        try:
            return public_key_of(settings.studio_public_key_file.read_bytes())
        except OSError as error:
            raise PressroomError(f"PRESSROOM_STUDIO_PUBLIC_KEY_FILE: {error}") from None
    return public_key_of(private_key(settings))


def _record_key(template: str, request_id: str, when: datetime) -> str:
    tag = hashlib.sha256(request_id.encode()).hexdigest()[:12]
    return f"{template_prefix(template)}{when:%Y%m%dT%H%M%S%f}-{tag}{SEALED}"


def record_body(event: DataReady, data: Any, rendered: ReportRendered) -> dict[str, Any]:
    """What is kept: the request (without its sealed PDF password), the data, and what the
    render produced (artefact keys and digests, template version, time)."""
    request = event.request.model_dump(mode="json")
    if isinstance(request.get("pdf"), dict):
        request["pdf"].pop("password", None)
    return {
        "request": request,
        "data": data,
        "template_version": rendered.template_version,
        "render_seconds": rendered.render_seconds,
        "artefacts": [a.model_dump(mode="json") for a in rendered.artefacts],
        "recorded_at": datetime.now(UTC).isoformat(),
    }


_last_prune: dict[str, float] = {}
# Records written per template since its last prune: a burst of thousands of children records
# no more than the bound keeps, not thousands to delete a minute later.
_since_prune: dict[str, int] = {}


async def record(
    store: ArtefactStore,
    settings: Settings,
    event: DataReady,
    data: Any,
    rendered: ReportRendered,
) -> str | None:
    """Record one rendered report's payload (its key), or None when it is not recorded
    (turned off, too large). Never raises: a report is never failed by its recording."""
    if not settings.studio_record:
        return None
    template = event.request.template
    now = time.monotonic()
    if now - _last_prune.get(template, float("-inf")) < PRUNE_EVERY and (
        _since_prune.get(template, 0) >= settings.studio_max_payloads
    ):
        return None
    try:
        body = json.dumps(record_body(event, data, rendered), default=str).encode()
        if len(body) > settings.studio_max_payload_bytes:
            log.info(
                "payload not recorded: too large",
                request_id=event.request.request_id,
                bytes=len(body),
                limit=settings.studio_max_payload_bytes,
            )
            return None
        key = _record_key(template, event.request.request_id, datetime.now(UTC))
        sealed = seal_bytes(body, public_key(settings))
        await store.put(
            key,
            sealed,
            content_type="application/octet-stream",
            metadata={"template": template, "request-id": event.request.request_id},
            new=True,  # the key holds the time to the microsecond: nothing to replace
        )
        _since_prune[template] = _since_prune.get(template, 0) + 1
        if now - _last_prune.get(template, float("-inf")) >= PRUNE_EVERY:
            _last_prune[template] = now
            _since_prune[template] = 0
            _pruning.start(store, settings, template)
        return key
    except StudioUnavailable:  # said once: the failed bind that began the wait is logged below
        return None
    except Exception as error:  # the report is done; the studio just misses this payload
        log.warning("payload not recorded", request_id=event.request.request_id, error=repr(error))
        return None


async def listing(store: ArtefactStore, template: str) -> list[RecordInfo]:
    """A template's records, newest first."""
    found: list[StoredObject] = await store.list(template_prefix(template))
    infos = []
    for obj in found:
        rid = record_id(obj.key)
        try:
            when = datetime.strptime(rid.split("-", 1)[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
        except ValueError:
            continue  # not one of ours
        infos.append(RecordInfo(rid, template, obj.key, obj.size, when))
    return sorted(infos, key=lambda i: i.id, reverse=True)


async def counts(store: ArtefactStore) -> dict[str, int]:
    """Recorded payloads per template (one listing of the store for all of them)."""
    found: dict[str, int] = {}
    for obj in await store.list(PREFIX):
        template = obj.key[len(PREFIX) :].rsplit("/", 1)[0]
        found[template] = found.get(template, 0) + 1
    return found


class _Pruning:
    """Prunes run beside the reports, never in their way: a listing of a big store takes its
    time (and one that never answered once held a renderer's reports for ever)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, store: ArtefactStore, settings: Settings, template: str) -> None:
        task = asyncio.get_running_loop().create_task(self._run(store, settings, template))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, store: ArtefactStore, settings: Settings, template: str) -> None:
        try:
            async with asyncio.timeout(PRUNE_TIMEOUT):
                await prune(store, settings, template)
        except Exception as error:  # the next prune tries again
            log.warning("studio records not pruned", template=template, error=repr(error))


_pruning = _Pruning()


async def prune(
    store: ArtefactStore, settings: Settings, template: str, *, now: datetime | None = None
) -> list[str]:
    """Delete a template's records past the age or beyond the count (the keys deleted)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=settings.studio_keep_days)
    records = await listing(store, template)
    gone = [
        r.key
        for index, r in enumerate(records)
        if index >= settings.studio_max_payloads or r.recorded_at < cutoff
    ]
    for key in gone:
        await store.delete(key)
    return gone


async def read(store: ArtefactStore, settings: Settings, template: str, rid: str) -> dict[str, Any]:
    """One record, opened with the console's key (PressroomError when unknown or unreadable)."""
    if "/" in rid or not rid:
        raise PressroomError(f"no recorded payload '{rid}'")
    key = f"{template_prefix(template)}{rid}{SEALED}"
    try:
        blob = await store.get(key)
    except PressroomError:
        raise PressroomError(f"no recorded payload '{rid}' of {template}") from None
    try:
        body = json.loads(unseal_bytes(blob, private_key(settings)))
    except SealError as error:
        raise PressroomError(f"recorded payload '{rid}' cannot be opened: {error}") from None
    if not isinstance(body, dict):
        raise PressroomError(f"recorded payload '{rid}' is not a record")
    body["id"] = rid
    return body
