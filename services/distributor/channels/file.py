"""The `file` channel: write artefacts into a folder under PRESSROOM_OUT_DIR, atomically."""

from __future__ import annotations

import asyncio
import errno
import os
import tempfile
from pathlib import Path

from services.distributor.parcel import Parcel
from shared.errors import PermanentError, TransientError
from shared.events import TENANT_NAME, ChannelResult, Delivery
from shared.settings import Settings


def write_atomically(path: Path, data: bytes) -> None:
    """`data` at `path`, whole or not at all, and still there after a power loss once this
    returns (the delivery is then recorded as made): the file's bytes are synced, then its
    name in the folder (a rename lives in the folder, not in the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a report folder is for people to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(folder)
    except OSError as error:
        # Some filesystems (FUSE mounts, some network shares) cannot sync a folder: the name is
        # then as durable as they make it, and the delivery stands (it is not made again).
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(folder)


class FileChannel:
    def __init__(self, settings: Settings) -> None:
        self.root = settings.out_dir
        self.allow_absolute = settings.file_allow_absolute

    def folder(self, delivery: Delivery, tenant: str | None = None) -> Path:
        """Where a delivery writes. A calling system's request (`tenant`, set from the subject
        it arrived on) writes inside PRESSROOM_OUT_DIR/<tenant>/ only: its `path` is taken
        from there, and no absolute path is allowed (so no tenant reaches another's folder).
        The services' own requests (ops, the scheduler) write from PRESSROOM_OUT_DIR."""
        root = self.root.resolve()
        rel = str((delivery.model_extra or {}).get("path") or ".")
        if tenant is not None:
            if not TENANT_NAME.fullmatch(tenant):
                raise PermanentError(f"tenant '{tenant}' is not a calling system's name")
            base = (root / tenant).resolve()
            if rel.startswith("/"):
                raise PermanentError(
                    f"file delivery path '{rel}' is absolute (a calling system's files go "
                    f"inside PRESSROOM_OUT_DIR/{tenant}/)"
                )
            folder = (base / rel).resolve()
            if base.parent != root or not folder.is_relative_to(base):
                raise PermanentError(
                    f"file delivery path '{rel}' is outside PRESSROOM_OUT_DIR/{tenant}/ "
                    "(a calling system's files stay in its own folder)"
                )
            return folder
        if rel.startswith("/") and not self.allow_absolute:
            raise PermanentError(
                f"file delivery path '{rel}' is absolute (set PRESSROOM_FILE_ALLOW_ABSOLUTE=true "
                "to allow it)"
            )
        if rel.startswith("/"):
            return Path(rel).resolve()
        folder = (root / rel).resolve()
        if not folder.is_relative_to(root):
            raise PermanentError(f"file delivery path '{rel}' is outside PRESSROOM_OUT_DIR")
        return folder

    def shown(self, path: Path) -> str:
        """A path as reasons show it: relative to PRESSROOM_OUT_DIR, never the server's layout."""
        try:
            return f"PRESSROOM_OUT_DIR/{path.relative_to(self.root.resolve()).as_posix()}"
        except ValueError:
            return path.name

    async def deliver(self, delivery: Delivery, parcel: Parcel) -> ChannelResult:
        folder = self.folder(delivery, parcel.event.request.tenant)
        written = []
        for artefact in parcel.event.artefacts:
            target = folder / parcel.folder_filename(artefact)
            data = await parcel.content(artefact)
            shown = self.shown(target)
            try:
                await asyncio.to_thread(write_atomically, target, data)
            except PermissionError as error:
                raise PermanentError(f"cannot write {shown}: {error.strerror}") from None
            except OSError as error:
                raise TransientError(f"cannot write {shown}: {error.strerror}") from None
            written.append(self.shown(target))  # events and the ledger show no server layout
        return ChannelResult(channel="file", ok=True, target=", ".join(written))
