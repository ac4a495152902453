"""Limits through the real pipeline: headers, 429s, overrides, quotas; in process and Redis."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.auth.api_keys import generate_key, hash_key
from tests.conftest import REDIS_URL
from tests.support import run_prefix
from tests.support.gateway import gateway_for, manifest

SITE = "3d4c5b6a-7988-4a1b-8c2d-3e4f5a6b7c8d"


def _static(path: str, **fields: Any) -> dict[str, Any]:
    return {"path": path, "method": "GET", "handler_type": "static", "handler_code": "1", **fields}


@pytest.fixture(params=["in-process", "redis"])
def limited_gateway(request: pytest.FixtureRequest, aiohttp_client: Any, tmp_path: Any) -> Any:
    backend = request.param

    async def make(routes: list[dict[str, Any]], keys: list[dict[str, Any]] = ()) -> Any:  # type: ignore[assignment]
        module_id = run_prefix.module_id()  # fresh buckets of this run, swept at the end
        data = manifest(None, routes, id=module_id)
        data["api_keys"] = [{"module_id": module_id, "site_id": SITE, **k} for k in keys]
        overrides: dict[str, object] = {"rate_limit_enabled": True}
        if backend == "redis":
            overrides["redis_url"] = REDIS_URL
        _, app = gateway_for(tmp_path, data, **overrides)
        return await aiohttp_client(app)

    return make


async def test_headers_then_429_in_the_error_shape(limited_gateway: Any) -> None:
    client = await limited_gateway([_static("/a", rate_limit_per_minute=3)])
    for remaining in (2, 1, 0):
        r = await client.get("/api/modules/crm/a")
        assert r.status == 200
        assert r.headers["X-RateLimit-Limit"] == "3"
        assert r.headers["X-RateLimit-Remaining"] == str(remaining)
        assert 0 < int(r.headers["X-RateLimit-Reset"]) <= 60
    r = await client.get("/api/modules/crm/a", headers={"X-Request-ID": "r-429"})
    assert r.status == 429
    assert await r.json() == {
        "error": "Rate limit exceeded", "code": "rate_limited", "request_id": "r-429",
    }  # fmt: skip
    assert r.headers["Retry-After"] == "20"  # 3/min: a token every 20 s
    assert r.headers["X-RateLimit-Remaining"] == "0"


async def test_route_limit_overrides_the_keys(limited_gateway: Any) -> None:
    key = generate_key()
    client = await limited_gateway(
        [_static("/default", requires_auth=True), _static("/route", requires_auth=True,
                                                          rate_limit_per_minute=5)],
        [{"key_hash": hash_key(key), "rate_limit_per_minute": 2, "scopes": ["*"]}],
    )  # fmt: skip
    headers = {"X-API-Key": key}
    r = await client.get("/api/modules/crm/route", headers=headers)
    assert r.headers["X-RateLimit-Limit"] == "5"
    r = await client.get("/api/modules/crm/default", headers=headers)
    assert r.headers["X-RateLimit-Limit"] == "2"


async def test_daily_quota_is_429_quota_exceeded(limited_gateway: Any) -> None:
    key = generate_key()
    client = await limited_gateway(
        [_static("/q", requires_auth=True)],
        [{"key_hash": hash_key(key), "rate_limit_per_day": 2, "scopes": ["*"]}],
    )
    headers = {"X-API-Key": key}
    for _ in range(2):
        assert (await client.get("/api/modules/crm/q", headers=headers)).status == 200
    r = await client.get("/api/modules/crm/q", headers=headers)
    assert r.status == 429
    body = await r.json()
    assert (body["code"], body["error"]) == ("quota_exceeded", "Daily quota exceeded")
    assert r.headers["X-RateLimit-Limit"] == "2"
    assert 0 < int(r.headers["Retry-After"]) <= 86_400  # until 00:00 UTC


async def test_callers_have_their_own_buckets(limited_gateway: Any) -> None:
    first, second = generate_key(), generate_key()
    client = await limited_gateway(
        [_static("/b", requires_auth=True, rate_limit_per_minute=1)],
        [{"key_hash": hash_key(k), "scopes": ["*"]} for k in (first, second)],
    )
    assert (await client.get("/api/modules/crm/b", headers={"X-API-Key": first})).status == 200
    assert (await client.get("/api/modules/crm/b", headers={"X-API-Key": first})).status == 429
    assert (await client.get("/api/modules/crm/b", headers={"X-API-Key": second})).status == 200


async def test_disabled_means_no_headers(aiohttp_client: Any, tmp_path: Any) -> None:
    _, app = gateway_for(tmp_path, manifest(None, [_static("/a", rate_limit_per_minute=1)]))
    client = await aiohttp_client(app)
    for _ in range(3):
        r = await client.get("/api/modules/crm/a")
        assert r.status == 200 and "X-RateLimit-Limit" not in r.headers
