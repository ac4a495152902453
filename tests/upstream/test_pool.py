"""The upstream client (pool, connection, forward) against scripted raw-TCP upstreams.

The end-to-end tests in tests/server talk to a well-behaved aiohttp upstream; these script
the upstream byte by byte (tests/support/raw_upstream.py) to reach what it never does: stale
keep-alive connections, interim responses, bodies delimited by the close, garbage, a full
pool. Requests go through the real in-process gateway unless the pool itself is the subject.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import generate_latest

from proxy.errors import BadRequest
from proxy.upstream.connection import UpstreamConnection
from proxy.upstream.forward import request_head
from proxy.upstream.pool import Endpoint, UpstreamPool
from tests.support.gateway import gateway_for, manifest
from tests.support.raw_upstream import HANG_UP, RawUpstream, Reply, response

StartUpstream = Callable[..., Awaitable[RawUpstream]]


@pytest.fixture
def gateway(aiohttp_client: Any, tmp_path: Any) -> Callable[..., Awaitable[tuple[Any, Any]]]:
    """A running in-process gateway whose module `crm` proxies every path to `base`: the test
    client and the gateway's upstream pool."""

    async def make(base: str, **overrides: object) -> tuple[Any, UpstreamPool]:
        routes = [
            {"path": "/*", "method": m, "handler_type": "proxy"}
            for m in ("GET", "POST", "PUT", "DELETE")
        ]
        gw, app = gateway_for(tmp_path, manifest(base, routes), **overrides)
        client = await aiohttp_client(app, server_kwargs={"auto_decompress": False})
        assert gw.pool is not None
        return client, gw.pool

    return make


def _error(code: str, message: str) -> dict[str, str]:
    return {"error": message, "code": code, "request_id": "rid"}


UNAVAILABLE = _error("upstream_unavailable", "Upstream unavailable")
RID = {"X-Request-ID": "rid"}


