"""The artefact store: one interface, S3 (minio client) and JetStream Object Store backends."""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import io
import ipaddress
import json
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from nats.js import api
from nats.js.errors import BucketNotFoundError, NotFoundError, ObjectNotFoundError
from nats.nuid import NUID

from shared.aio import all_settled
from shared.bus.names import OBJECT_BUCKET, STUDIO_BUCKET, STUDIO_PREFIX
from shared.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from minio import Minio
    from nats.js import JetStreamContext
    from nats.js.object_store import ObjectStore

    from shared.events import Artefact
    from shared.settings import Settings


@dataclass(frozen=True)
class StoredObject:
    """One artefact as a listing shows it (retention reads `modified`)."""

    key: str
    size: int
    modified: datetime | None


class ArtefactStore(Protocol):
    """Where rendered reports (and large contexts) live; the bus carries only their keys."""

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
        new: bool = False,
    ) -> None:
        """Store `data` under `key`, replacing what is there; `new`: the key is known to be
        unused (a key made unique by its writer), so nothing is looked up to be replaced."""
        ...

    async def get(self, key: str) -> bytes:
        """The bytes stored under `key`; ArtefactMissing (naming the key) when there are none."""
        ...

    async def delete(self, key: str) -> None: ...

    async def list(self, prefix: str = "") -> list[StoredObject]: ...

    async def presign(self, key: str, expires: timedelta = timedelta(days=7)) -> str | None: ...

    async def check(self) -> None:
        """Raise if the store cannot be reached (health checks)."""
        ...


async def remove_older_than(
    store: ArtefactStore, age: timedelta, *, now: datetime | None = None, dry_run: bool = False
) -> list[StoredObject]:
    """Retention (the legacy "clean old reports"): artefacts and parked contexts past `age`."""
    cutoff = (now or datetime.now(UTC)) - age
    old = [
        o
        for prefix in ("reports/", "contexts/")
        for o in await store.list(prefix)
        if o.modified is not None and o.modified < cutoff
    ]
    if not dry_run:
        for obj in old:
            await store.delete(obj.key)
    return old


def context_key(request_id: str) -> str:
    """Where the fetcher parks a context too big for a message."""
    return f"contexts/{request_id}.json"


def artefact_key(request_id: str, ext: str, when: datetime) -> str:
    day = when.astimezone(UTC)
    return f"reports/{day:%Y/%m/%d}/{request_id}.{ext}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtefactMissing(PermanentError):
    """The artefact a message refers to is not in the store."""


class StudioUnavailable(TransientError):
    """The studio's bucket cannot be used now (its binding failed a moment ago)."""


class ArtefactTampered(PermanentError):
    """The stored bytes do not match the digest recorded when the artefact was rendered."""


async def read_verified(store: ArtefactStore, artefact: Artefact) -> bytes:
    """An artefact's bytes, only if they still match the sha256 recorded at render time."""
    data = await store.get(artefact.key)
    if sha256_hex(data) != artefact.sha256:
        raise ArtefactTampered(
            f"artefact '{artefact.key}' no longer matches its recorded sha256 "
            "(changed in the store since it was rendered); render the report again"
        )
    return data


# Objects up to this size are read message by message (ObjectStoreArtefacts._chunks): two
# 128 KiB chunks. Measured: a 60 KB PDF read in a third of the time, with 0.4 ms less CPU on
# the server and 1.3 ms less in the reader; a 700 KB one took longer that way.
BY_MESSAGE_MAX = 256 * 1024
CHUNK_SIZE = 128 * 1024  # the client's own chunk size (nats.js.object_store)
PUT_WINDOW = 8  # chunks of one object written without waiting for their acks
_NUID = NUID()  # an object's chunk subject, as the client names it
LIST_READS = 16  # meta records a listing reads at once
STUDIO_RETRY_AFTER = 60.0  # seconds before a studio bucket that could not be bound is asked again


