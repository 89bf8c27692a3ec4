"""URLs as they may be shown: in logs, reasons and health output, never with credentials."""

from __future__ import annotations

import re
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


_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")
_URL_REST = re.compile(r"[^\s\"'<>]+")
_PATH_PARAM = re.compile(r";([^;=/]*)=[^;/]*")
# In a web URL's path, a segment that reads as a secret: 20 or more token characters (no
# dot: not a file name), with letters and digits or with capitals and small letters. Slack's,
# Discord's and Teams' webhook URLs carry their secret in the path; so do signed download
# links. An id of digits alone, a lower-case word-with-hyphens or a file name stays, and an
# s3:// key or a file:// path is never touched.
_PATH_TOKEN = re.compile(
    r"(?:(?=[^/;]*[A-Za-z])(?=[^/;]*\d)|(?=[^/;]*[A-Z])(?=[^/;]*[a-z]))"
    r"[A-Za-z0-9_-]{20,}+(?=[/;]|$)"
)
_WEB = ("http://", "https://", "ws://", "wss://")


def _masked_segment(part: str) -> str:
    token = _PATH_TOKEN.match(part)
    return "***" + part[token.end() :] if token else part


def _mask_url(scheme: str, rest: str) -> str:
    rest, hash_sep, fragment = rest.partition("#")
    head, sep, query = rest.partition("?")
    if "@" in head.split("/", 1)[0]:  # userinfo: user:password@host
        head = "***@" + head.split("@", 1)[1]
    host, slash, path = head.partition("/")
    if ";" in path:  # path parameters: /hook;token=abc
        path = _PATH_PARAM.sub(r";\1=***", path)
    if scheme.lower() in _WEB:
        path = "/".join(_masked_segment(part) for part in path.split("/"))
    head = host + slash + path
    if sep:
        query = "&".join(
            f"{part.partition('=')[0]}=***" if "=" in part else "***"
            for part in query.split("&")
            if part
        )
    return f"{scheme}{head}{sep}{query}{hash_sep}{'***' if fragment else ''}"


def _scheme_start(text: str, colon: int, floor: int) -> int | None:
    """Where the scheme of the `://` at `colon` starts (a letter after a word boundary), or
    None. The run of scheme characters before one `://` never reaches another (`:` is not one
    of them), so looking back from every `://` reads each character once."""
    start = colon
    while start > floor and text[start - 1] in _SCHEME_CHARS:
        start -= 1
    for at in range(start, colon):
        before = text[at - 1] if at else ""
        if text[at].isascii() and text[at].isalpha() and not (before.isalnum() or before == "_"):
            return at
    return None


def mask_url_secrets(text: str) -> str:
    """Every URL in `text` without its secrets: userinfo and query values become `***`.

    In linear time: the text may be a reason quoting a request's 900 KB "URL"; a pattern that
    tries a scheme at every word boundary (`\\b[a-z][a-z0-9+.-]*://`) is quadratic on
    `a.a.a.…` and held the distributor's event loop for minutes.
    """
    colon = text.find("://")
    if colon < 0:
        return text
    parts: list[str] = []
    done = 0
    while colon >= 0:
        start = _scheme_start(text, colon, done)
        rest = _URL_REST.match(text, colon + 3)
        if start is None or rest is None:
            colon = text.find("://", colon + 1)
            continue
        parts += [text[done:start], _mask_url(text[start : colon + 3], rest.group())]
        done = rest.end()
        colon = text.find("://", done)
    parts.append(text[done:])
    return "".join(parts)
