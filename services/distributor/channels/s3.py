"""The `s3` channel: copy the artefacts to a bucket and key of the request's choosing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import PurePosixPath

from services.distributor.channels import Parcel
from shared.errors import PermanentError
from shared.events import ChannelResult, Delivery
from shared.settings import Settings
from shared.store import S3Artefacts


def destination_key(pattern: str, parcel: Parcel, fmt: str, formats: int) -> str:
    request = parcel.event.request
    try:
        key = pattern.format(
            request_id=request.request_id,
            date=request.requested_at.strftime("%Y-%m-%d"),
            template=PurePosixPath(request.template).stem,
            ext=fmt,
        )
    except (KeyError, IndexError, ValueError) as error:
        raise PermanentError(f"s3 key '{pattern}' has an unknown placeholder: {error}") from None
    if key.endswith("/"):
        key += f"{request.request_id}.{fmt}"
    elif "{ext}" not in pattern and formats > 1:
        key = str(PurePosixPath(key).with_suffix(f".{fmt}"))
    if key.startswith("/") or ".." in key.split("/"):
        raise PermanentError(f"s3 key '{key}' is not a plain object key")
    return key


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
        pattern = str(extra.get("key") or "{date}/{template}/{request_id}.{ext}")
        store = S3Artefacts.from_settings(self.settings, bucket=bucket)
        targets, urls = [], []
        artefacts = parcel.event.artefacts
        for artefact in artefacts:
            key = destination_key(pattern, parcel, artefact.format, len(artefacts))
            await store.put(
                key,
                await parcel.content(artefact),
                content_type=artefact.content_type,
                metadata={"sha256": artefact.sha256, "request-id": parcel.request_id},
            )
            targets.append(f"s3://{bucket}/{key}")
            if extra.get("presign"):
                urls.append(await store.presign(key, timedelta(days=7)) or "")
        return ChannelResult(
            channel="s3", ok=True, target=", ".join(targets), detail=" ".join(urls)
        )