class ObjectBucket:
    """One bucket of JetStream's Object Store, with the artefact store's contract."""

    def __init__(self, store: ObjectStore, js: JetStreamContext | None = None) -> None:
        self._store = store
        self._js = js  # for reading chunks by message (no consumer per read)
        self.name: str = store._name

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
        new: bool = False,
    ) -> None:
        headers = {"Content-Type": content_type, **{k: str(v) for k, v in (metadata or {}).items()}}
        if self._js is None:
            await self._store.put(key, data, meta=api.ObjectMeta(name=key, headers=headers))
            return
        await self._put(key, data, headers, new=new)

    async def _put(self, key: str, data: bytes, headers: dict[str, str], *, new: bool) -> None:
        """The client's `put`, with the look-up of an object already under the name (whose
        chunks go once the new object is complete) made while the chunks are written instead
        of before: one round trip fewer on every report's path. Chunks first, then the meta
        record that makes the object visible, as the client does; the meta record goes out
        without waiting for the chunks' acks, so a put that fails on a chunk after its meta
        record was stored removes that record again: the name then holds nothing (an earlier
        object under it is not brought back — the caller retries the put)."""
        assert self._js is not None
        stream = f"OBJ_{self.name}"
        nuid = _NUID.next().decode()
        chunks = self._chunk_subject(nuid)
        earlier = asyncio.ensure_future(self._info(key) if not new else _nothing())
        digest = hashlib.sha256()
        writes: list[asyncio.Future[Any]] = []
        stored_meta: asyncio.Future[Any] | None = None
        try:
            sent = 0
            for start in range(0, len(data), CHUNK_SIZE):
                part = data[start : start + CHUNK_SIZE]
                digest.update(part)
                # Sent one after another on one connection, so stored in that order; up to
                # PUT_WINDOW acks awaited at once (the meta record goes out without waiting
                # for the last chunks' acks, as the Go client's put does).
                if len(writes) >= PUT_WINDOW:
                    await writes[-PUT_WINDOW]
                writes.append(asyncio.ensure_future(self._js.publish(chunks, part)))
                sent += 1
            info = api.ObjectInfo(
                name=key,
                bucket=self.name,
                nuid=nuid,
                size=len(data),
                chunks=sent,
                mtime=datetime.now(UTC).isoformat(),
                digest=f"SHA-256={base64.urlsafe_b64encode(digest.digest()).decode()}",
                headers=headers,
                options=api.ObjectMetaOptions(max_chunk_size=CHUNK_SIZE),
            )
            meta = self._meta(key)
            stored_meta = asyncio.ensure_future(
                self._js.publish(
                    meta, json.dumps(info.as_dict()).encode(), headers={api.Header.ROLLUP: "sub"}
                )
            )
            await all_settled([*writes, stored_meta])
        except BaseException:
            earlier.cancel()
            for write in writes:
                write.cancel()
            if stored_meta is not None and stored_meta.done() and not stored_meta.cancelled():
                # The meta record stored, a chunk not: that record goes (it would point at
                # chunks that are not there) — it and older ones only (a purge below the next
                # sequence), so a retry's meta written meanwhile under the same name stays.
                if stored_meta.exception() is None:
                    with suppress(Exception):
                        after = stored_meta.result().seq + 1
                        await self._js.purge_stream(stream, subject=meta, seq=after)
            elif stored_meta is not None:
                stored_meta.cancel()
            with suppress(Exception):
                await self._js.purge_stream(stream, subject=chunks)
            raise
        old = await earlier
        if old is not None and not old.deleted and old.nuid and old.nuid != nuid:
            await self._js.purge_stream(stream, subject=self._chunk_subject(old.nuid))

    def _chunk_subject(self, nuid: str) -> str:
        return f"$O.{self.name}.C.{nuid}"

    def _meta(self, key: str) -> str:
        """The subject of the object's meta record (its name travels base64 in it)."""
        return f"$O.{self.name}.M.{base64.urlsafe_b64encode(key.encode()).decode()}"

    async def _info(self, key: str) -> api.ObjectInfo | None:
        """The object under `key`, if there is one (deleted ones too)."""
        try:
            return await self._store.get_info(key, show_deleted=True)
        except (ObjectNotFoundError, NotFoundError):
            return None

    async def get(self, key: str) -> bytes:
        try:
            info = await self._store.get_info(key)
            small = 0 < (info.size or 0) <= BY_MESSAGE_MAX
            if self._js is None or info.is_link() or not info.nuid or not small:
                result = await self._store.get(key)
                return result.data or b""
            return await self._chunks(info)
        except ObjectNotFoundError:
            raise ArtefactMissing(f"artefact '{key}' is not in the object store") from None

    async def _chunks(self, info: api.ObjectInfo) -> bytes:
        """An object's chunks read one message at a time, its digest checked. The client's
        own `get` creates an ordered consumer for every read (a stream lookup, a consumer
        made and dropped on the server): most of what reading a small PDF cost. Bigger objects
        go through that consumer still (each message read here travels base64 in JSON)."""
        assert self._js is not None and info.size
        subject = self._chunk_subject(info.nuid)
        parts: list[bytes] = []
        digest = hashlib.sha256()
        seq, size = 0, 0
        while size < info.size:
            try:
                msg = await self._js.get_msg(
                    f"OBJ_{self.name}", seq=seq + 1, subject=subject, next=True
                )
            except NotFoundError:
                raise ObjectNotFoundError from None  # chunks gone (a delete in between)
            seq = msg.seq or seq + 1
            data = msg.data or b""
            parts.append(data)
            digest.update(data)
            size += len(data)
        expected = (info.digest or "").split("=", 1)[-1]
        if size != info.size or digest.digest() != base64.urlsafe_b64decode(expected + "=="):
            raise ArtefactTampered(
                f"artefact '{info.name}' no longer matches the object store's own digest "
                "(changed in the store since it was written); render the report again"
            )
        return b"".join(parts)

    async def delete(self, key: str) -> None:
        """The object's chunks and meta record purged: no deletion record is left behind (the
        client's `delete` leaves one under the name for ever, and every later listing of the
        bucket would read it again). A put under the same name meanwhile stays: only the meta
        record read here and older ones go."""
        if self._js is None:
            with suppress(ObjectNotFoundError):
                await self._store.delete(key)
            return
        stream, meta = f"OBJ_{self.name}", self._meta(key)
        try:
            last = await self._js.get_last_msg(stream, meta)
        except NotFoundError:
            return
        try:
            nuid = api.ObjectInfo.from_response(json.loads(last.data or b"{}")).nuid
        except (ValueError, TypeError, KeyError):
            nuid = None  # a meta record that does not parse: it goes all the same
        if nuid:  # the chunks first: a purge that fails after them leaves a name to delete again
            await self._js.purge_stream(stream, subject=self._chunk_subject(nuid))
        await self._js.purge_stream(stream, subject=meta, seq=(last.seq or 0) + 1)

    async def list(self, prefix: str = "") -> list[StoredObject]:
        """The objects under `prefix`: their names from the stream's subject index, then each
        matching one's meta record, a few read at once. Not the client's watch: the server
        decides at its start which records it will send, and one deleted meanwhile (purged)
        left the watch waiting for ever. A deletion record an earlier version left goes when a
        listing meets it (it would be read again by every listing)."""
        if self._js is None:
            return await self._watched(prefix)
        try:
            names = await object_names(self._js, self.name, prefix)
        except NotFoundError:
            return []
        reads = asyncio.Semaphore(LIST_READS)

        async def one(name: str) -> StoredObject | None:
            async with reads:
                info = await self._info(name)
                if info is not None and info.deleted:
                    with suppress(Exception):  # a role that may not purge just skips it
                        await self.delete(name)
            if info is None or info.deleted:
                return None  # deleted meanwhile
            return StoredObject(info.name, info.size or 0, _parse_time(info.mtime))

        return [found for found in await asyncio.gather(*map(one, names)) if found is not None]

    async def _watched(self, prefix: str) -> builtins.list[StoredObject]:
        """A listing through the client's watch (a store opened without a JetStream context)."""
        try:
            watcher = await self._store.watch(ignore_deletes=True)
        except NotFoundError:
            return []
        found: builtins.list[StoredObject] = []
        try:
            async for info in watcher:
                if info is None:  # the end of what is stored now
                    break
                if info.name.startswith(prefix) and not info.deleted:
                    found.append(StoredObject(info.name, info.size or 0, _parse_time(info.mtime)))
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return found

    async def presign(self, key: str, expires: timedelta = timedelta(days=7)) -> str | None:
        return None  # the object store has no URLs: `pressroom get` downloads instead

    async def check(self) -> None:
        await self._store.status()


