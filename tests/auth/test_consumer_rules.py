"""API consumers' rules without a server: key shape, scopes, allowed endpoints."""

from __future__ import annotations

import pytest

from proxy.auth.consumer_keys import (
    generate_consumer_key,
    is_consumer_key,
    is_well_formed_consumer_key,
)
from proxy.auth.endpoints import EndpointRules
from proxy.auth.key_fields import InvalidKeyField, parse_consumer_scopes, parse_endpoints
from proxy.auth.scopes import consumer_grants


def test_keys_are_dk_and_43_base64url_characters() -> None:
    keys = {generate_consumer_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert is_consumer_key(key) and is_well_formed_consumer_key(key) and len(key) == 46
    assert not is_well_formed_consumer_key("dk_" + "A" * 42 + "=")
    assert not is_consumer_key("eyJhbGciOiJIUzI1NiJ9.e30.x")


def test_consumer_scopes_grant_a_kind_of_operation() -> None:
    assert consumer_grants(parse_consumer_scopes(["Read", "write"])).scopes == (
        "read:*",
        "write:*",
    )
    read = consumer_grants(["read"])
    assert read.allows("read:products") and not read.allows("write:products")
    assert consumer_grants(["admin"]).allows("delete:orders")
    with pytest.raises(InvalidKeyField, match="is not a consumer scope"):
        parse_consumer_scopes(["read:*"])


def test_endpoints_normalize_and_match_the_route_template() -> None:
    assert parse_endpoints(["*", "get  /products/", "* /orders"]) == (
        "*",
        "GET /products",
        "* /orders",
    )
    for bad in ("products", "FETCH /x", "GET products", "GET /a b", "GET /a?x=1"):
        with pytest.raises(InvalidKeyField, match="is not an endpoint"):
            parse_endpoints([bad])
    rules = EndpointRules(parse_endpoints(["GET /products/:id", "* /orders"]))
    assert rules.allows("GET", "/products/:productId")
    assert not rules.allows("PATCH", "/products/:id") and not rules.allows("GET", "/products")
    assert rules.allows("DELETE", "/orders") and not rules.allows("DELETE", "/orders/:id")
    assert EndpointRules(("*",)).allows("PUT", "/anything")
    assert not EndpointRules(()).allows("GET", "/products")  # an empty list allows nothing
