"""Who is on the other end of the connection: the client address used for per-client limits.

Security: ``X-Forwarded-For`` is written by whoever sends the request, so it is believed
only when the connection comes from a proxy listed in ``SESSIONGATE_TRUSTED_PROXIES``
(addresses or CIDR networks). Then the header is read from the right (the hops our own
proxies appended) and the first address that is not a trusted proxy is the client.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.requests import HTTPConnection

from ..errors import ConfigurationError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``SESSIONGATE_TRUSTED_PROXIES`` as networks; raises ``ConfigurationError``."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ConfigurationError(
                f"SESSIONGATE_TRUSTED_PROXIES: {value!r} is not an IP address or network."
            ) from exc
    return tuple(networks)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(connection: HTTPConnection, trusted_proxies: tuple[Network, ...]) -> str:
    """The client's IP address (a string; ``unknown`` when the server gives none)."""
    peer = connection.client.host if connection.client else "unknown"
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer
    hops = [
        hop.strip()
        for header in connection.headers.getlist("x-forwarded-for")
        for hop in header.split(",")
        if hop.strip()
    ]
    for hop in reversed(hops):
        if not _trusted(hop, trusted_proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage from before our proxies: not an address to count
    return hops[0] if hops else peer


__all__ = ["Network", "client_address", "parse_networks"]