class ObjectStoreArtefacts:
    """The embedded default: JetStream's Object Store, nothing else to run.

    The studio's records (keys under STUDIO_PREFIX) go to a bucket of their own when the store
    has a JetStream context. The object store cannot list by prefix: a listing reads every
    object's record, and on the server that loads every block holding one, chunks and all. The
    renderer prunes its studio records every minute, so in the artefacts' bucket each prune made
    nats-server read, and hold in memory, every artefact stored. Studio records are bounded
    (so many per template), so listing their own bucket costs what they are.
    """

    def __init__(
        self, store: ObjectStore, js: JetStreamContext | None = None, studio: str = STUDIO_BUCKET
    ) -> None:
        self._main = ObjectBucket(store, js)
        self._js = js
        self._studio_name = studio
        self._studio: ObjectBucket | None = None  # bound at its first use: only the renderer
        # (which records) and the operators may use it, other roles never reach for it
        self._refused_until = 0.0  # a bucket that could not be bound is not asked again at once

    async def _bucket(self, key: str) -> ObjectBucket:
        if self._js is None or not key.startswith(STUDIO_PREFIX):
            return self._main
        if self._studio is None:
            if time.monotonic() < self._refused_until:
                raise StudioUnavailable("the studio's bucket could not be reached a moment ago")
            # Missing (no `bus setup` yet) or refused (a renderer without the permission:
            # `pressroom bus auth` not run again): a refused request is only answered by its
            # timeout, so one caller asks, the others meanwhile and for a while after do not.
            self._refused_until = time.monotonic() + STUDIO_RETRY_AFTER
            bound = await self._js.object_store(self._studio_name)
            self._studio = ObjectBucket(bound, self._js)
            self._refused_until = 0.0
        return self._studio

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
        new: bool = False,
    ) -> None:
        bucket = await self._bucket(key)
        await bucket.put(key, data, content_type=content_type, metadata=metadata, new=new)

    async def get(self, key: str) -> bytes:
        return await (await self._bucket(key)).get(key)

    async def delete(self, key: str) -> None:
        await (await self._bucket(key)).delete(key)

    async def list(self, prefix: str = "") -> list[StoredObject]:
        """A prefix inside the studio's lists its bucket only; one that covers it (such as "")
        lists both."""
        covers_studio = prefix.startswith(STUDIO_PREFIX) or STUDIO_PREFIX.startswith(prefix)
        if self._js is None or not covers_studio:
            return await self._main.list(prefix)
        found = [] if prefix.startswith(STUDIO_PREFIX) else await self._main.list(prefix)
        try:
            studio = await self._bucket(STUDIO_PREFIX)
        except BucketNotFoundError:  # a bus an earlier version set up: nothing recorded there
            return found
        return found + await studio.list(prefix)

    async def presign(self, key: str, expires: timedelta = timedelta(days=7)) -> str | None:
        return None  # the object store has no URLs: `pressroom get` downloads instead

    async def check(self) -> None:
        await self._main.check()


