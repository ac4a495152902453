"""API consumers (issue 16) through the real gateway in Postgres mode: `dk_` keys from
`module_api_consumers` by Bearer or X-API-Key, on entity routes (a small aiohttp app stands in
for the handler pool, as in tests/server/test_entity_routes.py) and a proxy route; scopes,
allowed endpoints, module and IP binding, limits, live revocation through NOTIFY, usage
counters, the request log's consumer_id and the seed's module_api_requests view."""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from proxy.auth.secret_box import SecretBox
from proxy.routing.manifest import parse_manifest
from proxy.server.gateway import Gateway
from proxy.store.consumers import create_consumer, revoke_consumer, update_consumer
from proxy.store.routes import apply_manifest
from tests.conftest import REDIS_URL
from tests.support.fake_pool import RecordingPool
from tests.support.gateway import serve_database
from tests.support.polling import eventually
from tests.support.signing import signed_headers

SHOP = "8d2f4c1a-6b3e-4f5a-9c7d-1e2f3a4b5c6d"
OTHER = "2c4e6a8b-0d1f-4a3b-8c5d-7e9f1a3b5c7d"
SITE = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8d"
PREFIX = f"mod_{SHOP[:8]}_"


def _entity(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "table": name,
        "fields": [
            {"name": "id", "type": "uuid", "readonly": True},
            {"name": "title", "type": "string", "required": True},
        ],
    }


@dataclass
class Shop:
    client: Any
    gateway: Gateway
    database: str
    pool: RecordingPool
    upstream_seen: list[dict[str, str]]

    async def consumer(self, **fields: Any) -> tuple[str, str]:
        """A new consumer of the shop for SITE (overrides: `fields`): (id, key)."""
        consumer_id, key, _ = await self.signing_consumer(**fields)
        return consumer_id, key

    async def signing_consumer(self, **fields: Any) -> tuple[str, str, str | None]:
        """`consumer`, with its signing secret when `secrets` (a SecretBox) is given."""
        conn = await asyncpg.connect(self.database)
        try:
            args: dict[str, Any] = {"module_id": SHOP, "site_id": SITE, "name": "app"}
            summary, key, secret = await create_consumer(conn, **{**args, **fields})
        finally:
            await conn.close()
        return summary.id, key, secret

    async def status(self, method: str, path: str, key: str, **kw: Any) -> int:
        headers = {"Authorization": f"Bearer {key}", **kw.pop("headers", {})}
        r = await self.client.request(method, f"/api/modules/shop{path}", headers=headers, **kw)
        await r.read()
        return int(r.status)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        conn = await asyncpg.connect(self.database)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()


@pytest.fixture
async def shop(
    database: str, tmp_path: Path, aiohttp_client: Any, aiohttp_server: Any
) -> AsyncIterator[Any]:
    pool = RecordingPool()
    pool_url = await pool.start(aiohttp_server)
    seen: list[dict[str, str]] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if request.path == "/echo":
            return web.Response(body=await request.read())
        return web.json_response({"ok": True})

    upstream_app = web.Application()
    upstream_app.router.add_route("*", "/{tail:.*}", echo)
    upstream = await aiohttp_server(upstream_app)

    conn = await asyncpg.connect(database)
    try:
        for table in ("products", "orders"):
            await conn.execute(
                f"CREATE TABLE {PREFIX}{table} (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
                "site_id uuid NOT NULL, title text NOT NULL)"
            )
        routes = [
            {"path": "/status", "method": "GET", "handler_type": "proxy",
             "handler_url": f"http://127.0.0.1:{upstream.port}/status"},
            {"path": "/echo", "method": "POST", "handler_type": "proxy",
             "handler_url": f"http://127.0.0.1:{upstream.port}/echo"},
            {"path": "/open", "method": "GET", "handler_type": "static", "handler_code": '"o"',
             "requires_auth": False},
        ]  # fmt: skip
        manifest = parse_manifest(
            {
                "modules": [
                    {"id": SHOP, "name": "shop", "routes": routes,
                     "entities": [_entity("products"), _entity("orders")]},
                    {"id": OTHER, "name": "other", "routes": [
                        {"path": "/x", "method": "GET", "handler_type": "static",
                         "handler_code": '"x"'}]},
                ]
            }
        )  # fmt: skip
        await apply_manifest(conn, manifest)
    finally:
        await conn.close()

    async def start(**overrides: Any) -> Shop:
        settings: dict[str, Any] = {
            "executor_url": pool_url, "usage_flush_seconds": 0.1,
            "request_log_flush_seconds": 0.05, **overrides,
        }  # fmt: skip
        client, gateway = await serve_database(aiohttp_client, tmp_path, database, **settings)
        return Shop(client, gateway, database, pool, seen)

    yield start


