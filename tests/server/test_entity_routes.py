"""Entity routes through the real pipeline (issue 16): scopes per operation, the caller's site,
503 database_required without a handler pool, and the exact call a pool receives (a small
aiohttp app stands in for the pool here; the pool's side is tests/executor/)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest

from proxy.auth.api_keys import generate_key, hash_key
from tests.support.fake_pool import RecordingPool
from tests.support.gateway import MODULE_ID, gateway_for, manifest

SECRET = "entity-routes-test-secret-0123456789abcdef"
SITE = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8d"
KEY_ID = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
KEY = generate_key()  # an API key of the manifest (embedded mode), granted read:*
ALL_SCOPES = "read:products write:products delete:products"
PRODUCTS: dict[str, Any] = {
    "name": "products",
    "table": "catalog",
    "fields": [
        {"name": "id", "type": "uuid", "readonly": True},
        {"name": "title", "type": "string", "required": True},
        {"name": "price", "type": "decimal"},
    ],
    "filters": ["price"],
    "sortable": ["price"],
    "searchable": ["title"],
}


def token(scope: str = ALL_SCOPES, *, site: str | None = SITE) -> dict[str, str]:
    claims: dict[str, Any] = {"sub": "user-42", "scope": scope, "exp": int(time.time()) + 60}
    if site is not None:
        claims["site_id"] = site
    return {"Authorization": "Bearer " + pyjwt.encode(claims, SECRET, algorithm="HS256")}


@pytest.fixture
def start(tmp_path: Path, aiohttp_client: Any, aiohttp_server: Any) -> Any:
    async def start(*, pool: RecordingPool | None = None, **overrides: object) -> Any:
        data = manifest(None, [], entities=[PRODUCTS])
        data["api_keys"] = [{"id": KEY_ID, "module_id": MODULE_ID, "site_id": SITE,
                             "key_hash": hash_key(KEY), "scopes": ["read:*"]}]  # fmt: skip
        if pool is not None:
            overrides["executor_url"] = await pool.start(aiohttp_server)
        _, gateway_app = gateway_for(tmp_path, data, jwt_secret=SECRET, **overrides)
        return await aiohttp_client(gateway_app)

    return start


async def test_without_a_handler_pool_entity_routes_are_503_database_required(start: Any) -> None:
    client = await start()
    r = await client.get(
        "/api/modules/crm/products", headers={**token(), "X-Request-ID": "rid-503"}
    )
    assert r.status == 503
    assert await r.json() == {
        "error": "This endpoint serves rows from Postgres through the handler pool, which this "
        "gateway is not given (executor_url)",
        "code": "database_required",
        "request_id": "rid-503",
    }


@pytest.mark.parametrize(
    ("method", "path", "missing"),
    [
        ("GET", "/products", "read:products"),
        ("GET", "/products/1", "read:products"),
        ("POST", "/products", "write:products"),
        ("PATCH", "/products/1", "write:products"),
        ("PUT", "/products/1", "write:products"),
        ("DELETE", "/products/1", "delete:products"),
    ],
)
async def test_each_operation_needs_its_scope(
    start: Any, method: str, path: str, missing: str
) -> None:
    pool = RecordingPool()
    client = await start(pool=pool)
    granted = " ".join(s for s in ALL_SCOPES.split() if s != missing)
    url = f"/api/modules/crm{path}"
    r = await client.request(method, url, headers=token(granted), json={"title": "x"})
    assert r.status == 403
    assert (await r.json())["error"] == f"Missing scope: {missing}"
    r = await client.request(method, url, json={"title": "x"})
    assert r.status == 401  # never anonymous
    assert pool.calls == []
    r = await client.request(method, url, headers=token(missing), json={"title": "x"})
    assert r.status in (200, 201)
    assert len(pool.calls) == 1


async def test_a_caller_without_a_site_is_refused_before_the_pool(start: Any) -> None:
    pool = RecordingPool()
    client = await start(pool=pool)
    r = await client.get("/api/modules/crm/products", headers=token(site=None))
    assert r.status == 403
    assert (await r.json())["error"] == "This endpoint needs credentials bound to a site"
    assert pool.calls == []


async def test_the_call_a_pool_receives(start: Any) -> None:
    pool = RecordingPool()
    client = await start(pool=pool)
    base = "/api/modules/crm"
    caller = {"module_id": MODULE_ID, "site_id": SITE, "user_id": "user-42", "api_key_id": None,
              "consumer_id": None, "scopes": sorted(ALL_SCOPES.split()), "route_id": None,
              "kind": "entity",
              "entity": {**PRODUCTS, "operations": ["list", "read", "create", "update", "delete"],
                         "fields": [{"required": False, "readonly": False, "hidden": False, **f}
                                    for f in PRODUCTS["fields"]]}}  # fmt: skip

    r = await client.get(
        base + "/products?price[gte]=10&search=caf%C3%A9&empty=&price[gte]=11&a+b=c%26d&flag",
        headers=token(),
        data=b'{"ignored": true}',
    )
    assert (r.status, await r.json()) == (200, {"data": {"operation": "list"}})
    r = await client.post(base + "/products", headers=token(), json={"title": "Tea"})
    assert (r.status, await r.json()) == (201, {"data": {"operation": "create"}})
    await client.get(base + "/products/p%2D1", headers=token())
    await client.patch(base + "/products/7", headers=token(), json={"price": 2.5})
    await client.put(base + "/products/7?x=1", headers=token(), json={"title": "T"})
    await client.delete(base + "/products/7", headers=token())

    for call in pool.calls:
        call["scopes"] = sorted(call["scopes"])  # a JWT's scope claim: no order kept
    assert pool.calls == [
        {**caller, "operation": "list", "params": {}, "method": "GET", "body": None,
         "query": [["price[gte]", "10"], ["search", "café"], ["empty", ""],
                   ["price[gte]", "11"], ["a b", "c&d"], ["flag", ""]]},
        {**caller, "operation": "create", "params": {}, "method": "POST", "query": [],
         "body": {"title": "Tea"}},
        {**caller, "operation": "read", "params": {"id": "p-1"}, "method": "GET", "query": [],
         "body": None},
        {**caller, "operation": "update", "params": {"id": "7"}, "method": "PATCH", "query": [],
         "body": {"price": 2.5}},
        {**caller, "operation": "update", "params": {"id": "7"}, "method": "PUT",
         "query": [["x", "1"]], "body": {"title": "T"}},
        {**caller, "operation": "delete", "params": {"id": "7"}, "method": "DELETE",
         "query": [], "body": None},
    ]  # fmt: skip


async def test_an_api_key_caller_and_the_pools_error_with_details(start: Any) -> None:
    pool = RecordingPool()
    client = await start(pool=pool)
    r = await client.get("/api/modules/crm/products/9", headers={"X-API-Key": KEY})
    assert r.status == 200
    (call,) = pool.calls
    assert (call["site_id"], call["api_key_id"], call["consumer_id"], call["user_id"]) == (
        SITE,
        KEY_ID,
        None,
        None,
    )
    assert call["scopes"] == ["read:*"]
    r = await client.post(
        "/api/modules/crm/products",
        headers={**token(), "X-Request-ID": "rid-400"},
        json={"title": ""},
    )
    assert r.status == 400
    assert await r.json() == {
        "error": "Validation failed",
        "code": "validation_failed",
        "request_id": "rid-400",
        "details": ["title must not be empty"],
    }


async def test_bodies_follow_the_function_routes_rules(start: Any) -> None:
    pool = RecordingPool()
    client = await start(pool=pool, max_body_bytes=64)
    url = "/api/modules/crm/products"
    headers = {**token(), "Content-Type": "application/json"}
    r = await client.post(url, headers=headers, data=b'{"title": ')
    assert (r.status, (await r.json())["code"]) == (400, "bad_request")
    r = await client.post(url, headers=headers, data=b'{"title": "' + b"x" * 100 + b'"}')
    assert (r.status, (await r.json())["code"]) == (413, "payload_too_large")
    assert pool.calls == []


async def test_a_body_arriving_in_pieces_is_read_whole(start: Any) -> None:
    """A body's bytes may come in several reads (TCP segments, chunks): all are gathered
    (a single read answered only the first piece: 400 Malformed JSON, or a signed body's 401)."""
    pool = RecordingPool()
    client = await start(pool=pool)

    async def pieces() -> Any:
        yield b'{"title": '
        await asyncio.sleep(0.2)  # the second piece comes in a later read
        yield b'"Tea"}'

    headers = {**token(), "Content-Type": "application/json"}
    r = await client.post("/api/modules/crm/products", headers=headers, data=pieces())
    assert r.status == 201, await r.text()
    assert pool.calls[-1]["body"] == {"title": "Tea"}


async def test_create_and_update_bodies_must_be_json(start: Any) -> None:
    pool = RecordingPool()
    client = await start(pool=pool)
    url = "/api/modules/crm/products"
    body = b'{"title": "Tea"}'
    for method, path in (("POST", url), ("PATCH", url + "/7"), ("PUT", url + "/7")):
        # "": no type at all, which aiohttp reads as application/octet-stream
        for content_type in ("text/plain", "application/x-www-form-urlencoded", ""):
            headers = {**token(), "Content-Type": content_type}
            r = await client.request(method, path, headers=headers, data=body)
            answer = await r.json()
            assert (r.status, answer["code"]) == (415, "unsupported_media_type"), content_type
            assert answer["error"].startswith("Request body must be application/json, not ")
            assert set(answer) == {"error", "code", "request_id"}
    assert pool.calls == []
    for content_type in ("application/json", "application/json; charset=utf-8",
                         "application/merge-patch+json", "Application/JSON"):  # fmt: skip
        headers = {**token(), "Content-Type": content_type}
        r = await client.patch(url + "/7", headers=headers, data=body)
        assert r.status == 200, content_type
    assert [c["body"] for c in pool.calls] == [{"title": "Tea"}] * 4
    # No body, no type needed (the pool answers "body must be a JSON object" itself).
    r = await client.post(url, headers=token())
    assert r.status == 201 and pool.calls[-1]["body"] is None
