"""Allow-lists of hosts and CIDRs, shared by the asset fetcher and the webhook SSRF guard."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def allow_listed(host: str | None, allow: Iterable[str], address: IPAddress | None = None) -> bool:
    """True when `host` (or the address it resolved to) matches a host name or CIDR entry."""
    if not host:
        return False
    if address is None:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
    for entry in allow:
        if entry == host:
            return True
        if address is None:
            continue
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False