async def test_a_consumer_calls_entity_and_proxy_routes_by_bearer_or_x_api_key(
    shop: Any,
) -> None:
    s: Shop = await shop()
    consumer_id, key = await s.consumer(scopes=["read", "write"])
    assert key.startswith("dk_") and len(key) == 46
    r = await s.client.get("/api/modules/shop/products/7", headers={"X-API-Key": key})
    assert (r.status, await r.json()) == (200, {"data": {"operation": "read"}})
    r = await s.client.post(
        "/api/modules/shop/orders", headers={"Authorization": f"Bearer {key}"}, json={"title": "t"}
    )
    assert r.status == 201
    first, second = s.pool.calls
    assert (first["site_id"], first["api_key_id"], first["user_id"]) == (SITE, None, None)
    assert first["consumer_id"] == second["consumer_id"] == consumer_id
    assert first["scopes"] == ["read:*", "write:*"]
    assert second["operation"] == "create"

    # Upstream: who is calling, as identity headers; the client's own X-Consumer-Id and the
    # credential itself never cross.
    headers = {"X-Consumer-Id": "forged", "X-Api-Key-Id": "forged"}
    assert await s.status("GET", "/status", key, headers=headers) == 200
    (seen,) = s.upstream_seen
    assert seen["X-Consumer-Id"] == consumer_id
    assert (seen["X-Site-Id"], seen["X-Module-Id"]) == (SITE, SHOP)
    assert seen["X-Scopes"] == "read:* write:*"
    assert "X-Api-Key-Id" not in seen and "Authorization" not in seen


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        (["read"], {"GET /products", "GET /products/1"}),
        (["write"], {"POST /products", "PATCH /products/1", "PUT /products/1"}),
        (["delete"], {"DELETE /products/1"}),
        (["admin"], {"GET /products", "GET /products/1", "POST /products", "PATCH /products/1",
                     "PUT /products/1", "DELETE /products/1"}),
    ],
)  # fmt: skip
async def test_scopes_grant_their_kind_of_operation(
    shop: Any, scopes: list[str], allowed: set[str]
) -> None:
    s: Shop = await shop()
    _, key = await s.consumer(scopes=scopes)
    every = ["GET /products", "GET /products/1", "POST /products", "PATCH /products/1",
             "PUT /products/1", "DELETE /products/1"]  # fmt: skip
    for call in every:
        method, path = call.split()
        status = await s.status(method, path, key, json={"title": "t"})
        assert status == (201 if method == "POST" else 200) if call in allowed else 403, call


@pytest.mark.parametrize(
    ("endpoints", "allowed"),
    [
        (["*"], {"GET /products", "GET /products/1", "POST /orders", "GET /orders",
                 "GET /orders/1", "GET /status"}),
        (["GET /products"], {"GET /products"}),
        (["GET /products/:id"], {"GET /products/1"}),
        (["get /products/:productId/"], {"GET /products/1"}),  # any spelling of the template
        (["* /orders"], {"GET /orders", "POST /orders"}),
        (["GET /status", "* /orders"], {"GET /status", "GET /orders", "POST /orders"}),
    ],
)  # fmt: skip
async def test_allowed_endpoints_are_enforced_on_the_matched_route(
    shop: Any, endpoints: list[str], allowed: set[str]
) -> None:
    s: Shop = await shop()
    _, key = await s.consumer(scopes=["admin"], allowed_endpoints=endpoints)
    for call in ("GET /products", "GET /products/1", "POST /orders", "GET /orders",
                 "GET /orders/1", "GET /status"):  # fmt: skip
        method, path = call.split()
        r = await s.client.request(
            method, f"/api/modules/shop{path}", headers={"X-API-Key": key}, json={"title": "t"}
        )
        body = await r.json()
        if call in allowed:
            assert r.status in (200, 201), (call, body)
        else:
            assert r.status == 403, call
            assert body["error"] == "This API consumer is not allowed to call this endpoint"
    # A spelling of the path that the table resolves to a route is checked as that route.
    if "GET /products" in allowed and "GET /products/1" not in allowed:
        assert await s.status("GET", "/orders/../products/1", key) == 403


