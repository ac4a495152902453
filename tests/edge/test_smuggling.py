"""Issue 12, findings 1 and 9: framing belongs to the gateway, and upstream responses are
parsed strictly.

Every test talks raw bytes on both sides: the client's request is written as is, and the
RawUpstream records every byte that reaches it, so "one client request = exactly one upstream
request" is checked on the bytes, not on what a library made of them.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.edge import (
    IDENTITY_HEADERS,
    RawClient,
    StartGateway,
    StartUpstream,
    assert_error,
    assert_gateway_head,
    chunked,
    raw_request,
    requests_begun,
)
from tests.support.raw_upstream import RawUpstream, response

FRONT = "/api/modules/crm/public/front"
# The request an attacker hides in a body: the admin resource, with forged identity headers.
SMUGGLED = (
    b"GET /base/admin/secret HTTP/1.1\r\nHost: upstream\r\n"
    b"X-User-Id: admin\r\nX-Scopes: *\r\nX-Site-Id: other\r\nX-Module-Id: other\r\n\r\n"
)
SMUGGLED_RESPONSE = response(b"SMUGGLED-ADMIN-SECRET")


def _assert_one_request(upstream: RawUpstream, body: bytes, method: str = "POST") -> None:
    """Exactly one request reached the upstream, framed so that its body is `body`, and no
    byte beyond it."""
    assert upstream.accepted == 1
    [seen] = upstream.requests
    assert seen.method == method
    assert seen.body == body
    assert requests_begun(bytes(upstream.received[0])) == 1, bytes(upstream.received[0])
    assert_gateway_head(seen, upstream)
    for name in IDENTITY_HEADERS:
        assert all(v not in ("admin", "*", "other") for v in seen.header(name)), seen.headers


# -- finding 1: a Connection header cannot unframe the forwarded request ---------------------


@pytest.mark.parametrize(
    "connection",
    [
        ["keep-alive, Content-Length"],
        ["content-length"],
        ["keep-alive", "Content-Length"],  # two Connection lines
        ["close,CONTENT-LENGTH , x-foo"],
        ["Host"],
        ["keep-alive, host"],
    ],
)
async def test_connection_naming_content_length_or_host_is_refused(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway, connection: list[str]
) -> None:
    upstream = await raw_upstreams([response(b"front"), SMUGGLED_RESPONSE])
    gateway = await edge_gateway(upstream)
    headers = [("Connection", value) for value in connection]
    r = await gateway.exchange(raw_request("POST", FRONT, headers, SMUGGLED))
    assert_error(r, 400, "bad_request")
    await asyncio.sleep(0.05)
    assert upstream.accepted == 0 and upstream.requests == []


@pytest.mark.parametrize("connection", ["Transfer-Encoding", "keep-alive, transfer-encoding"])
async def test_connection_naming_transfer_encoding_is_refused(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway, connection: str
) -> None:
    upstream = await raw_upstreams([response(b"front"), SMUGGLED_RESPONSE])
    gateway = await edge_gateway(upstream)
    headers = [("Connection", connection), ("Transfer-Encoding", "chunked")]
    r = await gateway.exchange(raw_request("POST", FRONT, headers, chunked(SMUGGLED)))
    assert_error(r, 400, "bad_request")
    await asyncio.sleep(0.05)
    assert upstream.accepted == 0 and upstream.requests == []


@pytest.mark.parametrize(
    ("headers", "body", "sent"),
    [
        ([("Connection", "keep-alive, X-Hop")], None, SMUGGLED),
        ([("content-LENGTH", str(len(SMUGGLED)))], None, SMUGGLED),
        ([("Transfer-Encoding", "chunked")], chunked(SMUGGLED), SMUGGLED),
        ([("transfer-encoding", "Chunked")], chunked(SMUGGLED, 7), SMUGGLED),
        ([], None, b""),  # a bodiless POST
    ],
    ids=["keep-alive", "odd-case-length", "chunked", "odd-case-chunked", "empty"],
)
async def test_forwarded_framing_is_computed_by_the_gateway(
    raw_upstreams: StartUpstream,
    edge_gateway: StartGateway,
    headers: list[tuple[str, str]],
    body: bytes | None,
    sent: bytes,
) -> None:
    """A body that is itself a request stays a body: one upstream request, framed by the
    gateway (one Content-Length or chunked, never both), carrying those bytes."""
    upstream = await raw_upstreams([response(b"front"), SMUGGLED_RESPONSE])
    gateway = await edge_gateway(upstream)
    wire = body if body is not None else sent
    r = await gateway.exchange(raw_request("POST", FRONT, headers, wire if sent else None))
    assert (r.status, r.body) == (200, b"front")
    await asyncio.sleep(0.05)
    _assert_one_request(upstream, sent)
    [seen] = upstream.requests
    assert seen.target == "/base/public/front"
    if not sent:  # a bodiless POST is still announced as such
        assert seen.header("Content-Length") == ["0"]


@pytest.mark.parametrize(
    ("codings", "status"),
    [
        ("gzip, chunked", 501),
        ("deflate,chunked", 501),
        ("GZIP , Chunked", 501),
        # llhttp refuses a repeated "chunked" itself: a parser-level 400 is as good a refusal.
        ("chunked, chunked", (400, 501)),
    ],
)
async def test_transfer_codings_other_than_chunked_are_not_implemented(
    raw_upstreams: StartUpstream,
    edge_gateway: StartGateway,
    codings: str,
    status: int | tuple[int, ...],
) -> None:
    upstream = await raw_upstreams([response(b"front")])
    gateway = await edge_gateway(upstream)
    headers = [("Transfer-Encoding", codings)]
    r = await gateway.exchange(raw_request("POST", FRONT, headers, chunked(b"\x1f\x8b zipped")))
    data = assert_error(r, status)
    if r.status == 501:
        assert data["code"] == "unsupported_transfer_encoding"
    await asyncio.sleep(0.05)
    assert upstream.accepted == 0


# What held up before the fix and must stay: refused before the upstream, in the error shape.
HELD_UP = {
    "cl-and-te": b"POST %s HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two-lengths": b"POST %s HTTP/1.1\r\nHost: g\r\nContent-Length: 5\r\n"
    b"Content-Length: 6\r\n\r\nhello!",
    "two-te-lines": b"POST %s HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: gzip\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET %s HTTP/1.1\r\nHost: g\r\nX-A: one\r\n two\r\n\r\n",
    "bad-chunk-size": b"POST %s HTTP/1.1\r\nHost: g\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nhello\r\n0\r\n\r\n",
    "bare-lf": b"GET %s HTTP/1.1\nHost: g\nX-A: b\n\n",
    "cr-in-value": b"GET %s HTTP/1.1\r\nHost: g\r\nX-A: a\rb\r\n\r\n",
    "nul-in-value": b"GET %s HTTP/1.1\r\nHost: g\r\nX-A: a\x00b\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(HELD_UP))
async def test_malformed_framing_is_refused_before_the_upstream(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway, name: str
) -> None:
    upstream = await raw_upstreams([response(b"front")])
    gateway = await edge_gateway(upstream)
    r = await gateway.exchange(HELD_UP[name] % FRONT.encode())
    assert_error(r, 400)
    await asyncio.sleep(0.05)
    assert upstream.accepted == 0


# -- finding 1, second half: a byte the gateway did not ask for poisons the connection -------


@pytest.mark.parametrize(
    "surplus",
    [SMUGGLED_RESPONSE, b"HTTP/1.1 200 OK\r\n", b"X"],
    ids=["whole-response", "partial-head", "one-byte"],
)
async def test_surplus_glued_to_a_response_closes_the_upstream_connection(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway, surplus: bytes
) -> None:
    upstream = await raw_upstreams([response(b"first") + surplus], [response(b"fresh")])
    gateway = await edge_gateway(upstream)
    client = await RawClient.connect(gateway.port)
    try:
        await client.send(raw_request("GET", FRONT))
        first = await client.response()
        assert (first.status, first.body) == (200, b"first")
        assert first.header("Content-Length") == ["5"] and first.surplus == b""
        assert await client.more() == b""  # nothing of the surplus follows it
    finally:
        await client.close()
    # The next, unrelated client gets its own answer from a new upstream connection.
    second = await gateway.exchange(raw_request("GET", "/api/modules/crm/public/other"))
    assert (second.status, second.body) == (200, b"fresh")
    await upstream.wait_ended(0)
    assert [r.target for r in upstream.on(0)] == ["/base/public/front"]
    assert [r.target for r in upstream.on(1)] == ["/base/public/other"]


async def test_bytes_on_an_idle_pooled_connection_close_it(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway
) -> None:
    """The upstream speaks while no request is outstanding (a slow answer to a smuggled
    request, say): that connection is never handed to the next request."""
    upstream = await raw_upstreams([response(b"first")], [response(b"fresh")])
    gateway = await edge_gateway(upstream)
    first = await gateway.exchange(raw_request("GET", FRONT))
    assert (first.status, first.body) == (200, b"first")
    upstream.push(0, SMUGGLED_RESPONSE)
    await upstream.wait_ended(0, timeout=2)  # the gateway hangs up on it at once
    second = await gateway.exchange(raw_request("GET", "/api/modules/crm/public/other"))
    assert (second.status, second.body) == (200, b"fresh")
    assert len(upstream.on(0)) == 1 and len(upstream.on(1)) == 1


async def test_smuggling_end_to_end_leaks_nothing_to_the_next_client(
    raw_upstreams: StartUpstream, edge_gateway: StartGateway
) -> None:
    """The issue's reproduction, whole: a smuggling attempt, then an unrelated client. The
    upstream would answer a second request on connection 0 with the admin secret."""
    upstream = await raw_upstreams(
        [response(b"front"), SMUGGLED_RESPONSE], [response(b"fresh")], [response(b"fresh")]
    )
    gateway = await edge_gateway(upstream)
    attack = raw_request("POST", FRONT, [("Connection", "keep-alive, Content-Length")], SMUGGLED)
    r = await gateway.exchange(attack)
    assert b"SMUGGLED" not in r.body + r.surplus
    victim = await gateway.exchange(raw_request("GET", "/api/modules/crm/public/mine"))
    assert victim.status == 200 and victim.body in (b"front", b"fresh")
    assert all(seen.target != "/base/admin/secret" for seen in upstream.requests)
    assert len(upstream.requests) <= 2
