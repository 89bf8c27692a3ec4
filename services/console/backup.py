"""`pressroom backup` and `pressroom restore`: templates, config, ledger, dead letters and reports
in one archive, and back."""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from nats.js.errors import KeyWrongLastSequenceError

from services.console.busaccess import Bus
from services.console.deadletters import dead_letters, letter_identity, letter_identity_id
from services.console.redact import redacted_config, redacted_entry, redacted_letter
from services.console.requests import ledger_entries
from shared.adapters.ledger import LedgerEntry
from shared.adapters.store import ArtefactStore
from shared.bus.names import LEDGER_BUCKET
from shared.bus.topology import JetStreamPublisher
from shared.errors import PressroomError
from shared.events import (
    DLQ_PREFIX,
    REQUEST_ID_PATTERN,
    DeadLetter,
)
from shared.schedules import CLOCK_SKEW, scheduled_fire

_CONTENT_TYPES = {
    ".pdf": "application/pdf",
    ".html": "text/html; charset=utf-8",
    ".csv": "text/csv; charset=utf-8",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


async def backup(
    bus: Bus,
    target: Path,
    templates_dir: Path,
    config: Path | None,
    *,
    include_secrets: bool = False,
    artefacts: bool = False,
    since: datetime | None = None,
) -> dict[str, int]:
    """Templates, config, ledger entries and dead letters in one tar.gz, readable only by its
    owner (0600); secrets are redacted unless asked for. With `artefacts`, the reports in the
    artefact store too (those stored since `since`), one at a time into the archive."""
    listed = await ledger_entries(bus)
    # An unreadable ledger value is not an entry: counted and named, never archived as one.
    conflicts = [e.request_id for e in listed if e.status == "conflict"]
    entries = [e for e in listed if e.status != "conflict"]
    letters = await dead_letters(bus)
    store = await bus.store() if artefacts else None
    objects = []
    if store is not None:
        objects = [
            o
            for o in await store.list("reports/")
            if since is None or o.modified is None or o.modified >= since
        ]
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "ledger_entries": len(entries),
        "ledger_conflicts": conflicts,
        "dead_letters": len(letters),
        "artefacts": len(objects),
        "secrets": "included" if include_secrets else "redacted",
    }

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o600
        info.mtime = int(datetime.now(UTC).timestamp())
        tar.addfile(info, io.BytesIO(data))

    def visible(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        # Hidden files (.git, .env …) are not templates and may hold credentials.
        hidden = any(part.startswith(".") for part in Path(info.name).parts)
        return None if hidden or info.issym() else info

    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when the file existed with wider permissions
    saved = 0
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        add(tar, "manifest.json", json.dumps(manifest, indent=2).encode())
        kept_entries = entries if include_secrets else [redacted_entry(e) for e in entries]
        add(tar, "ledger.jsonl", "".join(e.model_dump_json() + "\n" for e in kept_entries).encode())
        kept = [r.letter if include_secrets else redacted_letter(r.letter) for r in letters]
        add(tar, "dead-letters.jsonl", "".join(k.model_dump_json() + "\n" for k in kept).encode())
        if templates_dir.is_dir():
            tar.add(templates_dir, arcname="templates", filter=visible)
        if config is not None and config.is_file():
            text = config.read_text(encoding="utf-8")
            add(tar, "config.yaml", (text if include_secrets else redacted_config(text)).encode())
        for obj in objects:  # one report in memory at a time, straight into the gzip stream
            assert store is not None
            try:
                data = await store.get(obj.key)
            except PressroomError:
                continue  # removed since the listing (retention)
            add(tar, f"artefacts/{obj.key}", data)
            saved += 1
    return {
        "ledger_entries": len(entries),
        "dead_letters": len(letters),
        "artefacts": saved,
        "ledger_conflicts": len(conflicts),
    }


# What a restore reads, at most: each member's size is checked (from its header) before any of
# it is read, the records are read a line at a time, and the whole archive is capped.
RESTORE_MAX_TOTAL = 16 * 1024**3


RESTORE_MAX_MEMBERS = 1_000_000


RESTORE_MAX_LINE = 8 * 1024**2


_RESTORE_MAX_MEMBER = {
    "manifest.json": 64 * 1024,
    "ledger.jsonl": 2 * 1024**3,
    "dead-letters.jsonl": 2 * 1024**3,
    "config.yaml": 4 * 1024**2,
    "templates/": 64 * 1024**2,
}


@dataclass
class RestoreReport:
    """What `restore` did, counted, for the CLI to say."""

    ledger_entries: int = 0
    ledger_present: int = 0
    ledger_refused: dict[str, int] | None = None
    dead_letters: int = 0
    dead_letters_present: int = 0
    artefacts: int = 0
    artefacts_present: int = 0
    templates_written: int = 0
    templates_unchanged: int = 0
    templates_kept: list[str] | None = None
    unwritten: list[str] | None = None  # templates that could not be written here, and why
    config: str = ""  # what happened to config.yaml, in words ("" when the archive had none)
    secrets_redacted: bool = True

    def refuse(self, why: str) -> None:
        self.ledger_refused = self.ledger_refused or {}
        self.ledger_refused[why] = self.ledger_refused.get(why, 0) + 1


def _restorable(entry: LedgerEntry, now: datetime) -> str | None:
    """Why a ledger entry from an archive may not go back (None: it may). Only settled
    reports go back, and nothing that would stand in for a future request: a crafted entry
    for a scheduled fire that is not due would make that fire a "duplicate" and skip it."""

    if not re.fullmatch(REQUEST_ID_PATTERN, entry.request_id) or len(entry.request_id) > 128:
        return "not a request id"
    if entry.status not in ("delivered", "failed"):
        return "still in flight when backed up"
    latest = now + CLOCK_SKEW
    stamps = [entry.updated_at, entry.requested_at, entry.settled_at]
    if any(t is not None and t > latest for t in stamps):
        return "dated in the future"
    fire = scheduled_fire(entry.request_id)
    if fire is not None and fire > now:  # a backup holds no fire from the future
        return "a scheduled fire that is not due"
    return None


def _member_limit(name: str, artefact_limit: int) -> int | None:
    if name.startswith("artefacts/"):
        return artefact_limit
    if name.startswith("templates/"):
        return _RESTORE_MAX_MEMBER["templates/"]
    return _RESTORE_MAX_MEMBER.get(name)


def _safe_relative(name: str, prefix: str) -> Path | None:
    """`templates/a/b.html` → `a/b.html`; None for anything that could leave the folder."""
    rel = name.removeprefix(prefix)
    parts = Path(rel).parts
    if (
        not rel
        or rel.startswith("/")
        or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
    ):
        return None
    return Path(*parts)


def _write_private(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.restore-{uuid.uuid4().hex[:8]}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


def _unwritable(path: Path, error: OSError) -> str:
    """Why a file could not be written, in a line (a read-only mount, a folder in its way)."""
    return f"{path} ({error.strerror or type(error).__name__})"


async def restore(
    bus: Bus,
    source: Path,
    *,
    templates_dir: Path | None = None,
    config: Path | None = None,
    force: bool = False,
) -> RestoreReport:
    """Put back what an archive holds and the stack lacks: settled ledger entries, dead letters
    (the same one is never put back twice: compared by `letter_identity`), reports' artefacts,
    and — when given where — templates and the config file (a file that differs here is kept
    unless `force`). The archive is read as a stream, every member checked before it is read."""
    restoring = _Restore(bus, source, templates_dir, config, force)
    try:
        await restoring.prepare()
        with tarfile.open(source, mode="r|gz") as tar:
            for name, handle, limit in restoring.members(tar):
                await restoring.member(name, handle, limit)
    except PressroomError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError) as error:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise restoring.bad(text) from None
    return restoring.report


class _Restore:
    """One restore: what the stack already holds, and each kind of member put back."""

    def __init__(
        self,
        bus: Bus,
        source: Path,
        templates_dir: Path | None,
        config: Path | None,
        force: bool,
    ) -> None:
        self.bus, self.source = bus, source
        self.templates_dir, self.config, self.force = templates_dir, config, force
        self.report = RestoreReport()
        self.now = datetime.now(UTC)
        self.present: set[tuple[str, str, str, datetime, datetime]] = set()
        self.store: ArtefactStore | None = None
        self.stored: set[str] = set()

    async def prepare(self) -> None:
        self.kv = await self.bus.js.key_value(LEDGER_BUCKET)
        self.present = {letter_identity(r.letter) for r in await dead_letters(self.bus)}

    def bad(self, why: str) -> PressroomError:
        return PressroomError(f"'{self.source}' is not a pressroom backup: {why}")

    def members(self, tar: tarfile.TarFile) -> Iterator[tuple[str, IO[bytes], int]]:
        """Each member of ours, checked against the limits before a byte of it is read."""
        artefact_limit = self.bus.settings.max_output_bytes
        total = count = 0
        for member in tar:
            count += 1
            total += member.size
            if count > RESTORE_MAX_MEMBERS or total > RESTORE_MAX_TOTAL:
                raise self.bad(
                    f"more than {RESTORE_MAX_MEMBERS:,} members or "
                    f"{RESTORE_MAX_TOTAL // 1024**3} GiB in all: refused"
                )
            if not member.isfile():
                continue
            limit = _member_limit(member.name, artefact_limit)
            if limit is None:
                continue  # not ours: skipped unread
            if member.size > limit:
                raise self.bad(
                    f"{member.name} is {member.size:,} bytes, over the {limit:,} a "
                    "backup holds: refused"
                )
            handle = tar.extractfile(member)
            if handle is not None:
                yield member.name, handle, limit

    def lines(self, handle: IO[bytes], name: str) -> Iterator[bytes]:
        while line := handle.readline(RESTORE_MAX_LINE + 1):
            if len(line) > RESTORE_MAX_LINE and not line.endswith(b"\n"):
                raise self.bad(f"{name} has a line over {RESTORE_MAX_LINE // 1024**2} MiB")
            if line.strip():
                yield line

    async def member(self, name: str, handle: IO[bytes], limit: int) -> None:
        report = self.report
        if name == "manifest.json":
            manifest = json.loads(handle.read(limit))
            report.secrets_redacted = manifest.get("secrets") != "included"
        elif name == "ledger.jsonl":
            await self.ledger(handle, name)
        elif name == "dead-letters.jsonl":
            await self.letters(handle, name)
        elif name.startswith("artefacts/"):
            await self.artefact(name.removeprefix("artefacts/"), handle, limit)
        elif name.startswith("templates/") and self.templates_dir is not None:
            rel = _safe_relative(name, "templates/")
            if rel is not None:
                _restore_file(report, self.templates_dir / rel, handle.read(limit), self.force)
        elif name == "config.yaml":
            report.config = _restore_config(
                self.config, handle.read(limit), self.force, report.secrets_redacted
            )

    async def ledger(self, handle: IO[bytes], name: str) -> None:
        for line in self.lines(handle, name):
            entry = LedgerEntry.model_validate_json(line)
            why = _restorable(entry, self.now)
            if why:
                self.report.refuse(why)
                continue
            try:
                await self.kv.create(entry.request_id, entry.model_dump_json().encode())
                self.report.ledger_entries += 1
            except KeyWrongLastSequenceError:
                self.report.ledger_present += 1  # the live ledger wins

    async def letters(self, handle: IO[bytes], name: str) -> None:
        for line in self.lines(handle, name):
            letter = DeadLetter.model_validate_json(line)
            if letter_identity(letter) in self.present:
                self.report.dead_letters_present += 1
                continue
            await JetStreamPublisher(self.bus.js).publish(
                f"{DLQ_PREFIX}{letter.subject}",
                letter.model_dump_json().encode(),
                msg_id=f"restore:{letter_identity_id(letter)}",
            )
            self.present.add(letter_identity(letter))
            self.report.dead_letters += 1

    async def artefact(self, key: str, handle: IO[bytes], limit: int) -> None:
        if not key.startswith("reports/") or _safe_relative(key, "reports/") is None:
            return
        if self.store is None:
            self.store = await self.bus.store()
            self.stored = {o.key for o in await self.store.list("reports/")}
        if key in self.stored:
            self.report.artefacts_present += 1
            return
        content_type = _CONTENT_TYPES.get(Path(key).suffix, "application/octet-stream")
        await self.store.put(key, handle.read(limit), content_type=content_type)
        self.report.artefacts += 1


def _restore_file(report: RestoreReport, path: Path, data: bytes, force: bool) -> None:
    if path.is_file() and path.read_bytes() == data:
        report.templates_unchanged += 1
    elif path.exists() and not force:
        report.templates_kept = [*(report.templates_kept or []), str(path)]
    else:
        try:
            _write_private(path, data, 0o644)
        except OSError as error:  # a read-only templates mount (compose, a ConfigMap) …
            report.unwritten = [*(report.unwritten or []), _unwritable(path, error)]
            return
        report.templates_written += 1


def _restore_config(config: Path | None, data: bytes, force: bool, redacted: bool) -> str:
    if config is None:
        return "not restored: name where with --config (or set PRESSROOM_CONFIG)"
    if config.is_file() and config.read_bytes() == data:
        return f"{config} unchanged"
    if config.exists() and redacted:
        return f"{config} differs and was kept (the archive's copy has its secrets redacted)"
    if config.exists() and not force:
        return f"{config} differs and was kept (--force overwrites it)"
    try:
        _write_private(config, data, 0o600)
    except OSError as error:
        return f"not written: {_unwritable(config, error)}"
    note = " (fill in the REDACTED secrets)" if redacted else ""
    return f"written to {config}{note}; PRESSROOM_CONFIG={config} uses it"