async def test_another_module_an_address_outside_the_list_and_an_unknown_key_are_refused(
    shop: Any,
) -> None:
    s: Shop = await shop()
    _, key = await s.consumer(scopes=["admin"])
    r = await s.client.get("/api/modules/other/x", headers={"Authorization": f"Bearer {key}"})
    assert (r.status, (await r.json())["error"]) == (
        403,
        "This API consumer is not valid for this module",
    )
    _, far = await s.consumer(allowed_ips=["10.0.0.0/8"])
    _, near = await s.consumer(allowed_ips=["10.0.0.0/8", "127.0.0.1"])
    assert await s.status("GET", "/products", far) == 403
    assert await s.status("GET", "/products", near) == 200
    assert await s.status("GET", "/products", "dk_" + "A" * 43) == 401
    assert await s.status("GET", "/products", "dk_short") == 401
    assert await s.status("GET", "/open", "dk_" + "A" * 43) == 401  # present: always checked


async def test_limits_answer_429(shop: Any) -> None:
    s: Shop = await shop(rate_limit_enabled=True)
    _, key = await s.consumer(rate_limit_per_minute=2)
    _, other = await s.consumer(rate_limit_per_minute=2)
    assert [await s.status("GET", "/products", key) for _ in range(3)] == [200, 200, 429]
    assert await s.status("GET", "/products", other) == 200  # a bucket per consumer
    _, daily = await s.consumer(rate_limit_per_minute=100, rate_limit_per_day=1)
    r = await s.client.get("/api/modules/shop/products", headers={"X-API-Key": daily})
    assert (r.status, r.headers["X-RateLimit-Limit"]) == (200, "100")
    assert await s.status("GET", "/products", daily) == 429


async def test_revocation_and_changes_take_effect_live(shop: Any) -> None:
    s: Shop = await shop()
    consumer_id, key = await s.consumer(scopes=["read"])
    assert await s.status("GET", "/products", key) == 200  # now cached

    conn = await asyncpg.connect(s.database)
    try:
        await update_consumer(conn, consumer_id, allowed_endpoints=["GET /orders"])
        await eventually(
            lambda: s.status("GET", "/products", key), until=lambda st: st == 403,
            what="the endpoint change reached the gateway",
        )  # fmt: skip
        assert await revoke_consumer(conn, consumer_id) is not None
    finally:
        await conn.close()
    await eventually(
        lambda: s.status("GET", "/orders", key), until=lambda st: st == 401,
        what="the revocation reached the gateway",
    )  # fmt: skip


async def test_usage_counters_the_request_log_and_the_requests_view(shop: Any) -> None:
    s: Shop = await shop()
    consumer_id, key = await s.consumer()
    for _ in range(3):
        assert await s.status("GET", "/products", key, headers={"User-Agent": "sdk/1"}) == 200
    assert await s.status("POST", "/products", key, json={"title": "t"}) == 403

    await eventually(
        lambda: s.fetchval(
            "SELECT total_requests FROM module_api_consumers WHERE id = $1", consumer_id
        ),
        until=lambda n: n == 4,
        what="usage written",
    )
    assert await s.fetchval(
        "SELECT last_request_at > NOW() - interval '1 minute' FROM module_api_consumers"
        " WHERE id = $1",
        consumer_id,
    )
    rows = "SELECT count(*) FROM module_api_logs WHERE consumer_id = $1"
    await eventually(lambda: s.fetchval(rows, consumer_id), until=lambda n: n == 4)
    assert (
        await s.fetchval(
            "SELECT count(*) FROM module_api_logs WHERE consumer_id = $1 AND auth_type = 'consumer'"
            " AND api_key_id IS NULL AND site_id = $2",
            consumer_id,
            SITE,
        )
        == 4
    )

    conn = await asyncpg.connect(s.database)
    try:
        view = await conn.fetch(
            "SELECT * FROM module_api_requests WHERE consumer_id = $1 ORDER BY created_at",
            consumer_id,
        )
    finally:
        await conn.close()
    assert [r["status_code"] for r in view] == [200, 200, 200, 403]
    assert list(view[0].keys()) == [
        "id", "consumer_id", "site_module_id", "method", "path", "query_params", "request_body",
        "status_code", "response_time_ms", "response_size_bytes", "ip_address", "user_agent",
        "error_message", "created_at",
    ]  # fmt: skip
    first = dict(view[0])
    assert (first["method"], first["path"], first["user_agent"]) == ("GET", "/products", "sdk/1")
    assert str(first["ip_address"]) == "127.0.0.1" and first["request_body"] is None


async def test_a_key_is_never_stored_in_plain_text(shop: Any) -> None:
    s: Shop = await shop()
    consumer_id, key = await s.consumer()
    conn = await asyncpg.connect(s.database)
    try:
        row = await conn.fetchrow(
            "SELECT to_jsonb(c)::text AS everything, key_hash, key_prefix"
            " FROM module_api_consumers c WHERE id = $1",
            consumer_id,
        )
    finally:
        await conn.close()
    assert key not in row["everything"] and key[12:] not in row["everything"]
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["key_prefix"] == key[:12]
    assert secrets.compare_digest(row["key_prefix"], key[:12])


