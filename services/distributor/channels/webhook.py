"""The `webhook` channel: a JSON POST signed per Standard Webhooks, guarded against SSRF."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from services.distributor.channels import Parcel
from shared.errors import PermanentError, TransientError
from shared.events import ChannelResult, Delivery
from shared.netpolicy import allow_listed
from shared.settings import Settings

RETRYABLE = {408, 429, 500, 502, 503, 504}


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
    """What a receiver does (used by our tests and `pressroom deliver --test webhook`)."""
    msg_id, stamp = headers["webhook-id"], int(headers["webhook-timestamp"])
    if abs(time.time() - stamp) > tolerance:
        return False
    expected = sign(secret, msg_id, stamp, body).split(",", 1)[1]
    return any(
        hmac.compare_digest(expected, sig.split(",", 1)[1])
        for sig in headers["webhook-signature"].split()
        if sig.startswith("v1,")
    )


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


async def resolve_target(url: str, allow: list[str]) -> tuple[str, str]:
    """The address to connect to, checked: private, loopback, link-local and metadata
    addresses are refused unless allow-listed. Returns (host, pinned IP)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PermanentError(f"webhook url '{url}' must be http(s) with a host")
    host = parts.hostname
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except socket.gaierror as error:
        raise TransientError(f"webhook host '{host}' does not resolve: {error}") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        if not _is_public(address) and not allow_listed(host, allow, address):
            raise PermanentError(
                f"webhook target {host} resolves to {address}, a non-public address "
                "(add it to PRESSROOM_WEBHOOK_ALLOW to allow it)"
            )
    return host, str(addresses[0])


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
        code = await self.post_signed(url, body, msg_id)
        return ChannelResult(channel="webhook", ok=True, target=url, detail=str(code))

    async def post_signed(self, url: str, body: bytes, msg_id: str) -> int:
        """POST a Standard Webhooks-signed body to a checked, pinned address; the 2xx code."""
        secret = self.settings.webhook_secret
        if not secret:
            raise PermanentError("webhook channel needs PRESSROOM_WEBHOOK_SECRET to sign bodies")
        host, pinned = await resolve_target(url, self.settings.webhook_allow_list)
        stamp = int(time.time())
        parts = urlsplit(url)
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(secret, msg_id, stamp, body),
            "user-agent": "Pressroom-Webhooks/1",
            "host": parts.netloc,
        }
        # Connect to the address we checked (no second DNS answer can swap it: rebinding).
        ip_host = f"[{pinned}]" if ":" in pinned else pinned
        netloc = ip_host + (f":{parts.port}" if parts.port else "")
        pinned_url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        try:
            async with httpx.AsyncClient(
                timeout=self.settings.webhook_timeout,
                follow_redirects=False,
                transport=self.transport,
            ) as client:
                response = await client.post(
                    pinned_url,
                    content=body,
                    headers=headers,
                    extensions={"sni_hostname": host},
                )
        except httpx.TimeoutException:
            raise TransientError(f"webhook {url} timed out") from None
        except httpx.TransportError as error:
            raise TransientError(f"webhook {url} unreachable: {error}") from None
        code = response.status_code
        if 200 <= code < 300:
            return code
        if 300 <= code < 400:
            raise PermanentError(f"webhook {url} answered {code} redirect (not followed)")
        if code == 410:
            raise PermanentError(f"webhook {url} answered 410 Gone: endpoint disabled")
        if code in RETRYABLE:
            retry_after = response.headers.get("retry-after", "")
            transient = TransientError(f"webhook {url} answered {code}")
            if retry_after.isdigit():
                transient.retry_after = float(retry_after)
            raise transient
        raise PermanentError(f"webhook {url} answered {code}")