async def object_names(js: JetStreamContext, bucket: str, prefix: str = "") -> list[str]:
    """The names of a bucket's objects under `prefix`, from the stream's subject index (which
    nats-server keeps in memory): no object's record is read, no block loaded. Deleted objects
    whose deletion record is still stored are among them."""
    stream, meta = f"OBJ_{bucket}", f"$O.{bucket}.M."
    names: list[str] = []
    offset = 0
    while True:  # the server sends so many subjects at a time
        answer = await js._api_request(  # type: ignore[attr-defined]
            f"{js._prefix}.STREAM.INFO.{stream}",  # type: ignore[attr-defined]
            json.dumps({"subjects_filter": f"{meta}>", "offset": offset}).encode(),
            timeout=30,
        )
        subjects = (answer.get("state") or {}).get("subjects") or {}
        for subject in subjects:
            token = subject[len(meta) :]
            with suppress(ValueError, UnicodeDecodeError):
                name = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
                if name.startswith(prefix):
                    names.append(name)
        offset += len(subjects)
        if not subjects or offset >= int(answer.get("total") or 0):
            return names


async def move_studio_records(js: JetStreamContext) -> tuple[int, list[str]]:
    """Studio records found among the artefacts (an earlier version kept them there, or one of
    its renderers still running wrote one), moved to the studio's bucket: `pressroom bus setup`
    and `pressroom up` ask, every time. They are found through the subject index, so no artefact
    is read. A record that cannot be moved is said (the second value) and left where it is: the
    command goes on, the next setup tries again. Safe to cut short: a record is deleted among
    the artefacts only once it is stored in the studio's bucket. How many moved."""
    names = await object_names(js, OBJECT_BUCKET, STUDIO_PREFIX)
    if not names:
        return 0, []
    main = ObjectBucket(await js.object_store(OBJECT_BUCKET), js)
    target = ObjectBucket(await js.object_store(STUDIO_BUCKET), js)
    moved, problems = 0, []
    for key in names:
        try:
            info = await main._info(key)
            if info is None or info.deleted:  # deleted, its deletion record left: that goes too
                await main.delete(key)
                continue
            if await target._info(key) is None:  # else a move cut short stored it already
                headers = dict(info.headers or {})
                content_type = headers.pop("Content-Type", "application/octet-stream")
                data = await main.get(key)
                await target.put(key, data, content_type=content_type, metadata=headers)
            await main.delete(key)
            moved += 1
        except Exception as error:  # one record's problem is not the setup's
            problems.append(f"studio record '{key}' not moved: {error!r}"[:300])
    return moved, problems


