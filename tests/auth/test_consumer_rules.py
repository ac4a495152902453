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


@pytest.mark.parametrize(
    "bad",
    [
        "GET /products/:id'",  # a stray quote: no parameter name holds one
        "GET /products/:",
        "GET /products/:1d",
        "GET /products//x",
        "GET /products//",
        "GET /a%2Fb",
        "GET /a:b",
        "GET /products/*/x",  # '*' only as the last segment, as in a route's path
        "GET /products*",
        "GET /*x",
        "HEAD /products",
        "GET /a\x1b[2J",
        "GET /caf\u00e9",
        "GET /a\tb",
    ],
)
def test_endpoint_paths_are_what_a_route_template_can_be(bad: str) -> None:
    with pytest.raises(InvalidKeyField) as caught:
        parse_endpoints([bad])
    assert str(caught.value) == (
        f"allowed_endpoints: {bad!r} is not an endpoint: expected '*' or 'METHOD /path' "
        "(METHOD one of GET POST PUT PATCH DELETE or *; each path segment literal text of "
        "letters, digits and -._~!$&'()+,;=@, :name for a parameter, or a last segment * as "
        "in a route's own path)"
    )


def test_a_last_star_names_the_wildcard_route_not_a_prefix() -> None:
    assert parse_endpoints(["get /files/*", "* /", "GET /v1.2/a_b-c~d/:p_1"]) == (
        "GET /files/*",
        "* /",
        "GET /v1.2/a_b-c~d/:p_1",
    )
    rules = EndpointRules(parse_endpoints(["GET /files/*"]))
    assert rules.allows("GET", "/files/*")
    assert not rules.allows("GET", "/files/:id") and not rules.allows("GET", "/files")
    rules = EndpointRules(parse_endpoints(["GET /products/:id", "* /orders"]))
    assert rules.allows("GET", "/products/:productId")
    assert not rules.allows("PATCH", "/products/:id") and not rules.allows("GET", "/products")
    assert rules.allows("DELETE", "/orders") and not rules.allows("DELETE", "/orders/:id")
    assert EndpointRules(("*",)).allows("PUT", "/anything")
    assert not EndpointRules(()).allows("GET", "/products")  # an empty list allows nothing
