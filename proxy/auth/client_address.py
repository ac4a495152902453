"""The client's address: the direct peer, unless the peer is a trusted proxy.

Strategy: X-Forwarded-For is a list anyone can write to; only the entries appended by proxies
we trust mean anything. Walking it from the right, every hop that is a trusted proxy is
skipped; the first address that is not trusted is the client. With no trusted proxies (the
default) the header is ignored and the peer is the client.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str | None) -> IPAddress | None:
    """An address from text, or None; cached, since a gateway sees few distinct peers and
    ipaddress parsing costs microseconds per call."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text.strip().split("%", 1)[0])
    except ValueError:
        return None
    # An IPv4 client reaching an IPv6 socket shows up as ::ffff:a.b.c.d; rules are written in v4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def in_networks(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address in network for network in networks)


class ClientAddressResolver:
    __slots__ = ("trusted",)

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self.trusted = parse_networks(trusted_proxies)

    def trusts(self, peer: str | None) -> bool:
        """Whether the direct peer is a trusted proxy (its client-address headers count)."""
        if not self.trusted:
            return False
        address = parse_ip(peer)
        return address is not None and in_networks(address, self.trusted)

    def resolve(self, peer: str | None, forwarded_for: str | None) -> IPAddress | None:
        client = parse_ip(peer)
        if client is None or not self.trusted or not forwarded_for:
            return client
        if not in_networks(client, self.trusted):
            return client
        for hop in reversed(forwarded_for.split(",")):
            address = parse_ip(hop)
            if address is None:
                return client  # garbage in the chain: trust stops at the last good hop
            client = address
            if not in_networks(address, self.trusted):
                break
        return client
