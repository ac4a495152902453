"""Issue 12, findings 6 and 7: what a client says about itself and about the target.

- `Forwarded` and `X-Real-IP` from a client are removed unless the peer is a trusted proxy;
  `X-Forwarded-For` from an untrusted peer is replaced by the peer, from a trusted one the
  peer is appended. Identity headers from clients never pass, in any casing.
- Absolute-form targets (`GET http://host/...`, what `curl -x` sends) are served when their
  authority is the Host header (case-insensitive), refused with 400 otherwise.
- A JWT's claims cannot write header lines of their own upstream: a site claim with CR LF
  refuses the token, a `sub` with CR LF leaves X-User-Id out (issue 14's review, finding 10).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import jwt as pyjwt
import pytest

from tests.support.edge import (
    ADMIN_KEY,
    ADMIN_SCOPE,
    IDENTITY_HEADERS,
    StartGateway,
    StartUpstream,
    assert_error,
    assert_gateway_head,
    raw_request,
)
from tests.support.gateway import MODULE_ID
from tests.support.raw_upstream import SeenRequest, response

PUBLIC = "/api/modules/crm/public/x"
CLAIMS = [
    ("Forwarded", "for=203.0.113.9;proto=https;host=admin.example"),
    ("X-Real-IP", "203.0.113.9"),
    ("X-Forwarded-For", "203.0.113.9"),
]


async def _one_request(
    raw_upstreams: StartUpstream,
    edge_gateway: StartGateway,
    request: bytes,
    **settings: object,
) -> SeenRequest:
    upstream = await raw_upstreams([response(b"ok")])
    gateway = await edge_gateway(upstream, **settings)
    r = await gateway.exchange(request)
    assert (r.status, r.body) == (200, b"ok"), r.body[:300]
    [seen] = upstream.requests
    assert_gateway_head(seen, upstream)
    return seen


async def test_client_address_claims_from_an_untrusted_peer_are_dropped(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway
) -> None:
    seen = await _one_request(raw_upstreams, edge_gateway, raw_request("GET", PUBLIC, CLAIMS))
    assert seen.header("Forwarded") == []
    assert seen.header("X-Real-IP") == []
    assert seen.header("X-Forwarded-For") == ["127.0.0.1"]


async def test_client_address_claims_from_a_trusted_proxy_are_kept(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway
) -> None:
    seen = await _one_request(
        raw_upstreams,
        edge_gateway,
        raw_request("GET", PUBLIC, CLAIMS),
        trusted_proxies=["127.0.0.1/32"],
    )
    assert seen.header("Forwarded") == ["for=203.0.113.9;proto=https;host=admin.example"]
    assert seen.header("X-Real-IP") == ["203.0.113.9"]
    assert seen.header("X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]


async def test_a_trusted_range_that_is_not_the_peer_changes_nothing(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway
) -> None:
    seen = await _one_request(
        raw_upstreams,
        edge_gateway,
        raw_request("GET", PUBLIC, CLAIMS),
        trusted_proxies=["10.0.0.0/8"],
    )
    assert seen.header("Forwarded") == [] and seen.header("X-Real-IP") == []
    assert seen.header("X-Forwarded-For") == ["127.0.0.1"]


@pytest.mark.parametrize("casing", [str.lower, str.upper, lambda name: name.swapcase()])
async def test_identity_headers_from_clients_never_pass(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway, casing: Callable[[str], str]
) -> None:
    """This held up before the fix and must stay."""
    forged = [(casing(name), "forged") for name in IDENTITY_HEADERS]
    seen = await _one_request(raw_upstreams, edge_gateway, raw_request("GET", PUBLIC, forged))
    assert all(value != "forged" for _, value in seen.headers), seen.headers
    assert seen.header("X-Module-Id") == [MODULE_ID]
    assert seen.header("X-User-Id") == [] and seen.header("X-Site-Id") == []


@pytest.mark.parametrize("name", ["forwarded", "FORWARDED", "x-real-ip", "X-REAL-IP"])
async def test_address_claims_are_dropped_in_any_casing(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway, name: str
) -> None:
    request = raw_request("GET", PUBLIC, [(name, "for=1.2.3.4")])
    seen = await _one_request(raw_upstreams, edge_gateway, request)
    assert seen.header("Forwarded") == [] and seen.header("X-Real-IP") == []


# -- absolute-form request targets (RFC 9112 section 3.2.2) ------------------------------------


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        ("gateway.test", "gateway.test"),
        ("gateway.test:8080", "gateway.test:8080"),
        ("Gateway.TEST", "gateway.test"),
        ("gateway.test", "GATEWAY.test"),
    ],
)
async def test_absolute_form_target_with_the_host_authority_is_served(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway, authority: str, host: str
) -> None:
    request = raw_request("GET", f"http://{authority}{PUBLIC}?q=1", host=host)
    seen = await _one_request(raw_upstreams, edge_gateway, request)
    assert seen.target == "/base/public/x?q=1"


@pytest.mark.parametrize(
    ("target", "host"),
    [
        (f"http://evil.test{PUBLIC}", "gateway.test"),
        (f"http://gateway.test:81{PUBLIC}", "gateway.test"),
        (f"http://gateway.test{PUBLIC}", "gateway.test:8080"),
        (f"http://gateway.test.evil{PUBLIC}", "gateway.test"),
    ],
)
async def test_absolute_form_target_naming_another_host_is_refused(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway, target: str, host: str
) -> None:
    upstream = await raw_upstreams([response(b"ok")])
    gateway = await edge_gateway(upstream)
    r = await gateway.exchange(raw_request("GET", target, host=host))
    assert_error(r, 400, "bad_request")
    await asyncio.sleep(0.02)
    assert upstream.accepted == 0


async def test_absolute_form_target_is_normalised_like_any_path(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway
) -> None:
    upstream = await raw_upstreams([response(b"secret")])
    gateway = await edge_gateway(upstream)
    target = "http://gateway.test/api/modules/crm/public/%2e%2e/admin/secret"
    r = await gateway.exchange(raw_request("GET", target))
    assert_error(r, 401, "unauthorized")
    r = await gateway.exchange(raw_request("GET", target, [("X-API-Key", ADMIN_KEY)]))
    assert (r.status, r.body) == (200, b"secret")
    assert [seen.target for seen in upstream.requests] == ["/base/admin/secret"]


async def test_header_names_with_underscores_never_cross(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway
) -> None:
    """CGI/WSGI upstreams read `X_User_Id` as `X-User-Id`: such names are dropped (nginx's
    underscores_in_headers off), so they cannot walk around the identity stripping."""
    sneaky = [("X_User_Id", "admin"), ("x_scopes", "*"), ("X_Real_IP", "6.6.6.6"), ("A_B", "1")]
    seen = await _one_request(
        raw_upstreams, edge_gateway, raw_request("GET", PUBLIC, [*sneaky, ("X-Kept", "yes")])
    )
    assert [name for name, _ in seen.headers if "_" in name] == []
    assert seen.header("X-Kept") == ["yes"]


async def test_a_host_that_is_not_utf8_is_forwarded_not_a_500(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway
) -> None:
    request = b"GET " + PUBLIC.encode() + b" HTTP/1.1\r\nHost: gw\xff\xfe\r\n\r\n"
    seen = await _one_request(raw_upstreams, edge_gateway, request)
    assert len(seen.header("X-Forwarded-Host")) == 1


# -- identity values from a JWT ---------------------------------------------------------------

JWT_SECRET = "edge-secret-that-is-long-enough-for-hs256"
ADMIN = "/api/modules/crm/admin/x"


def _bearer(**claims: object) -> list[tuple[str, str]]:
    claims = {"exp": time.time() + 300, "scope": ADMIN_SCOPE, **claims}
    return [("Authorization", "Bearer " + pyjwt.encode(claims, JWT_SECRET, algorithm="HS256"))]


async def test_a_jwt_site_claim_cannot_forge_a_header(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway
) -> None:
    """The site claim becomes the X-Site-Id line: its CR LF would have started an X-User-Id of
    the token's choosing. The token is refused, not sent without its site (which could mean
    more access upstream, not less)."""
    upstream = await raw_upstreams([response(b"ok")])
    gateway = await edge_gateway(upstream, jwt_secret=JWT_SECRET)
    forged = _bearer(sub="u-1", site_id="s-1\r\nX-User-Id: admin")
    assert_error(await gateway.exchange(raw_request("GET", ADMIN, forged)), 401, "unauthorized")
    good = await gateway.exchange(raw_request("GET", ADMIN, _bearer(sub="u-1", site_id="s-1")))
    assert (good.status, good.body) == (200, b"ok"), good.body[:300]
    [seen] = upstream.requests  # the forged token's request never left the gateway
    assert (seen.header("X-Site-Id"), seen.header("X-User-Id")) == (["s-1"], ["u-1"])
    assert bytes(upstream.received[0]).lower().count(b"\r\nx-user-id:") == 1


async def test_a_jwt_sub_with_cr_lf_is_left_out(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway
) -> None:
    """`sub` is the issuer's text, kept as the user id; one that is not printable is not sent."""
    upstream = await raw_upstreams([response(b"ok")])
    gateway = await edge_gateway(upstream, jwt_secret=JWT_SECRET)
    token = _bearer(sub="u-1\r\nX-Site-Id: forged", site_id="s-1")
    r = await gateway.exchange(raw_request("GET", ADMIN, token))
    assert (r.status, r.body) == (200, b"ok"), r.body[:300]
    [seen] = upstream.requests
    assert (seen.header("X-Site-Id"), seen.header("X-User-Id")) == (["s-1"], [])
    sent = bytes(upstream.received[0]).lower()
    assert b"forged" not in sent and sent.count(b"\r\nx-site-id:") == 1
