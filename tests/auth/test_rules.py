"""Scope grants and the client address: pure rules, tested directly."""

from __future__ import annotations

import ipaddress

import pytest

from proxy.auth.client_address import ClientAddressResolver, parse_ip
from proxy.auth.scopes import Grants


@pytest.mark.parametrize(
    ("grants", "required", "allowed"),
    [
        (["read:contacts"], "read:contacts", True),
        (["read:contacts"], "write:contacts", False),
        (["read:*"], "read:contacts", True),
        (["read:*"], "read:contacts:notes", True),
        (["read:*"], "write:contacts", False),
        (["read:*"], "read", False),
        (["read"], "read:contacts", False),
        (["*"], "delete:everything", True),
        ([], "read:contacts", False),
        (["write:*", "read:contacts"], "read:deals", False),
    ],
)
def test_grants(grants: list[str], required: str, allowed: bool) -> None:
    assert Grants(grants).allows(required) is allowed


def test_missing_lists_only_what_is_missing() -> None:
    grants = Grants(["read:*", "write:contacts"])
    assert grants.missing(["read:a", "write:contacts", "write:deals", "delete:x"]) == [
        "write:deals",
        "delete:x",
    ]


def test_untrusted_peer_forwarded_for_is_ignored() -> None:
    resolver = ClientAddressResolver(())
    assert resolver.resolve("127.0.0.1", "2001:db8::5") == ipaddress.ip_address("127.0.0.1")
    resolver = ClientAddressResolver(["10.0.0.0/8"])
    assert resolver.resolve("192.0.2.1", "198.51.100.7") == ipaddress.ip_address("192.0.2.1")


def test_trusted_chain_is_walked_from_the_right() -> None:
    resolver = ClientAddressResolver(["10.0.0.0/8", "2001:db8:ffff::/48"])
    # client, then two trusted hops appended by our proxies
    chain = "203.0.113.9, 10.1.1.1, 2001:db8:ffff::1"
    assert resolver.resolve("10.0.0.2", chain) == ipaddress.ip_address("203.0.113.9")
    # a spoofed entry to the left of the real client is never reached
    chain = "1.2.3.4, 203.0.113.9, 10.1.1.1"
    assert resolver.resolve("10.0.0.2", chain) == ipaddress.ip_address("203.0.113.9")
    # IPv6 client through a trusted v4 proxy
    assert resolver.resolve("10.0.0.2", "2001:db8::5") == ipaddress.ip_address("2001:db8::5")
    # garbage stops the walk at the last address that parsed
    assert resolver.resolve("10.0.0.2", "not-an-ip, 10.9.9.9") == ipaddress.ip_address("10.9.9.9")


def test_ipv4_mapped_ipv6_peer_is_its_ipv4() -> None:
    assert parse_ip("::ffff:192.0.2.1") == ipaddress.ip_address("192.0.2.1")
    assert parse_ip("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert parse_ip("nonsense") is None
