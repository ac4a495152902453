"""/readyz follows the failure policy: only `closed` with Redis down makes a gateway unready."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from proxy.server.app import build_admin_app
from tests.support.gateway import gateway_for, manifest
from tests.support.redis_server import RedisServer


async def _start(aiohttp_client: Any, tmp_path: Path, redis: RedisServer, policy: str) -> Any:
    routes = [{"path": "/a", "method": "GET", "handler_type": "static", "handler_code": "1"}]
    gateway, app = gateway_for(
        tmp_path,
        manifest(None, routes),
        rate_limit_enabled=True,
        redis_url=redis.url,
        redis_failure_policy=policy,
        redis_circuit_failures=1,
        redis_circuit_cooldown_seconds=0.05,
        redis_timeout_seconds=0.2,
    )
    client = await aiohttp_client(app)
    admin = await aiohttp_client(build_admin_app(gateway))
    return client, admin


async def test_closed_policy_with_redis_down_is_not_ready(
    aiohttp_client: Any, tmp_path: Path, private_redis: RedisServer
) -> None:
    client, admin = await _start(aiohttp_client, tmp_path, private_redis, "closed")
    r = await admin.get("/readyz")
    assert r.status == 200 and (await r.json())["redis"] == "ok"
    private_redis.kill()
    r = await client.get("/api/modules/crm/a")
    assert r.status == 503 and (await r.json())["code"] == "service_unavailable"
    r = await admin.get("/readyz")
    assert r.status == 503
    assert (await r.json())["error"] == "Redis is failing and redis_failure_policy is closed"
    private_redis.restart()
    for _ in range(100):
        await asyncio.sleep(0.06)  # past the cooldown: the next request probes Redis
        if (await client.get("/api/modules/crm/a")).status == 200:
            break
    assert (await admin.get("/readyz")).status == 200


async def test_local_policy_with_redis_down_stays_ready(
    aiohttp_client: Any, tmp_path: Path, private_redis: RedisServer
) -> None:
    client, admin = await _start(aiohttp_client, tmp_path, private_redis, "local")
    private_redis.kill()
    assert (await client.get("/api/modules/crm/a")).status == 200
    r = await admin.get("/readyz")
    assert r.status == 200
    assert (await r.json())["redis"] == "failing (local policy)"
