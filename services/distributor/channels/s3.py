"""The `s3` channel: copy the artefacts to an allowed bucket and key of the request's choosing
(a calling system's: in its own folder under the allowed prefix)."""

from __future__ import annotations

import os
from pathlib import PurePosixPath

import certifi
import urllib3
from minio import Minio

from services.distributor.parcel import Parcel
from shared.adapters import egress
from shared.adapters.store import S3Artefacts
from shared.errors import PermanentError
from shared.events import TENANT_NAME, ChannelResult, Delivery
from shared.filenames import report_filename
from shared.placeholders import fill
from shared.settings import Settings

ALLOW_SETTING = "PRESSROOM_S3_DELIVERY_ALLOW"
DEFAULT_KEY = "{date}/{template}/{request_id}.{ext}"


def destination_key(pattern: str, parcel: Parcel, fmt: str, formats: int) -> str:
    request = parcel.event.request
    key = fill(
        pattern,
        {
            "request_id": request.request_id,
            "date": request.requested_at.strftime("%Y-%m-%d"),
            "template": PurePosixPath(request.template).stem,
            "ext": fmt,
            # the sanitised name attachments get (the request's `filename` pattern)
            "filename": report_filename(request, fmt),
        },
        what=f"s3 key '{pattern}'",
    )
    if key.endswith("/"):
        key += f"{request.request_id}.{fmt}"
    elif "{ext}" not in pattern and formats > 1:
        key = str(PurePosixPath(key).with_suffix(f".{fmt}"))
    if key.startswith("/") or ".." in key.split("/") or not key:
        raise PermanentError(f"s3 key '{key}' is not a plain object key")
    return key


def check_target(bucket: str, key: str, settings: Settings, tenant: str | None = None) -> str:
    """The key to write: only in buckets (or bucket/prefix folders) the operator allowed, never
    the artefact bucket. A calling system's request (`tenant`, set from the subject it arrived
    on) writes in its own folder: `<tenant>/` is put after the allowed prefix its key is under
    (`portfolio/weekly.pdf` under `bucket/portfolio` is `portfolio/<tenant>/weekly.pdf`), as the
    `file` channel writes in PRESSROOM_OUT_DIR/<tenant>/; so no tenant reaches an object another
    tenant's delivery wrote. The services' own requests (ops, the scheduler) write the key as is."""
    if bucket == settings.artefact_bucket:
        raise PermanentError(
            f"s3 delivery to '{bucket}' refused: it is Pressroom's artefact bucket "
            "(PRESSROOM_ARTEFACT_BUCKET); deliver to another bucket"
        )
    prefixes = _allowed_prefixes(bucket, settings)
    under = [p for p in prefixes if _is_under(key, p)]
    if not under:
        raise PermanentError(
            f"s3 delivery to s3://{bucket}/{key} refused: not in {ALLOW_SETTING} "
            "(add the bucket or bucket/prefix to allow it)"
        )
    if tenant is None:
        return key
    if not TENANT_NAME.fullmatch(tenant):
        raise PermanentError(f"tenant '{tenant}' is not a calling system's name")
    # The shortest allowed prefix: its tenant folder holds every longer one's key.
    prefix = min(under, key=len)
    own = _join(prefix, tenant, key[len(prefix) :].lstrip("/"))
    # Every allowed prefix the key is under must see it in that prefix's `<tenant>/` folder: an
    # allowed prefix inside another's tenant folder (`bucket/p` and `bucket/p/beta`) would
    # otherwise give alpha's `p/beta/alpha/…` to beta's `p/` folder too.
    for other in prefixes:
        if _is_under(own, other) and not _is_under(own, _join(other, tenant)):
            raise PermanentError(
                f"s3 delivery to s3://{bucket}/{own} refused: it is also under the allowed "
                f"prefix '{other}/', outside its '{tenant}/' folder (a calling system's "
                f"objects stay in its own folder; ask the operator to fix {ALLOW_SETTING})"
            )
    return own


def _allowed_prefixes(bucket: str, settings: Settings) -> list[str]:
    """The allowed prefixes of `bucket` ("" for the whole bucket), without slashes around."""
    prefixes = []
    for entry in settings.s3_delivery_allow_list:
        allowed_bucket, _, prefix = entry.partition("/")
        if allowed_bucket == bucket:
            prefixes.append(prefix.strip("/"))
    return prefixes


def _is_under(key: str, prefix: str) -> bool:
    return not prefix or key.startswith(prefix + "/")


def _join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


def delivery_client(settings: Settings) -> Minio:
    """A client whose every socket operation gives up within PRESSROOM_S3_TIMEOUT and that never
    retries by itself: the delivery's deadline ends the wait, and this ends the thread soon
    after (minio's own client waits 5 minutes per read and retries five times)."""
    assert settings.s3_endpoint
    seconds = settings.s3_timeout
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=seconds, read=seconds),
        retries=urllib3.Retry(total=0, redirect=False),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
    )
    return Minio(
        settings.s3_endpoint,
        access_key=settings.s3_access_key,
        secret_key=settings.s3_secret_key,
        secure=settings.s3_secure,
        region=settings.s3_region,
        http_client=http,
    )


class S3Channel:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def deliver(self, delivery: Delivery, parcel: Parcel) -> ChannelResult:
        if not self.settings.s3_endpoint:
            raise PermanentError("s3 channel is not configured (set PRESSROOM_S3_ENDPOINT)")
        extra = delivery.model_extra or {}
        bucket = extra.get("bucket")
        if not isinstance(bucket, str) or not bucket:
            raise PermanentError("s3 delivery needs a `bucket`")
        pattern = str(extra.get("key") or DEFAULT_KEY)
        artefacts = parcel.event.artefacts
        keys = [destination_key(pattern, parcel, a.ext, len(artefacts)) for a in artefacts]
        tenant = parcel.event.request.tenant
        keys = [check_target(bucket, key, self.settings, tenant) for key in keys]
        # A delivery never creates buckets: a missing one is a configuration error to fix.
        store = S3Artefacts(delivery_client(self.settings), bucket, create_bucket=False)
        targets = []
        async with egress.deadline(self.settings.s3_timeout, f"S3 delivery to '{bucket}'"):
            for artefact, key in zip(artefacts, keys, strict=True):
                await store.put(
                    key,
                    await parcel.content(artefact),
                    content_type=artefact.content_type,
                    metadata={"sha256": artefact.sha256, "request-id": parcel.request_id},
                )
                targets.append(f"s3://{bucket}/{key}")
        return ChannelResult(channel="s3", ok=True, target=", ".join(targets))
