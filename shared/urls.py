"""URLs as they may be shown: in logs, reasons and health output, never with credentials."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def public_url(url: str) -> str:
    """The URL without user:password@ — what may appear in logs, reasons and health output."""
    try:
        parts = urlsplit(url if "://" in url else f"nats://{url}")  # a bare host:port, too
    except ValueError:
        return "<invalid url>"
    if "@" not in parts.netloc:
        return url
    shown = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return shown if "://" in url else shown.removeprefix("nats://")
