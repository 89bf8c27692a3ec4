"""Signed, expiring download links served by the console (`GET /a/{token}`) on every store.

A token names one artefact (its store key and sha256) and when it stops working, signed with
HMAC-SHA256 under the console secret: nothing is stored when a link is minted, and a link
cannot be bent to another artefact, another version of it, or a later expiry. The console,
`pressroom get --url` and the distributor (webhooks, emails) mint them; only the console
serves them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.errors import PressroomError
from shared.events import Artefact
from shared.settings import Settings

MAX_VALIDITY = timedelta(days=30)
SECRET_FILE = "console.secret"


class LinkRefused(PressroomError):
    """A token that is not ours, was changed, or has expired."""


@dataclass(frozen=True)
class LinkClaim:
    """What a valid token says: which artefact (key and content) and until when."""

    key: str
    sha256: str
    expires: datetime


def console_secret(settings: Settings) -> bytes:
    """PRESSROOM_CONSOLE_SECRET, or the one kept in the data folder (made on first use, 0600):
    the console, the CLI and the distributor of one machine then agree without configuration."""
    if settings.console_secret:
        return settings.console_secret.encode()
    path = Path(settings.data_dir) / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile: theirs is the one
        return path.read_bytes().strip()
    value = secrets.token_urlsafe(32).encode()
    with os.fdopen(fd, "wb") as handle:
        handle.write(value)
    return value


def _key(secret: bytes, purpose: str) -> bytes:
    """One secret, separate keys per use: a session cookie is never a valid link."""
    return hmac.new(secret, purpose.encode(), hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_token(secret: bytes, artefact: Artefact, expires: datetime) -> str:
    claim = {"k": artefact.key, "s": artefact.sha256, "e": int(expires.timestamp())}
    body = json.dumps(claim, separators=(",", ":"), sort_keys=True).encode()
    signature = hmac.new(_key(secret, "download-link"), body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(signature)}"


def verify_token(secret: bytes, token: str, now: datetime | None = None) -> LinkClaim:
    """The claim of a token we signed and that has not expired; LinkRefused otherwise."""
    body_text, _, signature_text = token.partition(".")
    try:
        body, signature = _unb64(body_text), _unb64(signature_text)
    except (binascii.Error, ValueError):
        raise LinkRefused("not a download link") from None
    expected = hmac.new(_key(secret, "download-link"), body, hashlib.sha256).digest()
    if not signature_text or not hmac.compare_digest(signature, expected):
        raise LinkRefused("the link's signature does not match (changed or not ours)")
    try:
        claim = json.loads(body)
        result = LinkClaim(
            str(claim["k"]), str(claim["s"]), datetime.fromtimestamp(int(claim["e"]), UTC)
        )
    except (ValueError, KeyError, TypeError, OverflowError):
        raise LinkRefused("not a download link") from None
    if result.expires <= (now or datetime.now(UTC)):
        raise LinkRefused(f"the link expired at {result.expires:%Y-%m-%d %H:%M} UTC")
    return result


CONSOLE_URL_FILE = "console.url"  # in the data folder: where `pressroom console` listens
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")  # a link to one works on this machine only


def console_address(settings: Settings, host: str | None = None, port: int | None = None) -> str:
    """The console's own address on this machine (PRESSROOM_CONSOLE_HOST/_PORT, or the host
    and port it was started with); a wildcard bind is reached on this host's loopback."""
    host = settings.console_host if host is None else host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.console_port if port is None else port}"


def record_console_address(settings: Settings, address: str) -> None:
    """Where this machine's console listens, for `get --url` without PRESSROOM_PUBLIC_URL
    (a data folder it cannot write only costs those links)."""
    with suppress(OSError):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / CONSOLE_URL_FILE).write_text(address + "\n")


def forget_console_address(settings: Settings, address: str) -> None:
    """The console stopped: its address goes, unless another console recorded its own since."""
    path = settings.data_dir / CONSOLE_URL_FILE
    with suppress(OSError):
        if path.read_text().strip() == address:
            path.unlink()


def local_console(settings: Settings) -> str | None:
    """The console on this machine to link to when PRESSROOM_PUBLIC_URL is unset: the one
    `pressroom console` (or `pressroom up`) last started with this data folder, or, on the
    embedded bus, the configured address; None for a remote bus with no console here."""
    try:
        recorded = (settings.data_dir / CONSOLE_URL_FILE).read_text().strip()
    except OSError:
        recorded = ""
    if recorded.startswith("http://"):
        return recorded
    return console_address(settings) if settings.nats_url is None else None


def download_link(
    settings: Settings, artefact: Artefact, expires: timedelta, *, base: str | None = None
) -> str:
    """`PRESSROOM_PUBLIC_URL/a/<token>` (or `base`/a/<token> when it is unset), valid for
    `expires` from now."""
    where = settings.public_url or base
    if not where:
        raise PressroomError(
            "download links need the console's address: set PRESSROOM_PUBLIC_URL "
            "(e.g. https://pressroom.example.com)"
        )
    if expires <= timedelta(0) or expires > MAX_VALIDITY:
        raise PressroomError(f"a download link lasts from 1 s to {MAX_VALIDITY.days} days")
    token = mint_token(console_secret(settings), artefact, datetime.now(UTC) + expires)
    return f"{where.rstrip('/')}/a/{token}"
