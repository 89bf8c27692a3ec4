"""The `webhook` channel: a JSON POST signed per Standard Webhooks, guarded against SSRF."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any

import httpx

from services.distributor.channels import Parcel
from shared import egress
from shared.egress import Destination
from shared.errors import PermanentError
from shared.events import ChannelResult, Delivery
from shared.settings import Settings

ALLOW_SETTING = "PRESSROOM_WEBHOOK_ALLOW"


def secret_bytes(secret: str) -> bytes:
    """`whsec_<base64>` as the spec writes it; a bare string is used as it is."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            raise PermanentError("PRESSROOM_WEBHOOK_SECRET is not valid whsec_<base64>") from None
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """What a receiver does (used by our tests; `pressroom check webhook` sends a signed ping)."""
    msg_id, stamp = headers["webhook-id"], int(headers["webhook-timestamp"])
    if abs(time.time() - stamp) > tolerance:
        return False
    expected = sign(secret, msg_id, stamp, body).split(",", 1)[1]
    return any(
        hmac.compare_digest(expected, sig.split(",", 1)[1])
        for sig in headers["webhook-signature"].split()
        if sig.startswith("v1,")
    )


class WebhookChannel:
    def __init__(
        self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self.transport = transport

    async def payload(self, parcel: Parcel) -> dict[str, Any]:
        event = parcel.event
        artefacts = []
        for artefact in event.artefacts:
            url = await parcel.store.presign(artefact.key, timedelta(days=7))
            artefacts.append({**artefact.model_dump(mode="json"), "url": url})
        return {
            "type": "report.delivered",
            "request_id": parcel.request_id,
            "template": event.request.template,
            "template_version": event.template_version,
            "requested_by": event.request.requested_by,
            "artefacts": artefacts,
            "timings": {"render_seconds": round(event.render_seconds, 3)},
        }

    async def deliver(self, delivery: Delivery, parcel: Parcel) -> ChannelResult:
        url = str((delivery.model_extra or {}).get("url") or "")
        body = json.dumps(await self.payload(parcel), separators=(",", ":")).encode()
        # The same id on every attempt: receivers de-duplicate retries with it.
        msg_id = f"msg_{parcel.request_id}_{hashlib.sha256(url.encode()).hexdigest()[:8]}"
        code, _ = await self.post_signed(url, body, msg_id)
        return ChannelResult(
            channel="webhook", ok=True, target=egress.public_url(url), detail=str(code)
        )

    async def post_signed(self, url: str, body: bytes, msg_id: str) -> tuple[int, Destination]:
        """POST a Standard Webhooks-signed body to a checked, pinned address; the 2xx code."""
        secret = self.settings.webhook_secret
        if not secret:
            raise PermanentError("webhook channel needs PRESSROOM_WEBHOOK_SECRET to sign bodies")
        what = f"webhook {egress.public_url(url)}"
        # Resolving the name counts too: a slow DNS server is as slow as a slow receiver.
        async with egress.deadline(self.settings.webhook_timeout, what):
            target = await egress.check_public(
                url, self.settings.webhook_allow_list, what="webhook target", setting=ALLOW_SETTING
            )
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(secret, msg_id, stamp, body),
            "user-agent": "Pressroom-Webhooks/1",
        }
        reply = await egress.send(
            "POST",
            target,
            what=what,
            timeout=self.settings.webhook_timeout,
            max_bytes=64 * 1024,  # a receiver's answer is read, never kept
            headers=headers,
            content=body,
            transport=self.transport,
        )
        problem = egress.status_error(what, reply.status, reply.headers)
        if problem is not None:
            raise problem
        return reply.status, target
