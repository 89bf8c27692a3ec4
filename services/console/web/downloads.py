"""Reading an artefact as a stream, whole or a byte range, from the JetStream object store
or S3: what `GET /a/{token}` sends, one chunk in memory at a time."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from nats.js.errors import NotFoundError, ObjectNotFoundError

from services.console.busaccess import Bus
from shared.adapters.store import S3Artefacts
from shared.bus.names import OBJECT_BUCKET
from shared.errors import PressroomError

S3_PIECE = 256 * 1024


class Gone(PressroomError):
    """The artefact a link names is no longer stored (purged, expired by retention)."""


@dataclass
class Stored:
    size: int
    content_type: str
    sha256: str
    read: Callable[[int, int], AsyncIterator[bytes]]  # bytes [start, end)


async def open_artefact(bus: Bus, key: str) -> Stored:
    if bus.settings.s3_endpoint:
        return await _s3(S3Artefacts.from_settings(bus.settings), key)
    return await _object_store(bus, key)


async def _object_store(bus: Bus, key: str) -> Stored:
    store = await bus.js.object_store(OBJECT_BUCKET)
    try:
        info = await store.get_info(key)
    except (ObjectNotFoundError, NotFoundError):
        raise Gone(f"artefact '{key}' is not in the object store") from None
    headers = dict((info.headers or {}).items()) if info.headers else {}
    sha = str(headers.get("sha256") or "")
    if not sha and info.digest:  # "SHA-256=<base64url>"
        raw = info.digest.split("=", 1)[-1]
        sha = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
    subject = f"$O.{OBJECT_BUCKET}.C.{info.nuid}"
    stream = f"OBJ_{OBJECT_BUCKET}"

    async def read(start: int, end: int) -> AsyncIterator[bytes]:
        # One chunk per request, the next by subject: nothing read ahead of the client.
        seq, offset = 1, 0
        while offset < end:
            try:
                msg = await bus.js.get_msg(stream, seq=seq, subject=subject, next=True)
            except NotFoundError:
                raise Gone(f"artefact '{key}' went away while it was sent") from None
            data = msg.data or b""
            seq = int(msg.seq or seq) + 1
            lo, hi = max(start - offset, 0), min(end - offset, len(data))
            offset += len(data)
            if hi > lo:
                yield data[lo:hi]

    return Stored(
        int(info.size or 0),
        str(headers.get("Content-Type") or "application/octet-stream"),
        sha,
        read,
    )


async def _s3(store: S3Artefacts, key: str) -> Stored:
    client, bucket = store._client, store._bucket  # the same client the store uses
    try:
        stat = await asyncio.to_thread(client.stat_object, bucket, key)
    except Exception as error:
        if getattr(error, "code", "") in ("NoSuchKey", "NoSuchObject", "NoSuchBucket"):
            raise Gone(f"artefact '{key}' is not in bucket '{bucket}'") from None
        raise
    meta = {k.lower(): v for k, v in (stat.metadata or {}).items()}
    sha = str(meta.get("x-amz-meta-sha256") or "")

    async def read(start: int, end: int) -> AsyncIterator[bytes]:
        if end <= start:
            return
        response = await asyncio.to_thread(
            client.get_object, bucket, key, offset=start, length=end - start
        )
        try:
            while piece := await asyncio.to_thread(response.read, S3_PIECE):
                yield piece
        finally:
            response.close()
            response.release_conn()

    return Stored(
        int(stat.size or 0), str(stat.content_type or "application/octet-stream"), sha, read
    )


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """`Range: bytes=a-b` as [start, end); None for the whole; ValueError when unsatisfiable
    (one range only: a multipart answer is never needed for a report)."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None  # not understood: the whole file, as RFC 9110 allows
    first, _, last = spec.strip().partition("-")
    try:
        if not first:  # the last N bytes
            count = int(last)
            if count <= 0:
                raise ValueError
            return max(size - count, 0), size
        start = int(first)
        end = min(int(last) + 1, size) if last else size
    except ValueError:
        raise ValueError("bad range") from None
    if start >= size or end <= start:
        raise ValueError("unsatisfiable")
    return start, end
