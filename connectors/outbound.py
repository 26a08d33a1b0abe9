"""Outbound policy: addresses this console must never connect to (BULWARK_OUTBOUND_DENY, CIDRs).

An admin types the address of a vCenter, a Hyper-V host or an S3 endpoint. On a console that sits next to
internal services (a metadata endpoint at 169.254.169.254, a management network), a denied range is refused
before any packet is sent, with one message whatever is listening there: the answer never tells an open port
from a closed one.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from connectors.base import ConnectorError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class OutboundDenied(ConnectorError):
    code = "denied"


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs ("10.0.0.0/8", "169.254.169.254/32", "fd00::/8"); a bad one is a ValueError naming it."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not a network in CIDR form (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def host_of(target: str) -> str:
    """The host of an address or URL ("https://s3.example:9000/x" → "s3.example", "[fd00::1]" → "fd00::1")."""
    if "://" in target:
        return urlsplit(target).hostname or ""
    host = target.strip()
    if host.startswith("[") and "]" in host:
        return host[1 : host.index("]")]
    if host.count(":") == 1:  # host:port
        return host.split(":", 1)[0]
    return host


def check(target: str, networks: Iterable[Network]) -> None:
    """Refuse `target` (a host name, an address or a URL) when it is, or resolves to, a denied address."""
    denied = tuple(networks)
    if not denied or not target:
        return
    host = host_of(target)
    try:
        addresses = {ipaddress.ip_address(host)}
    except ValueError:
        try:
            addresses = {
                ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
                for info in socket.getaddrinfo(host, None)
            }
        except (OSError, UnicodeError):
            return  # unknown names fail later, as "cannot resolve", exactly as for any other unknown name
    for address in addresses:
        if any(address.version == network.version and address in network for network in denied):
            raise OutboundDenied(
                f"connections to {host} are not allowed by this console's outbound policy (BULWARK_OUTBOUND_DENY)"
            )
