"""URLs as they may be shown: in logs, reasons and health output, never with credentials."""

from __future__ import annotations

import re
from collections.abc import Callable
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
# In a web URL's path, a segment that reads as a secret (`_is_token`). Slack's, Discord's and
# Teams' webhook URLs carry their secret in the path; so do signed download links.
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_~:-]{20,}+")
_JWT_LIKE = re.compile(r"[A-Za-z0-9_-]{8,}+(?:\.[A-Za-z0-9_-]{5,}+){1,2}")
_WEB = ("http://", "https://", "ws://", "wss://")


def _is_token(segment: str) -> bool:
    """20 or more token characters (or base64url parts joined by dots: a JWT, a signed link)
    of 12 or more kinds, letters with digits or, without digits, 32 or more with capitals and
    small letters. An id of digits, a word-with-hyphens, a date-stamped id or a file name
    (its extension is shorter than 5) stays."""
    if len(segment) < 20 or len(set(segment)) < 12:
        return False
    if not (_TOKEN_RUN.fullmatch(segment) or _JWT_LIKE.fullmatch(segment)):
        return False
    if any(c.isdigit() for c in segment):
        return any(c.isalpha() for c in segment)
    return len(segment) >= 32 and segment.lower() != segment and segment.upper() != segment


def _masked_path(path: str, mark: str) -> str:
    if len(path) < 20:
        return path
    segments = path.split("/")
    for at, segment in enumerate(segments):
        if len(segment) >= 20:  # shorter is never a token: most segments cost one len()
            name, semi, params = segment.partition(";")
            if _is_token(name):
                segments[at] = mark + semi + params
    return "/".join(segments)


def _path_tokens_masked(scheme: str, rest: str, mark: str) -> str:
    """One URL (`scheme` + `rest`) with only its web path's tokens replaced by `mark`."""
    slash = rest.find("/")
    if scheme.lower() not in _WEB or slash < 0:
        return scheme + rest
    ends = [i for i in (rest.find("?", slash), rest.find("#", slash)) if i >= 0]
    end = min(ends, default=len(rest))
    return scheme + rest[: slash + 1] + _masked_path(rest[slash + 1 : end], mark) + rest[end:]


def _mask_url(scheme: str, rest: str) -> str:
    """One URL (`scheme` + `rest`) without its secrets."""
    mark = "***"
    # Userinfo runs to the last "@" before the first "/": a password may hold "@", "?" or "#".
    slash = rest.find("/")
    authority = rest if slash < 0 else rest[:slash]
    userinfo = ""
    if "@" in authority:
        userinfo, rest = f"{mark}@", rest[authority.rfind("@") + 1 :]
    rest, hash_sep, fragment = rest.partition("#")
    head, sep, query = rest.partition("?")
    host, slash_sep, path = head.partition("/")
    if ";" in path:  # path parameters: /hook;token=abc
        path = _PATH_PARAM.sub(rf";\1={mark}", path)
    if scheme.lower() in _WEB:
        path = _masked_path(path, mark)
    if sep:
        query = "&".join(
            f"{part.partition('=')[0]}={mark}" if "=" in part else mark
            for part in query.split("&")
            if part
        )
    shown_fragment = mark if fragment else ""
    return f"{scheme}{userinfo}{host}{slash_sep}{path}{sep}{query}{hash_sep}{shown_fragment}"


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


def _each_url(text: str, shown: Callable[[str, str], str]) -> str:
    """`text` with every URL replaced by `shown(scheme, rest)`, in linear time: the text may be
    a reason quoting a request's 900 KB "URL"; a pattern that tries a scheme at every word
    boundary (`\\b[a-z][a-z0-9+.-]*://`) is quadratic on `a.a.a.…` and held the distributor's
    event loop for minutes, and so was reading the rest of the text after every `://` that
    has no scheme before it (`://://…`)."""
    colon = text.find("://")
    if colon < 0:
        return text
    parts: list[str] = []
    done = 0
    while colon >= 0:
        start = _scheme_start(text, colon, done)
        rest = _URL_REST.match(text, colon + 3) if start is not None else None
        if start is None or rest is None:
            colon = text.find("://", colon + 3)
            continue
        parts += [text[done:start], shown(text[start : colon + 3], rest.group())]
        done = rest.end()
        colon = text.find("://", done)
    parts.append(text[done:])
    return "".join(parts)


def mask_url_secrets(text: str) -> str:
    """Every URL in `text` without its secrets: userinfo, query values, path parameters and
    the fragment become `***`, and so does a web path's segment that reads as a token."""
    return _each_url(text, _mask_url)


def mask_path_tokens(text: str, mark: str) -> str:
    """Every web URL in `text` with the path segments that read as tokens replaced by `mark`,
    the rest left as it is (for text whose other secrets are redacted by name)."""
    return _each_url(text, lambda scheme, rest: _path_tokens_masked(scheme, rest, mark))
