"""The public port end to end, in process: real pipeline, real upstream server, real sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.support.gateway import MODULE_ID, gateway_for, manifest
from tests.support.upstream import UpstreamLog


@pytest.fixture
def gateway(aiohttp_client: Any, tmp_path: Any, upstream: tuple[str, UpstreamLog]) -> Any:
    base, _ = upstream

    async def make(routes: list[dict[str, Any]] | None = None, **overrides: object) -> Any:
        routes = routes or [
            {"path": "/*", "method": m, "handler_type": "proxy"}
            for m in ("GET", "POST", "PUT", "PATCH", "DELETE")
        ]
        _, app = gateway_for(tmp_path, manifest(base, routes), **overrides)
        return await aiohttp_client(app, server_kwargs={"auto_decompress": False})

    return make


def _headers(seen: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in seen["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


async def test_static_json_and_text(gateway: Any) -> None:
    client = await gateway(
        [
            {"path": "/j", "method": "GET", "handler_type": "static", "handler_code": '{"a": 1}'},
            {"path": "/t", "method": "GET", "handler_type": "static", "handler_code": "hi"},
        ]
    )
    r = await client.get("/api/modules/crm/j")
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/json"
    assert await r.json() == {"a": 1}
    r = await client.get(f"/api/modules/{MODULE_ID}/t")
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert await r.text() == "hi"


async def test_request_id_kept_generated_or_replaced(gateway: Any) -> None:
    client = await gateway()
    r = await client.get("/api/modules/crm/x", headers={"X-Request-ID": "abc-123"})
    assert r.headers["X-Request-ID"] == "abc-123"
    assert _headers(await r.json())["x-request-id"] == ["abc-123"]
    r = await client.get("/api/modules/crm/x")
    assert len(r.headers["X-Request-ID"]) == 32
    r = await client.get("/api/modules/crm/x", headers={"X-Request-ID": "bad id\twith tab"})
    assert r.headers["X-Request-ID"] != "bad id\twith tab"
    r = await client.get("/api/modules/crm/missing-module-route", headers={"X-Request-ID": "e1"})
    assert r.headers["X-Request-ID"] == "e1"


async def test_proxy_keeps_path_and_query_and_sets_forwarded_headers(gateway: Any) -> None:
    client = await gateway()
    r = await client.get(
        "/api/modules/crm/contacts/a%20b/x?q=1&q=2&s=%20",
        headers={
            "X-Forwarded-For": "203.0.113.9",
            "X-User-Id": "attacker",
            "X-Scopes": "*",
            "X-Site-Id": "other-site",
            "X-Api-Key-Id": "k",
            "X-Module-Id": "spoofed",
            "X-Custom": "kept",
        },
    )
    assert r.status == 200
    seen = await r.json()
    assert seen["raw_path"] == "/contacts/a%20b/x?q=1&q=2&s=%20"
    h = _headers(seen)
    # From a peer that is not a trusted proxy the chain starts afresh (issue 12).
    assert h["x-forwarded-for"] == ["127.0.0.1"]
    assert h["x-forwarded-proto"] == ["http"]
    assert h["x-forwarded-host"] == [f"127.0.0.1:{client.port}"]
    assert h["x-module-id"] == [MODULE_ID]
    assert h["x-custom"] == ["kept"]
    # Anonymous caller: the gateway's own identity headers only, never the client's.
    assert h["x-scopes"] == ["read:*"]
    for identity in ("x-user-id", "x-site-id", "x-api-key-id"):
        assert identity not in h


async def test_hop_by_hop_headers_removed_both_ways(gateway: Any) -> None:
    client = await gateway()
    r = await client.post(
        "/api/modules/crm/x",
        data=b"body",
        headers={
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "must not pass",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "Upgrade": "websocket",
        },
    )
    seen = await r.json()
    h = _headers(seen)
    for hop in ("x-secret-hop", "keep-alive", "te", "proxy-authorization", "upgrade"):
        assert hop not in h, hop
    assert seen["body_bytes"] == 4
    # Response side: Connection-listed and hop-by-hop headers are gone, repeated ones kept.
    assert "X-Upstream-Private" not in r.headers
    assert "Keep-Alive" not in r.headers
    assert r.headers["X-Upstream"] == "yes"
    assert r.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


async def test_upstream_cookies_are_never_replayed(gateway: Any) -> None:
    client = await gateway()
    await client.get("/api/modules/crm/first")
    client.session.cookie_jar.clear()
    r = await client.get("/api/modules/crm/second")
    assert "cookie" not in _headers(await r.json())


async def test_handler_url_gets_params_and_query(gateway: Any, upstream: Any) -> None:
    base, _ = upstream
    client = await gateway(
        [
            {
                "path": "/people/:id/files/*",
                "method": "GET",
                "handler_type": "proxy",
                "handler_url": f"{base}/v2/contacts/:id/blob/*?fixed=1",
                "encoded_slashes": "keep",
            }
        ]
    )
    # `*` takes the rest of the path as sent: the %2F stays encoded, never a separator.
    r = await client.get("/api/modules/crm/people/J%20D/files/a/b%2Fc?x=y")
    seen = await r.json()
    assert seen["raw_path"] == "/v2/contacts/J%20D/blob/a/b%2Fc?fixed=1&x=y"


async def test_encoded_slashes_are_refused_by_default(gateway: Any, upstream: Any) -> None:
    _, log = upstream
    client = await gateway(
        [{"path": "/files/*", "method": "GET", "handler_type": "proxy"}],
    )
    for path in ("/files/a%2Fb", "/files/a%2fb", "/files/a%5Cb", "/files/%5c"):
        r = await client.get(f"/api/modules/crm{path}")
        assert r.status == 400, path
        assert (await r.json())["code"] == "bad_request"
    assert log.requests == []


async def test_head_on_get_route(gateway: Any) -> None:
    client = await gateway()
    r = await client.head("/api/modules/crm/ten")
    assert r.status == 200
    assert r.headers["Content-Length"] == "10"
    assert await r.read() == b""


async def test_errors_have_the_shape(gateway: Any) -> None:
    client = await gateway(
        [
            {"path": "/a", "method": "GET", "handler_type": "static", "handler_code": "x"},
            {"path": "/a", "method": "DELETE", "handler_type": "static", "handler_code": "x"},
            {"path": "/f", "method": "GET", "handler_type": "function", "handler_code": "1"},
        ]
    )
    cases = [
        ("GET", "/api/modules/nope/a", 404, "module_not_found"),
        ("GET", "/api/modules/crm/b", 404, "route_not_found"),
        ("GET", "/elsewhere", 404, "route_not_found"),
        ("POST", "/api/modules/crm/a", 405, "method_not_allowed"),
        ("GET", "/api/modules/crm/f", 501, "handler_not_implemented"),
        ("GET", "/api/modules/crm/a%zz", 400, "bad_request"),
    ]
    for method, path, status, code in cases:
        url = URL(f"http://127.0.0.1:{client.port}{path}", encoded=True)  # keep %zz as sent
        r = await client.session.request(method, url, headers={"X-Request-ID": "rid"})
        assert r.status == status, path
        body = await r.json()
        assert body == {"error": body["error"], "code": code, "request_id": "rid"}, path
        assert r.headers["Content-Type"] == "application/json"
    r = await client.post("/api/modules/crm/a")
    assert r.headers["Allow"] == "GET, HEAD, DELETE"


async def test_upstream_refused_is_502(gateway: Any, unused_tcp_port: int) -> None:
    client = await gateway(
        [
            {
                "path": "/x",
                "method": "GET",
                "handler_type": "proxy",
                "handler_url": f"http://127.0.0.1:{unused_tcp_port}/x",
            }
        ]
    )
    r = await client.get("/api/modules/crm/x")
    assert r.status == 502
    body = await r.json()
    assert body["code"] == "upstream_unavailable"
    assert "127.0.0.1" not in body["error"] and "Connect" not in body["error"]


async def test_slow_upstream_is_504(gateway: Any) -> None:
    client = await gateway(upstream_timeout=0.3)
    r = await client.get("/api/modules/crm/slow?s=2")
    assert r.status == 504
    assert (await r.json())["code"] == "upstream_timeout"


async def test_request_body_limit_by_content_length(gateway: Any, upstream: Any) -> None:
    _, log = upstream
    client = await gateway(max_body_bytes=1000)
    r = await client.post("/api/modules/crm/x", data=b"x" * 1001)
    assert r.status == 413
    assert (await r.json())["code"] == "payload_too_large"
    assert log.requests == []
    r = await client.post("/api/modules/crm/x", data=b"x" * 1000)
    assert r.status == 200


async def test_request_body_limit_when_chunked(gateway: Any, upstream: Any) -> None:
    _, log = upstream
    client = await gateway(max_body_bytes=100_000)

    async def chunks() -> Any:
        for _ in range(40):
            yield b"y" * 10_000

    r = await client.post("/api/modules/crm/x", data=chunks())
    assert r.status == 413
    assert (await r.json())["code"] == "payload_too_large"
    assert log.requests == []


async def test_streamed_upload_reaches_upstream_whole(gateway: Any) -> None:
    client = await gateway(max_body_bytes=0)
    total = 32 << 20

    async def chunks() -> Any:
        block = b"u" * (1 << 20)
        for _ in range(total >> 20):
            yield block

    r = await client.put("/api/modules/crm/upload", data=chunks())
    seen = await r.json()
    assert seen["body_bytes"] == total
    assert "chunked" in _headers(seen)["transfer-encoding"][0]


async def test_response_is_streamed_not_buffered(gateway: Any, upstream: Any) -> None:
    _, log = upstream
    client = await gateway()
    r = await client.get("/api/modules/crm/stream?chunks=4")
    assert r.status == 200
    # The upstream holds back the rest until we have seen the first chunk through the gateway.
    first = await asyncio.wait_for(r.content.readexactly(65536), 5)
    assert first == b"a" * 65536
    log.release.set()
    rest = await r.read()
    assert len(rest) == 3 * 65536


async def test_large_download_with_content_length(gateway: Any) -> None:
    client = await gateway()
    r = await client.get("/api/modules/crm/big?bytes=20000000")
    assert r.headers["Content-Length"] == "20000000"
    assert len(await r.read()) == 20_000_000


async def test_upstream_dying_mid_response_cuts_the_client(gateway: Any) -> None:
    client = await gateway()
    r = await client.get("/api/modules/crm/broken")
    assert r.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await r.read()
    r = await client.get("/api/modules/crm/still-ok")
    assert r.status == 200


async def test_client_disconnect_mid_body_aborts_upstream(gateway: Any, upstream: Any) -> None:
    _, log = upstream
    client = await gateway(max_body_bytes=0)
    _reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        b"POST /api/modules/crm/upload HTTP/1.1\r\nHost: x\r\n"
        b"Content-Length: 10000000\r\n\r\n" + b"p" * 200_000
    )
    await writer.drain()
    await asyncio.wait_for(log.body_started.wait(), 10)  # the upload is under way upstream
    writer.transport.abort()
    await asyncio.wait_for(log.finished.wait(), 5)
    assert log.body_errors, "upstream should see the body cut short"
    assert log.requests == []
    r = await client.get("/api/modules/crm/after")
    assert r.status == 200


async def test_sidecar_serves_one_module_on_every_path(gateway: Any) -> None:
    client = await gateway(mode="sidecar", sidecar_module="crm")
    r = await client.get("/contacts/1?z=1")
    assert (await r.json())["raw_path"] == "/contacts/1?z=1"
