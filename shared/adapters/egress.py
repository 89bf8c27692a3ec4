"""Outbound HTTP under the operator's rules: resolve, check, pin the address, cap the answer.

Every request Pressroom makes to a URL it did not choose itself (data sources, webhooks) goes
through here, so the checks cannot be skipped by one caller:

- the host is resolved once and the connection goes to that checked address (no DNS rebinding);
- redirects are followed only within the same origin, and never for webhooks;
- a response body larger than the cap is refused while it streams in;
- one mapping turns status codes and network errors into Transient or Permanent errors;
- every call has a total deadline (`deadline`): httpx's timeouts are per read, so a server
  dripping a byte a second would otherwise hold a call (and a worker's slot) for ever.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import certifi
import httpx

from shared.adapters.netpolicy import IPAddress, allow_listed
from shared.errors import PermanentError, PressroomError, TransientError
from shared.urls import public_url

# 425 Too Early and 408 Request Timeout are worth another try, like 429 and the 5xx answers
# (DESIGN.md: 5xx is transient; proxies' own, such as Cloudflare's 520–524 origin timeouts, too)
# — except the two no retry can change: 501 Not Implemented, 505 HTTP Version Not Supported.
RETRYABLE_STATUS = frozenset({408, 425, 429})
PERMANENT_5XX = frozenset({501, 505})
MAX_REDIRECTS = 5
MAX_RETRY_AFTER = 3600.0


@asynccontextmanager
async def deadline(seconds: float, what: str) -> AsyncIterator[None]:
    """The whole of one outbound call within `seconds`: past it, a TransientError (retried
    later like any unreachable target), whatever the target is still sending."""
    limit = asyncio.timeout(seconds)
    try:
        async with limit:
            yield
    except TimeoutError:
        if not limit.expired():
            raise  # a timeout of the call's own, already with its reason
        raise TransientError(
            f"{what}: no complete answer within {seconds:g}s (the whole call's deadline)"
        ) from None


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        default = {"http": 80, "https": 443}.get(self.scheme)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}" + ("" if self.port == default else f":{self.port}")


def origin_of(url: str) -> Origin:
    """scheme://host:port of an http(s) URL; a PermanentError for anything else."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        # Not quoted whole: a URL this function cannot read is one mask_url_secrets may not
        # recognise either (`https:/user:password@host`), so it shows a beginning only.
        start = url.partition(":")[0][:10]
        shown = public_url(url) if "://" in url else start + ("…" if len(url) > len(start) else "")
        raise PermanentError(f"'{shown}' is not an http(s) URL with a host")
    if parts.username or parts.password:
        raise PermanentError(f"'{public_url(url)}' carries credentials in the URL: not allowed")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise PermanentError(f"'{public_url(url)}' has an invalid port") from None
    return Origin(scheme, parts.hostname.lower(), port)


def is_public(address: IPAddress) -> bool:
    """Globally routable: not loopback, private, link-local (cloud metadata), reserved …"""
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


async def resolve(origin: Origin) -> list[IPAddress]:
    """Every address the host resolves to (a literal IP resolves to itself)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            origin.host, origin.port, type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError) as error:
        raise TransientError(f"host '{origin.host}' does not resolve: {error}") from None
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise TransientError(f"host '{origin.host}' resolves to no address")
    return found


def _entry_matches(entry: str, origin: Origin, address: IPAddress) -> bool:
    """One allow-list entry: a host name, host:port, [v6]:port, an IP or a CIDR."""
    entry = entry.strip().lower()
    try:
        return address in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        pass
    host, port = entry, None
    if entry.startswith("[") and "]:" in entry:
        host, _, port = entry[1:].partition("]:")
    elif entry.count(":") == 1:
        host, _, port = entry.partition(":")
    if port is not None and (not port.isdigit() or int(port) != origin.port):
        return False
    return allow_listed(origin.host, [host.strip("[]")], address)


@dataclass(frozen=True)
class Destination:
    """A checked target: where to connect (a pinned address) and what to call it (Host, SNI)."""

    url: str
    origin: Origin
    address: str | None  # None: connect by name (an operator-configured, trusted URL)

    def connect_url(self, url: str) -> str:
        if self.address is None:
            return url
        parts = urlsplit(url)
        ip_host = f"[{self.address}]" if ":" in self.address else self.address
        netloc = ip_host + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))


async def check_source(url: str, allow: Iterable[str], *, what: str) -> Destination:
    """A request-supplied source URL: every address it resolves to must be allow-listed."""
    allow = [a for a in allow if a.strip()]
    origin = origin_of(url)
    if not allow:
        raise PermanentError(
            f"{what}: request-supplied URL {origin} is not allowed "
            "(PRESSROOM_SOURCE_ALLOW is empty; use a source named in the config file, "
            "or add the host to PRESSROOM_SOURCE_ALLOW)"
        )
    addresses = await resolve(origin)
    for address in addresses:
        if not any(_entry_matches(entry, origin, address) for entry in allow):
            raise PermanentError(
                f"{what}: {origin} ({address}) is not in PRESSROOM_SOURCE_ALLOW "
                "(add the host, host:port or a CIDR to allow it)"
            )
    return Destination(url, origin, str(addresses[0]))


async def check_public(url: str, allow: Iterable[str], *, what: str, setting: str) -> Destination:
    """A target that may be any public address; private ones only when allow-listed."""
    origin = origin_of(url)
    addresses = await resolve(origin)
    for address in addresses:
        if not is_public(address) and not any(
            _entry_matches(entry, origin, address) for entry in allow
        ):
            raise PermanentError(
                f"{what} {origin.host} resolves to {address}, a non-public address "
                f"(add it to {setting} to allow it)"
            )
    return Destination(url, origin, str(addresses[0]))


def trusted(url: str) -> Destination:
    """An operator-configured URL: no allow-list, connect by name."""
    return Destination(url, origin_of(url), None)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta or HTTP date), capped; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None

    delta = (when - datetime.now(UTC)).total_seconds()
    return min(max(delta, 0.0), MAX_RETRY_AFTER)


def status_error(what: str, code: int, headers: Mapping[str, str]) -> PressroomError | None:
    """The one status → error mapping (sources and webhooks): None for 2xx."""
    if 200 <= code < 300:
        return None
    if code in RETRYABLE_STATUS or (500 <= code < 600 and code not in PERMANENT_5XX):
        transient = TransientError(f"{what} answered {code}")
        transient.retry_after = retry_after_seconds(headers.get("retry-after"))
        return transient
    if 300 <= code < 400:
        return PermanentError(f"{what} answered {code} redirect (not followed)")
    if code == 410:
        return PermanentError(f"{what} answered 410 Gone: endpoint disabled")
    return PermanentError(f"{what} answered {code}")


_TLS: list[ssl.SSLContext] = []


def tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process: building one reads the CA bundle (~30 ms of CPU),
    far too much to do per request on an event loop."""
    if not _TLS:
        _TLS.append(ssl.create_default_context(cafile=certifi.where()))
    return _TLS[0]