async def _nothing() -> None:
    return None


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        # nats-server writes RFC 3339 with nanoseconds; Python parses microseconds.
        head, _, rest = value.partition(".")
        frac = "".join(ch for ch in rest if ch.isdigit())[:6]
        tz = rest[len(rest.rstrip("Z+-0123456789:")) :] if rest else ""
        text = f"{head}.{frac or '0'}{'+00:00' if value.endswith('Z') else tz}"
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def plain_http_s3_warning(settings: Settings) -> str | None:
    """Why S3 credentials would go over plain HTTP to another machine, or None: a worker says
    so at start (PRESSROOM_S3_SECURE=false with a non-loopback endpoint and keys)."""

    endpoint = settings.s3_endpoint
    if not endpoint or settings.s3_secure or not settings.s3_access_key:
        return None
    host = urlsplit(endpoint if "//" in endpoint else f"//{endpoint}").hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (
        f"S3 credentials go over plain HTTP to {endpoint} (PRESSROOM_S3_SECURE=false): anyone "
        "on that network can read them; use TLS (PRESSROOM_S3_SECURE=true) unless the store "
        "is on a private network of its own"
    )


class S3Artefacts:
    """S3 or MinIO through the `minio` client; blocking calls run in threads."""

    def __init__(self, client: Minio, bucket: str, *, create_bucket: bool = True) -> None:
        self._client = client
        self._bucket = bucket
        self._create = create_bucket
        self._ready = False

    @classmethod
    def from_settings(
        cls, settings: Settings, *, bucket: str | None = None, create_bucket: bool = True
    ) -> S3Artefacts:
        from minio import Minio

        assert settings.s3_endpoint
        client = Minio(
            settings.s3_endpoint,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            secure=settings.s3_secure,
            region=settings.s3_region,
        )
        return cls(client, bucket or settings.artefact_bucket, create_bucket=create_bucket)

    async def _call(self, fn: object, *args: object, key: str = "", **kwargs: object) -> object:
        """Run a blocking minio call in a thread; `key` names the object in error reasons."""
        # Imported here: only with the S3 store (start-up time).
        from minio.error import S3Error
        from urllib3.exceptions import HTTPError

        try:
            return await asyncio.to_thread(fn, *args, **kwargs)  # type: ignore[arg-type]
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject"):
                raise ArtefactMissing(
                    f"artefact '{key or (args[1] if len(args) > 1 else '?')}' "
                    f"is not in bucket '{self._bucket}'"
                ) from None
            if error.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise PermanentError(
                    f"S3 refused access to '{self._bucket}': {error.code}"
                ) from None
            if error.code == "NoSuchBucket":
                self._ready = False  # recreated on the next put (a wiped or new server)
            raise TransientError(f"S3 error {error.code}: {error.message}") from None
        except (HTTPError, OSError) as error:
            raise TransientError(f"S3 endpoint unreachable: {error}") from None

    async def ensure_bucket(self) -> None:
        if self._ready:
            return
        if not await self._call(self._client.bucket_exists, self._bucket):
            if not self._create:
                raise PermanentError(
                    f"bucket '{self._bucket}' does not exist (create it first; "
                    "deliveries never create buckets)"
                )
            try:
                await self._call(self._client.make_bucket, self._bucket)
            except TransientError:
                # Another replica may have created it meanwhile.
                if not await self._call(self._client.bucket_exists, self._bucket):
                    raise
        self._ready = True

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
        new: bool = False,
    ) -> None:
        await self.ensure_bucket()
        await self._call(
            self._client.put_object,
            self._bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata={k: str(v) for k, v in (metadata or {}).items()},
        )

    async def get(self, key: str) -> bytes:
        def read() -> bytes:
            response = self._client.get_object(self._bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        data = await self._call(read, key=key)
        assert isinstance(data, bytes)
        return data

    async def delete(self, key: str) -> None:
        await self._call(self._client.remove_object, self._bucket, key)

    async def list(self, prefix: str = "") -> list[StoredObject]:
        await self.ensure_bucket()

        def collect() -> list[StoredObject]:
            return [
                StoredObject(o.object_name or "", o.size or 0, o.last_modified)
                for o in self._client.list_objects(self._bucket, prefix=prefix, recursive=True)
            ]

        result = await self._call(collect)
        assert isinstance(result, list)
        return result

    async def presign(self, key: str, expires: timedelta = timedelta(days=7)) -> str | None:
        url = await self._call(
            self._client.presigned_get_object,
            self._bucket,
            key,
            expires=min(expires, timedelta(days=7)),
        )
        return str(url)

    async def check(self) -> None:
        await self._call(self._client.bucket_exists, self._bucket)


async def open_store(settings: Settings, js: object | None) -> ArtefactStore:
    """The configured backend: S3 when PRESSROOM_S3_ENDPOINT is set, else the object store."""
    if settings.s3_endpoint:
        store = S3Artefacts.from_settings(settings)
        await store.ensure_bucket()
        return store

    assert js is not None, "the object-store backend needs a JetStream context"
    return ObjectStoreArtefacts(await js.object_store(OBJECT_BUCKET), js)  # type: ignore[attr-defined,arg-type]


class MemoryArtefacts:
    """The same contract in memory, for unit tests."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, dict[str, str], datetime]] = {}

    async def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str,
        metadata: dict[str, str] | None = None,
        new: bool = False,
    ) -> None:
        meta = {"Content-Type": content_type, **(metadata or {})}
        self.objects[key] = (data, meta, datetime.now(UTC))

    async def get(self, key: str) -> bytes:
        if key not in self.objects:
            raise ArtefactMissing(f"artefact '{key}' is not in the store")
        return self.objects[key][0]

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)

    async def list(self, prefix: str = "") -> list[StoredObject]:
        return [
            StoredObject(k, len(d), w)
            for k, (d, _, w) in self.objects.items()
            if k.startswith(prefix)
        ]

    async def presign(self, key: str, expires: timedelta = timedelta(days=7)) -> str | None:
        return None

    async def check(self) -> None:
        return None