# -- signed requests (RFC 9421) ---------------------------------------------------------------

SECRETS_KEY = base64.b64encode(bytes(range(32))).decode()


async def _signer(s: Shop, **fields: Any) -> tuple[str, str, str]:
    consumer_id, key, secret = await s.signing_consumer(
        secrets=SecretBox.from_setting(SECRETS_KEY), scopes=["read", "write"], **fields
    )
    assert secret is not None
    return consumer_id, key, secret


def _url(s: Shop, path: str) -> str:
    return str(s.client.make_url(f"/api/modules/shop{path}"))


async def test_signed_requests_are_verified(shop: Any) -> None:
    s: Shop = await shop(
        secrets_key=SECRETS_KEY, rate_limit_enabled=True, redis_url=REDIS_URL
    )  # Redis: nonces shared by replicas
    consumer_id, key, secret = await _signer(s, require_signature=True)
    auth = {"Authorization": f"Bearer {key}"}
    body = b'{"title": "signed"}'
    url = _url(s, "/orders")

    def sign(**kw: Any) -> dict[str, str]:
        options = {"key_id": consumer_id, "secret": secret, "body": body, **kw}
        return {
            **auth,
            "Content-Type": "application/json",
            **signed_headers("POST", url, **options),
        }

    headers = sign()
    r = await s.client.post("/api/modules/shop/orders", data=body, headers=headers)
    assert r.status == 201, await r.text()
    assert s.pool.calls[-1]["body"] == {"title": "signed"}  # the bytes read are sent on
    # The same nonce again: a replay.
    r = await s.client.post("/api/modules/shop/orders", data=body, headers=headers)
    assert r.status == 401
    # A tampered body: Content-Digest no longer matches.
    r = await s.client.post("/api/modules/shop/orders", data=b'{"title": "x"}', headers=sign())
    assert r.status == 401
    # created 301 s ago, or ahead: outside the window.
    for offset in (-301, 301):
        created = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset)
        r = await s.client.post(
            "/api/modules/shop/orders", data=body, headers=sign(created=created)
        )
        assert r.status == 401
    # Another key: wrong secret, or another consumer's id as keyid.
    for kw in ({"secret": "not-the-secret"}, {"key_id": "00000000-0000-4000-8000-000000000000"}):
        r = await s.client.post("/api/modules/shop/orders", data=body, headers=sign(**kw))
        assert r.status == 401
    # Required, and missing.
    r = await s.client.post("/api/modules/shop/orders", data=body, headers=auth)
    assert r.status == 401
    # Signed GET without a body, through a proxy route: the signature covers the target URI.
    r = await s.client.get(
        "/api/modules/shop/status",
        headers={
            **auth,
            **signed_headers("GET", _url(s, "/status"), key_id=consumer_id, secret=secret),
        },
    )
    assert r.status == 200
    r = await s.client.get(
        "/api/modules/shop/status?other=1",
        headers={
            **auth,
            **signed_headers("GET", _url(s, "/status"), key_id=consumer_id, secret=secret),
        },
    )
    assert r.status == 401


async def test_signed_body_is_forwarded_to_a_proxy_route(shop: Any) -> None:
    s: Shop = await shop(secrets_key=SECRETS_KEY)
    consumer_id, key, secret = await _signer(s)
    body = b"raw bytes, not JSON"
    headers = signed_headers("POST", _url(s, "/echo"), key_id=consumer_id, secret=secret, body=body)
    r = await s.client.post(
        "/api/modules/shop/echo", data=body, headers={"X-API-Key": key, **headers}
    )
    assert (r.status, await r.read()) == (200, body)


async def test_unsigned_requests_pass_unless_required_and_the_secret_is_sealed(shop: Any) -> None:
    s: Shop = await shop(secrets_key=SECRETS_KEY)
    consumer_id, key, secret = await _signer(s)
    assert await s.status("GET", "/products", key) == 200  # not required: unsigned is fine
    stored = await s.fetchval(
        "SELECT secret_ciphertext FROM module_api_consumers WHERE id = $1::uuid", consumer_id
    )
    assert stored is not None and secret.encode() not in stored and secret not in stored.hex()
    # A signature from a consumer without a secret cannot be verified.
    _, plain_key = await s.consumer()
    headers = signed_headers("GET", _url(s, "/products"), key_id=consumer_id, secret=secret)
    assert await s.status("GET", "/products", plain_key, headers=headers) == 401