async def _raw_request(port: int, request: bytes) -> bytes:
    """Send `request` to the gateway as written (no client library adding headers); the
    whole answer, read until the gateway closes (the request says Connection: close)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()


# -- keep-alive ------------------------------------------------------------------------------


async def test_sequential_requests_share_one_upstream_connection(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    up = await raw_upstreams([response(b"one"), response(b"two"), response(b"three")])
    client, pool = await gateway(up.url)
    for path, body in (("/a", b"one"), ("/b", b"two"), ("/c", b"three")):
        r = await client.get(f"/api/modules/crm{path}")
        assert r.status == 200
        assert await r.read() == body
    assert up.accepted == 1
    assert [r.target for r in up.on(0)] == ["/a", "/b", "/c"]
    assert pool.open_connections == 1
    assert repr(pool) == "<UpstreamPool in_use=0 open=1 endpoints=1 max=1000>"


async def test_connection_close_from_upstream_is_not_reused(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    # The upstream says close but leaves the socket open: only the gateway can end it.
    up = await raw_upstreams(
        [response(b"one", headers=[("Connection", "close")])], [response(b"two")]
    )
    client, pool = await gateway(up.url)
    r = await client.get("/api/modules/crm/a")
    assert (r.status, await r.read()) == (200, b"one")
    await up.wait_ended(0)
    r = await client.get("/api/modules/crm/b")
    assert (r.status, await r.read()) == (200, b"two")
    assert up.accepted == 2
    assert [r.target for r in up.on(0)] == ["/a"]
    assert [r.target for r in up.on(1)] == ["/b"]
    assert pool.open_connections == 1


async def test_idle_connection_is_closed_by_the_sweep(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    up = await raw_upstreams([response(b"one")], [response(b"two")])
    client, pool = await gateway(up.url, upstream_keepalive_seconds=0.2)
    r = await client.get("/api/modules/crm/a")
    assert (r.status, await r.read()) == (200, b"one")
    assert pool.open_connections == 1
    # The upstream never closes by itself: the connection ends when the sweep closes it.
    await up.wait_ended(0)
    assert pool.open_connections == 0
    assert repr(pool) == "<UpstreamPool in_use=0 open=0 endpoints=1 max=1000>"
    r = await client.get("/api/modules/crm/b")
    assert (r.status, await r.read()) == (200, b"two")
    assert up.accepted == 2


# -- a keep-alive connection the upstream has closed ----------------------------------------


async def test_stale_connection_is_retried_on_a_new_one_for_a_get(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    # Connection 0 answers once, then reads the next request and closes without a byte back.
    up = await raw_upstreams([response(b"one"), HANG_UP], [response(b"two")])
    client, pool = await gateway(up.url)
    r = await client.get("/api/modules/crm/a")
    assert (r.status, await r.read()) == (200, b"one")
    r = await client.get("/api/modules/crm/b")
    assert (r.status, await r.read()) == (200, b"two")
    assert [r.target for r in up.on(0)] == ["/a", "/b"]  # /b did meet the stale connection
    assert [r.target for r in up.on(1)] == ["/b"]
    assert up.accepted == 2
    assert repr(pool) == "<UpstreamPool in_use=0 open=1 endpoints=1 max=1000>"


async def test_stale_connection_is_not_retried_with_a_body(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    up = await raw_upstreams([response(b"one"), HANG_UP], [response(b"never")])
    client, pool = await gateway(up.url)
    r = await client.get("/api/modules/crm/a")
    assert (r.status, await r.read()) == (200, b"one")
    r = await client.post("/api/modules/crm/b", data=b"payload", headers=RID)
    assert r.status == 502
    assert await r.json() == UNAVAILABLE
    # The upstream had the body: sending it again could apply it twice.
    assert [(r.method, r.body) for r in up.on(0)] == [("GET", b""), ("POST", b"payload")]
    assert up.accepted == 1
    assert repr(pool) == "<UpstreamPool in_use=0 open=0 endpoints=1 max=1000>"


async def test_stale_connection_is_not_retried_for_a_bodyless_post(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    up = await raw_upstreams([response(b"one"), HANG_UP], [response(b"twice")])
    client, _ = await gateway(up.url)
    r = await client.get("/api/modules/crm/a")
    assert (r.status, await r.read()) == (200, b"one")
    # The upstream read the POST, then went away: it may have acted on it before dying.
    r = await client.post("/api/modules/crm/orders/1/ship", headers=RID)
    assert r.status == 502
    assert await r.json() == UNAVAILABLE
    assert [r.target for r in up.requests if r.method == "POST"] == ["/orders/1/ship"]


async def test_upstream_closing_right_after_a_response_is_not_an_error(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    # A complete keep-alive response, then FIN with no `Connection: close`. Whether the gateway
    # sees the FIN before the next request or only after reusing the connection, the GET
    # succeeds on a new connection.
    up = await raw_upstreams([Reply(response(b"one"), close=True)], [response(b"two")])
    client, _ = await gateway(up.url)
    r = await client.get("/api/modules/crm/a")
    assert (r.status, await r.read()) == (200, b"one")
    r = await client.get("/api/modules/crm/b")
    assert (r.status, await r.read()) == (200, b"two")
    assert up.accepted == 2


async def test_stale_retry_uses_a_new_connection_not_another_idle_one(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    # Two idle connections that the upstream has both given up on (an upstream that restarted,
    # or closed its idle connections on its own keep-alive timeout).
    both = asyncio.Event()
    up = await raw_upstreams(
        [Reply(response(b"one"), hold=both), HANG_UP],
        [Reply(response(b"one"), hold=both), HANG_UP],
        [response(b"fresh")],
    )
    client, _ = await gateway(up.url)
    first = [asyncio.create_task(client.get("/api/modules/crm/a")) for _ in range(2)]
    await up.wait_requests(2)
    both.set()
    for r in await asyncio.gather(*first):
        assert (r.status, await r.read()) == (200, b"one")
    assert up.accepted == 2
    r = await client.get("/api/modules/crm/b", headers=RID)
    assert (r.status, await r.read()) == (200, b"fresh")


# -- what the upstream answers ---------------------------------------------------------------


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.js>\r\n\r\n",
    ],
    ids=["100", "103", "100+103"],
)
async def test_interim_responses_are_skipped(
    raw_upstreams: StartUpstream, gateway: Any, interim: bytes
) -> None:
    final = response(b"final", status="201 Created", headers=[("X-Final", "yes")])
    up = await raw_upstreams([interim + final, response(b"next")])
    client, _ = await gateway(up.url)
    r = await client.post("/api/modules/crm/a", data=b"x")
    assert r.status == 201
    assert await r.read() == b"final"
    assert r.headers["X-Final"] == "yes"
    assert "Link" not in r.headers  # the interim response's headers are not the final's
    r = await client.get("/api/modules/crm/b")
    assert (r.status, await r.read()) == (200, b"next")
    assert up.accepted == 1


@pytest.mark.parametrize("size", [11, 300 * 1024], ids=["small", "past-high-water"])
async def test_body_delimited_by_close_is_relayed_whole(
    raw_upstreams: StartUpstream, gateway: Any, size: int
) -> None:
    body = bytes(range(256)) * (size // 256) + b"end"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"
    up = await raw_upstreams([Reply(head + body, close=True)], [response(b"next")])
    client, _ = await gateway(up.url)
    r = await client.get("/api/modules/crm/a")
    assert r.status == 200
    assert await r.read() == body
    r = await client.get("/api/modules/crm/b")
    assert (r.status, await r.read()) == (200, b"next")
    assert up.accepted == 2


async def test_chunked_response_is_relayed_and_the_connection_kept(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    big = b"c" * 100_000
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n" + b"%x\r\n" % len(big) + big + b"\r\n"
        b"0\r\nX-Trailer: t\r\n\r\n"
    )
    up = await raw_upstreams([chunked, response(b"again")])
    client, _ = await gateway(up.url)
    r = await client.get("/api/modules/crm/a")
    assert r.status == 200
    assert await r.read() == b"hello world" + big
    r = await client.get("/api/modules/crm/b")
    assert (r.status, await r.read()) == (200, b"again")
    assert up.accepted == 1


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\nbody",
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["not-http", "bad-length", "length-and-chunked"],
)
async def test_invalid_response_is_502(
    raw_upstreams: StartUpstream, gateway: Any, garbage: bytes
) -> None:
    # The upstream keeps its socket open after the garbage: the parser has to be the one to end
    # the exchange (upstream_timeout would make it a 504).
    up = await raw_upstreams([garbage], [response(b"ok")])
    client, pool = await gateway(up.url, upstream_timeout=10)
    r = await client.get("/api/modules/crm/a", headers=RID)
    assert r.status == 502
    assert await r.json() == UNAVAILABLE
    await up.wait_ended(0)  # the connection that spoke garbage is dropped
    r = await client.get("/api/modules/crm/b")
    assert (r.status, await r.read()) == (200, b"ok")
    assert up.accepted == 2
    assert pool.open_connections == 1


# -- the connection limit --------------------------------------------------------------------


async def test_request_waits_for_the_busy_connection_at_the_limit(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    release = asyncio.Event()
    up = await raw_upstreams([Reply(response(b"slow"), hold=release), response(b"queued")])
    client, pool = await gateway(up.url, upstream_max_connections=1)
    slow = asyncio.create_task(client.get("/api/modules/crm/slow"))
    await up.wait_requests(1)
    queued = asyncio.create_task(client.get("/api/modules/crm/queued"))
    # Nothing to wait on for "still waiting": give it a window to go wrong in.
    done, _ = await asyncio.wait({queued}, timeout=0.3)
    assert not done
    assert len(up.requests) == 1 and up.accepted == 1
    assert repr(pool) == "<UpstreamPool in_use=1 open=1 endpoints=1 max=1>"
    release.set()
    r = await slow
    assert (r.status, await r.read()) == (200, b"slow")
    r = await queued
    assert (r.status, await r.read()) == (200, b"queued")
    assert [r.target for r in up.on(0)] == ["/slow", "/queued"]
    assert up.accepted == 1


async def test_wait_for_a_slot_is_bounded_by_the_pool_wait(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    release = asyncio.Event()
    up = await raw_upstreams([Reply(response(b"slow"), hold=release), response(b"after")])
    client, pool = await gateway(up.url, upstream_max_connections=1, upstream_pool_wait_seconds=0.5)
    slow = asyncio.create_task(client.get("/api/modules/crm/slow"))
    await up.wait_requests(1)
    r = await client.get("/api/modules/crm/queued", headers=RID)
    assert r.status == 504
    assert await r.json() == _error("upstream_timeout", "Upstream timed out")
    release.set()
    r = await slow
    assert (r.status, await r.read()) == (200, b"slow")
    # The timed-out waiter took no slot with it: the connection serves the next request.
    r = await client.get("/api/modules/crm/after")
    assert (r.status, await r.read()) == (200, b"after")
    assert [r.target for r in up.requests] == ["/slow", "/after"]
    assert repr(pool) == "<UpstreamPool in_use=0 open=1 endpoints=1 max=1>"


async def test_a_waiter_cancelled_after_its_wake_up_passes_the_slot_on(
    raw_upstreams: StartUpstream,
) -> None:
    up = await raw_upstreams([], [])
    pool = UpstreamPool(max_connections=1, keepalive_seconds=30, connect_timeout=2, timeout=30)
    endpoint = pool.endpoint(up.url)
    try:
        held = await pool.acquire(endpoint)
        second = asyncio.create_task(pool.acquire(endpoint))
        third = asyncio.create_task(pool.acquire(endpoint))
        await asyncio.sleep(0)  # one loop turn: both tasks run up to their wait for a slot
        assert not second.done() and not third.done()
        pool.release(endpoint, held)  # wakes `second`...
        second.cancel()  # ...whose handler is cancelled before it gets to run
        await asyncio.gather(second, return_exceptions=True)
        conn = await third  # TimeoutError after connect_timeout when the wake-up was lost
        assert isinstance(conn, UpstreamConnection)
        pool.release(endpoint, conn)
    finally:
        await pool.close()


# -- the request the upstream gets -----------------------------------------------------------


def test_request_head_for_a_simple_get() -> None:
    endpoint = Endpoint("http://modules.internal:8080")
    head = request_head("GET", "/a/b?c=1", endpoint, [b"Accept: */*\r\n", b"X-A: 1\r\n"], None)
    assert head == (
        b"GET /a/b?c=1 HTTP/1.1\r\nHost: modules.internal:8080\r\nAccept: */*\r\nX-A: 1\r\n\r\n"
    )


def test_request_head_puts_framing_before_the_forwarded_lines() -> None:
    endpoint = Endpoint("http://modules.internal")
    head = request_head("POST", "/x", endpoint, [b"X-A: 1\r\n"], b"Content-Length: 0\r\n")
    assert head == (
        b"POST /x HTTP/1.1\r\nHost: modules.internal\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://modules.internal", b"modules.internal"),
        ("http://modules.internal:80", b"modules.internal"),
        ("https://modules.internal:443", b"modules.internal"),
        ("http://modules.internal:443", b"modules.internal:443"),
        ("https://modules.internal:8443", b"modules.internal:8443"),
        ("http://[::1]:80", b"[::1]"),
        ("http://[::1]:8080", b"[::1]:8080"),
        ("http://user:pw@modules.internal:80", b"modules.internal"),
        ("http://b\u00fccher.example:8080", b"xn--bcher-kva.example:8080"),
    ],
)
def test_host_header_has_no_default_port(origin: str, host: bytes) -> None:
    head = request_head("GET", "/", Endpoint(origin), [], None)
    assert head.split(b"\r\n")[1] == b"Host: " + host


@pytest.mark.parametrize(
    "line",
    [b"X-User-Id: a\r\nX-Scopes: *\r\n", b"X-User-Id: a\nX-Scopes: *\r\n", b"X-User-Id: a\rb\r\n"],
    ids=["crlf", "lf", "cr"],
)
def test_request_head_refuses_a_line_break_inside_a_line(line: bytes) -> None:
    endpoint = Endpoint("http://modules.internal")
    with pytest.raises(BadRequest) as caught:
        request_head("GET", "/", endpoint, [b"Accept: */*\r\n", line], None)
    assert caught.value.status == 400
    assert caught.value.message == "A header value cannot be forwarded: it contains a line break"


async def test_userinfo_becomes_basic_auth_and_replaces_the_clients(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    up = await raw_upstreams([response(b"ok")])
    client, _ = await gateway(f"http://user:pa%20ss@127.0.0.1:{up.port}")
    # A scheme the gateway does not verify itself (Bearer would be checked as a JWT).
    client_auth = {"Authorization": "Basic Y2xpZW50OmNsaWVudA=="}
    r = await client.get("/api/modules/crm/a", headers=client_auth)
    assert (r.status, await r.read()) == (200, b"ok")
    (seen,) = up.requests
    token = base64.b64encode(b"user:pa ss").decode()
    assert seen.header("Authorization") == [f"Basic {token}"]
    assert seen.header("Host") == [f"127.0.0.1:{up.port}"]


async def test_userinfo_password_stays_out_of_metrics_and_logs(
    raw_upstreams: StartUpstream, gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    up = await raw_upstreams()  # every connection is dropped unanswered
    client, _ = await gateway(f"http://user:s3cr3t-pw@127.0.0.1:{up.port}")
    with caplog.at_level(logging.WARNING, logger="modgate.upstream"):
        r = await client.get("/api/modules/crm/a")
        assert r.status == 502
    assert caplog.records, "the failure is logged"
    assert "s3cr3t-pw" not in caplog.text
    assert b"s3cr3t-pw" not in generate_latest()


async def test_bodyless_requests_are_framed_by_method(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    up = await raw_upstreams([response(b"ok")] * 5)
    client, _ = await gateway(up.url)
    # Neither Content-Length nor Transfer-Encoding from the client: the gateway frames it.
    for method in (b"POST", b"PUT", b"DELETE", b"GET"):
        answer = await _raw_request(
            client.port,
            method + b" /api/modules/crm/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
        )
        assert answer.startswith(b"HTTP/1.1 200 "), method
    # A client's own Content-Length: 0 goes through once, not twice.
    r = await client.post("/api/modules/crm/x", data=b"")
    assert r.status == 200
    lengths = [(seen.method, seen.header("Content-Length")) for seen in up.requests]
    assert lengths == [
        ("POST", ["0"]),
        ("PUT", ["0"]),
        ("DELETE", []),
        ("GET", []),
        ("POST", ["0"]),
    ]
    for seen in up.requests:
        assert seen.header("Transfer-Encoding") == []
        assert seen.body == b""
    assert up.accepted == 1


async def test_chunked_request_body_arrives_whole_and_chunked(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    up = await raw_upstreams([response(b"ok")])
    client, _ = await gateway(up.url, max_body_bytes=0)
    parts = [b"first,", b"x" * 200_000, b"", b",last"]

    async def chunks() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    r = await client.post("/api/modules/crm/upload", data=chunks())
    assert (r.status, await r.read()) == (200, b"ok")
    (seen,) = up.requests
    assert seen.header("Transfer-Encoding") == ["chunked"]
    assert seen.header("Content-Length") == []
    assert seen.body == b"".join(parts)
    _, _, wire_body = bytes(up.received[0]).partition(b"\r\n\r\n")
    assert wire_body.endswith(b"\r\n0\r\n\r\n")  # framed as chunks on the wire, properly ended


# -- strictness: the upstream speaks only when spoken to (issue 12) -------------------------


async def test_a_second_response_glued_to_the_first_closes_the_connection(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    up = await raw_upstreams(
        [response(b"one") + response(b"smuggled", headers=[("X-Evil", "1")])],
        [response(b"two")],
    )
    client, pool = await gateway(up.url)
    r = await client.get("/api/modules/crm/a")
    assert (r.status, await r.read()) == (200, b"one")
    assert "X-Evil" not in r.headers
    await up.wait_ended(0)
    r = await client.get("/api/modules/crm/b")
    assert (r.status, await r.read()) == (200, b"two")
    assert [len(up.on(0)), len(up.on(1))] == [1, 1]
    assert pool.open_connections == 1


async def test_surplus_body_bytes_close_the_connection(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    # Content-Length says 3; the 4th byte onward is nobody's.
    up = await raw_upstreams([response(b"one") + b"XHTTP/1.1 200 OK\r\n\r\n"], [response(b"two")])
    client, _ = await gateway(up.url)
    r = await client.get("/api/modules/crm/a")
    assert (r.status, await r.read()) == (200, b"one")
    await up.wait_ended(0)
    r = await client.get("/api/modules/crm/b")
    assert (r.status, await r.read()) == (200, b"two")


async def test_bytes_on_an_idle_connection_are_never_handed_to_the_next_request(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    up = await raw_upstreams([response(b"one")], [response(b"two")])
    client, pool = await gateway(up.url)
    r = await client.get("/api/modules/crm/a")
    assert (r.status, await r.read()) == (200, b"one")
    # A late answer (to a request smuggled earlier, say) arrives while the connection idles.
    up.push(0, response(b"stale answer"))
    await up.wait_ended(0)
    assert pool.open_connections == 0
    r = await client.get("/api/modules/crm/b")
    assert (r.status, await r.read()) == (200, b"two")
    assert up.accepted == 2


async def test_response_trailers_are_never_relayed_as_headers(
    raw_upstreams: StartUpstream, gateway: Any
) -> None:
    chunked_with_trailers = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nOK\r\n0\r\n"
        b"Set-Cookie: session=evil\r\nX-Trailer: yes\r\n\r\n"
    )
    up = await raw_upstreams([chunked_with_trailers])
    client, _ = await gateway(up.url)
    r = await client.get("/api/modules/crm/a")
    assert (r.status, await r.read()) == (200, b"OK")
    assert "Set-Cookie" not in r.headers and "X-Trailer" not in r.headers


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"gzip", b"chunked, chunked"])
async def test_response_transfer_codings_other_than_chunked_are_502(
    raw_upstreams: StartUpstream, gateway: Any, coding: bytes
) -> None:
    """Relayed de-chunked without its coding, a gzip body would reach the client unlabelled."""
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + coding + b"\r\n\r\n2\r\nOK\r\n0\r\n\r\n"
    up = await raw_upstreams([answer])
    client, pool = await gateway(up.url)
    r = await client.get("/api/modules/crm/a")
    assert r.status == 502
    assert (await r.json())["code"] == "upstream_unavailable"
    await up.wait_ended(0)
    assert pool.open_connections == 0
