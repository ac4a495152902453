"""The Forwarder on its own: from who is calling (a principal of a module) and where to, the
exact request head an upstream receives, and the CORS ownership it is built with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.streams import EmptyStreamReader
from aiohttp.test_utils import make_mocked_request

from proxy.auth.client_address import ClientAddressResolver
from proxy.auth.principal import Principal
from proxy.auth.scopes import Grants
from proxy.request_context import RequestContext
from proxy.routing.table import UpstreamTarget
from proxy.upstream.forwarder import Forwarder
from proxy.upstream.pool import UpstreamPool
from tests.support.raw_upstream import RawUpstream, response

StartUpstream = Callable[..., Awaitable[RawUpstream]]
MODULE_ID = "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"
SITE_ID = "11111111-2222-3333-4444-555555555555"
PROXY_NETWORK = "10.0.0.0/8"


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(max_connections=4, keepalive_seconds=5, connect_timeout=1, timeout=5)
    yield pool
    await pool.close()


def _request(headers: list[tuple[str, str]], *, peer: str = "192.0.2.7") -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default
    )
    return make_mocked_request(
        "GET",
        "/api/modules/crm/items/7",
        headers=[("Host", "gw.example"), *headers],
        transport=transport,
        payload=EmptyStreamReader(),
    )


def _caller(credential_header: str = "Authorization") -> Principal:
    return Principal(
        "jwt",
        Grants(["read:items", "write:items"]),
        site_id=SITE_ID,
        user_id="user-9",
        credential_header=credential_header,
    )


def _context() -> RequestContext:
    return RequestContext("rid-1", started=0.0)


def _forwarder(pool: UpstreamPool, *, gateway_cors: bool = False) -> Forwarder:
    return Forwarder(
        pool,
        addresses=ClientAddressResolver([PROXY_NETWORK]),
        max_body_bytes=1024,
        gateway_cors=gateway_cors,
    )


async def test_the_head_an_upstream_receives(raw_upstreams: StartUpstream, pool: Any) -> None:
    up = await raw_upstreams([response(b"ok")])
    request = _request(
        [
            ("Accept", "*/*"),
            ("Authorization", "Bearer the-callers-token"),
            ("X-User-Id", "someone-else"),
            ("X-Forwarded-For", "203.0.113.1"),
            ("Forwarded", "for=203.0.113.1"),
        ]
    )
    target = UpstreamTarget(up.url + "/base", keep_path=True)
    answer = await _forwarder(pool).forward(
        request,
        _context(),
        target,
        "/base/items/7?q=1",
        caller=_caller(),
        module_id=MODULE_ID,
        forward_credentials=False,
    )
    assert (answer.status, answer.body) == (200, b"ok")  # type: ignore[attr-defined]
    # The caller's credential, its identity claims and its address claims (the peer is no
    # trusted proxy) stay at the gateway; the gateway says who is calling.
    assert bytes(up.received[0]) == (
        b"GET /base/items/7?q=1 HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{up.port}\r\n".encode()
        + b"Accept: */*\r\n"
        b"X-Forwarded-For: 192.0.2.7\r\n"
        b"X-Forwarded-Proto: http\r\n"
        b"X-Forwarded-Host: gw.example\r\n"
        b"X-Request-ID: rid-1\r\n"
        b"X-Module-Id: " + MODULE_ID.encode() + b"\r\n"
        b"X-Site-Id: " + SITE_ID.encode() + b"\r\n"
        b"X-User-Id: user-9\r\n"
        b"X-Scopes: read:items write:items\r\n"
        b"\r\n"
    )


async def test_a_trusted_proxys_chain_is_continued(raw_upstreams: StartUpstream, pool: Any) -> None:
    up = await raw_upstreams([response(b"ok")])
    request = _request(
        [("X-Forwarded-For", "203.0.113.1"), ("Forwarded", "for=203.0.113.1")], peer="10.1.2.3"
    )
    target = UpstreamTarget(up.url, keep_path=True)
    await _forwarder(pool).forward(
        request,
        _context(),
        target,
        "/",
        caller=_caller(),
        module_id=MODULE_ID,
        forward_credentials=False,
    )
    (seen,) = up.requests
    assert seen.header("X-Forwarded-For") == ["203.0.113.1, 10.1.2.3"]
    assert seen.header("Forwarded") == ["for=203.0.113.1"]


@pytest.mark.parametrize("credential", ["X-API-Key", "Authorization"])
async def test_credentials_cross_only_where_the_route_forwards_them(
    raw_upstreams: StartUpstream, pool: Any, credential: str
) -> None:
    up = await raw_upstreams([response(b"ok"), response(b"ok")])
    target = UpstreamTarget(up.url, keep_path=True)
    forwarder = _forwarder(pool)
    for forward_credentials in (False, True):
        request = _request([(credential, "the-credential")])
        await forwarder.forward(
            request,
            _context(),
            target,
            "/",
            caller=_caller(credential),
            module_id=MODULE_ID,
            forward_credentials=forward_credentials,
        )
    kept_out, forwarded = up.requests
    assert kept_out.header(credential) == []
    assert forwarded.header(credential) == ["the-credential"]


async def test_an_upstream_url_with_credentials_replaces_the_callers_authorization(
    raw_upstreams: StartUpstream, pool: Any
) -> None:
    up = await raw_upstreams([response(b"ok")])
    target = UpstreamTarget(f"http://svc:pw@127.0.0.1:{up.port}", keep_path=True)
    request = _request([("Authorization", "Basic Y2xpZW50OmNsaWVudA==")])
    await _forwarder(pool).forward(
        request,
        _context(),
        target,
        "/",
        caller=_caller("X-API-Key"),
        module_id=MODULE_ID,
        forward_credentials=True,
    )
    (seen,) = up.requests
    assert seen.header("Authorization") == ["Basic c3ZjOnB3"]  # svc:pw


@pytest.mark.parametrize("gateway_cors", [False, True])
async def test_cors_headers_are_the_gateways_when_it_owns_them(
    raw_upstreams: StartUpstream, pool: Any, gateway_cors: bool
) -> None:
    upstream_cors = [("Access-Control-Allow-Origin", "*"), ("Vary", "Accept")]
    up = await raw_upstreams([response(b"ok", headers=upstream_cors)])
    ctx = _context()
    if gateway_cors:
        ctx.response_headers["Vary"] = "Origin"
    target = UpstreamTarget(up.url, keep_path=True)
    answer = await _forwarder(pool, gateway_cors=gateway_cors).forward(
        _request([]),
        ctx,
        target,
        "/",
        caller=_caller(),
        module_id=MODULE_ID,
        forward_credentials=False,
    )
    assert answer.headers["X-Request-ID"] == "rid-1"
    if gateway_cors:
        assert "Access-Control-Allow-Origin" not in answer.headers
        assert answer.headers.getall("Vary") == ["Accept, Origin"]
    else:
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert answer.headers.getall("Vary") == ["Accept"]