@dataclass(frozen=True)
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes
    url: str


async def send(
    method: str,
    destination: Destination,
    *,
    what: str,
    timeout: float,
    max_bytes: int,
    params: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    follow_redirects: bool = False,
    check_redirect: Callable[[str], None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Reply:
    """One HTTP exchange with a checked destination, all of it within `timeout` seconds; a
    body over `max_bytes` is refused.

    Redirects, when followed at all, must stay on the destination's origin (and so on its
    checked, pinned address), and pass `check_redirect` (a bound credential's path prefix);
    anything else is a permanent error, never a silent hop.
    """
    shown = public_url(destination.url)
    async with deadline(timeout, what if shown in what else f"{what}: {shown}"):
        return await _exchange(
            method,
            destination,
            what=what,
            timeout=timeout,
            max_bytes=max_bytes,
            params=params,
            headers=headers,
            content=content,
            follow_redirects=follow_redirects,
            check_redirect=check_redirect,
            transport=transport,
        )


async def _exchange(
    method: str,
    destination: Destination,
    *,
    what: str,
    timeout: float,
    max_bytes: int,
    params: Mapping[str, Any] | None,
    headers: Mapping[str, str] | None,
    content: bytes | None,
    follow_redirects: bool,
    check_redirect: Callable[[str], None] | None,
    transport: httpx.AsyncBaseTransport | None,
) -> Reply:
    url = destination.url
    query = dict(params) if params else None
    async with httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, transport=transport, verify=tls_context()
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            request_headers = {**(headers or {}), "host": parts.netloc.rsplit("@", 1)[-1]}
            extensions = {"sni_hostname": destination.origin.host} if destination.address else {}
            try:
                async with client.stream(
                    method,
                    destination.connect_url(url),
                    params=query,
                    headers=request_headers,
                    content=content,
                    extensions=extensions,
                ) as response:
                    if response.is_redirect and follow_redirects:
                        target = urljoin(url, response.headers.get("location", ""))
                        if origin_of(target) != destination.origin:
                            raise PermanentError(
                                f"{what}: redirect from {destination.origin} to "
                                f"{origin_of(target)} refused (only the same origin is followed)"
                            )
                        if check_redirect is not None:
                            check_redirect(target)
                        url, query = target, None
                        continue
                    body = await _read_capped(response, max_bytes, what)
                    return Reply(response.status_code, response.headers, body, public_url(url))
            except httpx.TimeoutException:
                raise TransientError(
                    f"{what}: {public_url(url)} timed out after {timeout:g}s"
                ) from None
            except (httpx.LocalProtocolError, httpx.InvalidURL, httpx.UnsupportedProtocol) as error:
                # A header or URL no server could accept: the request is wrong, not the network.
                # Never the library's text: h11 quotes the offending header's value, which is
                # an operator's credential more often than not (a token read with its newline).
                raise PermanentError(
                    f"{what}: invalid request to {public_url(url)}: "
                    + _unsendable(request_headers, error)
                ) from None
            except httpx.TransportError as error:
                raise TransientError(
                    f"{what}: cannot reach {public_url(url)}: {error or type(error).__name__}"
                ) from None
    raise PermanentError(f"{what}: more than {MAX_REDIRECTS} redirects")


def _unsendable(headers: Mapping[str, str], error: Exception) -> str:
    """Why a request could not be sent, naming headers but never quoting their values."""
    bad = sorted(
        name
        for name, value in headers.items()
        if value != value.strip() or any(c in value for c in "\r\n\0")
    )
    if bad:
        which = f"header {bad[0]}" if len(bad) == 1 else f"headers {', '.join(bad)}"
        return (
            f"the value of {which} has a line break or a space at an end "
            "(a credential read with its newline?)"
        )
    if isinstance(error, httpx.LocalProtocolError):
        return "a header no server accepts (its name or value)"
    return f"the URL cannot be sent ({type(error).__name__})"


async def _read_capped(response: httpx.Response, max_bytes: int, what: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise PermanentError(
            f"{what}: answer of {int(declared):,} bytes is over the {max_bytes:,}-byte limit "
            "(PRESSROOM_FETCH_MAX_BYTES)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise PermanentError(
                f"{what}: answer is over the {max_bytes:,}-byte limit (PRESSROOM_FETCH_MAX_BYTES)"
            )
        chunks.append(chunk)
    return b"".join(chunks)
